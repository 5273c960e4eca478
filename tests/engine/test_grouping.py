"""Per-batch grouping: packets summed per flow from the local side, and the
orientation of packets whose direction the capture did not know (first sender
is local, SYN-ACK reverses it, known flows decide), exact under hash collisions."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from netoproc.decode.batch import PacketBatch
from netoproc.engine import grouping
from netoproc.engine.flows import ConversationSides
from netoproc.engine.grouping import FlowGroups, conversation_hashes, group, orient
from netoproc.model import IPPROTO_TCP, IPPROTO_UDP
from netoproc.snapshot import Traffic
from tests.engine.frames import (
    ACK,
    ETH0,
    FIN,
    LO,
    RST,
    RX,
    SYN,
    TCP4,
    TCP6,
    TX,
    UDP4,
    Pkt,
    addr,
    batch,
    ip,
    tcp,
    udp,
)

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
A6, B6 = "2001:db8::1", "2001:db8::2"
Key = tuple[int, int, int, int, int, int]  # iface, proto, local, lport, remote, rport


def by_flow(g: FlowGroups) -> dict[Key, Traffic]:
    """Bytes and packets in each direction, per flow."""
    out = {}
    for i in range(len(g)):
        local, remote = (
            (int(g.l_hi[i]) << 64) | int(g.l_lo[i]),
            (int(g.r_hi[i]) << 64) | int(g.r_lo[i]),
        )
        key = (int(g.iface[i]), int(g.proto[i]), local, int(g.lport[i]), remote, int(g.rport[i]))
        traffic = g.rx_bytes[i], g.tx_bytes[i], g.rx_packets[i], g.tx_packets[i]
        out[key] = Traffic(*(int(x) for x in traffic))
    assert len(out) == len(g)
    return out


def never_known(hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int8]:
    return np.full(len(hashes), -1, np.int8)


def directions(b: PacketBatch, lookup: grouping.SidesLookup = never_known) -> list[int]:
    return [int(d) for d in orient(b, lookup)[0]]


@pytest.fixture(params=["small", "hashed", "all-collide"])
def collide(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test grouping by dict (small batches), by real hashes, and with every hash equal."""
    if request.param != "small":
        monkeypatch.setattr(grouping, "SMALL", 0)
    if request.param == "all-collide":

        def constant(columns: list[npt.NDArray[np.uint64]]) -> npt.NDArray[np.uint64]:
            return np.zeros(len(columns[0]), np.uint64)

        monkeypatch.setattr(grouping, "_mix", constant)
    return bool(request.param == "all-collide")


def test_bytes_and_packets_summed_per_flow_from_the_local_side(collide: bool) -> None:
    b = batch(
        Pkt(ip(A, B, tcp(40000, 80, payload=100)), 1.0, TX),
        Pkt(ip(B, A, tcp(80, 40000, payload=1000)), 1.5, RX),
        Pkt(ip(A, B, tcp(40000, 80, payload=10)), 2.0, TX),
        Pkt(ip(A, C, udp(5000, 53, payload=30)), 3.0, TX),
        Pkt(ip(C, A, udp(53, 5000, payload=200)), 3.5, RX),
        Pkt(ip(A, B, tcp(40000, 80)), 4.0, TX, iface=LO),  # same tuple, other interface
        Pkt(ip(B6, A6, tcp(443, 50000, payload=5)), 5.0, RX),
        Pkt(ip(A, B, tcp(40001, 80, payload=1)), 6.0, TX),  # differs only in a port
    )
    g = group(b, b.direction)
    assert by_flow(g) == {
        (ETH0, IPPROTO_TCP, addr(A), 40000, addr(B), 80): Traffic(
            TCP4 + 1000, 2 * TCP4 + 110, 1, 2
        ),
        (ETH0, IPPROTO_UDP, addr(A), 5000, addr(C), 53): Traffic(UDP4 + 200, UDP4 + 30, 1, 1),
        (LO, IPPROTO_TCP, addr(A), 40000, addr(B), 80): Traffic(0, TCP4, 0, 1),
        (ETH0, IPPROTO_TCP, addr(A6), 50000, addr(B6), 443): Traffic(TCP6 + 5, 0, 1, 0),
        (ETH0, IPPROTO_TCP, addr(A), 40001, addr(B), 80): Traffic(0, TCP4 + 1, 0, 1),
    }
    first = {(int(g.lport[i]), int(g.iface[i])): float(g.first_ts[i]) for i in range(len(g))}
    last = {(int(g.lport[i]), int(g.iface[i])): float(g.last_ts[i]) for i in range(len(g))}
    assert first[40000, ETH0] == 1.0
    assert last[40000, ETH0] == 2.0
    assert (first[5000, ETH0], last[5000, ETH0]) == (3.0, 3.5)


