"""Snapshot factories for tests of what people see (formats, and later the TUI)."""

from __future__ import annotations

import random
from dataclasses import replace

from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, ProcessRef, SocketInfo, parse_addr
from netoproc.snapshot import (
    EXITED_PID,
    CaptureHealth,
    ConnectionRow,
    DnsQueryRow,
    DnsView,
    FloodRow,
    InterfaceRow,
    ProcessRow,
    ResolverRow,
    Snapshot,
    Traffic,
)

T0 = 1_800_000_000.0

# A SYN flood on port 80, folded: what --verbose and the status bar say of one.
FLOOD = FloodRow(
    iface="eth0",
    proto=IPPROTO_TCP,
    lport=80,
    reason="flood or scan: no local socket",
    process=None,
    total=Traffic(rx_bytes=48_000_000, rx_packets=1_200_000),
    rx_rate=0.0,
    tx_rate=0.0,
    sources=950_123,
    sources_exact=False,
    ports=1,
    first_seen=0.0,
    last_seen=1.0,
)


def connection(
    process: ProcessRef | None,
    remote: str,
    total: Traffic,
    *,
    local: str = "192.168.1.100",
    lport: int = 54321,
    rport: int = 443,
    proto: int = IPPROTO_TCP,
    domain: str | None = None,
) -> ConnectionRow:
    return ConnectionRow(
        process=process,
        unknown_reason=None if process else "no local socket",
        proto=proto,
        iface="en0",
        laddr=parse_addr(local),
        lport=lport,
        raddr=parse_addr(remote),
        rport=rport,
        state="ESTABLISHED",
        direction="Out",
        total=total,
        rx_rate=0.0,
        tx_rate=0.0,
        first_seen=T0,
        last_seen=T0 + 1,
        domain=domain,
    )


def readme_snapshot() -> Snapshot:
    """The processes of the README's snapshot examples (chrome, curl, unknown)."""
    chrome = ProcessRef(1842, "chrome", "admin")
    curl = ProcessRef(5678, "curl", "admin")
    conns = (
        connection(chrome, "140.82.121.4", Traffic(1_000_000, 300_000, 600, 150)),
        connection(chrome, "151.101.1.69", Traffic(200_000, 40_000, 200, 50), lport=54322),
        connection(curl, "93.184.216.34", Traffic(50_000, 10_000, 100, 50), lport=54400),
        connection(None, "203.0.113.50", Traffic(45_000, 0, 30, 0), lport=5353, rport=5353),
    )
    processes = (
        ProcessRow(curl, Traffic(50_000, 10_000, 100, 50)),
        ProcessRow(None, Traffic(45_000, 0, 30, 0)),
        ProcessRow(chrome, Traffic(1_200_000, 340_000, 800, 200)),
        ProcessRow(ProcessRef(99, "idle", "root"), Traffic()),  # sockets but no traffic
    )
    return Snapshot(time=T0 + 5, started=T0, interval=1.0, processes=processes, connections=conns)


def long_run_snapshot() -> Snapshot:
    """The README's processes after a long run: older exited processes folded by name."""
    readme = readme_snapshot()
    curl = ProcessRef(EXITED_PID, "curl", "admin")
    backup = ProcessRef(EXITED_PID, "backup-worker-nightly", "root")
    folded = (
        ProcessRow(curl, Traffic(3_120_000, 624_000, 6_240, 3_120), exited=312),
        ProcessRow(backup, Traffic(2_000, 1_000, 20, 10), exited=1_234),
    )  # fmt: skip
    return replace(readme, processes=(*readme.processes, *folded))


# The monitor's fixtures -------------------------------------------------------
# Everything the four views show, with believable names and numbers, so the
# screenshots of the TUI read like a real session.

FIREFOX = ProcessRef(1842, "firefox", "admin")
CURL = ProcessRef(2103, "curl", "admin")
NODE = ProcessRef(3001, "node", "www")
SSHD = ProcessRef(812, "sshd", "root")


