"""Owners the kernel reported: how flows match them, and what the engine does with them."""

from __future__ import annotations

from netoproc.engine import Engine
from netoproc.engine.owners import SightedOwners, translated
from netoproc.model import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    V4_MAPPED_PREFIX,
    FlowKey,
    NatEntry,
    OwnerSighting,
    ProcessRef,
    UnknownReason,
    parse_addr,
)
from netoproc.snapshot import Traffic
from tests.engine.frames import ACK, RX, SYN, TX, Pkt, batch, ip, sock, tcp, udp

A, B, C = "192.0.2.1", "198.51.100.2", "203.0.113.3"
CURL, DIG, WORKER, PARENT = (ProcessRef(10, "curl", "root"), ProcessRef(20, "dig", "root"),
                             ProcessRef(30, "np-worker"), ProcessRef(31, "np-parent"))  # fmt: skip
T0 = 1_000.0


def seen(proto: int, local: str, lport: int, remote: str | None, rport: int,
         process: ProcessRef, *, foreign: bool = False) -> OwnerSighting:  # fmt: skip
    raddr = parse_addr(remote) if remote else V4_MAPPED_PREFIX
    return OwnerSighting(proto, parse_addr(local), lport, raddr, rport, process, foreign)


def key(local: str, lport: int, remote: str, rport: int, proto: int = IPPROTO_TCP) -> FlowKey:
    return FlowKey("eth0", proto, parse_addr(local), lport, parse_addr(remote), rport)


# matching --------------------------------------------------------------------------


def test_exact_then_bound_then_wildcard_as_the_kernel_delivers() -> None:
    owners = SightedOwners()
    owners.add([
        seen(IPPROTO_UDP, "0.0.0.0", 53, None, 0, DIG),  # the IPv4 wildcard
        OwnerSighting(IPPROTO_UDP, 0, 53, 0, 0, WORKER),  # a dual-stack :: socket
        seen(IPPROTO_UDP, A, 53, None, 0, PARENT),  # bound to A
        seen(IPPROTO_UDP, A, 53, B, 5000, CURL),  # connected
    ])  # fmt: skip
    assert owners.match(key(A, 53, B, 5000, IPPROTO_UDP)) == (CURL, False)
    assert owners.match(key(A, 53, C, 5000, IPPROTO_UDP)) == (PARENT, False)
    assert owners.match(key(C, 53, B, 1, IPPROTO_UDP)) == (DIG, False)  # v4 wildcard first
    assert owners.match(key("2001:db8::1", 53, "2001:db8::2", 1, IPPROTO_UDP)) == (WORKER, False)
    assert owners.match(key(A, 54, B, 5000, IPPROTO_UDP)) is None
    assert owners.match(key(A, 53, B, 5000, IPPROTO_TCP)) is None  # another protocol


def test_other_namespaces_sockets_match_at_the_far_end_and_never_by_wildcard() -> None:
    owners = SightedOwners()
    owners.add([
        seen(IPPROTO_TCP, B, 40000, C, 443, CURL, foreign=True),  # a container's client
        seen(IPPROTO_UDP, B, 5353, None, 0, DIG, foreign=True),  # bound to its address
        seen(IPPROTO_UDP, "0.0.0.0", 53, None, 0, WORKER, foreign=True),  # a wildcard
    ])  # fmt: skip
    # on the host, the client's packets arrive from B: the flow's remote end is B:40000
    assert owners.match(key(C, 443, B, 40000)) == (CURL, True)
    assert owners.match(key(B, 40000, C, 443)) is None  # not the socket's own orientation
    assert owners.match(key(C, 9, B, 5353, IPPROTO_UDP)) == (DIG, True)
    assert owners.match(key(C, 9, A, 53, IPPROTO_UDP)) is None
    assert owners.match(key(A, 53, C, 9, IPPROTO_UDP)) is None


