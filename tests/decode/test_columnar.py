"""The columnar decoder agrees with the scalar decoder, row by row and column by column.

The scalar decoder is the reference: `expected` runs it on every record and
merges what it finds with what the block knew, as documented for PacketBatch
(a header's interface, direction and pid win over the source's). Agreement
means the same rows (the records that decode as IP, in record order), equal
values in every column, the same DNS payloads and process names, and counts
that add up: every record is a packet, malformed or not IP.

Inputs: (a) every tcpdump reference capture; (b) hypothesis blocks of
valid-ish packets over every link type we read, with IPv4 options,
fragments and TSO, IPv6 extension headers, jumbograms and BIG TCP, several
transports and truncated captures; (c) random bytes, and bit flips and cuts
of the reference captures' records.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netoproc.capture import records as lt
from netoproc.capture.pcapfile import open_capture_file
from netoproc.capture.records import InterfaceTable, RecordBlock, build_block
from netoproc.decode.batch import COLUMNS, PacketBatch
from netoproc.decode.columnar import decode_block
from netoproc.decode.scalar import Malformed, Packet, decode_record
from netoproc.model import Direction
from tests import builders as b
from tests.decode.strategies import LINKTYPES, framed

CAPTURES = Path(__file__).parents[1] / "data" / "captures" / "tcpdump"
MASK64 = (1 << 64) - 1
FAST = settings(
    max_examples=120, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def expected(block: RecordBlock) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The batch the scalar decoder implies: columns, and dns / names / counts."""
    cols: dict[str, list[Any]] = {name: [] for name, _ in COLUMNS}
    names = dict(block.process_names)
    dns: list[tuple[int, bytes]] = []
    malformed = not_ip = portless = 0
    for i in range(len(block)):
        start, cap = int(block.offset[i]), int(block.caplen[i])
        try:
            packet = decode_record(
                block.data, start, cap, int(block.wirelen[i]), int(block.linktype[i])
            )
        except Malformed:
            malformed += 1
            continue
        if packet is None:
            not_ip += 1
            continue
        assert isinstance(packet, Packet)
        portless += not packet.transport
        if packet.ifindex >= 0:
            iface = packet.ifindex
        elif packet.ifname:
            iface = block.interfaces.intern(packet.ifname)
        else:
            iface = int(block.iface[i])
        if packet.pid >= 0 and packet.comm:
            names[packet.pid] = packet.comm
        values = {
            "ts": float(block.ts[i]),
            "iface": iface,
            "direction": packet.direction or int(block.direction[i]),
            "pid": packet.pid if packet.pid >= 0 else int(block.pid[i]),
            "src_hi": packet.src >> 64, "src_lo": packet.src & MASK64,
            "dst_hi": packet.dst >> 64, "dst_lo": packet.dst & MASK64,
        }  # fmt: skip
        for name, _ in COLUMNS:
            cols[name].append(values[name] if name in values else getattr(packet, name))
        on_53 = 53 in (packet.sport, packet.dport)
        if on_53 and packet.payload_offset >= 0 and packet.payload_length > 0:
            end = min(packet.payload_offset + packet.payload_length, start + cap)
            dns.append((len(cols["ts"]) - 1, block.data[packet.payload_offset : end]))
    counts = {"records": len(block), "malformed": malformed, "not_ip": not_ip, "portless": portless}
    return cols, {"dns": tuple(dns), "names": names, "counts": counts}


def assert_agrees(block: RecordBlock) -> PacketBatch:
    batch = decode_block(block, small=0)  # the arrays, however small the block
    small = decode_block(block, small=len(block))  # record by record
    for name, _ in COLUMNS:
        assert np.array_equal(batch.column(name), small.column(name)), name
    assert (batch.dns, batch.counts) == (small.dns, small.counts)
    cols, other = expected(block)
    for name, dtype in COLUMNS:
        got = batch.column(name)
        assert got.dtype == dtype, name
        want = np.asarray(cols[name], dtype=dtype) if cols[name] else np.zeros(0, dtype)
        assert np.array_equal(got, want), f"column {name}: {got.tolist()} != {want.tolist()}"
    assert batch.dns == other["dns"]
    assert dict(batch.process_names) == other["names"]
    counts = batch.counts
    assert (counts.records, counts.malformed, counts.not_ip, counts.portless) == tuple(
        other["counts"].values()
    )
    assert counts.malformed + counts.not_ip + len(batch) == len(block)
    assert decode_block(block, dns_payloads=False, small=0).dns == ()
    return batch


