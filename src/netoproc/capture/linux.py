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
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import select
import socket
import struct
import time

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
    headers_at,
)
from netoproc.ebpf import BpfUnavailable
from netoproc.model import Direction

SOL_PACKET = 263
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


class LinuxCapture:
    """All interfaces, or one; call `read` from one thread, `counts` from one thread."""

    def __init__(
        self,
        interface: str | None = None,
        buffer_bytes: int = 2 << 20,
        keep_dns: bool = True,
        kernel_counts: bool = True,
    ) -> None:
        self.interfaces = InterfaceTable()
        device = interface or "all interfaces"
        ifindex = 0
        if interface is not None:
            try:
                ifindex = socket.if_nametoindex(interface)
            except OSError:
                raise CaptureUnavailable(
                    f"cannot capture on {interface}: no such interface "
                    "(see `ip link` for the names on this machine)"
                ) from None
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise CaptureUnavailable(
                f"cannot capture on {device}: opening a packet socket was refused "
                "(needs CAP_NET_RAW)"
            ) from None
        except OSError as exc:
            raise CaptureUnavailable(
                f"cannot capture on {device}: packet socket: {exc.strerror}"
            ) from None
        self._sock = sock
        self._counter: KernelCounts | None = None
        self._counting_why = "turned off (NETOP_EBPF=off)"
        if kernel_counts:
            try:
                self._counter = KernelCounts(self.interfaces)
                self._counter.attach(sock)
            except BpfUnavailable as exc:
                self._counting_why = str(exc)
                if self._counter is not None:
                    self._counter.close()
                    self._counter = None
        try:
            if self._counter is None:
                self._attach_filter(bpf.headers_and_dns(keep_dns))
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
            if ifindex:
                sock.bind((interface, ETH_P_ALL))
        except OSError as exc:
            sock.close()
            if self._counter is not None:
                self._counter.close()
            raise CaptureUnavailable(
                f"cannot capture on {device}: setting up the ring failed: {exc.strerror}"
            ) from None
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self._waker = Waker(self._poll)
        self._learn_interfaces()
        self._next_block = 0
        self.received = 0
        self.dropped = 0

    def _attach_filter(self, program: bytes) -> None:
        code = ctypes.create_string_buffer(program)
        self._filter = code  # the kernel copies it, but keep it alive until then
        fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(code))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _learn_interfaces(self) -> None:
        """Name every interface now: packets the kernel counts name only an index,
        read a tick later, when a short-lived interface may be gone."""
        for index, name in socket.if_nameindex():
            if not self.interfaces.known(index):
                self.interfaces.set(index, name)

    def read(self, timeout: float) -> list[RecordBlock]:
        """Blocks the kernel has finished; waits up to `timeout` seconds for the first."""
        blocks = self._take_ready()
        if not blocks:
            self._poll.poll(int(timeout * 1000))
            self._waker.clear()
            blocks = self._take_ready()
        return blocks

    def wake(self) -> None:
        self._waker.wake()

    def drain(self) -> list[RecordBlock]:
        """Everything captured so far, including the block the kernel is filling."""
        time.sleep(RETIRE_MS * 2.5 / 1000)  # the retire timer hands the open block over
        return self._take_ready()

    def _take_ready(self) -> list[RecordBlock]:
        ring = self._ring
        blocks = []
        for _ in range(self.block_count):
            base = self._next_block * self.block_size
            _v, _p, status, count, first, length = BLOCK_HEADER.unpack_from(ring, base)
            if not status & TP_STATUS_USER:
                break
            used = max(length, first)
            # one copy, guard included: the bytes after the records may be stale, which is
            # fine, nothing beyond a record's captured length is ever interpreted
            end = base + used + GUARD_BYTES
            data = (
                ring[base:end]
                if end <= base + self.block_size
                else ring[base : base + used] + bytes(GUARD_BYTES)
            )
            struct.pack_into("=I", ring, base + BLOCK_STATUS_AT, TP_STATUS_KERNEL)
            self._next_block = (self._next_block + 1) % self.block_count
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
        buf = data
        offsets = np.asarray(starts, np.int64)
        hdr = headers_at(buf, offsets, RECORD_DTYPE)
        protocol = hdr["sll_protocol"]
        linktype = np.where(
            protocol == 0x0800, LINKTYPE_IPV4, np.where(protocol == 0x86DD, LINKTYPE_IPV6, -1)
        )
        ifindex = hdr["sll_ifindex"].astype(np.int64)
        one = bool((ifindex == ifindex[0]).all())
        for index in (ifindex[:1] if one else np.unique(ifindex)).tolist():
            if not self.interfaces.known(index):
                try:
                    self.interfaces.set(index, socket.if_indextoname(index))
                except OSError:
                    self.interfaces.set(index, f"if{index}")  # gone already
        self.received += count
        return RecordBlock(
            data=buf,
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
        stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        _packets, drops, _freeze = struct.unpack("=III", stats)  # reading resets them
        self.dropped += drops
        return self.dropped

    def close(self) -> None:
        try:
            self._ring.close()
        finally:
            self._sock.close()
            self._waker.close()
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
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        except OSError as exc:
            raise CaptureUnavailable(f"cannot capture on {device}: {exc.strerror}") from None
        self._sock = sock
        code = bpf.first_packets()
        program = ctypes.create_string_buffer(code)
        fprog = struct.pack("HxxxxxxQ", len(code) // 8, ctypes.addressof(program))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
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

    def read(self, limit: int = 256) -> list[tuple[int, bytes, str]]:
        """(link type, packet, interface) of what arrived, waiting READ_WAIT at most."""
        self._poll.poll(int(READ_WAIT * 1000))
        self._waker.clear()
        found: list[tuple[int, bytes, str]] = []
        while len(found) < limit:
            try:
                data, address = self._sock.recvfrom(256)
            except BlockingIOError:
                break
            protocol = address[1]
            linktype = LINKTYPE_IPV4 if protocol == 0x0800 else LINKTYPE_IPV6
            found.append((linktype, data, address[0]))
        return found

    def wake(self) -> None:
        self._waker.wake()

    def close(self) -> None:
        self._sock.close()
        self._waker.close()