def _wave(peak: float, seconds: int = 60, phase: int = 0) -> tuple[float, ...]:
    """A deterministic rising-and-falling history ending at `peak`-ish."""
    shape = (0.1, 0.2, 0.35, 0.55, 0.8, 1.0, 0.8, 0.55, 0.35, 0.2)
    return tuple(peak * shape[(i + phase) % len(shape)] for i in range(seconds))


def live_connection(
    process: ProcessRef | None,
    local: str,
    lport: int,
    remote: str,
    rport: int,
    *,
    rx_rate: float,
    tx_rate: float,
    total: Traffic,
    proto: int = IPPROTO_TCP,
    state: str = "ESTABLISHED",
    direction: str = "Out",
    iface: str = "en0",
    fd: int | None = None,
    domain: str | None = None,
    rtt_ms: float | None = None,
    retransmits: int | None = None,
) -> ConnectionRow:
    """A connection with rates, as the engine reports a busy one."""
    return ConnectionRow(
        process=process,
        unknown_reason=None if process else "no local socket",
        proto=proto,
        iface=iface,
        laddr=parse_addr(local),
        lport=lport,
        raddr=parse_addr(remote),
        rport=rport,
        state=state,
        direction=direction,
        total=total,
        rx_rate=rx_rate,
        tx_rate=tx_rate,
        first_seen=T0,
        last_seen=T0 + 300,
        fd=fd,
        domain=domain,
        rtt_ms=rtt_ms,
        retransmits=retransmits,
    )


