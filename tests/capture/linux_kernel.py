"""A recorded Linux packet ring for the capture's reader: TPACKET_V3 blocks built by hand.

Everything here is written from the kernel's headers and documentation, never
from netoproc's own tables: `struct tpacket_block_desc` (version, offset_to_priv,
then `struct tpacket_hdr_v1`: block_status @8, num_pkts @12,
offset_to_first_pkt @16, blk_len @20, seq_num @24, ts_first_pkt @32,
ts_last_pkt @40; 48 bytes), `struct tpacket3_hdr` (tp_next_offset, tp_sec,
tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac, tp_net, hv1, padding; 48
bytes) followed by `struct sockaddr_ll` (family, protocol in network order,
ifindex, hatype, pkttype, halen, addr[8]), all from include/uapi/linux/if_packet.h
and include/uapi/linux/if_ether.h; TP_STATUS_KERNEL 0 and TP_STATUS_USER 1;
TPACKET_ALIGNMENT 16; and Documentation/networking/packet_mmap.rst: the kernel
fills blocks in ring order, hands each over by setting TP_STATUS_USER, and the
reader gives it back by writing TP_STATUS_KERNEL. When the block it would fill
next is still the reader's, the kernel drops packets and counts them
(PACKET_STATISTICS' tp_drops, reset by reading).
"""

from __future__ import annotations

import errno
import struct
from collections import deque
from dataclasses import dataclass

TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
TPACKET_ALIGNMENT = 16
BLOCK_DESC = 48  # sizeof(struct tpacket_block_desc), already a multiple of 8
TPACKET3_HDR = 48
SOCKADDR_LL = 20
# SOCK_DGRAM: the network header right after the headers, aligned (af_packet.c tpacket_rcv:
# netoff = TPACKET_ALIGN(tp_hdrlen + 16), tp_hdrlen = TPACKET_ALIGN(48) + sizeof(sockaddr_ll))
NETWORK_AT = -(-(TPACKET3_HDR + SOCKADDR_LL + 16) // TPACKET_ALIGNMENT) * TPACKET_ALIGNMENT
ETH_P_IP, ETH_P_IPV6, ETH_P_ARP = 0x0800, 0x86DD, 0x0806
PACKET_HOST, PACKET_OUTGOING = 0, 4
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772


def _align(n: int) -> int:
    return -(-n // TPACKET_ALIGNMENT) * TPACKET_ALIGNMENT


@dataclass(frozen=True)
class RingPacket:
    """One packet as the kernel writes it into a block (snaplen: what it copied)."""

    data: bytes
    ifindex: int = 2
    outgoing: bool = False
    protocol: int = ETH_P_IP
    ts: tuple[int, int] = (1_700_000_000, 0)  # seconds, nanoseconds
    wirelen: int | None = None

    def frame(self, last: bool) -> bytes:
        """tpacket3_hdr, sockaddr_ll, the packet at NETWORK_AT, padded to the alignment."""
        size = _align(NETWORK_AT + len(self.data))
        header = struct.pack(
            "<IIIIIIHH12x8x",
            0 if last else size,  # tp_next_offset: 0 ends the block
            *self.ts,
            len(self.data),
            len(self.data) if self.wirelen is None else self.wirelen,
            TP_STATUS_USER,
            NETWORK_AT,  # tp_mac: a cooked socket has no link header
            NETWORK_AT,
        )
        address = struct.pack(
            "<H2siHBB8s",
            17,  # AF_PACKET
            self.protocol.to_bytes(2, "big"),  # sll_protocol: network order
            self.ifindex,
            ARPHRD_LOOPBACK if self.ifindex == 1 else ARPHRD_ETHER,
            PACKET_OUTGOING if self.outgoing else PACKET_HOST,
            6,
            bytes(8),
        )
        frame = (header + address).ljust(NETWORK_AT, b"\0") + self.data
        return frame.ljust(size, b"\0")


def block(packets: list[RingPacket], size: int, seq: int = 1) -> bytes:
    """A whole block as the kernel hands it over: descriptor, then the packets."""
    frames = b"".join(p.frame(i == len(packets) - 1) for i, p in enumerate(packets))
    first_ts = packets[0].ts if packets else (0, 0)
    last_ts = packets[-1].ts if packets else (0, 0)
    descriptor = struct.pack(
        "<IIIIIIQIIII",
        3,  # TPACKET_V3
        BLOCK_DESC,  # offset_to_priv: no private area
        TP_STATUS_USER,
        len(packets),
        BLOCK_DESC,
        BLOCK_DESC + len(frames),  # blk_len counts from the block's start
        seq,
        *first_ts,
        *last_ts,
    )
    body = descriptor + frames
    assert len(body) <= size, f"{len(packets)} packets do not fit a {size}-byte block"
    # what the kernel left in the rest of the block from earlier rounds: anything
    return body + b"\xa5" * (size - len(body))


class RecordedRing:
    """A `RingKernel` whose kernel hands over the blocks a test gives it.

    `arrive` is the kernel filling blocks: each goes into the next slot of the
    ring if the reader has given that slot back, or is dropped and its packets
    counted. `wait` and `wait_for_retire` let the blocks queued with `later`
    arrive, as if the kernel had handed them over during the wait.
    """

    def __init__(
        self,
        *,
        block_size: int = 4096,
        block_count: int = 4,
        names: dict[int, str] | None = None,
        gone: frozenset[int] = frozenset(),
    ) -> None:
        self.block_size, self.block_count = block_size, block_count
        self._ring = bytearray(block_size * block_count)
        self.names = {1: "lo", 2: "eth0"} if names is None else names
        self.gone = gone  # indexes the kernel names in packets but no longer knows
        self.filling = 0  # the slot the kernel fills next
        self.seq = 0
        self.drops = 0  # since the last take_drops
        self.later: deque[list[RingPacket]] = deque()
        self.waits: list[tuple[str, float]] = []
        self.woken = 0
        self.closed = False

    @property
    def ring(self) -> bytearray:
        return self._ring

    def status(self, slot: int) -> int:
        return int(struct.unpack_from("<I", self._ring, slot * self.block_size + 8)[0])

    def arrive(self, *blocks: list[RingPacket]) -> None:
        for packets in blocks:
            base = self.filling * self.block_size
            if self.status(self.filling) != TP_STATUS_KERNEL:
                self.drops += len(packets)  # the reader still has this block: no room
                continue
            self.seq += 1
            self._ring[base : base + self.block_size] = block(packets, self.block_size, self.seq)
            self.filling = (self.filling + 1) % self.block_count

    def wait(self, timeout: float) -> None:
        self.waits.append(("wait", timeout))
        if self.later:
            self.arrive(self.later.popleft())

    def wait_for_retire(self, timeout: float) -> None:
        self.waits.append(("retire", timeout))
        if self.later:
            self.arrive(self.later.popleft())

    def wake(self) -> None:
        self.woken += 1

    def take_drops(self) -> int:
        drops, self.drops = self.drops, 0
        return drops

    def interface_name(self, index: int) -> str:
        if index in self.gone or index not in self.names:
            raise OSError(errno.ENXIO, "no such device")
        return self.names[index]

    def interfaces(self) -> list[tuple[int, str]]:
        return sorted(self.names.items())

    def close(self) -> None:
        self.closed = True