def test_this_namespace_wins_over_another() -> None:
    owners = SightedOwners()
    owners.add([seen(IPPROTO_TCP, C, 443, B, 40000, WORKER, foreign=True),
                seen(IPPROTO_TCP, B, 40000, C, 443, CURL)])  # fmt: skip
    assert owners.match(key(B, 40000, C, 443)) == (CURL, False)


def test_bounded_the_least_recently_seen_goes_first() -> None:
    owners = SightedOwners(capacity=3)
    for port in range(1, 5):
        owners.add([seen(IPPROTO_TCP, A, port, B, 80, CURL)])
    owners.add([seen(IPPROTO_TCP, A, 2, B, 80, CURL)])  # seen again: now the newest
    owners.add([seen(IPPROTO_TCP, A, 5, B, 80, CURL)])
    assert len(owners) == 3
    assert [owners.match(key(A, port, B, 80)) is not None for port in range(1, 6)] == [
        False, True, False, True, True,
    ]  # fmt: skip


def test_a_socket_used_by_another_process_is_reported_once() -> None:
    owners = SightedOwners()
    owners.add([seen(IPPROTO_TCP, A, 1, B, 80, PARENT), seen(IPPROTO_TCP, A, 2, B, 80, CURL)])
    owners.add([seen(IPPROTO_TCP, A, 1, B, 80, PARENT)])  # the same process again: no move
    assert owners.moved() == set()
    owners.add([seen(IPPROTO_TCP, A, 1, B, 80, WORKER)])
    assert owners.moved() == {(IPPROTO_TCP, parse_addr(A), 1, parse_addr(B), 80)}
    assert owners.moved() == set()


# the engine --------------------------------------------------------------------------


def _rows(engine: Engine, now: float) -> dict[int | None, Traffic]:
    return {row.pid: row.total for row in engine.tick(now).processes}


def test_a_new_flow_takes_the_kernels_owner_and_is_not_looked_up() -> None:
    engine = Engine(started=T0)
    engine.sight([seen(IPPROTO_UDP, A, 40000, B, 53, DIG)])
    new = engine.ingest(batch(Pkt(ip(A, B, udp(40000, 53, 30)), T0, TX),
                              Pkt(ip(B, A, udp(53, 40000, 70)), T0, RX),
                              Pkt(ip(A, C, udp(40001, 53, 30)), T0, TX)))  # fmt: skip
    assert new == [key(A, 40001, C, 53, IPPROTO_UDP)]  # only the flow nobody reported
    assert _rows(engine, T0 + 1)[20] == Traffic(98, 58, 1, 1)


def test_the_kernels_word_replaces_the_socket_tables_guess() -> None:
    """A pre-fork server: the SYN's lookup finds the listener, held by the parent
    (the lowest pid); the worker's first read is reported after, and takes the
    whole flow."""
    engine = Engine(started=T0)
    new = engine.ingest(batch(Pkt(ip(B, A, tcp(40000, 80, SYN)), T0, RX)))
    engine.attribute({k: sock(IPPROTO_TCP, A, 80, state="LISTEN", pid=31) for k in new})
    engine.ingest(batch(Pkt(ip(B, A, tcp(40000, 80, ACK, 100)), T0, RX)))
    engine.sight([seen(IPPROTO_TCP, A, 80, B, 40000, WORKER)])
    rows = _rows(engine, T0 + 1)
    assert 31 not in rows
    assert rows[30] == Traffic(180, 0, 2, 0)


def test_unknown_flows_take_an_owner_reported_later() -> None:
    engine = Engine(started=T0)
    new = engine.ingest(batch(Pkt(ip(A, B, tcp(40000, 80, ACK, 10)), T0, TX)))
    engine.attribute(dict.fromkeys(new))  # the lookup found nothing: the process was gone
    assert _rows(engine, T0 + 1)[None].bytes == 50
    engine.sight([seen(IPPROTO_TCP, A, 40000, B, 80, CURL)])
    rows = _rows(engine, T0 + 2)
    assert None not in rows and rows[10] == Traffic(0, 50, 0, 1)


