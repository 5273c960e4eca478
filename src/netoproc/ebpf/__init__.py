"""eBPF programs this package ships, loaded through the system's libbpf.

libbpf (`libbpf.so.1`, which iproute2 already depends on) is called through
ctypes: no compiler and no Python binding at run time. The programs are
compiled once into CO-RE objects (`*.bpf.o` beside this file, built by
`scripts/build-bpf` from the `*.bpf.c` sources); libbpf fits their field
accesses to the running kernel's BTF as it loads them.

Everything that can go wrong (no libbpf, no BTF, too few capabilities, a
kernel without the hook, a verifier that says no) is a `BpfUnavailable` whose
message is one line that says what is missing; the caller falls back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("netoproc")

CAP_PERFMON = 38
CAP_BPF = 39
BTF_PATH = "/sys/kernel/btf/vmlinux"

# int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size)
_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
# the prototypes used, as (name, result, arguments)
_PROTOTYPES = (
    ("libbpf_set_print", ctypes.c_void_p, [ctypes.c_void_p]),
    ("bpf_object__open_mem", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]),
    ("bpf_object__load", ctypes.c_int, [ctypes.c_void_p]),
    ("bpf_object__close", None, [ctypes.c_void_p]),
    ("bpf_object__find_program_by_name", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    ("bpf_object__find_map_fd_by_name", ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    ("bpf_object__find_map_by_name", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
    ("bpf_map__set_max_entries", ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32]),
    ("bpf_program__attach", ctypes.c_void_p, [ctypes.c_void_p]),
    ("bpf_program__fd", ctypes.c_int, [ctypes.c_void_p]),
    ("bpf_link__destroy", ctypes.c_int, [ctypes.c_void_p]),
    ("bpf_map_lookup_elem", ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]),
    ("bpf_map_update_elem", ctypes.c_int,
     [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]),
    ("bpf_map_lookup_and_delete_batch", ctypes.c_int,
     [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
      ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]),
    ("ring_buffer__new", ctypes.c_void_p,
     [ctypes.c_int, _SAMPLE_FN, ctypes.c_void_p, ctypes.c_void_p]),
    ("ring_buffer__consume", ctypes.c_int, [ctypes.c_void_p]),
    ("ring_buffer__epoll_fd", ctypes.c_int, [ctypes.c_void_p]),
    ("ring_buffer__free", None, [ctypes.c_void_p]),
    ("libbpf_find_vmlinux_btf_id", ctypes.c_int, [ctypes.c_char_p, ctypes.c_int]),
)  # fmt: skip
BPF_TRACE_RAW_TP = 23  # enum bpf_attach_type: what tp_btf programs attach as


class BpfUnavailable(Exception):
    """eBPF cannot be used here; the message says why, in one line."""


class BpfRefused(BpfUnavailable):
    """The kernel would not load an object's programs."""


_libbpf: ctypes.CDLL | None = None


def libbpf() -> ctypes.CDLL:
    """The system's libbpf, with the prototypes netoproc uses; loaded once."""
    global _libbpf
    if _libbpf is None:
        path = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(path, use_errno=True)
            for name, result, arguments in _PROTOTYPES:
                function = getattr(lib, name)
                function.restype, function.argtypes = result, arguments
        except (OSError, AttributeError) as exc:
            raise BpfUnavailable(f"libbpf.so.1 is not usable ({exc})") from None
        if not log.isEnabledFor(logging.DEBUG):
            lib.libbpf_set_print(None)  # its messages would land on the monitor's screen
        _libbpf = lib
    return _libbpf