def monitor_snapshot() -> Snapshot:
    """Five minutes into a session: the processes, connections, interfaces and DNS
    queries every view has something to show of."""
    here = "192.168.1.100"
    conns = (
        live_connection(FIREFOX, here, 54321, "140.82.121.4", 443, rx_rate=1_200_000,
                        tx_rate=200_000, total=Traffic(98_500_000, 9_100_000, 70_000, 20_000),
                        fd=5, domain="github.com", rtt_ms=12.0, retransmits=0),
        live_connection(FIREFOX, here, 54322, "151.101.1.69", 443, rx_rate=800_000,
                        tx_rate=140_000, total=Traffic(30_000_000, 3_200_000, 21_000, 6_000),
                        fd=6, rtt_ms=18.4, retransmits=1),
        live_connection(FIREFOX, here, 51234, "192.168.1.1", 53, rx_rate=1_000, tx_rate=1_000,
                        total=Traffic(20_000, 12_000, 60, 60), proto=IPPROTO_UDP, state="-",
                        fd=7),
        live_connection(CURL, here, 54400, "93.184.216.34", 443, rx_rate=512_000,
                        tx_rate=12_000, total=Traffic(5_200_000, 102_000, 3_700, 1_500),
                        fd=3, domain="example.com", rtt_ms=45.0, retransmits=0),
        live_connection(NODE, "10.0.0.2", 3000, "10.0.0.5", 49201, rx_rate=50_000,
                        tx_rate=1_500_000, total=Traffic(4_000_000, 61_000_000, 9_000, 44_000),
                        direction="In", fd=21, rtt_ms=0.5, retransmits=2),
        live_connection(SSHD, here, 22, "198.51.100.7", 50522, rx_rate=120, tx_rate=300,
                        total=Traffic(48_000, 96_000, 800, 700), direction="In", fd=4,
                        rtt_ms=31.2, retransmits=0),
        live_connection(None, here, 5353, "224.0.0.251", 5353, rx_rate=900, tx_rate=0,
                        total=Traffic(45_000, 0, 30, 0), proto=IPPROTO_UDP, state="-",
                        direction="In"),
    )  # fmt: skip
    sockets = (
        SocketInfo(IPPROTO_TCP, 0, 0, 0, 0, "CLOSED", inode=91, owner=FIREFOX, fd=8),
        SocketInfo(IPPROTO_TCP, parse_addr("0.0.0.0"), 3000, 0, 0, "LISTEN", inode=92,
                   owner=NODE, fd=20),
        SocketInfo(IPPROTO_UDP, parse_addr("::"), 5353, 0, 0, "UNCONN", inode=93, owner=NODE,
                   fd=22),
        SocketInfo(IPPROTO_TCP, parse_addr("0.0.0.0"), 22, 0, 0, "LISTEN", inode=94,
                   owner=SSHD, fd=3),
    )  # fmt: skip

    def process(
        ref: ProcessRef | None, sockets: int, reasons: tuple[tuple[str, int], ...] = ()
    ) -> ProcessRow:
        mine = [c for c in conns if c.process == ref]
        rx = sum(c.rx_rate for c in mine)
        tx = sum(c.tx_rate for c in mine)
        return ProcessRow(
            process=ref,
            total=sum((c.total for c in mine), Traffic()),
            rx_rate=rx,
            tx_rate=tx,
            sockets=sockets,
            connections=len(mine),
            rx_history=_wave(rx),
            tx_history=_wave(tx, phase=3),
            unknown_reasons=reasons,
        )

    processes = (
        process(FIREFOX, 12),
        process(CURL, 1),
        process(NODE, 3),
        process(SSHD, 2),
        process(None, 0, (("no local socket", 45_000),)),
        ProcessRow(ProcessRef(99, "idle", "root"), Traffic(), sockets=1),
    )
    interfaces = (
        InterfaceRow("en0", "Wi-Fi", True, ("192.168.1.100",), ("fe80::1a2b:3c4d:5e6f:7890",),
                     ("192.168.1.1", "8.8.8.8"), rx_rate=2_100_000, tx_rate=340_000,
                     total=Traffic(1_200_000_000, 102_000_000, 1_234_567, 234_567),
                     rx_history=_wave(126_000_000), tx_history=_wave(20_400_000, phase=2)),
        InterfaceRow("lo0", "Loopback", True, ("127.0.0.1",), ("::1",), rx_rate=12_000,
                     tx_rate=12_000, total=Traffic(50_000_000, 50_000_000, 50_000, 50_000),
                     rx_history=(720_000.0,) * 60, tx_history=(720_000.0,) * 60),
        InterfaceRow("utun3", "VPN", False, ("10.0.0.2",), (), ("10.0.0.1",), rx_errors=3,
                     total=Traffic(9_000, 4_000, 40, 30), rx_history=(300.0, 0.0, 0.0),
                     tx_history=(100.0, 0.0, 0.0)),
    )  # fmt: skip
    dns = DnsView(
        resolvers=(
            ResolverRow("en0", "192.168.1.1", 1234, 6, 12.3),
            ResolverRow("en0", "8.8.8.8", 567, 1, 18.7),
            ResolverRow("utun3", "10.0.0.1", 89, 2, 45.2),
        ),
        queries=(
            DnsQueryRow(T0 + 1, FIREFOX, "github.com", "A", "140.82.121.4", "NOERROR", 12.0,
                        "192.168.1.1", "en0"),
            DnsQueryRow(T0 + 1, FIREFOX, "api.github.com", "AAAA", "2606:50c0:8003::154",
                        "NOERROR", 15.0, "192.168.1.1", "en0"),
            DnsQueryRow(T0 + 2, CURL, "example.com", "A", "93.184.216.34", "NOERROR", 18.0,
                        "8.8.8.8", "en0"),
            DnsQueryRow(T0 + 3, NODE, "nonexistent.local", "A", "NXDOMAIN", "NXDOMAIN", 45.0,
                        "10.0.0.1", "utun3"),
            DnsQueryRow(T0 + 3, None, "telemetry.example.com", "A", "203.0.113.50", "NOERROR",
                        22.0, "192.168.1.1", "en0"),
        ),
    )  # fmt: skip
    return Snapshot(
        time=T0 + 300,
        started=T0,
        interval=1.0,
        processes=processes,
        connections=conns,
        sockets=sockets,
        interfaces=interfaces,
        dns=dns,
        health=CaptureHealth(packets=400_000, bytes=203_000_000, kernel_drops=0,
                             unattributed_bytes=45_000),
    )  # fmt: skip


