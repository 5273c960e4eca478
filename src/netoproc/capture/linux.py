"""Linux live capture: an AF_PACKET socket with a TPACKET_V3 memory-mapped ring.

SOCK_DGRAM ("cooked") packet sockets hand every interface's packets over
starting at the network header, with the protocol, interface index and
packet type (sent or received) in the sockaddr_ll beside each record, so one
code path serves Ethernet, loopback, tunnels and veth alike. A classic BPF
filter makes the kernel copy only headers, and whole DNS packets.

The kernel fills whole blocks of records and hands a block over when it is
full or after `RETIRE_MS`; each block is copied out and returned to the
kernel at once, so a slow consumer never holds the ring.

Where eBPF allows, the filter is instead capture/counts.py's: it counts most
packets per flow in the kernel and passes up only what must be read whole.

`LinuxCapture` walks the ring; everything it asks of the kernel goes through
a `RingKernel` (`SocketRing` is the real one), so tests run the block walking,
the wrap-around and the drop counting on a recorded ring, without root
(tests/capture/linux_kernel.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import select
import socket
import struct
from typing import Protocol

import numpy as np

from netoproc.capture import CaptureUnavailable, bpf
from netoproc.capture.counts import KernelCounts
from netoproc.capture.records import (
    GUARD_BYTES,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    CounterBatch,
    InterfaceTable,
    RecordBlock,
    RttSamples,
    distinct,
    headers_at,
)
from netoproc.ebpf import CAP_BPF, BpfUnavailable, missing_capabilities, unusable
from netoproc.model import Direction

SOL_PACKET = 263
CAP_NET_RAW = 13
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
PACKET_OUTGOING = 4

RETIRE_MS = 20
READ_WAIT = 0.5  # seconds a reader waits for packets; `wake` ends the wait sooner
MAX_BLOCK = 1 << 20
# The kernel only hands over whole blocks, so at low rates the ring absorbs a
# reader stall of about BLOCKS x RETIRE_MS (a module import or a full garbage
# collection can hold the interpreter for 100-200 ms); at high rates the ring's
# size is what matters, and bigger blocks only save a little per-block work.
BLOCKS = 32
FRAME_SIZE = 2048
FIRST_BYTES = 256  # of a packet that opens a flow: its IP and transport headers

TPACKET_REQ3 = struct.Struct("=7I")
BLOCK_HEADER = struct.Struct("=IIIIII")  # version, offset_to_priv, status, num_pkts, first, len
BLOCK_STATUS_AT = 8
NEXT_OFFSET = struct.Struct("=I")
# tpacket3_hdr (48 bytes) then struct sockaddr_ll, read for every record at once
RECORD_DTYPE = np.dtype(
    [
        ("next_offset", "<u4"),
        ("sec", "<u4"),
        ("nsec", "<u4"),
        ("snaplen", "<u4"),
        ("len", "<u4"),
        ("status", "<u4"),
        ("mac", "<u2"),
        ("net", "<u2"),
        ("hv1", "V12"),
        ("padding", "V8"),
        ("sll_family", "<u2"),
        ("sll_protocol", ">u2"),
        ("sll_ifindex", "<i4"),
        ("sll_hatype", "<u2"),
        ("sll_pkttype", "u1"),
        ("sll_halen", "u1"),
    ]
)


def ring_geometry(buffer_bytes: int) -> tuple[int, int]:
    """(block size, block count) for a ring of at most `buffer_bytes`."""
    page = mmap.PAGESIZE
    block = max(page, min(MAX_BLOCK, 1 << max(0, (buffer_bytes // BLOCKS).bit_length() - 1)))
    block = max(page, block - block % page)
    return block, max(1, buffer_bytes // block)


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """Make the classic BPF `program` the socket's filter (the kernel copies it)."""
    code = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _packet_socket(device: str) -> socket.socket:
    """A cooked packet socket for every protocol; CaptureUnavailable says why not."""
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    except PermissionError:
        raise CaptureUnavailable(
            f"cannot capture on {device}: opening a packet socket was refused (needs CAP_NET_RAW)"
        ) from None
    except OSError as exc:
        raise CaptureUnavailable(
            f"cannot capture on {device}: packet socket: {exc.strerror}"
        ) from None


