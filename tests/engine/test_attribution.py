"""SocketIndex: which socket a flow belongs to (exact, then bound address,
then wildcard), the listener fallback for sockets with no owner, the
deterministic choice among sockets sharing a key, and the unknown reasons."""

from __future__ import annotations

import itertools

import pytest

from netoproc.engine.attribution import SocketIndex, reason_for
from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, FlowKey, ProcessRef, UnknownReason
from tests.engine.frames import addr, sock

A, B = "192.0.2.1", "198.51.100.2"
FLOW = FlowKey("eth0", IPPROTO_TCP, addr(A), 8080, addr(B), 50000)

EXACT = sock(IPPROTO_TCP, A, 8080, B, 50000, pid=1)
BOUND = sock(IPPROTO_TCP, A, 8080, state="LISTEN", pid=2)
ANY4 = sock(IPPROTO_TCP, "0.0.0.0", 8080, state="LISTEN", pid=3)
ANY6 = sock(IPPROTO_TCP, "::", 8080, state="LISTEN", pid=4)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ([EXACT, BOUND, ANY4], EXACT),
        ([BOUND, ANY4], BOUND),
        ([ANY4], ANY4),
        ([ANY6], ANY6),  # a dual-stack listener takes IPv4 flows
        ([sock(IPPROTO_TCP, B, 8080, state="LISTEN", pid=5)], None),  # another address
        ([sock(IPPROTO_UDP, A, 8080, B, 50000, pid=5)], None),  # another protocol
        ([sock(IPPROTO_TCP, A, 8080, B, 50001, pid=5)], None),  # another remote port
        ([], None),
    ],
)
def test_match_order(table: list[object], expected: object) -> None:
    for order in itertools.permutations(table):
        assert SocketIndex(order).match(FLOW) == expected  # type: ignore[arg-type]


def test_unowned_connection_falls_back_to_its_listener() -> None:
    queued = sock(IPPROTO_TCP, A, 8080, B, 50000, "SYN_RECV")
    assert SocketIndex([queued, ANY4]).match(FLOW) == ANY4
    assert SocketIndex([queued]).match(FLOW) == queued  # no listener: no owner
    assert reason_for(queued) is UnknownReason.NO_OWNER


def test_time_wait_stays_closed_even_with_a_listener() -> None:
    tw = sock(IPPROTO_TCP, A, 8080, B, 50000, "TIME_WAIT")
    assert SocketIndex([tw, ANY4]).match(FLOW) == tw
    assert reason_for(tw) is UnknownReason.CLOSED


def test_shared_key_prefers_an_owner_then_the_lowest_pid() -> None:
    listeners = [
        sock(IPPROTO_TCP, "0.0.0.0", 8080, state="LISTEN"),
        sock(IPPROTO_TCP, "0.0.0.0", 8080, state="LISTEN", pid=300, name="worker"),
        sock(IPPROTO_TCP, "0.0.0.0", 8080, state="LISTEN", pid=200, name="worker"),
        sock(IPPROTO_TCP, "0.0.0.0", 8080, state="LISTEN", pid=250, name="worker"),
    ]
    for order in itertools.permutations(listeners):
        found = SocketIndex(order).match(FLOW)
        assert found is not None
        assert found.owner == ProcessRef(200, "worker")


def test_listening_set_holds_owned_listeners_by_pid_and_port() -> None:
    index = SocketIndex([BOUND, ANY6, EXACT, sock(IPPROTO_TCP, "0.0.0.0", 22, state="LISTEN")])
    assert index.listening == {(IPPROTO_TCP, 2, 8080), (IPPROTO_TCP, 4, 8080)}


def test_unconnected_udp_is_found_by_address_then_wildcard() -> None:
    flow = FlowKey("eth0", IPPROTO_UDP, addr(A), 53, addr(B), 40000)
    bound = sock(IPPROTO_UDP, A, 53, state="UNCONN", pid=7)
    wildcard = sock(IPPROTO_UDP, "0.0.0.0", 53, state="UNCONN", pid=8)
    assert SocketIndex([wildcard, bound]).match(flow) == bound
    assert SocketIndex([wildcard]).match(flow) == wildcard


def test_reason_for() -> None:
    assert reason_for(None) is UnknownReason.NO_SOCKET
    assert reason_for(EXACT) is None
    assert reason_for(sock(IPPROTO_TCP, A, 1, B, 2, "CLOSE_WAIT")) is UnknownReason.NO_OWNER


def test_ipv4_traffic_prefers_the_ipv4_wildcard_to_a_dual_stack_one() -> None:
    v4_flow = FlowKey("eth0", IPPROTO_TCP, addr(A), 8080, addr(B), 40000)
    v6_flow = FlowKey("eth0", IPPROTO_TCP, addr("2001:db8::1"), 8080, addr("2001:db8::2"), 40000)
    for order in itertools.permutations([ANY4, ANY6]):
        assert SocketIndex(order).match(v4_flow) == ANY4
        assert SocketIndex(order).match(v6_flow) == ANY6
    assert SocketIndex([ANY6]).match(v4_flow) == ANY6  # dual-stack listeners take IPv4 too
