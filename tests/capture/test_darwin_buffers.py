"""BPF read buffers, as a Mac's kernel fills them, to decoded packets.

Buffers are assembled by `darwin_kernel.bpf_record` from the documented
`bpf_hdr` layout (docs/MACOS.md §2.1/§2.2) around tcpdump's PKTAP reference
captures and around frames from `tests.builders` (PKTAP headers from xnu's
pktap.h). Expected values come from tcpdump's reading of the captures
(`tests.witness`), from the header bytes at docs/MACOS.md's offsets, and
from the scalar decoder, which is the reference for every PKTAP record.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netoproc.capture import bpf_darwin
from netoproc.capture.darwin import pktap_block, plain_block
from netoproc.capture.records import (
    LINKTYPE_PKTAP,
    LINKTYPE_USER2_PKTAP,
    InterfaceTable,
    build_block,
)
from netoproc.decode.batch import PacketBatch
from netoproc.decode.columnar import decode_block
from netoproc.model import Direction, format_addr
from tests import builders as b
from tests.capture.darwin_kernel import (
    CAPTURES,
    DLT_EN10MB,
    DLT_NULL,
    DLT_RAW,
    bpf_buffer,
    bpf_record,
    pcap_records,
    run_filter,
)
from tests.decode.strategies import ipv4_packets, ipv6_packets
from tests.witness import tcpdump_packets

TCP_SYN = b.ipv4(b.TCP, b.tcp(50000, 443, flags=b.SYN), src="192.0.2.10", dst="198.51.100.7")
DNS_QUERY = b.udp(53000, 53, bytes(12) + b"\x07example\x03com\x00\x00\x01\x00\x01")
DNS_V6 = b.ipv6(b.UDP, DNS_QUERY, src="fe80::1", dst="fe80::53")


def _cut_to_105_bytes(record: bytes) -> bytes:
    """A 108-byte v1 header whose pth_length now ends right after pth_ecomm (88 + 17):
    the decoder's minimum, shorter than any kernel writes."""
    assert int.from_bytes(record[:4], "little") == 108
    return (105).to_bytes(4, "little") + record[4:105] + record[108:]


def _decode(buffer: bytes) -> PacketBatch:
    return decode_block(pktap_block(buffer, InterfaceTable()))


def _addresses(batch: PacketBatch, which: str) -> list[str]:
    high, low = batch.column(f"{which}_hi").tolist(), batch.column(f"{which}_lo").tolist()
    return [format_addr(h << 64 | lo) for h, lo in zip(high, low, strict=True)]


def _names(batch: PacketBatch) -> list[str]:
    return [batch.interfaces.name(i) for i in batch.iface.tolist()]


# -- walking the buffer --------------------------------------------------------


def test_records_are_found_at_their_word_aligned_starts() -> None:
    records = [bpf_record(bytes(n), hdrlen=h) for n, h in [(1, 18), (2, 20), (75, 18), (4, 20)]]
    buffer = bpf_buffer(*records)
    expected = list(np.cumsum([0] + [len(r) for r in records[:-1]]))
    assert bpf_darwin.record_starts(buffer, len(buffer)) == expected
    # 18 + 1 -> 20, 20 + 2 -> 24, 18 + 75 -> 96: the padding docs/MACOS.md §2.2 describes
    assert expected == [0, 20, 44, 140]


@pytest.mark.parametrize("cut", [1, 17, 30])
def test_a_buffer_cut_inside_a_record_keeps_the_records_before_it(cut: int) -> None:
    first, second = bpf_record(b"x" * 10), bpf_record(b"y" * 40)
    buffer = first + second[:cut]
    with pytest.raises(bpf_darwin.BpfBufferError, match=f"at byte {len(first)}") as raised:
        bpf_darwin.record_starts(buffer, len(buffer))
    assert raised.value.starts == [0]


def test_a_header_length_below_the_bpf_header_is_garbage() -> None:
    buffer = bpf_record(b"x" * 8, hdrlen=20)
    buffer = buffer[:16] + struct.pack("<H", 4) + buffer[18:]
    with pytest.raises(bpf_darwin.BpfBufferError, match="header 4"):
        bpf_darwin.record_starts(buffer, len(buffer))


def test_a_cut_buffer_still_gives_its_whole_records() -> None:
    whole = bpf_record(b.pktap_v1(b.ethernet(TCP_SYN), pid=7, flags=b.PTH_FLAG_DIR_OUT))
    batch = _decode(whole + whole[:30])
    assert list(batch.pid) == [7]