def test_syn_close_and_pid_evidence_per_flow() -> None:
    b = batch(
        Pkt(ip(A, B, tcp(40000, 80, SYN)), 1.0, TX),
        Pkt(ip(B, A, tcp(80, 40000, SYN | ACK)), 1.1, RX),
        Pkt(ip(C, A, tcp(50000, 22, SYN)), 1.2, RX, pid=77),
        Pkt(ip(A, C, tcp(22, 50000, RST | ACK)), 1.3, TX, pid=77),
        Pkt(ip(A, B, tcp(40001, 443, FIN | ACK)), 1.4, TX),
    )
    g = group(b, b.direction)
    row = {int(g.lport[i]): i for i in range(len(g))}
    assert len(row) == 3
    assert (bool(g.syn_out[row[40000]]), bool(g.syn_in[row[40000]])) == (True, False)
    assert (bool(g.syn_out[row[22]]), bool(g.syn_in[row[22]])) == (False, True)
    assert [bool(g.closed[row[p]]) for p in (40000, 22, 40001)] == [False, True, True]
    assert [int(g.pid[row[p]]) for p in (40000, 22, 40001)] == [-1, 77, -1]


def test_unknown_direction_first_sender_is_local() -> None:
    b = batch(
        Pkt(ip(B, A, udp(53, 5000, 10))),  # B speaks first: B is local
        Pkt(ip(A, B, udp(5000, 53, 10))),
        Pkt(ip(B, A, udp(53, 5000, 10))),
        Pkt(ip(A, C, udp(6000, 123, 10))),  # another conversation: A is local there
        Pkt(ip(C, A, udp(123, 6000, 10))),
    )
    assert directions(b) == [TX, RX, TX, TX, RX]


def test_unknown_direction_syn_ack_first_makes_its_receiver_local() -> None:
    b = batch(
        Pkt(ip(B, A, tcp(80, 40000, SYN | ACK))),
        Pkt(ip(A, B, tcp(40000, 80, ACK))),
        Pkt(ip(B, A, tcp(80, 40000, ACK, payload=100))),
    )
    assert directions(b) == [RX, TX, RX]
    g = group(b, *orient(b, never_known))
    assert by_flow(g) == {
        (ETH0, IPPROTO_TCP, addr(A), 40000, addr(B), 80): Traffic(2 * TCP4 + 100, TCP4, 2, 1),
    }


def test_unknown_direction_follows_an_existing_flow() -> None:
    sides = ConversationSides()

    def halves(text: str) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        value = addr(text)
        return np.asarray([value >> 64], np.uint64), np.asarray([value & (2**64 - 1)], np.uint64)

    conversation, b_is_first = conversation_hashes(
        np.asarray([ETH0]), np.asarray([IPPROTO_TCP]),
        *halves(B), np.asarray([80]), *halves(A), np.asarray([40000]),
    )  # fmt: skip
    sides.add(int(conversation[0]), bool(b_is_first[0]))  # a flow with B local exists
    asked: list[int] = []

    def lookup(hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int8]:
        asked.append(len(hashes))
        return sides.lookup(hashes)

    b = batch(
        Pkt(ip(A, B, tcp(40000, 80, SYN))),  # a SYN from A, but a known flow says B is local
        Pkt(ip(B, A, tcp(80, 40000, SYN | ACK))),
        Pkt(ip(A, B, tcp(40000, 80, ACK))),
    )
    assert directions(b, lookup) == [RX, TX, RX]
    assert asked == [1]  # one conversation, asked once


def test_known_directions_are_kept_and_unknown_ones_decided_beside_them() -> None:
    b = batch(
        Pkt(ip(A, B, udp(1, 2)), direction=RX),  # the capture says A→B arrived here
        Pkt(ip(A, C, udp(1, 2))),
        Pkt(ip(C, A, udp(2, 1)), direction=TX),
        Pkt(ip(C, A, udp(2, 1))),
    )
    assert directions(b) == [RX, TX, TX, RX]


def test_collision_fallback_keeps_distinct_flows_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def constant(columns: list[npt.NDArray[np.uint64]]) -> npt.NDArray[np.uint64]:
        calls.append(len(columns[0]))
        return np.full(len(columns[0]), 12345, np.uint64)

    monkeypatch.setattr(grouping, "_mix", constant)
    monkeypatch.setattr(grouping, "SMALL", 0)
    packets = [Pkt(ip(A, B, udp(1000 + i % 7, 53, payload=i)), float(i), TX) for i in range(50)]
    g = group(batch(*packets), np.full(50, TX, np.int8))
    assert calls  # the patched hash was used
    expected = {
        (ETH0, IPPROTO_UDP, addr(A), 1000 + p, addr(B), 53): Traffic(
            0, sum(UDP4 + i for i in range(p, 50, 7)), 0, len(range(p, 50, 7))
        )
        for p in range(7)
    }
    assert by_flow(g) == expected


def test_orients_own_grouping_equals_grouping_afresh() -> None:
    b = batch(*(Pkt(ip(A if i % 3 else B, C, udp(1000 + i % 5, 53, payload=i))) for i in range(90)))
    direction, grouping = orient(b, never_known)
    assert grouping is not None  # every row was undecided
    assert by_flow(group(b, direction, grouping)) == by_flow(group(b, direction))
    mixed = batch(Pkt(ip(A, B, udp(1, 2)), direction=TX), Pkt(ip(A, C, udp(1, 2))))
    assert orient(mixed, never_known)[1] is None  # some rows were decided by the capture