def hostile_snapshot() -> Snapshot:
    """Names that try to move the cursor, change colours or inject markup."""
    evil = ProcessRef(666, "\x1b[2J\x1b[31mevil[bold]x[/]", "root\x07")
    conn = live_connection(evil, "192.168.1.100", 1000, "203.0.113.9", 443, rx_rate=10,
                           tx_rate=10, total=Traffic(10, 10, 1, 1),
                           iface="eth\x1b[0m0")  # fmt: skip
    return Snapshot(
        time=T0 + 10,
        started=T0,
        interval=1.0,
        processes=(ProcessRow(evil, Traffic(10, 10, 1, 1), sockets=1, connections=1),),
        connections=(conn,),
        interfaces=(InterfaceRow("wlan\x1b]0;pwned\x07", "[red]Wi-Fi", True),),
        dns=DnsView(
            queries=(
                DnsQueryRow(T0 + 1, evil, "a\x1b[2Jb.example", "A", "[link=x]1.2.3.4",
                            "NOERROR", 1.0, "192.0.2.53", "eth0"),
            )
        ),
    )  # fmt: skip


def busy_snapshot(processes: int = 1_000, connections: int = 5_000, seed: int = 0) -> Snapshot:
    """A machine under load: many processes, many connections, full histories.

    Deterministic for a given seed; different seeds give different rates, so
    two of them make successive ticks that change every row.
    """
    rng = random.Random(seed)
    refs = [ProcessRef(1000 + i, f"worker-{i:04d}", f"user{i % 7}") for i in range(processes)]
    conns = []
    for i in range(connections):
        owner = refs[i % processes] if i % 47 else None  # 47: every process keeps some
        rx, tx = rng.expovariate(1 / 20_000), rng.expovariate(1 / 5_000)
        conns.append(
            ConnectionRow(
                process=owner,
                unknown_reason=None if owner else "no local socket",
                proto=IPPROTO_TCP if i % 5 else IPPROTO_UDP,
                iface="eth0",
                laddr=parse_addr("10.1.0.2"),
                lport=20_000 + i,
                raddr=parse_addr(f"198.18.{i // 250 % 256}.{i % 250 + 1}"),
                rport=443,
                state="ESTABLISHED",
                direction="Out",
                total=Traffic(int(rx * 60), int(tx * 60), 60, 60),
                rx_rate=rx,
                tx_rate=tx,
                first_seen=T0,
                last_seen=T0 + 60,
                fd=10 + i // processes,
                rtt_ms=rng.uniform(0.1, 80),
                retransmits=rng.randrange(3),
            )
        )
    by_owner: dict[ProcessRef | None, list[ConnectionRow]] = {}
    for conn in conns:
        by_owner.setdefault(conn.process, []).append(conn)
    rows = tuple(
        ProcessRow(
            process=owner,
            total=sum((c.total for c in mine), Traffic()),
            rx_rate=sum(c.rx_rate for c in mine),
            tx_rate=sum(c.tx_rate for c in mine),
            sockets=len(mine),
            connections=len(mine),
            rx_history=tuple(rng.expovariate(1 / 100_000) for _ in range(60)),
            tx_history=tuple(rng.expovariate(1 / 25_000) for _ in range(60)),
        )
        for owner, mine in by_owner.items()
    )
    return Snapshot(
        time=T0 + 60,
        started=T0,
        interval=1.0,
        processes=rows,
        connections=tuple(conns),
        dns=DnsView(),
    )