# -- (a) reference captures ------------------------------------------------------------


@cache
def reference_blocks() -> tuple[RecordBlock, ...]:
    blocks: list[RecordBlock] = []
    for path in sorted(CAPTURES.iterdir()):
        if path.suffix in (".pcap", ".pcapng"):
            capture = open_capture_file(str(path))
            blocks.extend(capture.blocks())
            capture.close()
    return tuple(blocks)


def test_reference_captures() -> None:
    blocks = reference_blocks()
    assert len(blocks) >= 70
    rows = sum(len(assert_agrees(block)) for block in blocks)
    assert rows > 200  # most reference records are IP packets


def test_reference_records_all_in_one_block() -> None:
    """Mixed link types in one block take the per-link-type path."""
    frames, linktypes, wirelens = zip(*reference_records(), strict=True)
    block = build_block(
        list(frames), ts=[float(i) for i in range(len(frames))], linktype=list(linktypes),
        wirelen=list(wirelens),
    )  # fmt: skip
    assert len(np.unique(block.linktype)) >= 6
    assert_agrees(block)


# -- (b) crafted and generated packets ----------------------------------------------

PLAIN = (
    b.ipv4(b.TCP, b.tcp(53, 40000, b"\0\x0edns-over-tcp..", flags=b.SYN | b.ACK, seq=5, ack=6)),
    b.ipv4(b.UDP, b.udp(40000, 53, b"query"), options=b"\x94\x04\0\0"),
    b.ipv6(b.UDP, b.udp(53, 5353, b"answer")),
    b.ipv6(b.TCP, b.tcp(443, 40001, b"data", options=bytes(12)), ext=[b.routing()]),
    b.ipv4(b.ICMP, b.icmp()),
)

# Each one fails one check of the fast path's masks (the scalar decoder has the last word).
BROKEN = (
    b.ipv4(b.TCP, b.tcp(1, 2, data_offset=15)),  # TCP header longer than the segment
    b.ipv6(b.TCP, b.tcp(1, 2, b"x" * 8, data_offset=4)),  # TCP header shorter than 20
    b.ipv4(b.UDP, b.udp(1, 53, b"q"), total_length=19),  # total length below the header
    b.ipv4(b.UDP, b.udp(1, 53, b"q"), total_length=100),  # total length beyond the wire
    b.ipv4(b.UDP, b.udp(1, 53, b"q"), ihl=4),
    b.ipv4(b.UDP, b.udp(1, 53, b"q"), version=6),
    b.ipv6(b.UDP, b.udp(1, 53, b"q"), payload_length=100),
    b.ipv6(b.UDP, b.udp(1, 53, b"q"), version=4),
    b.ipv4(b.UDP, b"\0\1\0"),  # UDP shorter than its header
    b.ipv4(b.UDP, b.udp(1, 53, b"q"), total_length=24),  # ... by the IP length only
    b.ipv6(b.TCP, b.tcp(1, 2), payload_length=12),
    b.ipv6(b.TCP, b.tcp(1, 2)[:12]),
)