def missing_capabilities(
    wanted: tuple[tuple[str, int], ...] = (("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON)),
) -> list[str]:
    """The capabilities in `wanted` (by default what loading netoproc's programs
    needs; the socket filter alone would do with CAP_BPF, one message serves both)
    that this process lacks."""
    effective = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    effective = int(line.split()[1], 16)
    except OSError:
        return []  # cannot tell: let the kernel say
    return [name for name, bit in wanted if not effective >> bit & 1]


def unusable(*, core: bool) -> str | None:
    """Why netoproc's programs cannot load here, as far as can be told without
    loading them or privileges (libbpf, and for `core` programs the kernel's BTF);
    None when nothing is known to be missing."""
    try:
        libbpf()
    except BpfUnavailable as exc:
        return str(exc)
    if core and not os.path.exists(BTF_PATH):
        return f"the kernel has no BTF ({BTF_PATH})"
    return None


def kernel_has_tracepoint(name: str) -> bool:
    """Whether the kernel's BTF describes tracepoint `name`, as a tp_btf program
    needs to load (it is looked up at load, not at attach as a raw_tp's is)."""
    return int(libbpf().libbpf_find_vmlinux_btf_id(name.encode(), BPF_TRACE_RAW_TP)) > 0


def object_bytes(name: str) -> bytes:
    """The shipped CO-RE object `name`.bpf.o."""
    # beside this module: the package is installed as files, and importlib.resources
    # (with zipfile) would hold 1.6 MiB resident to find the same path
    return Path(__file__).with_name(f"{name}.bpf.o").read_bytes()


class BpfObject:
    """One loaded object: its programs (attached on request), its maps' fds."""

    def __init__(
        self,
        name: str,
        data: bytes | None = None,
        sizes: dict[str, int] | None = None,
        *,
        core: bool = True,
    ) -> None:
        """Open and load `name`.bpf.o (or `data`); `sizes` overrides maps' max_entries.
        `core`: its programs read kernel structures, so the kernel's BTF is needed."""
        lack = missing_capabilities()
        if lack:
            raise BpfUnavailable(f"needs {' and '.join(lack)}")
        missing = unusable(core=core)
        if missing:
            raise BpfUnavailable(missing)
        self._lib = lib = libbpf()
        self._data = data if data is not None else object_bytes(name)
        self._links: list[int] = []
        obj = lib.bpf_object__open_mem(self._data, len(self._data), None)
        if not obj:
            raise BpfUnavailable(f"libbpf cannot open {name}.bpf.o ({_strerror()})")
        self._obj: int | None = obj
        for map_name, entries in (sizes or {}).items():
            found = lib.bpf_object__find_map_by_name(obj, map_name.encode())
            if not found or lib.bpf_map__set_max_entries(found, entries) != 0:
                self.close()
                raise BpfUnavailable(f"cannot size map {map_name} of {name}.bpf.o")
        code = lib.bpf_object__load(obj)
        if code < 0:
            self.close()
            raise BpfRefused(f"the kernel refused the {name} programs ({os.strerror(-code)})")

    def attach(self, program: str, hook: str) -> None:
        """Attach `program` where its section says; `hook` names it in errors."""
        prog = self._lib.bpf_object__find_program_by_name(self._obj, program.encode())
        if not prog:
            raise BpfUnavailable(f"no program {program} in the object")
        link = self._lib.bpf_program__attach(prog)
        if not link:
            code = ctypes.get_errno()
            if code == errno.ENOENT:
                raise BpfUnavailable(f"kernel lacks {hook}")
            raise BpfUnavailable(f"cannot attach to {hook} ({os.strerror(code)})")
        self._links.append(link)

    def program_fd(self, program: str) -> int:
        prog = self._lib.bpf_object__find_program_by_name(self._obj, program.encode())
        if not prog:
            raise BpfUnavailable(f"no program {program} in the object")
        return int(self._lib.bpf_program__fd(prog))

    def map_fd(self, name: str) -> int:
        fd = self._lib.bpf_object__find_map_fd_by_name(self._obj, name.encode())
        if fd < 0:
            raise BpfUnavailable(f"no map {name} in the object")
        return int(fd)

    def read_u64(self, map_name: str, index: int = 0) -> int:
        """Element `index` of an array map of 64-bit counters."""
        key, value = ctypes.c_uint32(index), ctypes.c_uint64(0)
        if self._lib.bpf_map_lookup_elem(self.map_fd(map_name), ctypes.byref(key),
                                         ctypes.byref(value)) != 0:  # fmt: skip
            return 0
        return int(value.value)

    def write(self, map_name: str, index: int, value: bytes) -> None:
        """Element `index` of an array map, as the bytes of its C value."""
        key = ctypes.c_uint32(index)
        if self._lib.bpf_map_update_elem(self.map_fd(map_name), ctypes.byref(key), value, 0) != 0:
            raise BpfUnavailable(f"cannot write map {map_name} ({_strerror()})")

    def close(self) -> None:
        for link in self._links:
            self._lib.bpf_link__destroy(link)
        self._links.clear()
        if self._obj is not None:
            self._lib.bpf_object__close(self._obj)
            self._obj = None


class RingBuffer:
    """A BPF ring buffer map read from one thread: `consume` hands each record,
    copied out, to `on_record`; `fileno` is readable when records wait."""

    def __init__(self, map_fd: int, on_record: Callable[[bytes], None]) -> None:
        self._lib = lib = libbpf()

        def sample(_ctx: int | None, data: int, size: int) -> int:
            on_record(ctypes.string_at(data, size))
            return 0

        self._callback = _SAMPLE_FN(sample)  # kept: libbpf holds only the pointer
        rb = lib.ring_buffer__new(map_fd, self._callback, None, None)
        if not rb:
            raise BpfUnavailable(f"cannot read the ring buffer ({_strerror()})")
        self._rb: int | None = rb

    def fileno(self) -> int:
        return int(self._lib.ring_buffer__epoll_fd(self._rb))

    def consume(self) -> int:
        """Hand over every record waiting; returns how many."""
        return int(self._lib.ring_buffer__consume(self._rb))

    def close(self) -> None:
        if self._rb is not None:
            self._lib.ring_buffer__free(self._rb)
            self._rb = None


def _strerror() -> str:
    return os.strerror(ctypes.get_errno() or errno.EINVAL)
