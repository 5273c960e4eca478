"""The live session on a recorded Mac: the darwin capture and platform, end to end.

`LiveSession` runs its real threads and engine; underneath, the darwin
capture reads PKTAP buffers from a `FakeBpfKernel` and the darwin platform
reads pcblist_n, libproc, ifalldata, scutil and networksetup answers from a
`FakeDarwinKernel`, all built from the documented layouts. Expected bytes
are the IP lengths of the packets put in (and tcpdump's for its reference
capture); owners are what the PKTAP headers and the socket table say.
"""

from __future__ import annotations

import time

import dns.message
import dns.rrset

from netoproc.capture.darwin import PktapCapture
from netoproc.clock import SystemClock
from netoproc.model import ProcessRef
from netoproc.platform.darwin import DarwinPlatform
from netoproc.session import LiveSession, Settings
from netoproc.snapshot import Snapshot
from tests import builders as b
from tests.capture.darwin_kernel import (
    CAPTURES,
    DLT_NULL,
    FakeBpfKernel,
    bpf_buffer,
    bpf_record,
    pcap_records,
)
from tests.platform.darwin_buffers import (
    IFT_ETHER,
    IFT_LOOP,
    FakeDarwinKernel,
    Pcb,
    ifmibdata,
    pcblist,
)
from tests.witness import tcpdump_packets

ME, WEB, ROUTER, PRINTER = "192.0.2.10", "198.51.100.7", "192.168.1.1", "192.0.2.77"
OUT, IN, DELEGATED = b.PTH_FLAG_DIR_OUT, b.PTH_FLAG_DIR_IN, b.PTH_FLAG_PROC_DELEGATED
MDNS = ProcessRef(77, "mDNSResponder", "_mdnsresponder")

query = dns.message.make_query("example.com", "A", id=4242)
answer = dns.message.make_response(query)
answer.answer.append(dns.rrset.from_text("example.com.", 300, "IN", "A", "93.184.216.34"))

# what goes on the wire, as IP packets
REQUEST = b.ipv4(b.TCP, b.tcp(50000, 443, bytes(500), flags=b.ACK | b.PSH), src=ME, dst=WEB)
RESPONSE = b.ipv4(b.TCP, b.tcp(443, 50000, bytes(1400)), src=WEB, dst=ME)
DNS_QUERY = b.ipv4(b.UDP, b.udp(53000, 53, query.to_wire()), src=ME, dst=ROUTER)
DNS_ANSWER = b.ipv4(b.UDP, b.udp(53, 53000, answer.to_wire()), src=ROUTER, dst=ME)
BONJOUR = b.ipv4(b.UDP, b.udp(5353, 5353, bytes(40)), src=PRINTER, dst="224.0.0.251")
REDIS = b.ipv6(b.TCP, b.tcp(61000, 6379, b"PING\r\n"), src="::1", dst="::1")


def _pktap(packet: bytes, **header: object) -> bytes:
    frame = b.pktap_v1(b.ethernet(packet), **header)  # type: ignore[arg-type]
    return bpf_record(frame, ts=_now())


def _now() -> tuple[int, int]:
    """Packets carry the kernel's wall-clock time: a live session ages flows by it."""
    return int(time.time()), 0


def _buffers() -> list[bytes]:
    ((_sec, _usec, reference, length),) = pcap_records("LINKTYPE_PKTAP.pcap")
    first = bpf_buffer(
        _pktap(REQUEST, ifname="en0", flags=OUT, pid=501, comm="curl"),
        _pktap(RESPONSE, ifname="en0", flags=IN, pid=501, comm="curl"),
        bpf_record(reference, ts=_now(), datalen=length),  # pid 512, no name
    )
    second = bpf_buffer(
        _pktap(DNS_QUERY, ifname="en0", flags=OUT | DELEGATED, pid=77, comm="mDNSResponder",
               epid=4321, ecomm="Safari"),
        _pktap(DNS_ANSWER, ifname="en0", flags=IN | DELEGATED, pid=77, comm="mDNSResponder",
               epid=4321, ecomm="Safari"),
        _pktap(BONJOUR, ifname="en0", flags=IN, pid=-1),  # no socket matched in the kernel
        bpf_record(b.pktap_v2(b.null(REDIS), dlt=DLT_NULL, ifname="lo0", flags=OUT, pid=601,
                              comm="redis-cli"), ts=_now()),
    )  # fmt: skip
    return [first, second]