def test_a_socket_passed_on_keeps_what_each_process_moved() -> None:
    engine = Engine(started=T0)
    engine.sight([seen(IPPROTO_TCP, A, 40000, B, 80, PARENT)])
    engine.ingest(batch(Pkt(ip(A, B, tcp(40000, 80, ACK, 60)), T0, TX)))
    engine.tick(T0 + 1)
    engine.sight([seen(IPPROTO_TCP, A, 40000, B, 80, WORKER)])
    engine.tick(T0 + 2)  # the parent's flow ends here
    engine.ingest(batch(Pkt(ip(A, B, tcp(40000, 80, ACK, 160)), T0 + 2.5, TX)))
    rows = _rows(engine, T0 + 3)
    assert rows[31] == Traffic(0, 100, 0, 1)
    assert rows[30] == Traffic(0, 200, 0, 1)


def test_an_owner_at_the_far_end_sees_its_own_side() -> None:
    """On a host routing for a container: the container's client sends (RX here)
    and receives (TX here); its row says it sent and received."""
    engine = Engine(started=T0)
    engine.sight([seen(IPPROTO_TCP, B, 40000, C, 443, CURL, foreign=True)])
    engine.ingest(batch(Pkt(ip(B, C, tcp(40000, 443, SYN)), T0, RX),
                        Pkt(ip(C, B, tcp(443, 40000, ACK, 1000)), T0, TX)))  # fmt: skip
    snapshot = engine.tick(T0 + 1)
    (row,) = [r for r in snapshot.processes if r.pid == 10]
    assert row.total == Traffic(rx_bytes=1040, tx_bytes=40, rx_packets=1, tx_packets=1)
    (conn,) = snapshot.connections
    assert (conn.laddr, conn.lport, conn.raddr, conn.rport) == (
        parse_addr(B), 40000, parse_addr(C), 443,
    )  # fmt: skip
    assert (conn.direction, conn.total) == ("Out", row.total)  # it sent the SYN


def test_a_local_socket_reported_late_beats_its_peer_in_another_namespace() -> None:
    """A container's client sends first; the local server reads later: the flow is
    the server's, not (reversed) the client's."""
    engine = Engine(started=T0)
    engine.sight([seen(IPPROTO_TCP, B, 40000, A, 80, CURL, foreign=True)])
    engine.ingest(batch(Pkt(ip(B, A, tcp(40000, 80, ACK, 100)), T0, RX)))
    engine.tick(T0 + 1)
    engine.sight([seen(IPPROTO_TCP, A, 80, B, 40000, WORKER)])
    rows = _rows(engine, T0 + 2)
    assert 10 not in rows
    assert rows[30] == Traffic(140, 0, 1, 0)


# address translation ---------------------------------------------------------------

HOST, BOX, NET = "203.0.113.1", "10.88.0.2", "203.0.113.9"  # uplink (eth0), container, internet
BOX_CLIENT, BOX_SERVER = (
    ProcessRef(40, "curl", "root", "docker/web"),
    ProcessRef(41, "nginx", "root", "podman/shop"),
)


def masqueraded(port: int = 40000, outside: int = 61000) -> NatEntry:
    """The container dialled NET:80; the uplink carries HOST:outside."""
    return NatEntry(IPPROTO_TCP, (addr(BOX), port, addr(NET), 80),
                    (addr(NET), 80, addr(HOST), outside))  # fmt: skip


def published() -> NatEntry:
    """NET dialled HOST:8080, forwarded to the container's :80."""
    return NatEntry(IPPROTO_TCP, (addr(NET), 5555, addr(HOST), 8080),
                    (addr(BOX), 80, addr(NET), 5555))  # fmt: skip


def addr(text: str) -> int:
    return parse_addr(text)


