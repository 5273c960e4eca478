"""The shipped eBPF objects: built from the sources beside them, and loaded with
clear one-line reasons when they cannot be.

The object check rebuilds every object with scripts/build-bpf (clang, bpftool
and libbpf's headers, which the test command installs) and compares bytes.
The refusal tests compile tiny programs of their own that the kernel must
refuse, and check the sentence netoproc would show.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from netoproc.ebpf import BpfObject, BpfRefused, BpfUnavailable, kernel_has_tracepoint, object_bytes

ROOT = Path(__file__).parents[2]
live = pytest.mark.skipif(os.geteuid() != 0, reason="loading eBPF programs needs root")

PROLOGUE = """
typedef unsigned int __u32;
typedef unsigned long long __u64;
#define SEC(name) __attribute__((section(name), used))
char LICENSE[] SEC("license") = "GPL";
"""


def test_the_shipped_objects_match_their_sources() -> None:
    result = subprocess.run([ROOT / "scripts" / "build-bpf", "--check"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr


def _compile(tmp_path: Path, body: str) -> bytes:
    source = tmp_path / "t.bpf.c"
    source.write_text(PROLOGUE + body)
    target = tmp_path / "t.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpfel", "-c", str(source), "-o",
                    str(target)], check=True, capture_output=True, timeout=60)  # fmt: skip
    return target.read_bytes()


@live
def test_a_program_the_verifier_refuses(tmp_path: Path) -> None:
    data = _compile(
        tmp_path,
        """
SEC("raw_tp/sock_send_length")
int bad(__u64 *ctx) { return *(int *)(ctx[0] + 4096); }  /* a kernel pointer, unchecked */
""",
    )
    with pytest.raises(BpfUnavailable, match=r"^the kernel refused the t programs \("):
        BpfObject("t", data)


@live
def test_a_hook_the_kernel_lacks(tmp_path: Path) -> None:
    data = _compile(
        tmp_path,
        """
SEC("raw_tp/netoproc_no_such_tracepoint")
int prog(__u64 *ctx) { return 0; }
""",
    )
    obj = BpfObject("t", data)
    try:
        with pytest.raises(BpfUnavailable, match=r"^kernel lacks the no-such tracepoint$"):
            obj.attach("prog", "the no-such tracepoint")
    finally:
        obj.close()


@live
def test_a_btf_tracepoint_the_kernel_lacks_is_refused_at_load(tmp_path: Path) -> None:
    """tp_btf programs (the owner tracer's) find their tracepoint when loaded,
    so a missing one is a refusal; `kernel_has_tracepoint` tells which."""
    data = _compile(
        tmp_path,
        """
SEC("tp_btf/netoproc_no_such_tracepoint")
int prog(__u64 *ctx) { return 0; }
""",
    )
    with pytest.raises(BpfRefused, match=r"^the kernel refused the t programs \("):
        BpfObject("t", data)
    assert not kernel_has_tracepoint("netoproc_no_such_tracepoint")
    assert kernel_has_tracepoint("sock_send_length")  # Linux 6.4 and newer: these machines


@live
def test_an_object_that_is_not_one() -> None:
    with pytest.raises(BpfUnavailable, match=r"^libbpf cannot open junk\.bpf\.o \("):
        BpfObject("junk", b"\x7fELF" + bytes(60))
    assert object_bytes("owners").startswith(b"\x7fELF")
