"""Fuzz every decoder with hostile input: mutations of real packets, truncations, noise.

    python fuzz/run.py [--inputs 1000000] [--seed 1] [--only NAME]

Seeds are the reference captures in tests/data/captures (every record of
every file) plus the messages inside them. Each input is a seed with random
byte flips, insertions, deletions, truncation or an appended tail, or pure
random bytes. A decoder passes when nothing but its own error type escapes;
memory is checked to stay bounded (peak RSS printed). One table is printed;
the exit status is non-zero if any decoder let an exception through.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from netoproc.capture import records as lt
from netoproc.capture.pcapfile import CaptureFile, CaptureFileError, open_capture_file
from netoproc.capture.records import build_block
from netoproc.decode.columnar import decode_block
from netoproc.decode.dns import DnsError, parse_message, split_tcp_stream
from netoproc.decode.scalar import Malformed, decode_record
from netoproc.engine.dns import DnsTracker
from netoproc.model import IPPROTO_UDP, FlowKey, parse_addr
from netoproc.platform.sockdiag import SockDiagError, parse_messages

CAPTURES = Path(__file__).parents[1] / "tests" / "data" / "captures" / "tcpdump"


class Mutator:
    def __init__(self, seeds: list[bytes], seed: int) -> None:
        self.seeds = [s for s in seeds if s] or [b"\0"]
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.05:
            return rng.bytes(int(rng.integers(0, 200)))
        data = bytearray(self.seeds[int(rng.integers(len(self.seeds)))])
        for _ in range(int(rng.integers(1, 5))):
            choice = rng.random()
            at = int(rng.integers(0, len(data) + 1))
            if choice < 0.45 and data:
                data[min(at, len(data) - 1)] = int(rng.integers(256))
            elif choice < 0.6:
                data[at:at] = rng.bytes(int(rng.integers(1, 8)))
            elif choice < 0.75:
                del data[at : at + int(rng.integers(1, 8))]
            elif choice < 0.9:
                del data[at:]
            else:
                interesting = (0, 0xFF, 0x7F, 0x80, 0xC0, 0x3F)
                if data:
                    data[min(at, len(data) - 1)] = interesting[int(rng.integers(len(interesting)))]
        return bytes(data)


def capture_records() -> list[tuple[int, bytes]]:
    found = []
    for path in sorted(CAPTURES.glob("*.pcap")):
        capture = open_capture_file(str(path))
        for block in capture.blocks():
            for i in range(len(block)):
                start = int(block.offset[i])
                found.append(
                    (int(block.linktype[i]), block.data[start : start + int(block.caplen[i])])
                )
        capture.close()
    return found


def dns_messages(records: list[tuple[int, bytes]]) -> list[bytes]:
    messages: list[bytes] = []
    for linktype, frame in records:
        block = build_block([frame], ts=[0.0], linktype=linktype)
        for _row, payload in decode_block(block).dns:
            messages.append(payload)
            messages.extend(split_tcp_stream(payload)[0])
    return messages


Target = Callable[[int], None]  # runs `count` inputs; raises only on a real failure


def target_scalar(records: list[tuple[int, bytes]], seed: int) -> Target:
    linktypes = sorted({lt for lt, _ in records} | {lt.LINKTYPE_PKTAP, lt.LINKTYPE_LINUX_SLL2})
    mutate = Mutator([f for _, f in records], seed)
    rng = np.random.default_rng(seed + 1)

    def run(count: int) -> None:
        for _ in range(count):
            frame = mutate()
            linktype = linktypes[int(rng.integers(len(linktypes)))]
            wire = len(frame) + int(rng.integers(0, 3)) * int(rng.integers(0, 2000))
            with contextlib.suppress(Malformed):
                decode_record(frame, 0, len(frame), wire, linktype)

    return run


def target_columnar(records: list[tuple[int, bytes]], seed: int) -> Target:
    linktypes = sorted({lt for lt, _ in records})
    mutate = Mutator([f for _, f in records], seed)
    rng = np.random.default_rng(seed + 2)

    def run(count: int) -> None:
        while count > 0:
            n = min(count, 1000)
            frames = [mutate() for _ in range(n)]
            kinds = [linktypes[int(rng.integers(len(linktypes)))] for _ in range(n)]
            block = build_block(frames, ts=[0.0] * n, linktype=kinds)
            batch = decode_block(block)
            counts = batch.counts
            assert counts.malformed + counts.not_ip + len(batch) == n
            count -= n

    return run


def target_files(seed: int) -> Target:
    files = [p.read_bytes() for p in sorted(CAPTURES.glob("*.pcap"))]
    files += [_pcapng_sample()]
    mutate = Mutator(files, seed)

    def run(count: int) -> None:
        for _ in range(count):
            try:
                capture = CaptureFile(io.BytesIO(mutate()), "fuzz")
                for block in capture.blocks():
                    assert len(block.data) >= int((block.offset + block.caplen).max(initial=0))
            except CaptureFileError:
                pass

    return run


def target_dns(messages: list[bytes], seed: int) -> Target:
    mutate = Mutator(messages, seed)

    def run(count: int) -> None:
        for _ in range(count):
            with contextlib.suppress(DnsError):
                parse_message(mutate())

    return run


def target_dns_engine(messages: list[bytes], seed: int) -> Target:
    mutate = Mutator(messages + [struct.pack("!H", len(m)) + m for m in messages], seed)
    rng = np.random.default_rng(seed + 3)
    client, server = parse_addr("192.0.2.1"), parse_addr("192.0.2.53")

    def run(count: int) -> None:
        tracker = DnsTracker()
        for i in range(count):
            proto = IPPROTO_UDP if rng.random() < 0.7 else 6
            key = FlowKey("eth0", proto, client, 40000 + i % 50, server, 53)
            tracker.observe(
                i * 0.001, key, bool(rng.random() < 0.5), mutate(), int(rng.integers(0, 2**32))
            )
            if i % 1000 == 0:
                tracker.expire(i * 0.001)
                tracker.view(lambda _key: None, {})

    return run


def target_sockdiag(seed: int) -> Target:
    header = struct.Struct("=IHHII")
    body = bytes(72) + struct.pack("=HH", 4 + 104, 2) + bytes(104)
    seeds = [
        header.pack(16 + len(body), 20, 2, 1, 0) + body,
        header.pack(20, 3, 2, 1, 0) + bytes(4),
    ]
    mutate = Mutator([seeds[0] * 3 + seeds[1], seeds[1]], seed)

    def run(count: int) -> None:
        for _ in range(count):
            with contextlib.suppress(SockDiagError):
                list(parse_messages(mutate(), 6))

    return run


def _pcapng_sample() -> bytes:
    """A small pcapng with two interfaces, packets, and an Apple process block."""

    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    def option(code: int, value: bytes) -> bytes:
        return struct.pack("<HH", code, len(value)) + value + bytes(-len(value) % 4)

    frame = bytes.fromhex("4500001c00000000401100000a0000010a0000020035d431000800000000")
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 101, 0, 65535) + option(9, b"\x09") + option(0, b""))
    idb2 = block(1, struct.pack("<HHI", 1, 0, 65535))
    pib = block(0x80000001, struct.pack("<i", 42) + option(2, b"curl") + option(0, b""))
    outbound, first_process = option(2, struct.pack("<I", 2)), option(0x8001, struct.pack("<I", 0))
    header = struct.pack("<IIIII", 0, 0, 1000, len(frame), len(frame))
    epb = block(6, header + frame + bytes(-len(frame) % 4) + outbound + first_process)
    return shb + idb + idb2 + pib + epb * 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only")
    args = parser.parse_args()
    records = capture_records()
    messages = dns_messages(records)
    targets: dict[str, Target] = {
        "scalar decoder (link, IP, TCP/UDP, PKTAP)": target_scalar(records, args.seed),
        "columnar decoder": target_columnar(records, args.seed),
        "pcap / pcapng reader": target_files(args.seed),
        "DNS parser": target_dns(messages, args.seed),
        "DNS engine (matching, TCP framing)": target_dns_engine(messages, args.seed),
        "sock_diag parser": target_sockdiag(args.seed),
    }
    failures = 0
    print(f"{'decoder':<44}{'inputs':>10}{'seconds':>10}{'escaped':>9}")
    for name, run in targets.items():
        if args.only and args.only.lower() not in name.lower():
            continue
        started, escaped = time.perf_counter(), 0
        try:
            for chunk in _chunks(args.inputs, 10_000):
                run(chunk)
        except Exception:
            escaped = 1
            traceback.print_exc()
        failures += escaped
        elapsed = time.perf_counter() - started
        print(f"{name:<44}{args.inputs:>10,}{elapsed:>10.1f}{escaped:>9}", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB")
    return 1 if failures else 0


def _chunks(total: int, size: int) -> Iterator[int]:
    while total > 0:
        yield min(size, total)
        total -= size


if __name__ == "__main__":
    sys.exit(main())