def uplink(local: str, lport: int, remote: str, rport: int) -> FlowKey:
    return FlowKey("eth0", IPPROTO_TCP, addr(local), lport, addr(remote), rport)


def test_translation_finds_the_socket_on_either_side() -> None:
    assert translated(uplink(HOST, 61000, NET, 80), masqueraded()) == (
        IPPROTO_TCP, addr(BOX), 40000, addr(NET), 80)  # fmt: skip
    assert translated(uplink(HOST, 8080, NET, 5555), published()) == (
        IPPROTO_TCP, addr(BOX), 80, addr(NET), 5555)  # fmt: skip
    # the bridge side carries the socket's own addresses: nothing to translate
    assert translated(FlowKey("br0", IPPROTO_TCP, addr(NET), 80, addr(BOX), 40000),
                      masqueraded()) is None  # fmt: skip
    assert translated(FlowKey("br0", IPPROTO_TCP, addr(NET), 5555, addr(BOX), 80),
                      published()) is None  # fmt: skip
    assert translated(uplink(HOST, 61001, NET, 80), masqueraded()) is None  # another flow
    udp_entry = NatEntry(IPPROTO_UDP, masqueraded().orig, masqueraded().reply)
    assert translated(uplink(HOST, 61000, NET, 80), udp_entry) is None
    untranslated = NatEntry(
        IPPROTO_TCP, (addr(HOST), 1, addr(NET), 2), (addr(NET), 2, addr(HOST), 1)
    )
    assert translated(uplink(HOST, 1, NET, 2), untranslated) is None


def _nat_engine() -> Engine:
    engine = Engine(started=T0)
    engine.note_owner_source("eBPF")
    engine.sight([seen(IPPROTO_TCP, BOX, 40000, NET, 80, BOX_CLIENT, foreign=True),
                  seen(IPPROTO_TCP, BOX, 80, NET, 5555, BOX_SERVER, foreign=True)])  # fmt: skip
    return engine


def _unknown_until_asked(engine: Engine) -> list[FlowKey]:
    """The uplink's packets: a masqueraded client and a published server. The
    socket table has neither, so both are unknown until conntrack is asked."""
    new = engine.ingest(batch(
        Pkt(ip(HOST, NET, tcp(61000, 80, ACK, 100)), T0, TX),
        Pkt(ip(NET, HOST, tcp(80, 61000, ACK, 1000)), T0, RX),
        Pkt(ip(NET, HOST, tcp(5555, 8080, ACK, 300)), T0, RX),
        Pkt(ip(HOST, NET, tcp(8080, 5555, ACK, 3000)), T0, TX),
    ))  # fmt: skip
    engine.attribute(dict.fromkeys(new))
    return engine.nat_questions(10)


def test_flows_through_nat_land_on_the_containers_processes() -> None:
    engine = _nat_engine()
    questions = _unknown_until_asked(engine)
    assert sorted(questions) == sorted(
        [uplink(HOST, 61000, NET, 80), uplink(HOST, 8080, NET, 5555)]
    )
    engine.translate({uplink(HOST, 61000, NET, 80): masqueraded(),
                      uplink(HOST, 8080, NET, 5555): published()})  # fmt: skip
    snapshot = engine.tick(T0 + 1)
    rows = {r.pid: r for r in snapshot.processes}
    assert rows[40].total == Traffic(1040, 140, 1, 1) and rows[40].group == "docker/web"
    assert rows[41].total == Traffic(340, 3040, 1, 1) and rows[41].group == "podman/shop"
    assert None not in rows
    ends = {c.process.pid: (c.iface, c.laddr, c.lport, c.raddr, c.rport)
            for c in snapshot.connections if c.process}  # fmt: skip
    assert ends[40] == ("eth0", addr(BOX), 40000, addr(NET), 80)  # as its socket sees it
    assert ends[41] == ("eth0", addr(BOX), 80, addr(NET), 5555)
    assert engine.nat_questions(10) == []  # asked once; the mapping is kept