# -- PKTAP ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["LINKTYPE_PKTAP.pcap", "LINKTYPE_USER2_PKTAP.pcap"])
def test_tcpdumps_pktap_captures_in_a_bpf_buffer(name: str) -> None:
    """tcpdump's PKTAP samples, three times over in one buffer.

    tcpdump reads the frame; the header bytes at docs/MACOS.md §1.3's offsets give
    the rest: ifname "en0" at 12, flags 0x2 (PTH_FLAG_DIR_OUT) at 36, pid
    0x200 = 512 at 52 and an all-zero pth_comm at 56 (no name).
    """
    ((sec, usec, data, length),) = pcap_records(name)
    assert data[12:16] == b"en0\0" and data[36:40] == b"\x02\0\0\0"
    assert data[52:56] == b"\x00\x02\x00\x00" and data[56:73] == bytes(17)
    buffer = bpf_buffer(*[bpf_record(data, ts=(sec, usec), datalen=length)] * 3)
    batch = _decode(buffer)
    (wire,) = tcpdump_packets(CAPTURES / name)
    assert len(batch) == 3
    assert list(batch.pid) == [512] * 3 and batch.process_names == {}
    assert _names(batch) == ["en0"] * 3
    assert list(batch.direction) == [Direction.TX] * 3
    assert _addresses(batch, "src") == [wire.src] * 3
    assert _addresses(batch, "dst") == [wire.dst] * 3
    assert (batch.sport.tolist(), batch.dport.tolist()) == ([wire.sport] * 3, [wire.dport] * 3)
    assert batch.ip_length.tolist() == [wire.length] * 3
    assert batch.ts.tolist() == [wire.ts] * 3
    assert len(batch.dns) == 3  # the query is kept whole: the DNS observatory reads it


def test_tcpdumps_corrupt_pktap_capture_is_counted_not_fatal() -> None:
    """pktap-heap-overflow.pcap: tcpdump prints "(pkt_len too small, 0 < 108) (invalid)"
    for the first record and "[|ppp_hdlc]" (truncated) for the second: nothing to decode."""
    records = pcap_records("pktap-heap-overflow.pcap")
    buffer = bpf_buffer(*[bpf_record(d, ts=(s, u), datalen=n) for s, u, d, n in records])
    block = pktap_block(buffer, InterfaceTable())
    assert list(block.linktype) == [LINKTYPE_USER2_PKTAP] * 2  # left to the scalar decoder
    batch = decode_block(block)
    assert len(batch) == 0
    assert (batch.counts.records, batch.counts.malformed + batch.counts.not_ip) == (2, 2)


def test_v1_and_v2_loopback_and_delegated_records_in_one_buffer() -> None:
    records = [
        b.pktap_v1(b.ethernet(TCP_SYN), ifname="en0", flags=b.PTH_FLAG_DIR_OUT, pid=501,
                   comm="curl"),
        b.pktap_v2(b.ethernet(TCP_SYN), ifname="utun3", flags=b.PTH_FLAG_DIR_IN, pid=88,
                   comm="ssh"),
        # loopback: DLT_NULL with the 4-byte family in host order (docs/MACOS.md §1.6)
        b.pktap_v1(b.null(DNS_V6), dlt=DLT_NULL, ifname="lo0", flags=b.PTH_FLAG_DIR_OUT,
                   pid=77, comm="mDNSResponder"),
        b.pktap_v1(b.ethernet(TCP_SYN), ifname="en0",
                   flags=b.PTH_FLAG_DIR_OUT | b.PTH_FLAG_PROC_DELEGATED, pid=77,
                   comm="mDNSResponder", epid=4321, ecomm="Safari"),
        b.pktap_v2(TCP_SYN, dlt=DLT_RAW, ifname="utun4", flags=b.PTH_FLAG_DIR_IN, pid=-1),
    ]  # fmt: skip
    batch = _decode(bpf_buffer(*map(bpf_record, records)))
    assert batch.pid.tolist() == [501, 88, 77, 4321, -1]
    assert _names(batch) == ["en0", "utun3", "lo0", "en0", "utun4"]
    assert batch.direction.tolist() == [Direction.TX, Direction.RX, Direction.TX, Direction.TX,
                                        Direction.RX]  # fmt: skip
    assert batch.process_names == {501: "curl", 88: "ssh", 77: "mDNSResponder", 4321: "Safari"}
    assert batch.dport.tolist() == [443, 443, 53, 443, 443]
    assert batch.ip_length.tolist() == [len(TCP_SYN), len(TCP_SYN), len(DNS_V6),
                                        len(TCP_SYN), len(TCP_SYN)]  # fmt: skip
    assert batch.counts.malformed == batch.counts.not_ip == 0


