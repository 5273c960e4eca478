"""The Linux ring's reader on a recorded ring: blocks in order, wrap-around, drops.

No root and no socket: `RecordedRing` (linux_kernel.py) is the kernel, written
from its headers. What the reader makes of each block is then decoded, so a
packet is followed from the ring's bytes to the flow it belongs to.
"""

from __future__ import annotations

import struct

import numpy as np

from netoproc.capture.linux import RETIRE_MS, LinuxCapture
from netoproc.capture.records import GUARD_BYTES
from netoproc.decode.columnar import decode_block
from netoproc.model import Direction, parse_addr
from tests import builders as b
from tests.capture.linux_kernel import (
    ETH_P_ARP,
    ETH_P_IPV6,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    RecordedRing,
    RingPacket,
)


def udp_packet(sport: int, payload: bytes = b"x", **kw: object) -> RingPacket:
    data = b.ipv4(b.UDP, b.udp(sport, 53, payload), src="10.0.0.1", dst="10.0.0.2")
    return RingPacket(data, **kw)  # type: ignore[arg-type]


def sports(capture: LinuxCapture) -> list[list[int]]:
    """The source port of every packet of every block read now, block by block."""
    return [decode_block(block).sport.tolist() for block in capture.read(0.0)]


def test_a_block_becomes_records_with_the_kernels_fields() -> None:
    ring = RecordedRing()
    capture = LinuxCapture(ring)
    sent = b.ipv6(b.TCP, b.tcp(40000, 443, b"hello"), src="2001:db8::1", dst="2001:db8::2")
    ring.arrive(
        [
            udp_packet(1000, b"q" * 30, ts=(1_700_000_001, 250_000_000), wirelen=4000),
            RingPacket(sent, ifindex=1, outgoing=True, protocol=ETH_P_IPV6, ts=(1_700_000_002, 0)),
        ]
    )
    (block,) = capture.read(0.0)
    assert block.ts.tolist() == [1_700_000_001.25, 1_700_000_002.0]
    assert block.wirelen.tolist() == [4000, len(sent)]
    assert block.caplen.tolist() == [20 + 8 + 30, len(sent)]
    assert block.direction.tolist() == [Direction.RX, Direction.TX]
    assert [block.interfaces.name(i) for i in block.iface.tolist()] == ["eth0", "lo"]
    start, length = int(block.offset[1]), int(block.caplen[1])
    assert block.data[start : start + length] == sent  # the offset points at the IP header
    batch = decode_block(block)
    source = (int(batch.src_hi[1]) << 64) | int(batch.src_lo[1])
    assert source == parse_addr("2001:db8::1")
    assert batch.dport.tolist() == [53, 443]
    assert batch.ip_length.tolist() == [58, len(sent)]  # IP lengths, not the wire's
    assert ring.status(0) == TP_STATUS_KERNEL  # given back at once


def test_blocks_are_read_in_ring_order_and_given_back_across_the_wrap() -> None:
    ring = RecordedRing(block_count=4)
    capture = LinuxCapture(ring)
    ring.arrive([udp_packet(1)], [udp_packet(2), udp_packet(3)], [udp_packet(4)])
    assert sports(capture) == [[1], [2, 3], [4]]
    ring.arrive([udp_packet(5)], [udp_packet(6)], [udp_packet(7)])  # slots 3, 0, 1
    assert ring.filling == 2
    assert sports(capture) == [[5], [6], [7]]
    assert [ring.status(slot) for slot in range(4)] == [TP_STATUS_KERNEL] * 4
    assert sports(capture) == []  # nothing new: the reader stops at the kernel's block


def test_a_full_ring_drops_what_arrives_and_the_drops_add_up() -> None:
    ring = RecordedRing(block_count=2)
    capture = LinuxCapture(ring)
    ring.arrive([udp_packet(1)], [udp_packet(2)], [udp_packet(3), udp_packet(4)])
    assert [ring.status(slot) for slot in range(2)] == [TP_STATUS_USER] * 2
    assert capture.kernel_drops() == 2
    assert sports(capture) == [[1], [2]]
    ring.arrive([udp_packet(5)], [udp_packet(6)], [udp_packet(7)])
    assert capture.kernel_drops() == 3  # since opening, though the kernel resets on reading
    assert capture.kernel_drops() == 3
    assert sports(capture) == [[5], [6]]