class RingKernel(Protocol):
    """What the ring's reader asks of the kernel; tests substitute a recorded ring."""

    block_size: int
    block_count: int

    @property
    def ring(self) -> mmap.mmap | bytearray:
        """The shared ring: `block_count` blocks of `block_size` bytes."""
        ...

    def wait(self, timeout: float) -> None:
        """Until the kernel hands a block over, `wake` is called, or `timeout` passes."""
        ...

    def wait_for_retire(self, timeout: float) -> None:
        """Until the kernel hands a block over or `timeout` passes; `wake` does not end it."""
        ...

    def wake(self) -> None: ...

    def take_drops(self) -> int:
        """Packets dropped for a full ring since the last call."""
        ...

    def interface_name(self, index: int) -> str:
        """The interface's name; OSError when it is gone."""
        ...

    def interfaces(self) -> list[tuple[int, str]]: ...

    def close(self) -> None: ...


class SocketRing:
    """The real `RingKernel`: a packet socket, its TPACKET_V3 ring, mapped."""

    def __init__(self, sock: socket.socket, interface: str | None, buffer_bytes: int) -> None:
        """Set the ring up on `sock` (its filter already attached); raises OSError."""
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        self.block_size, self.block_count = ring_geometry(buffer_bytes)
        frames = self.block_size // FRAME_SIZE * self.block_count
        request = TPACKET_REQ3.pack(
            self.block_size, self.block_count, FRAME_SIZE, frames, RETIRE_MS, 0, 0
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
        self._ring = mmap.mmap(
            sock.fileno(),
            self.block_size * self.block_count,
            mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE,
        )
        if interface is not None:
            sock.bind((interface, ETH_P_ALL))
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self._ring_only = select.poll()
        self._ring_only.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self._waker = Waker(self._poll)

    @property
    def ring(self) -> mmap.mmap:
        return self._ring

    def wait(self, timeout: float) -> None:
        self._poll.poll(int(timeout * 1000))
        self._waker.clear()

    def wait_for_retire(self, timeout: float) -> None:
        self._ring_only.poll(int(timeout * 1000))

    def wake(self) -> None:
        self._waker.wake()

    def take_drops(self) -> int:
        stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        _packets, drops, _freeze = struct.unpack("=III", stats)  # reading resets them
        return int(drops)

    def interface_name(self, index: int) -> str:
        return socket.if_indextoname(index)

    def interfaces(self) -> list[tuple[int, str]]:
        return socket.if_nameindex()

    def close(self) -> None:
        try:
            self._ring.close()
        finally:
            self._sock.close()
            self._waker.close()


def describe(kernel_counts: bool) -> tuple[str, list[str]]:
    """The ring, whether the kernel will count, and the capabilities this process lacks."""
    lacking = missing_capabilities((("CAP_NET_RAW", CAP_NET_RAW),))
    kernel = f"kernel {os.uname().release}"
    if not kernel_counts:
        return f"AF_PACKET ring ({kernel}; counting in the kernel turned off)", lacking
    why = unusable(core=False)
    if why:
        return f"AF_PACKET ring ({kernel}; no counting in the kernel: {why})", lacking
    lacking += missing_capabilities((("CAP_BPF", CAP_BPF),))
    return f"AF_PACKET ring + eBPF counting ({kernel})", lacking


def open_capture(
    interface: str | None = None,
    buffer_bytes: int = 2 << 20,
    keep_dns: bool = True,
    kernel_counts: bool = True,
) -> LinuxCapture:
    """All interfaces, or one: the kernel's counting filter where eBPF allows, else
    the classic one; raises CaptureUnavailable with the device and the cause."""
    device = interface or "all interfaces"
    if interface is not None:
        try:
            socket.if_nametoindex(interface)
        except OSError:
            raise CaptureUnavailable(
                f"cannot capture on {interface}: no such interface "
                "(see `ip link` for the names on this machine)"
            ) from None
    sock = _packet_socket(device)
    interfaces = InterfaceTable()
    counter: KernelCounts | None = None
    counting_why = "turned off (NETOP_EBPF=off)"
    if kernel_counts:
        try:
            counter = KernelCounts(interfaces)
            counter.attach(sock)
        except BpfUnavailable as exc:
            counting_why = str(exc)
            if counter is not None:
                counter.close()
                counter = None
    try:
        if counter is None:
            attach_filter(sock, bpf.headers_and_dns(keep_dns))
        ring = SocketRing(sock, interface, buffer_bytes)
    except OSError as exc:
        sock.close()
        if counter is not None:
            counter.close()
        raise CaptureUnavailable(
            f"cannot capture on {device}: setting up the ring failed: {exc.strerror}"
        ) from None
    return LinuxCapture(ring, interfaces, counter, counting_why)


class LinuxCapture:
    """The ring's reader; call `read` from one thread, `counts` from one thread."""

    def __init__(
        self,
        kernel: RingKernel,
        interfaces: InterfaceTable | None = None,
        counter: KernelCounts | None = None,
        counting_why: str = "turned off (NETOP_EBPF=off)",
    ) -> None:
        self.kernel = kernel
        self.interfaces = InterfaceTable() if interfaces is None else interfaces
        self._counter = counter
        self._counting_why = counting_why
        self._learn_interfaces()
        self._next_block = 0
        self._dropped = 0

    def _learn_interfaces(self) -> None:
        """Name every interface now: packets the kernel counts name only an index,
        read a tick later, when a short-lived interface may be gone."""
        for index, name in self.kernel.interfaces():
            if not self.interfaces.known(index):
                self.interfaces.set(index, name)

    def read(self, timeout: float) -> list[RecordBlock]:
        """Blocks the kernel has finished; waits up to `timeout` seconds for the first."""
        blocks = self._take_ready()
        if not blocks:
            self.kernel.wait(timeout)
            blocks = self._take_ready()
        return blocks

    def wake(self) -> None:
        self.kernel.wake()

    def drain(self) -> list[RecordBlock]:
        """Everything captured so far, including the block the kernel is filling.

        The kernel hands a partly filled block over only when its retire timer
        fires: waiting for that (at most RETIRE_MS, with margin) is what keeps a
        run's last packets in its last snapshot. An empty block is never handed
        over, so with nothing in flight the wait runs out instead.
        """
        blocks = self._take_ready()
        self.kernel.wait_for_retire(RETIRE_MS * 2.5 / 1000)
        return blocks + self._take_ready()

    def _take_ready(self) -> list[RecordBlock]:
        ring = self.kernel.ring
        size = self.kernel.block_size
        blocks = []
        for _ in range(self.kernel.block_count):
            base = self._next_block * size
            _v, _p, status, count, first, length = BLOCK_HEADER.unpack_from(ring, base)
            if not status & TP_STATUS_USER:
                break
            used = max(length, first)
            # one copy, guard included: the bytes after the records may be stale, which is
            # fine, nothing beyond a record's captured length is ever interpreted
            end = base + used + GUARD_BYTES
            data = bytes(
                ring[base:end]
                if end <= base + size
                else ring[base : base + used] + bytes(GUARD_BYTES)
            )
            struct.pack_into("=I", ring, base + BLOCK_STATUS_AT, TP_STATUS_KERNEL)
            self._next_block = (self._next_block + 1) % self.kernel.block_count
            if count:
                blocks.append(self._records(data, count, first))
        return blocks

    def _records(self, data: bytes, count: int, first: int) -> RecordBlock:
        starts = [0] * count
        at = first
        next_offset = NEXT_OFFSET.unpack_from
        for i in range(count):
            starts[i] = at
            at += next_offset(data, at)[0]
        offsets = np.asarray(starts, np.int64)
        hdr = headers_at(data, offsets, RECORD_DTYPE)
        protocol = hdr["sll_protocol"]
        linktype = np.where(
            protocol == 0x0800, LINKTYPE_IPV4, np.where(protocol == 0x86DD, LINKTYPE_IPV6, -1)
        )
        ifindex = hdr["sll_ifindex"].astype(np.int64)
        one = bool((ifindex == ifindex[0]).all())
        for index in (ifindex[:1] if one else distinct(ifindex)).tolist():
            if not self.interfaces.known(index):
                try:
                    self.interfaces.set(index, self.kernel.interface_name(index))
                except OSError:
                    self.interfaces.set(index, f"if{index}")  # gone already
        return RecordBlock(
            data=data,
            offset=offsets + hdr["mac"].astype(np.int64),
            caplen=hdr["snaplen"].astype(np.int64),
            wirelen=hdr["len"].astype(np.int64),
            ts=hdr["sec"].astype(np.float64) + hdr["nsec"].astype(np.float64) * 1e-9,
            linktype=linktype.astype(np.int64),
            iface=ifindex,
            direction=np.where(
                hdr["sll_pkttype"] == PACKET_OUTGOING, Direction.TX, Direction.RX
            ).astype(np.int8),
            pid=np.full(count, -1, np.int64),
            interfaces=self.interfaces,
        )

    def counts(self, wall_offset: float) -> tuple[CounterBatch, RttSamples] | None:
        if self._counter is None:
            return None
        self._learn_interfaces()  # new ones since the last tick, while they still exist
        return self._counter.take(wall_offset)

    def counting(self) -> tuple[str, str, int]:
        if self._counter is None:
            return "packets", self._counting_why, 0
        return "kernel", "", self._counter.overflow()[0]

    def kernel_drops(self) -> int:
        """Packets the kernel dropped because the ring was full, since opening."""
        self._dropped += self.kernel.take_drops()
        return self._dropped

    def close(self) -> None:
        try:
            self.kernel.close()
        finally:
            if self._counter is not None:
                self._counter.close()


class Waker:
    """A pipe in a reader's poll set, so another thread can end the reader's wait:
    readers can then wait long (few wake-ups when idle) and still stop at once."""

    def __init__(self, poll: select.poll) -> None:
        self._read_end, self._write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        poll.register(self._read_end, select.POLLIN)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe is awake already
            os.write(self._write_end, b"\0")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._read_end, 4096)

    def close(self) -> None:
        os.close(self._read_end)
        os.close(self._write_end)