def test_a_translation_learnt_stays_when_its_entry_expires() -> None:
    """The entry is gone by the next question; the flow keeps its owner, and new
    bytes on it land there too."""
    engine = _nat_engine()
    _unknown_until_asked(engine)
    engine.translate({uplink(HOST, 61000, NET, 80): masqueraded(),
                      uplink(HOST, 8080, NET, 5555): None})  # fmt: skip
    engine.ingest(batch(Pkt(ip(HOST, NET, tcp(61000, 80, ACK, 60)), T0 + 1.5, TX)))
    snapshot = engine.tick(T0 + 2)
    rows = {r.pid: r for r in snapshot.processes}
    assert rows[40].total == Traffic(1040, 240, 1, 2)
    assert dict(rows[None].unknown_reasons) == {str(UnknownReason.NAT_NO_ENTRY): 3380}
    # asked once more (an entry not yet confirmed), then never again
    assert engine.nat_questions(10) == [uplink(HOST, 8080, NET, 5555)]
    engine.translate({uplink(HOST, 8080, NET, 5555): None})
    assert engine.nat_questions(10) == []


def test_flows_the_tracker_could_not_be_asked_about_say_so_and_are_not_asked_again() -> None:
    engine = Engine(started=T0)
    engine.untranslatable(_unknown_until_asked(engine))
    (unknown,) = [r for r in engine.tick(T0 + 1).processes if r.process is None]
    assert dict(unknown.unknown_reasons) == {str(UnknownReason.NAT_UNASKED): 4400 + 4 * 40}
    assert engine.nat_questions(10) == []


def test_an_owner_seen_after_the_translation_takes_the_flow() -> None:
    engine = Engine(started=T0)
    engine.note_owner_source("eBPF")
    _unknown_until_asked(engine)
    engine.translate({uplink(HOST, 61000, NET, 80): masqueraded()})
    snapshot = engine.tick(T0 + 1)
    (unknown,) = [r for r in snapshot.processes if r.process is None]
    assert str(UnknownReason.NAT_NO_OWNER) in dict(unknown.unknown_reasons)
    engine.sight([seen(IPPROTO_TCP, BOX, 40000, NET, 80, BOX_CLIENT, foreign=True)])
    rows = {r.pid: r for r in engine.tick(T0 + 2).processes}
    assert rows[40].total == Traffic(1040, 140, 1, 1)


def test_without_the_kernels_owners_the_reason_says_so() -> None:
    engine = Engine(started=T0)
    engine.note_owner_source("sockets", "turned off")
    _unknown_until_asked(engine)
    engine.translate({uplink(HOST, 61000, NET, 80): masqueraded()})
    (unknown,) = [r for r in engine.tick(T0 + 1).processes if r.process is None]
    assert str(UnknownReason.NAT_NEEDS_EBPF) in dict(unknown.unknown_reasons)


def test_questions_are_bounded_per_tick_and_the_rest_counted() -> None:
    engine = Engine(started=T0)
    new = engine.ingest(batch(*(Pkt(ip(NET, HOST, tcp(1000 + i, 80, ACK)), T0, RX)
                                for i in range(10))))  # fmt: skip
    engine.attribute(dict.fromkeys(new))
    assert len(engine.nat_questions(4)) == 4
    assert len(engine.nat_questions(4)) == 4
    assert len(engine.nat_questions(4)) == 2  # each flow asked once: no answer, no retry
    limits = dict(engine.tick(T0 + 1).health.limits)
    assert limits["conntrack lookups deferred to a later tick"] == 6 + 2
    replayed = Engine(started=T0, process_lookups=False)
    replayed.ingest(batch(Pkt(ip(NET, HOST, tcp(1, 80, ACK)), T0, RX)))
    assert replayed.nat_questions(4) == []