def link_variants(packet: bytes) -> list[tuple[bytes, int]]:
    """`packet` in every link header we read, with each header field's values."""
    v6 = packet[0] >> 4 == 6
    families = (10, 24, 28, 30) if v6 else (2,)
    return [
        (b.ethernet(packet), lt.LINKTYPE_ETHERNET),
        (b.ethernet(packet, vlans=[5, 6]), lt.LINKTYPE_ETHERNET),
        *((b.sll(packet, pkttype=t), lt.LINKTYPE_LINUX_SLL) for t in range(5)),
        *((b.sll2(packet, ifindex=7 + t, pkttype=t), lt.LINKTYPE_LINUX_SLL2) for t in range(5)),
        *(
            (b.null(packet, family=f, big_endian=e), lt.LINKTYPE_NULL)
            for f in families
            for e in (False, True)
        ),
        (b.loop(packet), lt.LINKTYPE_LOOP),
        *((packet, t) for t in (lt.LINKTYPE_RAW, lt.LINKTYPE_DLT_RAW_12, lt.LINKTYPE_DLT_RAW_14)),
        (packet, lt.LINKTYPE_IPV6 if v6 else lt.LINKTYPE_IPV4),
        (b.pktap_v1(b.ethernet(packet), flags=2, pid=7, comm="a"), lt.LINKTYPE_PKTAP),
        (
            b.pktap_v2(b.null(packet), dlt=0, flags=5, pid=8, epid=9, ecomm="b"),
            lt.LINKTYPE_USER2_PKTAP,
        ),
    ]


def crafted_block(records: list[tuple[bytes, int]], wire_extra: int = 0) -> RecordBlock:
    n = len(records)
    return build_block(
        [r[0] for r in records], ts=[float(i) for i in range(n)], linktype=[r[1] for r in records],
        wirelen=[len(r[0]) + wire_extra for r in records], interfaces=InterfaceTable({3: "eth3"}),
        iface=3, direction=Direction.RX, pid=[4242, -1] * (n // 2) + [4242] * (n % 2),
        process_names={4242: "from-the-file"},
    )  # fmt: skip


def test_every_link_header_field() -> None:
    records = [v for packet in PLAIN for v in link_variants(packet)]
    batch = assert_agrees(crafted_block(records))
    assert len(batch) == len(records)


def test_every_fast_path_check() -> None:
    records = [v for packet in BROKEN for v in link_variants(packet)]
    batch = assert_agrees(crafted_block(records))
    assert len(batch) < len(records)


def test_captures_cut_at_every_byte() -> None:
    """Every snap length: link, IP, options, extension and transport boundaries."""
    records = [
        (frame[:cut], linktype)
        for packet in PLAIN
        for frame, linktype in link_variants(packet)[::3]
        for cut in range(len(frame) + 1)
    ]
    assert_agrees(crafted_block(records))
    assert_agrees(crafted_block(records, wire_extra=100))


def blocks_of(frames: st.SearchStrategy[tuple[bytes, int, int]]) -> st.SearchStrategy[RecordBlock]:
    @st.composite
    def build(draw: st.DrawFn) -> RecordBlock:
        records = draw(st.lists(frames, min_size=1, max_size=16))
        n = len(records)
        return build_block(
            [r[0] for r in records], ts=[1e9 + i / 7 for i in range(n)],
            linktype=[r[1] for r in records],
            wirelen=[r[2] for r in records],
            interfaces=InterfaceTable({1: "eth0", 2: "lo"}),
            iface=draw(st.lists(st.sampled_from([-1, 1, 2]), min_size=n, max_size=n)),
            direction=draw(st.lists(st.sampled_from([0, 1, 2]), min_size=n, max_size=n)),
            pid=draw(st.lists(st.sampled_from([-1, 1, 4242]), min_size=n, max_size=n)),
            process_names={4242: "from-the-file"},
        )  # fmt: skip

    return build()


@FAST
@given(blocks_of(framed()))
def test_generated_packets(block: RecordBlock) -> None:
    assert_agrees(block)


def test_generator_covers_the_features() -> None:
    """The generated records are mostly IP and reach every feature (else the test above is weak)."""
    seen: Counter[str] = Counter()

    @settings(max_examples=40, derandomize=True, deadline=None)
    @given(blocks_of(framed()))
    def count(block: RecordBlock) -> None:
        for i in range(len(block)):
            seen[f"linktype {int(block.linktype[i])}"] += 1
            start, cap, wire = int(block.offset[i]), int(block.caplen[i]), int(block.wirelen[i])
            try:
                packet = decode_record(block.data, start, cap, wire, int(block.linktype[i]))
            except Malformed:
                seen["malformed"] += 1
                continue
            if isinstance(packet, Packet):
                seen["packet"] += 1
                seen["fragment"] += packet.fragment_id >= 0
                seen["portless"] += not packet.transport
                seen["longer than captured"] += packet.ip_length > cap
                seen[f"proto {packet.proto}"] += 1
                seen["pid"] += packet.pid >= 0

    count()
    assert seen["packet"] >= 2 * seen["malformed"] > 0
    assert min(seen[f"linktype {t}"] for t in LINKTYPES) > 0
    for feature in ("fragment", "portless", "longer than captured", "pid", "proto 6", "proto 17"):
        assert seen[feature] > 0, feature


# -- (c) random bytes and mutated reference records --------------------------------------


@cache
def reference_records() -> tuple[tuple[bytes, int, int], ...]:
    return tuple(
        (block.data[int(o) : int(o) + int(c)], int(t), int(w))
        for block in reference_blocks()
        for o, c, t, w in zip(
            block.offset, block.caplen, block.linktype, block.wirelen, strict=True
        )
    )


@st.composite
def random_records(draw: st.DrawFn) -> tuple[bytes, int, int]:
    frame = draw(st.binary(max_size=160))
    linktype = draw(st.sampled_from([*LINKTYPES, 8, 147]))
    return frame, linktype, len(frame) + draw(st.sampled_from([0, 0, 1, 100, 70000]))


@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[bytes, int, int]:
    records = reference_records()
    frame, linktype, wire = records[draw(st.integers(0, len(records) - 1))]
    data = bytearray(frame[:4096])
    for bit in (
        draw(st.lists(st.integers(0, 8 * min(len(data), 160) - 1), max_size=6)) if data else []
    ):
        data[bit // 8] ^= 1 << bit % 8
    cut = draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))
    return bytes(data[:cut]), linktype, max(wire, len(data))


