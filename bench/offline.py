"""Offline throughput: read + decode + aggregate of a generated capture.

    python bench/offline.py [--packets 1000000] [--flows 1000] [--repeat 3]

Generates (once, cached under /tmp) a pcap of Ethernet frames, mixed
IPv4/IPv6 and TCP/UDP over `--flows` flows, captured headers-only the way a
live capture truncates them (caplen 96 of a 100 to 1500 byte wire length),
then times the pipeline stage by stage and prints one table. Best of
`--repeat` runs.
"""

from __future__ import annotations

import argparse
import struct
import time
from pathlib import Path

import numpy as np

from netoproc.capture.pcapfile import open_capture_file
from netoproc.decode.columnar import decode_block
from netoproc.engine import Engine


def generate(path: Path, packets: int, flows: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    flow_v6 = rng.random(flows) < 0.3
    flow_udp = rng.random(flows) < 0.25
    flow_ports = rng.integers(1024, 65535, (flows, 2))
    chosen = rng.integers(0, flows, packets)
    wire_ip = rng.integers(100, 1500, packets)
    outbound = rng.random(packets) < 0.5
    eth = bytes(12)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    for i in range(packets):
        f = int(chosen[i])
        sport, dport = (int(p) for p in flow_ports[f])
        if outbound[i]:
            sport, dport = dport, sport
        length = int(wire_ip[i])
        if flow_udp[f]:
            l4 = struct.pack("!HHHH", sport, dport, length - (40 if flow_v6[f] else 20), 0)
            proto = 17
        else:
            l4 = struct.pack("!HHIIBBHHH", sport, dport, i, i, 0x50, 0x10, 512, 0, 0)
            proto = 6
        a, b = (f, 0xFFFF - f) if outbound[i] else (0xFFFF - f, f)
        if flow_v6[f]:
            ip = struct.pack("!IHBB", 6 << 28, length - 40, proto, 64)
            ip += b"\x20\x01\x0d\xb8" + bytes(10) + a.to_bytes(2, "big")
            ip += b"\x20\x01\x0d\xb8" + bytes(10) + b.to_bytes(2, "big")
            frame = eth + b"\x86\xdd" + ip + l4
        else:
            ip = struct.pack("!BBHHHBBH", 0x45, 0, length, i & 0xFFFF, 0, 64, proto, 0)
            ip += bytes((10, 0, a >> 8, a & 0xFF, 10, 1, b >> 8, b & 0xFF))
            frame = eth + b"\x08\x00" + ip + l4
        frame = frame[:96]
        ts = 1_800_000_000 + i // 100_000
        out += struct.pack("<IIII", ts, (i % 100_000) * 10, len(frame), length + 14) + frame
    path.write_bytes(bytes(out))


def run(path: Path) -> dict[str, float]:
    timings = {"read": 0.0, "decode": 0.0, "aggregate": 0.0}
    capture = open_capture_file(str(path))
    engine: Engine | None = None
    packets = 0
    clock = time.perf_counter
    blocks = capture.blocks()
    while True:
        start = clock()
        block = next(blocks, None)
        timings["read"] += clock() - start
        if block is None:
            break
        start = clock()
        batch = decode_block(block)
        timings["decode"] += clock() - start
        start = clock()
        if engine is None:
            engine = Engine(started=float(block.ts[0]), process_lookups=False)
        engine.ingest(batch)
        timings["aggregate"] += clock() - start
        packets += len(batch)
    capture.close()
    timings["packets"] = packets
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.flows <= 0x7FFF:  # the two ends of a flow are f and 0xFFFF - f
        parser.error("--flows must be from 1 to 32767")
    path = Path(f"/tmp/netoproc-bench-{args.packets}-{args.flows}.pcap")
    if not path.exists():
        generate(path, args.packets, args.flows)
    best = min(
        (run(path) for _ in range(args.repeat)),
        key=lambda t: t["read"] + t["decode"] + t["aggregate"],
    )
    total = best["read"] + best["decode"] + best["aggregate"]
    n = best["packets"]
    size = path.stat().st_size >> 20
    print(f"offline pipeline, {int(n):,} packets, {args.flows} flows ({size} MiB pcap)")
    print(f"{'stage':<12}{'seconds':>10}{'ns/packet':>12}")
    for stage in ("read", "decode", "aggregate"):
        print(f"{stage:<12}{best[stage]:>10.3f}{best[stage] / n * 1e9:>12.0f}")
    print(f"{'total':<12}{total:>10.3f}{total / n * 1e9:>12.0f}")
    print(f"throughput: {n / total:,.0f} packets/s")


if __name__ == "__main__":
    main()
