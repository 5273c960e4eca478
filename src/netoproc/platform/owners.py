"""Socket owners from the kernel (Linux, eBPF): which process used which socket,
told the moment it sent or received, so a process that exits a millisecond
later is still named.

`OwnerTracer` loads `ebpf/owners.bpf.c` (BTF tracepoints sock_send_length,
sock_recv_length and inet_sock_set_state), reads its ring buffer on a thread
of its own, and turns each event into an `OwnerSighting` the engine matches
flows against. It names the process at once, while it still runs (its full
name and user); for one already gone, from the name and uid the kernel put
in the event.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import threading
from collections import OrderedDict, deque
from dataclasses import replace
from typing import NamedTuple

from netoproc.ebpf import BpfObject, BpfRefused, BpfUnavailable, RingBuffer, kernel_has_tracepoint
from netoproc.model import OwnerSighting, ProcessRef, addr_from_bytes
from netoproc.platform.cgroups import CgroupNames
from netoproc.platform.processes import ProcessNames
from netoproc.platform.procfs import ProcFacts

log = logging.getLogger("netoproc")

# struct owner_event (ebpf/owners.h), field by field
EVENT_FIELDS = (
    ("cgroup", "Q"), ("started", "Q"), ("tgid", "I"), ("uid", "I"), ("netns", "I"),
    ("family", "H"), ("proto", "B"), ("hook", "B"), ("laddr", "16s"), ("raddr", "16s"),
    ("lport", "H"), ("rport", "H"), ("pad", "I"), ("comm", "16s"),
)  # fmt: skip
EVENT = struct.Struct("=" + "".join(code for _, code in EVENT_FIELDS))
AF_INET = 2
HOOKS = (  # (program, its tracepoint, what that needs)
    ("on_send", "sock_send_length", "the sock_send_length tracepoint (Linux 6.4 or newer)"),
    ("on_recv", "sock_recv_length", "the sock_recv_length tracepoint (Linux 6.4 or newer)"),
    ("on_state", "inet_sock_set_state", "the inet_sock_set_state tracepoint"),
)
MAX_WAITING = 65536  # sightings not yet taken by the engine thread; older ones give way
MAX_NAMED = 4096  # processes whose names are kept, by (tgid, start time)


CONFIG = struct.Struct("=II")  # struct owner_config (ebpf/owners.h)
HOST_PIDNS = 0xEFFFFFFC  # the host's pid namespace: its inode number is fixed (PROC_PID_INIT_INO)


def proc_pidns(proc_root: str = "/proc") -> int:
    """The inode number of the pid namespace `proc_root` numbers processes in,
    which every pid netoproc shows must come from; 0 for the host's, or when it
    cannot be told."""
    try:
        inum = os.stat(f"{proc_root}/1/ns/pid").st_ino
    except OSError:
        return 0
    return 0 if inum == HOST_PIDNS else inum


def own_netns() -> int:
    """The inode number of this process's network namespace (the kernel's ns.inum)."""
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


class OwnerEvent(NamedTuple):
    """One ring-buffer record, decoded."""

    proto: int
    laddr: int
    lport: int
    raddr: int
    rport: int
    netns: int
    cgroup: int
    tgid: int
    started: int  # ns since boot: with the tgid, names one process, never a reused pid
    comm: str
    uid: int

    def sighting(self, process: ProcessRef, foreign: bool) -> OwnerSighting:
        return OwnerSighting(self.proto, self.laddr, self.lport, self.raddr, self.rport, process,
                             foreign=foreign, cgroup=self.cgroup)  # fmt: skip


def decode_event(raw: bytes) -> OwnerEvent | None:
    """A ring-buffer record; None if it is too short to be one."""
    if len(raw) < EVENT.size:
        return None
    (cgroup, started, tgid, uid, netns, family, proto, _hook, laddr, raddr, lport, rport, _pad,
     comm) = EVENT.unpack_from(raw)  # fmt: skip
    width = 4 if family == AF_INET else 16
    return OwnerEvent(
        proto, addr_from_bytes(laddr[:width]), lport, addr_from_bytes(raddr[:width]), rport,
        netns, cgroup, tgid, started,
        comm.split(b"\0", 1)[0].decode("utf-8", "backslashreplace"), uid,
    )  # fmt: skip


class OwnerTracer:
    """The kernel's owner events, collected on a thread; `take` hands them over."""

    def __init__(self, ring_bytes: int | None = None) -> None:
        """`ring_bytes`: the kernel's ring buffer size (a power of two, at least a
        page), if not the object's 256 KiB."""
        try:
            self._object = BpfObject("owners", sizes={"events": ring_bytes} if ring_bytes else None)
        except BpfRefused:
            # tp_btf programs are refused at load when their tracepoint is missing
            for _program, tracepoint, needs in HOOKS:
                if not kernel_has_tracepoint(tracepoint):
                    raise BpfUnavailable(f"kernel lacks {needs}") from None
            raise
        try:
            self._object.write("config", 0, CONFIG.pack(proc_pidns(), 0))
            for program, _tracepoint, needs in HOOKS:
                self._object.attach(program, needs)
            self._ring = RingBuffer(self._object.map_fd("events"), self._received)
        except BpfUnavailable:
            self._object.close()
            raise
        self._netns = own_netns()
        self._names = ProcessNames(ProcFacts())  # this thread's own: the engine thread has another
        self._groups = CgroupNames()  # containers and units, by the event's cgroup id
        # a process named once is not asked about again (a busy server's every socket);
        # by (tgid, start time, cgroup id): a process moved to another cgroup is asked again
        self._named: OrderedDict[tuple[int, int, int], ProcessRef] = OrderedDict()
        self._raw: list[bytes] = []
        self._ready: deque[OwnerSighting] = deque(maxlen=MAX_WAITING)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="netoproc-owners", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _received(self, raw: bytes) -> None:
        self._raw.append(raw)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._ring.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping:
            poller.poll()
            self._collect()
        self._collect()

    def _collect(self) -> None:
        self._ring.consume()
        raw, self._raw = self._raw, []
        for record in raw:
            event = decode_event(record)
            if event is None:
                continue
            process = self._process(event)
            if process is not None:
                foreign = bool(self._netns) and event.netns != self._netns
                self._ready.append(event.sighting(process, foreign))

    def _process(self, event: OwnerEvent) -> ProcessRef | None:
        incarnation = (event.tgid, event.started, event.cgroup)
        process = self._named.get(incarnation)
        if process is None:
            process = self._names.describe(event.tgid, (event.comm, event.uid))
            if process is None:
                return None
            # by the event's cgroup id; where no cgroup2 hierarchy is mounted here
            # (`ip netns exec` mounts a /sys of its own), or the id names none (a
            # machine whose systemd keeps to cgroup v1), from /proc while it runs,
            # as the socket table names it: one process, one group
            group = self._groups.of_id(event.cgroup) or self._groups.of_pid(event.tgid)
            if group != process.group:
                process = replace(process, group=group)
            self._named[incarnation] = process
            if len(self._named) > MAX_NAMED:
                self._named.popitem(last=False)
        return process

    def take(self) -> list[OwnerSighting]:
        """The sightings since the last call, oldest first (any thread)."""
        ready = self._ready
        return [ready.popleft() for _ in range(len(ready))]

    def lost(self) -> int:
        """Events the kernel could not hand over (its ring buffer was full)."""
        return self._object.read_u64("lost")

    def stop(self) -> None:
        """Stop the thread after it has collected what the kernel holds now."""
        self._stopping = True
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join()

    def close(self) -> None:
        self.stop()
        self._ring.close()
        self._object.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