class LinuxFirstPackets:
    """Outgoing TCP SYNs and DNS queries, one by one, as soon as they are sent.

    The ring delivers packets in blocks, up to RETIRE_MS late; a process that
    connects, or asks DNS, and exits within that time would be gone before its
    socket could be looked up. This small socket wakes us per packet instead.
    """

    def __init__(self, interface: str | None = None) -> None:
        device = interface or "all interfaces"
        sock = _packet_socket(device)
        self._sock = sock
        try:
            attach_filter(sock, bpf.first_packets())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if interface:
                sock.bind((interface, ETH_P_ALL))
        except OSError as exc:
            sock.close()
            raise CaptureUnavailable(f"cannot capture on {device}: {exc.strerror}") from None
        sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._waker = Waker(self._poll)

    def read(self, limit: int = 256) -> list[tuple[int, bytes, int, str]]:
        """(link type, packet's first bytes, its length, interface) of what arrived,
        waiting READ_WAIT at most."""
        self._poll.poll(int(READ_WAIT * 1000))
        self._waker.clear()
        found: list[tuple[int, bytes, int, str]] = []
        buffer = bytearray(FIRST_BYTES)
        while len(found) < limit:
            try:
                # MSG_TRUNC: the packet's whole length, though only its headers are copied
                length, address = self._sock.recvfrom_into(buffer, FIRST_BYTES, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            protocol = address[1]
            linktype = LINKTYPE_IPV4 if protocol == 0x0800 else LINKTYPE_IPV6
            found.append((linktype, bytes(buffer[: min(length, FIRST_BYTES)]), length, address[0]))
        return found

    def wake(self) -> None:
        self._waker.wake()

    def close(self) -> None:
        self._sock.close()
        self._waker.close()