@FAST
@given(blocks_of(random_records()))
def test_random_bytes(block: RecordBlock) -> None:
    assert_agrees(block)


@FAST
@given(blocks_of(mutated_records()))
def test_mutated_reference_records(block: RecordBlock) -> None:
    assert_agrees(block)


# -- TCP timestamp options ----------------------------------------------------------------

TS = b"\x08\x0a" + (123456).to_bytes(4, "big") + (654321).to_bytes(4, "big")


@pytest.mark.parametrize(
    ("options", "caplen_cut", "expected"),
    [
        (b"\x01\x01" + TS, 0, (123456, 654321)),  # data segments: NOP NOP TS
        (b"\x02\x04\x05\xb4\x04\x02" + TS + b"\x01\x03\x03\x07", 0, (123456, 654321)),  # a SYN
        (b"\x01\x01\x05\x0a" + bytes(8) + b"\x01\x01" + TS, 0, (123456, 654321)),  # after SACK
        (b"", 0, (-1, -1)),
        (b"\x02\x04\x05\xb4", 0, (-1, -1)),  # MSS only
        (b"\x00" + TS, 0, (-1, -1)),  # after the end-of-options mark
        (b"\x05\x01" + TS, 0, (-1, -1)),  # a length below 2 stops the walk
        (b"\x01\x01" + TS, 4, (-1, -1)),  # the capture stops inside the option
        (b"\x08\x09" + TS[2:] + b"\x01", 0, (-1, -1)),  # a timestamp of the wrong length
    ],
)
def test_tcp_timestamps_agree_and_are_right(
    options: bytes, caplen_cut: int, expected: tuple[int, int]
) -> None:
    frame = b.ipv4(6, b.tcp(40000, 443, b"", options=options))
    cut = frame[: len(frame) - caplen_cut]
    block = build_block([cut], ts=[1.0], linktype=lt.LINKTYPE_IPV4, wirelen=[len(frame)])
    batch = assert_agrees(block)
    assert (int(batch.tsval[0]), int(batch.tsecr[0])) == expected
    assert int(batch.window[0]) == 65535
