"""The capture file reader: pcap and pcapng, as written by the builders and read back.

Expected values are the builder inputs (frames, timestamps, lengths, link
types, interfaces, flags, processes). Files we write are also read by tcpdump,
which must count the same packets at the same times: a check on the writer
as much as on the reader. Small chunk sizes make records straddle the
reader's chunk boundaries.
"""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netoproc.capture import pcapfile
from netoproc.capture import records as lt
from netoproc.capture.pcapfile import CaptureFile, CaptureFileError, open_capture_file
from netoproc.capture.records import GUARD_BYTES, RecordBlock
from netoproc.model import Direction
from tests import builders as b

FRAMES = [
    b.ethernet(b.ipv4(b.TCP, b.tcp(40000, 443, b"x" * n))) for n in (0, 1, 2, 3, 100, 1400)
] + [b.ethernet(b.ipv6(b.UDP, b.udp(5353, 53, b"q")))]
TIMES = [b.T0 + i * 0.25 + 0.000123 for i in range(len(FRAMES))]


@dataclass(frozen=True)
class Record:
    data: bytes
    wirelen: int
    ts: float
    linktype: int
    iface: int
    direction: int
    pid: int


def read(path: Path) -> tuple[CaptureFile, list[Record], dict[int, str]]:
    """Every record of a file, and the process names its blocks carried."""
    capture = open_capture_file(str(path))
    records: list[Record] = []
    names: dict[int, str] = {}
    for block in capture.blocks():
        check_block(block)
        names.update(block.process_names)
        for i in range(len(block)):
            start, cap = int(block.offset[i]), int(block.caplen[i])
            fields = (
                block.wirelen,
                block.ts,
                block.linktype,
                block.iface,
                block.direction,
                block.pid,
            )
            wire, ts, linktype, iface, direction, pid = (column[i].item() for column in fields)
            data = block.data[start : start + cap]
            records.append(Record(data, wire, ts, linktype, iface, direction, pid))
    capture.close()
    assert capture.records == len(records)
    return capture, records, names


def check_block(block: RecordBlock) -> None:
    assert block.data.endswith(bytes(GUARD_BYTES))
    ends = block.offset + block.caplen
    assert (ends <= len(block.data) - GUARD_BYTES).all()
    assert (block.wirelen >= block.caplen).all()
    assert (block.offset[1:] > block.offset[:-1]).all(), "records in file order"


