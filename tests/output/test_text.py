"""What --verbose says of a folded flood: sizes, sources, owner, and names made safe."""

from __future__ import annotations

from netoproc.model import ProcessRef
from netoproc.output.text import flood_line
from netoproc.snapshot import ANY_PORT, FloodRow, Traffic

ROW = FloodRow(
    iface="eth0",
    proto=6,
    lport=80,
    reason="flood or scan: no local socket",
    process=None,
    total=Traffic(rx_bytes=48_000_000, tx_bytes=0, rx_packets=1_200_000),
    rx_rate=0.0,
    tx_rate=0.0,
    sources=950_123,
    sources_exact=False,
    ports=1,
    first_seen=0.0,
    last_seen=1.0,
)


def test_a_flood_line_gives_size_sources_and_reason() -> None:
    assert flood_line(ROW) == (
        "flood on TCP :80 (eth0): 1,200,000 packets, 48,000,000 bytes from ~950,123 sources; "
        "flood or scan: no local socket"
    )


def test_a_scan_names_its_ports_and_a_listener_its_process() -> None:
    scan = FloodRow(**{**{f: getattr(ROW, f) for f in ROW.__slots__}, "lport": ANY_PORT,
                       "ports": 65_407, "sources": 1, "sources_exact": True})  # fmt: skip
    assert flood_line(scan).startswith("flood on TCP 65,407 ports (eth0): ")
    assert flood_line(scan).endswith("from 1 sources; flood or scan: no local socket")
    owned = FloodRow(**{**{f: getattr(ROW, f) for f in ROW.__slots__},
                        "process": ProcessRef(7, "web\x1b[2J\tx")})  # fmt: skip
    assert flood_line(owned).endswith("; web\\x1b[2J\\tx (7)")