def _platform_kernel() -> FakeDarwinKernel:
    return FakeDarwinKernel(
        tcp=pcblist(6, [Pcb(ME, 50000, WEB, 443, state="ESTABLISHED", last_pid=501,
                            srtt=20 * 32, rttvar=2 * 16, rtt_samples=5)]),
        udp=pcblist(17, [Pcb("0.0.0.0", 5353, last_pid=77)]),
        processes={77: MDNS, 501: ProcessRef(501, "curl", "alice")},
        ifalldata=ifmibdata("lo0", iftype=IFT_LOOP) + ifmibdata("en0", iftype=IFT_ETHER),
        interface_addresses={"en0": ((ME,), ())},
    )  # fmt: skip


def _run() -> Snapshot:
    capture = PktapCapture(FakeBpfKernel(buffers={"pktap": _buffers()}))
    platform = DarwinPlatform(_platform_kernel())
    session = LiveSession(
        Settings(interval=0.05), SystemClock(), capture=capture, platform=platform
    )
    try:
        return session.run(0.3)
    finally:
        session.close()


def test_a_snapshot_from_a_recorded_mac() -> None:
    snapshot = _run()
    (reference,) = tcpdump_packets(CAPTURES / "LINKTYPE_PKTAP.pcap")
    totals = {}
    for row in snapshot.by_traffic():
        t = row.total
        totals[row.pid, row.name] = (t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets)
    assert totals == {
        (501, "curl"): (len(RESPONSE), len(REQUEST), 1, 1),
        (4321, "Safari"): (len(DNS_ANSWER), len(DNS_QUERY), 1, 1),  # delegated by mDNSResponder
        (77, "mDNSResponder"): (len(BONJOUR), 0, 1, 0),  # from the socket table: *:5353
        (601, "redis-cli"): (0, len(REDIS), 0, 1),
        (512, "512"): (0, reference.length, 0, 1),  # tcpdump's sample names no process
    }
    assert snapshot.health.packets == 7 and snapshot.health.malformed == 0
    assert snapshot.health.unattributed_bytes == 0

    ifaces = {c.iface for c in snapshot.connections}
    assert ifaces == {"en0", "lo0"}
    (lookup,) = [c for c in snapshot.connections if c.lport == 5353]
    assert (lookup.process, lookup.unknown_reason) == (MDNS, None)

    assert snapshot.dns is not None
    (asked,) = [q for q in snapshot.dns.queries if q.name == "example.com"]
    assert (asked.process, asked.response, asked.resolver, asked.iface) == (
        ProcessRef(4321, "Safari"), "93.184.216.34", ROUTER, "en0",
    )  # fmt: skip

    cards = {i.name: i for i in snapshot.interfaces}
    assert (cards["en0"].kind, cards["lo0"].kind) == ("Wi-Fi", "Loopback")
    assert cards["en0"].dns_servers == ("192.168.1.1", "8.8.8.8", "fe80::1")
    assert cards["en0"].ipv4 == (ME,)


def test_a_pktap_flow_meets_its_socket_table_row() -> None:
    # PKTAP names curl per packet (16 bytes, no user); the socket table knows its
    # user, TCP state and the kernel's RTT: the connection gets both
    snapshot = _run()
    (https,) = [c for c in snapshot.connections if c.rport == 443]
    assert https.process == ProcessRef(501, "curl", "alice")
    assert https.state == "ESTABLISHED"
    assert https.health is not None
    # pcblist_n has the RTT but no cumulative retransmit count: those come from packets
    assert (https.health.rtt_source, https.rtt_ms) == ("kernel", 20.0)
    assert https.health.retransmits_source == "packets"
    assert [row.process for row in snapshot.processes if row.pid == 501] == [https.process]