def tcpdump_times(path: Path) -> list[float]:
    """The timestamp of every packet, as tcpdump reads the file."""
    out = subprocess.run(
        ["tcpdump", "-nn", "-tt", "-q", "-r", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [float(re.match(r"\d+\.\d+", line)[0]) for line in out.splitlines()]  # type: ignore[index]


@pytest.fixture(params=[1 << 22, 97], ids=["chunk-4MiB", "chunk-97B"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    size: int = request.param
    monkeypatch.setattr(pcapfile, "CHUNK_BYTES", size)
    return size


# -- pcap ------------------------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanosecond", [False, True], ids=["us", "ns"])
def test_pcap(tmp_path: Path, chunk: int, big_endian: bool, nanosecond: bool) -> None:
    path = tmp_path / "x.pcap"
    wirelen = [len(f) + i for i, f in enumerate(FRAMES)]
    path.write_bytes(
        b.pcap_file(
            FRAMES, 1, ts=TIMES, wirelen=wirelen, big_endian=big_endian, nanosecond=nanosecond
        )
    )
    capture, records, names = read(path)
    assert (capture.format, capture.problem, names) == ("pcap", None, {})
    assert [r.data for r in records] == FRAMES
    assert [r.wirelen for r in records] == wirelen
    assert [r.ts for r in records] == pytest.approx(TIMES, abs=1e-6)
    assert {(r.linktype, r.iface, r.direction, r.pid) for r in records} == {(1, -1, 0, -1)}
    assert tcpdump_times(path) == pytest.approx(TIMES, abs=1e-6)


def test_pcap_nanoseconds_are_kept() -> None:
    assert b.pcap_file([b""], 1, ts=[1.5], nanosecond=True)[-8:-4] == (0).to_bytes(4, "little")


def test_pcap_nanosecond_precision(tmp_path: Path) -> None:
    path = tmp_path / "ns.pcap"
    path.write_bytes(
        b.pcap_file([b"a", b"b"], 101, ts=[10.000000001, 10.999999999], nanosecond=True)
    )
    assert [r.ts for r in read(path)[1]] == pytest.approx([10.000000001, 10.999999999], abs=1e-12)


def test_pcap_link_type_ignores_the_fcs_bits(tmp_path: Path) -> None:
    path = tmp_path / "fcs.pcap"
    path.write_bytes(b.pcap_file(FRAMES[:1], lt.LINKTYPE_LINUX_SLL2 | 0x14000000))
    assert read(path)[1][0].linktype == lt.LINKTYPE_LINUX_SLL2


def test_pcap_wire_length_is_never_below_the_capture(tmp_path: Path) -> None:
    path = tmp_path / "short-wire.pcap"
    path.write_bytes(b.pcap_file(FRAMES[:2], 1, wirelen=[0, 10]))
    assert [r.wirelen for r in read(path)[1]] == [len(FRAMES[0]), len(FRAMES[1])]


@pytest.mark.parametrize("cut", [1, 10, 16, 17, 60])
def test_pcap_truncated_in_the_third_record(tmp_path: Path, chunk: int, cut: int) -> None:
    """The file ends `cut` bytes into record 3 (inside its header or its data)."""
    whole = b.pcap_file(FRAMES, 1)
    third = 24 + sum(16 + len(f) for f in FRAMES[:2])
    path = tmp_path / "cut.pcap"
    path.write_bytes(whole[: third + cut])
    capture, records, _ = read(path)
    assert capture.problem is not None
    assert [r.data for r in records] == FRAMES[:2]


def test_pcap_absurd_record_length_stops_the_file(tmp_path: Path) -> None:
    whole = bytearray(b.pcap_file(FRAMES, 1))
    third = 24 + sum(16 + len(f) for f in FRAMES[:2])
    whole[third + 8 : third + 12] = (1 << 30).to_bytes(4, "little")
    path = tmp_path / "absurd.pcap"
    path.write_bytes(bytes(whole))
    capture, records, _ = read(path)
    assert capture.problem is not None
    assert [r.data for r in records] == FRAMES[:2]


def test_header_only_pcap_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(b.pcap_file([], 1))
    capture, records, _ = read(path)
    assert (records, capture.problem) == ([], None)


@pytest.mark.parametrize(
    "content", [b"", b"\xd4\xc3\xb2", b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", bytes(100)]
)
def test_not_a_capture_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage"
    path.write_bytes(content)
    with pytest.raises(CaptureFileError):
        open_capture_file(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureFileError, match="cannot read"):
        open_capture_file(str(tmp_path / "nope.pcap"))


# -- pcapng --------------------------------------------------------------------------

ETH, RAW, SLL2 = lt.LINKTYPE_ETHERNET, lt.LINKTYPE_RAW, lt.LINKTYPE_LINUX_SLL2
PACKET = b.ipv4(b.UDP, b.udp(1, 2, b"payload"))


def two_sections() -> tuple[bytes, list[Record], dict[int, str], dict[int, str]]:
    """A little-endian and a big-endian section, and what reading them must give.

    Returns the file, the expected records, the expected process names and the
    expected interface names by global interface id.
    """
    records: list[Record] = []
    le: list[bytes] = [
        b.pcapng_shb(),
        b.pcapng_idb(ETH, name="eth0"),  # global interface 0, microseconds
        b.pcapng_idb(RAW, name="tun0", tsresol=9, tsoffset=1000),  # 1, ns, +1000 s
        b.pcapng_pib(100, "curl"),  # process index 0
        b.pcapng_pib(200, "Safari"),  # process index 1
        b.pcapng_idb(SLL2, tsresol=0x80 | 20),  # 2, 2^-20 s
    ]
    frame0 = b.ethernet(PACKET)
    le.append(b.pcapng_epb(0, 1_700_000_000_123_456, frame0, wirelen=999, flags=1))
    records.append(Record(frame0, 999, 1_700_000_000.123456, ETH, 0, Direction.RX, -1))
    le.append(b.pcapng_epb(1, 5_000_000_001, PACKET, flags=2, process=0))
    records.append(Record(PACKET, len(PACKET), 1005.000000001, RAW, 1, Direction.TX, 100))
    le.append(b.pcapng_spb(frame0))  # interface 0; captured length: the whole packet
    records.append(Record(frame0, len(frame0), 0.0, ETH, 0, Direction.UNKNOWN, -1))
    frame2 = b.sll2(PACKET)
    le.append(b.pcapng_epb(2, 3 << 20, frame2, process=0, effective_process=1))
    records.append(Record(frame2, len(frame2), 3.0, SLL2, 2, Direction.UNKNOWN, 200))
    le.append(b.pcapng_pb(1, 2_500_000_000, PACKET))
    records.append(Record(PACKET, len(PACKET), 1002.5, RAW, 1, Direction.UNKNOWN, -1))
    le.append(b.pcapng_epb(0, 7, frame0[:20], wirelen=len(frame0), flags=3, effective_process=0))
    records.append(Record(frame0[:20], len(frame0), 7e-6, ETH, 0, Direction.UNKNOWN, 100))

    be: list[bytes] = [
        b.pcapng_shb(big_endian=True),
        b.pcapng_idb(RAW, name="lo", tsresol=3, big_endian=True),  # global 3, milliseconds
        b.pcapng_pib(300, "sshd", big_endian=True),  # index 0 again: a new section
    ]
    be.append(b.pcapng_epb(0, 42_250, PACKET, flags=2, process=0, big_endian=True))
    records.append(Record(PACKET, len(PACKET), 42.25, RAW, 3, Direction.TX, 300))
    be.append(b.pcapng_epb(0, 1, PACKET, process=5, big_endian=True))  # no such process
    records.append(Record(PACKET, len(PACKET), 0.001, RAW, 3, Direction.UNKNOWN, -1))
    names = {100: "curl", 200: "Safari", 300: "sshd"}
    return b"".join(le + be), records, names, {0: "eth0", 1: "tun0", 3: "lo"}


def test_pcapng_two_sections(tmp_path: Path, chunk: int) -> None:
    content, expected, names, iface_names = two_sections()
    path = tmp_path / "two.pcapng"
    path.write_bytes(content)
    capture, records, got_names = read(path)
    assert (capture.format, capture.problem) == ("pcapng", None)
    assert len(records) == len(expected)
    for n, (got, want) in enumerate(zip(records, expected, strict=True)):
        assert got.ts == pytest.approx(want.ts, abs=1e-6), n
        assert got == Record(**{**want.__dict__, "ts": got.ts}), n
    assert got_names == names
    for iface, name in iface_names.items():
        assert capture.interfaces.name(iface) == name


def test_pcapng_process_names_stay_with_their_block(tmp_path: Path) -> None:
    content, _, _, _ = two_sections()
    path = tmp_path / "two.pcapng"
    path.write_bytes(content)
    capture = open_capture_file(str(path))
    for block in capture.blocks():
        assert set(block.process_names) <= {int(p) for p in block.pid if p >= 0}
    capture.close()


@pytest.mark.parametrize("cut", [4, 30, 60])
def test_pcapng_truncated(tmp_path: Path, chunk: int, cut: int) -> None:
    head = b.pcapng_shb() + b.pcapng_idb(RAW)
    blocks = [b.pcapng_epb(0, i, PACKET) for i in range(3)]
    path = tmp_path / "cut.pcapng"
    path.write_bytes(head + blocks[0] + blocks[1] + blocks[2][:cut])
    capture, records, _ = read(path)
    assert capture.problem is not None
    assert [r.ts for r in records] == pytest.approx([0.0, 1e-6])


def test_pcapng_bad_block_length_stops_the_file(tmp_path: Path) -> None:
    head = b.pcapng_shb() + b.pcapng_idb(RAW) + b.pcapng_epb(0, 1, PACKET)
    bad = bytearray(b.pcapng_epb(0, 2, PACKET))
    bad[4:8] = (13).to_bytes(4, "little")  # not a multiple of 4
    path = tmp_path / "bad.pcapng"
    path.write_bytes(head + bytes(bad) + b.pcapng_epb(0, 3, PACKET))
    capture, records, _ = read(path)
    assert capture.problem is not None
    assert [r.data for r in records] == [PACKET]


def test_pcapng_section_with_a_bad_byte_order_magic(tmp_path: Path) -> None:
    second = bytearray(b.pcapng_shb())
    second[8:12] = b"\x01\x02\x03\x04"
    path = tmp_path / "magic.pcapng"
    path.write_bytes(
        b.pcapng_shb() + b.pcapng_idb(RAW) + b.pcapng_epb(0, 1, PACKET) + bytes(second)
    )
    capture, records, _ = read(path)
    assert capture.problem is not None
    assert len(records) == 1


def test_pcapng_packet_on_an_undeclared_interface(tmp_path: Path) -> None:
    path = tmp_path / "iface.pcapng"
    path.write_bytes(b.pcapng_shb() + b.pcapng_idb(RAW) + b.pcapng_epb(1, 1, PACKET))
    capture, records, _ = read(path)
    # the block framing is intact, so reading goes on: the packet is skipped and counted
    assert (capture.problem, capture.skipped, records) == (None, 1, [])


def test_pcapng_blocks_too_short_for_their_type_are_skipped(tmp_path: Path) -> None:
    """Found by fuzzing: an EPB of 20 bytes last in the file was read past its end."""
    short = [b.pcapng_block(6, bytes(8)), b.pcapng_block(2, bytes(16)), b.pcapng_block(3, b"")]
    path = tmp_path / "short.pcapng"
    path.write_bytes(
        b.pcapng_shb()
        + b.pcapng_idb(RAW)
        + b"".join(short)
        + b.pcapng_epb(0, 1, PACKET)
        + b.pcapng_block(6, bytes(16))
    )
    capture, records, _ = read(path)
    assert (capture.problem, capture.skipped) == (None, 4)
    assert [r.data for r in records] == [PACKET]


def test_pcapng_without_packets(tmp_path: Path) -> None:
    path = tmp_path / "none.pcapng"
    path.write_bytes(b.pcapng_shb() + b.pcapng_idb(RAW, name="x"))
    capture, records, _ = read(path)
    assert (capture.format, capture.problem, records) == ("pcapng", None, [])


def test_pcapng_simple_packet_cut_by_the_snap_length(tmp_path: Path) -> None:
    """An SPB has no captured length: the lesser of the packet's and interface 0's snap length."""
    frame = b.ethernet(PACKET)
    path = tmp_path / "spb.pcapng"
    path.write_bytes(
        b.pcapng_shb()
        + b.pcapng_idb(ETH, snaplen=20)
        + b.pcapng_spb(frame[:20], wirelen=len(frame))
    )
    _, records, _ = read(path)
    assert [(r.data, r.wirelen) for r in records] == [(frame[:20], len(frame))]


def test_pcapng_read_back_by_tcpdump(tmp_path: Path) -> None:
    """What libpcap reads too: one link type and one byte order per file."""
    blocks = [
        b.pcapng_shb(),
        b.pcapng_idb(ETH, name="a"),
        b.pcapng_idb(ETH, tsresol=9, tsoffset=-100),
        b.pcapng_pib(1, "p"),
        b.pcapng_idb(ETH, tsresol=0x80 | 10),
        b.pcapng_epb(0, 1_700_000_000_500_000, FRAMES[0], flags=1, process=0),
        b.pcapng_epb(1, 1_700_000_100_250_000_000, FRAMES[1], wirelen=3000),
        b.pcapng_epb(2, 1024 * 1_700_000_000 + 512, FRAMES[2], effective_process=0),
        b.pcapng_pb(0, 1_700_000_001_000_000, FRAMES[3]),
        b.pcapng_shb(),
        b.pcapng_idb(ETH, tsresol=3),
        b.pcapng_idb(ETH, tsresol=3, tsoffset=5),
        b.pcapng_epb(1, 1_700_000_000_125, FRAMES[4], flags=2),
        b.pcapng_spb(FRAMES[5]),  # no time stamp (libpcap adds interface 0's offset, if any)
    ]
    expected = [1_700_000_000.5, 1_700_000_000.25, 1_700_000_000.5, 1_700_000_001.0]
    expected += [1_700_000_005.125, 0.0]
    big_endian = [
        b.pcapng_shb(big_endian=True),
        b.pcapng_idb(ETH, tsresol=0x80 | 3, big_endian=True),
        b.pcapng_pib(7, "q", big_endian=True),
        b.pcapng_epb(0, 8 * 1_700_000_000 + 3, FRAMES[6], process=0, big_endian=True),
        b.pcapng_pb(0, 8 * 1_700_000_002, FRAMES[0], big_endian=True),
    ]
    for name, content, times in (
        ("le.pcapng", blocks, expected),
        ("be.pcapng", big_endian, [1_700_000_000.375, 1_700_000_002.0]),
    ):
        path = tmp_path / name
        path.write_bytes(b"".join(content))
        capture, records, _ = read(path)
        assert capture.problem is None
        assert [r.ts for r in records] == pytest.approx(times, abs=1e-6)
        assert tcpdump_times(path) == pytest.approx(times, abs=1e-6)


# hostile files --------------------------------------------------------------------

SEED_FILES = [
    b"".join([b.pcapng_shb(), b.pcapng_idb(1, name="en0"), b.pcapng_pib(7, "curl"),
              *(b.pcapng_epb(0, 1000 + i, f, process=0) for i, f in enumerate(FRAMES))]),
    b.pcap_file(FRAMES, lt.LINKTYPE_ETHERNET, big_endian=True, nanosecond=True),
    (Path(__file__).parents[1] / "data/captures/tcpdump/LINKTYPE_PKTAP.pcap").read_bytes(),
    (Path(__file__).parents[1] / "data/captures/tcpdump/icmp-length-zero.pcapng").read_bytes(),
]  # fmt: skip


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_FILES)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        match draw(st.sampled_from(["flip", "insert", "delete", "cut"])):
            case "flip":
                data[at] = draw(st.integers(0, 255))
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            case "delete":
                del data[at : at + draw(st.integers(1, 16))]
            case "cut":
                del data[max(at, 1) :]
        if not data:
            break
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(data=mutated_files(), chunk=st.sampled_from([64, 4096, 1 << 22]))
def test_mutated_files_are_read_or_refused_never_crash(data: bytes, chunk: int) -> None:
    try:
        with mock.patch.object(pcapfile, "CHUNK_BYTES", chunk):
            records = _read_all(data)
    except CaptureFileError:
        return
    # every record needs a header of at least 16 bytes: nothing is made up
    assert records <= len(data) // 16


def _read_all(data: bytes) -> int:
    capture = CaptureFile(io.BytesIO(data), "mutated")
    records = 0
    for block in capture.blocks():
        records += len(block)
        ends = block.offset + block.caplen
        assert len(block.data) >= int(ends.max(initial=0)) + GUARD_BYTES
        assert (block.caplen >= 0).all() and (block.wirelen >= block.caplen).all()
    return records