def test_an_empty_block_is_given_back_and_yields_nothing() -> None:
    ring = RecordedRing()
    capture = LinuxCapture(ring)
    ring.arrive([], [udp_packet(9)])
    assert sports(capture) == [[9]]
    assert ring.status(0) == ring.status(1) == TP_STATUS_KERNEL


def test_a_block_filled_to_its_end_still_has_guard_bytes() -> None:
    ring = RecordedRing(block_size=4096)
    capture = LinuxCapture(ring)
    packets = [udp_packet(n, b"z" * 1100) for n in range(3)]  # ~3.6 KiB: the guard overhangs
    ring.arrive(packets)
    (block,) = capture.read(0.0)
    end = int(block.offset[-1] + block.caplen[-1])
    assert len(block.data) >= end + GUARD_BYTES
    assert decode_block(block).sport.tolist() == [0, 1, 2]


def test_reading_waits_only_when_nothing_is_ready_and_what_arrives_meanwhile_is_read() -> None:
    ring = RecordedRing()
    capture = LinuxCapture(ring)
    ring.arrive([udp_packet(1)])
    assert sports(capture) == [[1]]
    assert ring.waits == []  # a block was ready: no wait
    ring.later.append([udp_packet(2)])
    assert [decode_block(b).sport.tolist() for b in capture.read(0.5)] == [[2]]
    assert ring.waits == [("wait", 0.5)]
    capture.wake()
    assert ring.woken == 1


def test_draining_waits_for_the_open_block_to_be_retired() -> None:
    ring = RecordedRing()
    capture = LinuxCapture(ring)
    ring.arrive([udp_packet(1)])
    ring.later.append([udp_packet(2)])  # the block the kernel was filling, retired on its timer
    drained = capture.drain()
    assert [decode_block(block).sport.tolist() for block in drained] == [[1], [2]]
    ((what, timeout),) = ring.waits
    assert what == "retire" and RETIRE_MS / 1000 < timeout < 0.1


def test_interfaces_are_named_at_once_and_a_vanished_one_by_its_index() -> None:
    ring = RecordedRing(names={1: "lo", 2: "eth0", 7: "veth7"}, gone=frozenset({9}))
    capture = LinuxCapture(ring)
    assert capture.interfaces.known(7)  # learnt on opening, before any packet names it
    ring.names[5] = "wg0"  # appeared later: named when a packet first names it
    ring.arrive([udp_packet(1, ifindex=5), udp_packet(2, ifindex=9), udp_packet(3, ifindex=5)])
    (block,) = capture.read(0.0)
    assert [block.interfaces.name(i) for i in block.iface.tolist()] == ["wg0", "if9", "wg0"]


def test_a_packet_that_is_not_ip_is_marked_so() -> None:
    ring = RecordedRing()
    capture = LinuxCapture(ring)
    ring.arrive([RingPacket(bytes(28), protocol=ETH_P_ARP), udp_packet(4)])
    (block,) = capture.read(0.0)
    assert block.linktype.tolist()[0] == -1
    assert int(np.count_nonzero(decode_block(block).sport == 4)) == 1


def test_closing_closes_the_kernels_side_and_no_counts_without_a_counter() -> None:
    ring = RecordedRing()
    capture = LinuxCapture(ring, counting_why="no eBPF here")
    assert capture.counts(0.0) is None
    assert capture.counting() == ("packets", "no eBPF here", 0)
    capture.close()
    assert ring.closed


def test_the_recorded_block_is_what_the_headers_say() -> None:
    """The recorded ring's own layout, against the uapi sizes it is written from."""
    ring = RecordedRing()
    ring.arrive([udp_packet(1), udp_packet(2)])
    version, priv, status, count, first, length = struct.unpack_from("<6I", ring.ring, 0)
    assert (version, priv, status, count, first) == (3, 48, TP_STATUS_USER, 2, 48)
    next_offset = struct.unpack_from("<I", ring.ring, first)[0]
    assert (
        next_offset % 16 == 0 and struct.unpack_from("<I", ring.ring, first + next_offset)[0] == 0
    )
    assert length == first + 2 * next_offset
