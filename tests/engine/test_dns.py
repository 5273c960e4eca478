"""DNS transactions in the engine: matching, latency, timeouts, TCP framing,
stub-resolver delegation, resolver statistics and names for addresses.

Messages are built with dnspython, the oracle; the tracker only ever sees
their wire bytes, as it would from a capture.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from netoproc.engine.dns import DnsTracker
from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, FlowKey, ProcessRef, parse_addr

CLIENT, SERVER = parse_addr("192.0.2.10"), parse_addr("192.0.2.53")
STUB = parse_addr("127.0.0.53")
T0 = 1_800_000_000.0
APP = ProcessRef(42, "curl", "alice")


def client_key(sport: int = 40000, proto: int = IPPROTO_UDP, server: int = SERVER) -> FlowKey:
    return FlowKey("eth0", proto, CLIENT, sport, server, 53)


def query(name: str, rtype: str = "A", ident: int = 7) -> dns.message.Message:
    message = dns.message.make_query(name, rtype)
    message.id = ident
    return message


def answer(q: dns.message.Message, *records: tuple[str, str, str], rcode: int = 0) -> bytes:
    response = dns.message.make_response(q)
    response.set_rcode(dns.rcode.Rcode(rcode))
    for name, rtype, value in records:
        response.answer.append(dns.rrset.from_text(name, 300, "IN", rtype, value))
    return response.to_wire()


def owners(mapping: dict[FlowKey, ProcessRef]) -> Callable[[FlowKey], ProcessRef | None]:
    return mapping.get


def test_query_and_response_give_latency_answer_and_name_for_the_address() -> None:
    tracker = DnsTracker()
    q = query("github.com")
    tracker.observe(T0, client_key(), True, q.to_wire())
    records = (("github.com.", "A", "140.82.121.4"), ("github.com.", "A", "140.82.121.3"))
    tracker.observe(T0 + 0.0125, client_key(), False, answer(q, *records))
    view = tracker.view(owners({client_key(): APP}), {"eth0": ("192.0.2.53",)})
    (row,) = view.queries
    assert (row.name, row.qtype, row.rcode) == ("github.com", "A", "NOERROR")
    assert row.response == "140.82.121.4, 140.82.121.3"
    assert abs(row.latency_ms - 12.5) < 1e-3  # type: ignore[operator]  # float64 epoch: ~0.2 µs
    assert (row.process, row.resolver, row.iface, row.transport) == (
        APP,
        "192.0.2.53",
        "eth0",
        "UDP",
    )
    assert tracker.name_for(parse_addr("140.82.121.3")) == "github.com"
    (resolver,) = view.resolvers
    assert (resolver.queries, resolver.failures, resolver.configured) == (1, 0, True)
    assert abs(resolver.avg_latency_ms - 12.5) < 1e-3  # type: ignore[operator]


def test_rcodes_cname_targets_and_other_types_read_as_people_expect() -> None:
    cases = [
        (query("a.example", ident=1), (), dns.rcode.NXDOMAIN, "NXDOMAIN"),
        (query("b.example", ident=2), (), dns.rcode.SERVFAIL, "SERVFAIL"),
        (query("c.example", ident=3), (), dns.rcode.REFUSED, "REFUSED"),
        (
            query("d.example", ident=4),
            (("d.example.", "CNAME", "e.example."),),
            0,
            "CNAME e.example",
        ),
        (
            query("f.example", "MX", 5),
            (("f.example.", "MX", "10 mx.f.example."),),
            0,
            "10 mx.f.example",
        ),
        (query("g.example", "AAAA", 6), (), 0, "NODATA"),
    ]
    tracker = DnsTracker()
    for i, (q, records, rcode, _) in enumerate(cases):
        key = client_key(41000 + i)
        tracker.observe(T0, key, True, q.to_wire())
        tracker.observe(T0 + 0.001, key, False, answer(q, *records, rcode=rcode))
    view = tracker.view(owners({}), {})
    assert [r.response for r in view.queries] == [c[3] for c in cases]
    (resolver,) = view.resolvers
    assert (resolver.queries, resolver.failures, resolver.configured) == (6, 3, False)


def test_unanswered_queries_time_out_and_retransmissions_keep_the_first_time() -> None:
    tracker = DnsTracker(timeout=5.0)
    q = query("slow.example")
    tracker.observe(T0, client_key(), True, q.to_wire())
    tracker.observe(T0 + 1.0, client_key(), True, q.to_wire())  # the client asks again
    tracker.expire(T0 + 4.9)
    assert tracker.view(owners({}), {}).queries[0].response == "…"
    tracker.expire(T0 + 5.1)
    (row,) = tracker.view(owners({}), {}).queries
    assert (row.response, row.rcode, row.latency_ms) == ("timeout", "timeout", None)
    # a late answer after the timeout changes nothing
    tracker.observe(T0 + 6, client_key(), False, answer(q, ("slow.example.", "A", "192.0.2.1")))
    (row,) = tracker.view(owners({}), {}).queries
    assert row.response == "timeout"
    assert tracker.view(owners({}), {}).resolvers[0].failures == 1


def test_a_response_must_match_flow_id_and_question() -> None:
    tracker = DnsTracker()
    q = query("x.example", ident=99)
    tracker.observe(T0, client_key(), True, q.to_wire())
    other_id, other_name = query("x.example", ident=98), query("y.example", ident=99)
    tracker.observe(
        T0 + 0.01, client_key(), False, answer(other_id, ("x.example.", "A", "192.0.2.1"))
    )
    tracker.observe(
        T0 + 0.01, client_key(), False, answer(other_name, ("y.example.", "A", "192.0.2.2"))
    )
    tracker.observe(
        T0 + 0.01, client_key(40001), False, answer(q, ("x.example.", "A", "192.0.2.3"))
    )
    assert tracker.view(owners({}), {}).queries[0].response == "…"
    tracker.observe(T0 + 0.02, client_key(), False, answer(q, ("x.example.", "A", "192.0.2.4")))
    assert tracker.view(owners({}), {}).queries[0].response == "192.0.2.4"


def tcp_frame(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


def test_tcp_messages_split_joined_and_retransmitted() -> None:
    tracker = DnsTracker()
    key = client_key(proto=IPPROTO_TCP)
    q1, q2 = query("one.example", ident=1), query("two.example", ident=2)
    stream = tcp_frame(q1.to_wire()) + tcp_frame(q2.to_wire())
    # the client's stream, cut mid length-prefix, with one segment sent twice
    cut = 1 + len(q1.to_wire()) + 1
    seq = 1000
    tracker.observe(T0, key, True, stream[:cut], seq)
    tracker.observe(T0, key, True, stream[:cut], seq)  # retransmission
    tracker.observe(T0, key, True, stream[cut:], seq + cut)
    replies = tcp_frame(answer(q2, ("two.example.", "A", "192.0.2.2"))) + tcp_frame(
        answer(q1, ("one.example.", "A", "192.0.2.1"))
    )
    tracker.observe(T0 + 0.002, key, False, replies, 5000)  # both answers in one segment
    view = tracker.view(owners({}), {})
    assert [(r.name, r.response, r.transport) for r in view.queries] == [
        ("one.example", "192.0.2.1", "TCP"),
        ("two.example", "192.0.2.2", "TCP"),
    ]


def test_a_gap_in_a_tcp_stream_drops_the_broken_message_only() -> None:
    tracker = DnsTracker()
    key = client_key(proto=IPPROTO_TCP)
    q1, q2 = query("lost.example", ident=1), query("kept.example", ident=2)
    first = tcp_frame(q1.to_wire())
    tracker.observe(T0, key, True, first[:10], 0)
    tracker.observe(T0, key, True, tcp_frame(q2.to_wire()), len(first))  # bytes 10.. were lost
    assert [r.name for r in tracker.view(owners({}), {}).queries] == ["kept.example"]


def test_malformed_messages_are_counted() -> None:
    tracker = DnsTracker()
    tracker.observe(T0, client_key(), True, b"\x00\x01\x01")
    self_pointer = bytes.fromhex("000100000001000000000000") + b"\xc0\x0c\x00\x01\x00\x01"
    tracker.observe(T0, client_key(), True, self_pointer)
    assert tracker.view(owners({}), {}).malformed == 2


def test_a_stub_resolvers_upstream_query_is_shown_as_the_applications() -> None:
    tracker = DnsTracker()
    app_key = FlowKey("lo", IPPROTO_UDP, STUB, 53, CLIENT, 45000)  # the stub's side of it
    upstream = FlowKey("eth0", IPPROTO_UDP, CLIENT, 38000, SERVER, 53)
    q = query("github.com", ident=5)
    asked = FlowKey("lo", IPPROTO_UDP, CLIENT, 45000, STUB, 53)
    tracker.observe(T0, asked, True, q.to_wire())  # the app asks the stub
    tracker.observe(T0, app_key, False, q.to_wire())  # the stub receives it
    forwarded = query("github.com", ident=77)
    tracker.observe(T0 + 0.0005, upstream, True, forwarded.to_wire())
    resolved = ProcessRef(300, "systemd-resolve", "systemd-resolve")
    view = tracker.view(owners({asked: APP, upstream: resolved}), {})
    assert [(r.resolver, r.process) for r in view.queries] == [
        ("127.0.0.53", APP),
        ("192.0.2.53", APP),
    ]


def test_the_log_is_a_bounded_ring_but_statistics_cover_the_whole_run() -> None:
    tracker = DnsTracker(log_size=10)
    for i in range(50):
        q = query(f"n{i}.example", ident=i)
        key = client_key(30000 + i)
        tracker.observe(T0 + i, key, True, q.to_wire())
        tracker.observe(T0 + i + 0.001, key, False, answer(q, (f"n{i}.example.", "A", "192.0.2.9")))
    view = tracker.view(owners({}), {})
    assert [r.name for r in view.queries] == [f"n{i}.example" for i in range(40, 50)]
    assert view.resolvers[0].queries == 50


def test_configured_resolvers_without_queries_still_get_a_row() -> None:
    view = DnsTracker().view(owners({}), {"eth0": ("192.0.2.1", "2001:db8::53")})
    assert [(r.iface, r.server, r.queries, r.configured) for r in view.resolvers] == [
        ("eth0", "192.0.2.1", 0, True),
        ("eth0", "2001:db8::53", 0, True),
    ]
