"""Hostile traffic for the tests and benchmarks: floods and scans from spoofed sources.

    python flood_sender.py KIND IFACE DST_MAC DST_IP PORT SECONDS [PPS]

Writes Ethernet frames straight onto IFACE (an AF_PACKET socket, so the
source addresses can be anything) toward DST_IP at DST_MAC, for SECONDS,
as fast as it can or at PPS packets a second. KIND:
- `syn`: TCP SYNs to PORT, each from a random source address and port
  (a spoofed-source SYN flood);
- `scan`: TCP SYNs from one address to every port from 1 to 65535 in turn;
- `udp`: UDP datagrams to PORT from one address and random source ports;
- `icmp`: ICMP echo requests from random source addresses.
Frames are built in numpy, 4,096 at a time, with correct checksums.
Prints "ready" on stderr when it starts, and the packets sent on stdout
when it ends.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

import numpy as np
import numpy.typing as npt

CHUNK = 4096
SCANNER = 0xCB007163  # 203.0.113.99, the one source of a scan or a UDP flood
U8 = npt.NDArray[np.uint8]


def _checksum(words: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint16]:
    """Internet checksums of rows of 16-bit words (already summed per row)."""
    total = words.astype(np.uint64)
    for _ in range(3):
        total = (total & np.uint64(0xFFFF)) + (total >> np.uint64(16))
    return (~total.astype(np.uint16)).astype(np.uint16)


def _sum16(rows: U8) -> npt.NDArray[np.uint32]:
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, np.zeros((len(rows), 1), np.uint8)], axis=1)
    words = rows.reshape(len(rows), -1, 2).astype(np.uint32)
    summed: npt.NDArray[np.uint32] = ((words[:, :, 0] << 8) | words[:, :, 1]).sum(axis=1)
    return summed


def _be(values: npt.NDArray[np.uint32], width: int) -> U8:
    """Big-endian bytes of each value, `width` bytes wide, as rows."""
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint32) * 8
    return ((values[:, None] >> shifts) & 0xFF).astype(np.uint8)


def frames(kind: str, src_mac: bytes, dst_mac: bytes, dst_ip: int, port: int, start: int,
           rng: np.random.Generator) -> list[bytes]:  # fmt: skip
    """CHUNK Ethernet frames of one kind; `start` numbers them (a scan's ports)."""
    n = CHUNK
    if kind in ("syn", "icmp"):
        src = rng.integers(0x01000000, 0xDF000000, n, dtype=np.uint32)
    else:
        src = np.full(n, SCANNER, np.uint32)
    if kind in ("syn", "scan"):
        proto, l4 = 6, np.zeros((n, 20), np.uint8)
        sport = rng.integers(1024, 65536, n, dtype=np.uint32)
        if kind == "scan":
            sport[:] = 61000
            dport = (np.arange(start, start + n, dtype=np.uint32) % 65535) + 1
        else:
            dport = np.full(n, port, np.uint32)
        l4[:, 0:2], l4[:, 2:4] = _be(sport, 2), _be(dport, 2)
        l4[:, 4:8] = _be(rng.integers(0, 2**32, n, dtype=np.uint32), 4)
        l4[:, 12], l4[:, 13] = 5 << 4, 0x02  # header length, SYN
        l4[:, 14:16] = _be(np.full(n, 64240, np.uint32), 2)
    elif kind == "udp":
        proto, l4 = 17, np.zeros((n, 8 + 18), np.uint8)
        l4[:, 0:2] = _be(rng.integers(1024, 65536, n, dtype=np.uint32), 2)
        l4[:, 2:4] = _be(np.full(n, port, np.uint32), 2)
        l4[:, 4:6] = _be(np.full(n, l4.shape[1], np.uint32), 2)
    elif kind == "icmp":
        proto, l4 = 1, np.zeros((n, 8 + 32), np.uint8)
        l4[:, 0] = 8  # echo request
        l4[:, 4:6] = _be(rng.integers(0, 65536, n, dtype=np.uint32), 2)
        l4[:, 6:8] = _be((np.arange(start, start + n) & 0xFFFF).astype(np.uint32), 2)
    else:
        raise SystemExit(f"unknown kind {kind}")
    length = 20 + l4.shape[1]
    dst = np.full(n, dst_ip, np.uint32)
    if proto == 1:
        check = _checksum(_sum16(l4))
        l4[:, 2:4] = _be(check.astype(np.uint32), 2)
    else:
        pseudo = np.zeros((n, 12), np.uint8)
        pseudo[:, 0:4], pseudo[:, 4:8] = _be(src, 4), _be(dst, 4)
        pseudo[:, 9] = proto
        pseudo[:, 10:12] = _be(np.full(n, l4.shape[1], np.uint32), 2)
        check = _checksum(_sum16(pseudo) + _sum16(l4))
        at = 16 if proto == 6 else 6
        l4[:, at : at + 2] = _be(check.astype(np.uint32), 2)
    ip = np.zeros((n, 20), np.uint8)
    ip[:, 0], ip[:, 8], ip[:, 9] = 0x45, 64, proto
    ip[:, 2:4] = _be(np.full(n, length, np.uint32), 2)
    ip[:, 4:6] = _be(rng.integers(0, 65536, n, dtype=np.uint32), 2)
    ip[:, 12:16], ip[:, 16:20] = _be(src, 4), _be(dst, 4)
    ip[:, 10:12] = _be(_checksum(_sum16(ip)).astype(np.uint32), 2)
    ether = np.frombuffer(dst_mac + src_mac + b"\x08\x00", np.uint8)
    rows = np.concatenate([np.broadcast_to(ether, (n, 14)), ip, l4], axis=1)
    data, width = rows.tobytes(), rows.shape[1]
    return [data[i * width : (i + 1) * width] for i in range(n)]


def main() -> None:
    kind, iface, dst_mac_text, dst_ip_text, port_text, seconds_text = sys.argv[1:7]
    pps = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    dst_mac = bytes.fromhex(dst_mac_text.replace(":", ""))
    (dst_ip,) = struct.unpack("!I", socket.inet_aton(dst_ip_text))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    src_mac = sock.getsockname()[4]
    rng = np.random.default_rng(int(time.time()))
    print("ready", file=sys.stderr, flush=True)
    sent, start = 0, time.monotonic()
    deadline = start + float(seconds_text)
    while time.monotonic() < deadline:
        for frame in frames(kind, src_mac, dst_mac, dst_ip, int(port_text), sent, rng):
            try:
                sock.send(frame)
            except OSError:  # the device queue is full for a moment
                continue
            sent += 1
            if pps and sent % 64 == 0:
                ahead = start + sent / pps - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        # (the deadline is checked per chunk: 4,096 frames take milliseconds)
    print(sent, flush=True)


if __name__ == "__main__":
    main()