def test_pktap_headers_are_stripped_by_their_length_not_a_fixed_size() -> None:
    lengths = [108, 156, 200]
    records = [bpf_record(b.pktap_v1(b.ethernet(TCP_SYN), pid=n, length=n)) for n in lengths]
    block = pktap_block(bpf_buffer(*records), InterfaceTable())
    starts = np.cumsum([0] + [len(r) for r in records[:-1]])
    assert (
        block.offset.tolist() == (starts + 20 + lengths).tolist()
    )  # bh_hdrlen 20, docs/MACOS.md §2.1
    assert decode_block(block).pid.tolist() == lengths


def test_the_moved_ipproto_field_is_never_trusted() -> None:
    """xnu-11417 moved pth_ipproto to 73 (docs/MACOS.md §1.3); garbage there changes nothing."""
    record = bytearray(b.pktap_v1(b.ethernet(TCP_SYN), pid=9))
    record[73] = 17  # "UDP"
    record[112:116] = b"\x11\0\0\0"  # the old location
    batch = _decode(bpf_record(bytes(record)))
    assert (batch.proto.tolist(), batch.dport.tolist()) == ([6], [443])


def test_records_the_fast_path_cannot_vouch_for_go_to_the_scalar_decoder() -> None:
    odd_length = _cut_to_105_bytes(b.pktap_v1(b.ethernet(TCP_SYN), pid=5, comm="odd", length=108))
    ppp = b.pktap_v1(TCP_SYN, dlt=9, pid=6)  # DLT_PPP: not decoded
    block = pktap_block(bpf_buffer(bpf_record(odd_length), bpf_record(ppp)), InterfaceTable())
    assert block.linktype.tolist() == [LINKTYPE_USER2_PKTAP] * 2
    batch = decode_block(block)
    assert (batch.pid.tolist(), batch.process_names) == ([5], {5: "odd"})
    assert batch.counts.not_ip == 1


@st.composite
def pktap_records(draw: st.DrawFn) -> tuple[bytes, int]:
    packet, extra = draw(st.one_of(ipv4_packets(), ipv6_packets()))
    dlt, inner = draw(
        st.sampled_from([(1, b.ethernet(packet)), (0, b.null(packet)), (12, packet), (9, packet)])
    )
    ifname = draw(st.sampled_from(["en0", "utun2", "lo0", "bridge100"]))
    flags, pid = draw(st.integers(0, 7)), draw(st.sampled_from([-1, 0, 1, 501, 77]))
    epid = draw(st.sampled_from([-1, 0, 4321]))
    if draw(st.booleans()):
        length = draw(st.sampled_from([156, 108, 105, 160]))
        record = b.pktap_v1(
            inner, dlt=dlt, ifname=ifname, flags=flags, pid=pid, epid=epid,
            comm=draw(st.sampled_from(["", "curl"])), ecomm=draw(st.sampled_from(["", "Safari"])),
            length=max(108, length),
        )  # fmt: skip
        record = _cut_to_105_bytes(record) if length == 105 else record
    else:
        record = b.pktap_v2(
            inner, dlt=dlt, ifname=ifname, flags=flags, pid=pid, epid=epid,
            comm=draw(st.sampled_from([None, "", "curl"])),
            ecomm=draw(st.sampled_from([None, "Safari"])),
        )  # fmt: skip
    wire = len(record) + extra
    if draw(st.integers(0, 5)) == 5:
        record = record[: draw(st.integers(0, len(record)))]
    return record, wire


@settings(max_examples=100, deadline=None)
@given(st.lists(pktap_records(), min_size=1, max_size=6))
def test_unwrapping_agrees_with_the_scalar_decoder(records: list[tuple[bytes, int]]) -> None:
    """The capture's columnar PKTAP reading gives what the scalar decoder gives
    for the same records handed over whole."""
    buffer = bpf_buffer(*[bpf_record(r, ts=(100, i), datalen=w) for i, (r, w) in
                          enumerate(records)])  # fmt: skip
    ours = decode_block(pktap_block(buffer, InterfaceTable()))
    reference = decode_block(
        build_block(
            [r for r, _ in records],
            ts=[100 + i * 1e-6 for i in range(len(records))],
            linktype=LINKTYPE_PKTAP,
            wirelen=[w for _, w in records],
        )
    )
    assert ours.counts == reference.counts
    for name in ("pid", "direction", "proto", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport",
                 "dport", "ip_length", "transport", "tcp_flags", "payload_length"):  # fmt: skip
        assert ours.column(name).tolist() == reference.column(name).tolist(), name
    assert _names(ours) == _names(reference)
    assert np.allclose(ours.ts, reference.ts)
    assert ours.dns == reference.dns
    # The capture names a pid from any header; the decoder only from packets it decoded.
    for pid in set(reference.pid.tolist()):
        if pid in reference.process_names:
            assert ours.process_names.get(pid) == reference.process_names[pid]


# -- plain BPF (the fallback) ----------------------------------------------------

MAC = bytes.fromhex("a483e7000001")
OTHER = bytes.fromhex("02aabbccddee")


