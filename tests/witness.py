"""tcpdump as the outside witness: what it prints for a capture file, parsed.

Byte counts in tests come from here, never from our own decoder.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WirePacket:
    ts: float
    proto: str  # "TCP", "UDP", "ICMP", ...
    src: str
    sport: int | None
    dst: str
    dport: int | None
    length: int  # IP header + payload


# IPv4 options (a router alert on IGMP) follow the length: ", options (RA))"
_V4 = re.compile(
    r"^(\d+\.\d+) IP \(.*?proto (\S+) \(\d+\), length (\d+)(?:, options \([^)]*\))?\)"
    r"\s+(\S+) > (\S+):\s"
)
_V6 = re.compile(
    r"^(\d+\.\d+) IP6 \(.*?next-header (\S+) \(\d+\),? payload length: (\d+)\)\s+(\S+) > (\S+):\s"
)


def _endpoint(text: str, ports: bool) -> tuple[str, int | None]:
    if not ports:
        return text, None
    addr, _, port = text.rpartition(".")
    return addr, int(port)


def tcpdump_packets(path: Path) -> list[WirePacket]:
    """Every IP packet in a capture file, as `tcpdump -v` prints it."""
    out = subprocess.run(
        ["tcpdump", "-r", str(path), "-nn", "-tt", "-v"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    packets: list[WirePacket] = []
    record = ""
    for line in [*out.splitlines(), "END"]:
        if line.startswith((" ", "\t")):
            record += " " + line.strip()
            continue
        if record:
            m4, m6 = _V4.match(record), _V6.match(record)
            if m4 or m6:
                m = m4 or m6
                assert m is not None
                ts, proto, length = float(m.group(1)), m.group(2), int(m.group(3))
                ports = proto in ("TCP", "UDP")
                src, sport = _endpoint(m.group(4), ports)
                dst, dport = _endpoint(m.group(5), ports)
                length += 40 if m6 else 0
                packets.append(WirePacket(ts, proto, src, sport, dst, dport, length))
            elif " IP " in record or " IP6 " in record:
                raise AssertionError(f"unparsed tcpdump line: {record}")
        record = line
    return packets


@dataclass(frozen=True)
class DnsPacket:
    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    ident: int
    text: str  # what tcpdump says after the id, e.g. "+ A? a.test. (26)"


_DNS = re.compile(r"^(\d+\.\d+) IP6? (\S+) > (\S+): (?:Flags .*?length \d+: )?(\d+)(.*)$")


def tcpdump_dns(path: Path) -> list[DnsPacket]:
    """DNS messages (port 53, UDP or TCP) in a capture, as `tcpdump -nn` prints them."""
    out = subprocess.run(
        ["tcpdump", "-r", str(path), "-nn", "-tt", "port", "53"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    found = []
    for line in out.splitlines():
        m = _DNS.match(line)
        if m:
            (src, sport), (dst, dport) = _endpoint(m.group(2), True), _endpoint(m.group(3), True)
            assert sport is not None and dport is not None
            found.append(DnsPacket(float(m.group(1)), src, sport, dst, dport, int(m.group(4)),
                                   m.group(5).strip()))  # fmt: skip
    return found


def port_traffic(
    packets: list[WirePacket], local: str, port: int, peers: set[int] | None = None
) -> dict[str, int]:
    """What `packets` carried to and from `local`:`port` (from `peers`' ports only,
    if given), as a process holding that socket counts it: TX what left it."""
    out = {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
    for p in packets:
        if (p.src, p.sport) == (local, port) and (peers is None or p.dport in peers):
            out["tx_bytes"] += p.length
            out["tx_packets"] += 1
        elif (p.dst, p.dport) == (local, port) and (peers is None or p.sport in peers):
            out["rx_bytes"] += p.length
            out["rx_packets"] += 1
    return out