def test_plain_ethernet_direction_comes_from_our_hardware_address() -> None:
    reply = b.ipv4(b.TCP, b.tcp(443, 50000, flags=b.SYN | b.ACK), src="198.51.100.7",
                   dst="192.0.2.10")  # fmt: skip
    sent = b.ethernet(TCP_SYN, src=MAC, dst=OTHER)
    received = b.ethernet(reply, src=OTHER, dst=MAC)
    interfaces = InterfaceTable({4: "en0"})
    buffer = bpf_buffer(bpf_record(sent, hdrlen=18), bpf_record(received, hdrlen=18))
    batch = decode_block(
        plain_block(buffer, interfaces, ifindex=4, dlt=DLT_EN10MB, hardware_address=MAC)
    )
    assert batch.direction.tolist() == [Direction.TX, Direction.RX]
    assert _names(batch) == ["en0", "en0"] and batch.pid.tolist() == [-1, -1]
    assert _addresses(batch, "src") == ["192.0.2.10", "198.51.100.7"]
    assert _addresses(batch, "dst") == ["198.51.100.7", "192.0.2.10"]
    assert (batch.sport.tolist(), batch.dport.tolist()) == ([50000, 443], [443, 50000])
    assert batch.proto.tolist() == [6, 6] and batch.ip_length.tolist() == [40, 40]


@pytest.mark.parametrize(
    ("dlt", "frame"), [(DLT_NULL, b.null(DNS_V6)), (DLT_RAW, TCP_SYN)], ids=["lo0", "utun"]
)
def test_plain_loopback_and_raw_frames(dlt: int, frame: bytes) -> None:
    buffer = bpf_buffer(bpf_record(frame, hdrlen=20), bpf_record(frame, hdrlen=20))
    batch = decode_block(plain_block(buffer, InterfaceTable({1: "x"}), ifindex=1, dlt=dlt))
    assert batch.direction.tolist() == [Direction.UNKNOWN] * 2  # the engine orients these
    assert batch.ip_length.tolist() == [len(frame) - (4 if dlt == DLT_NULL else 0)] * 2


FILTER_CASES = [
    # (packet, what the kernel should keep): headers only, DNS whole, non-IP nothing
    (b.ipv4(b.UDP, DNS_QUERY), "whole"),
    (b.ipv4(b.UDP, b.udp(53, 40000, bytes(300))), "whole"),
    (b.ipv4(b.TCP, b.tcp(40000, 443, bytes(1000))), "v4"),
    (b.ipv4(b.TCP, b.tcp(40000, 53, bytes(1000)), options=bytes(8)), "whole"),
    (b.ipv4(b.UDP, b.udp(40000, 53), offset=64), "v4"),  # a later fragment: no ports
    (b.ipv4(b.ICMP, b.icmp()), "v4"),
    (b.ipv6(b.UDP, DNS_QUERY), "whole"),
    (b.ipv6(b.TCP, b.tcp(40000, 443, bytes(1000))), "v6"),
]


@pytest.mark.parametrize("keep_dns", [True, False])
@pytest.mark.parametrize(("packet", "keep"), FILTER_CASES)
@pytest.mark.parametrize(
    ("dlt", "frame_of", "link"),
    [
        (DLT_EN10MB, b.ethernet, 14),
        (DLT_NULL, b.null, 4),
        (DLT_NULL, lambda p: b.null(p, big_endian=True), 4),
        (DLT_RAW, lambda p: p, 0),
    ],
    ids=["ethernet", "null", "null-other-order", "raw"],
)
def test_plain_bpf_filter_keeps_headers_and_dns(
    dlt: int, frame_of: object, link: int, packet: bytes, keep: str, keep_dns: bool
) -> None:
    assert callable(frame_of)
    program = bpf_darwin.headers_and_dns(dlt, keep_dns)
    snap = run_filter(program, frame_of(packet))
    if keep == "whole" and not keep_dns:
        keep = "v6" if packet[0] >> 4 == 6 else "v4"
    # snap lengths: 128 header bytes for IPv4, 256 for IPv6, 0x40000 whole (as on Linux)
    assert snap == {"whole": 0x40000, "v4": link + 128, "v6": link + 256}[keep]


@pytest.mark.parametrize(
    ("dlt", "frame"),
    [
        (DLT_EN10MB, b.ethernet(b"\0" * 28, ethertype=b.ETHERTYPE_ARP)),
        (DLT_NULL, (7).to_bytes(4, "little") + TCP_SYN),
        (DLT_RAW, b"\x50" + TCP_SYN[1:]),
    ],
)
def test_plain_bpf_filter_drops_what_is_not_ip(dlt: int, frame: bytes) -> None:
    assert run_filter(bpf_darwin.headers_and_dns(dlt), frame) == 0
