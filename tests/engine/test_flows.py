"""Flow state defaults and attribution, and the bounded table of fragment ports."""

from __future__ import annotations

from netoproc.engine.flows import Flow, FragmentPorts
from netoproc.model import IPPROTO_UDP, FlowKey, ProcessRef, UnknownReason

KEY = FlowKey("eth0", IPPROTO_UDP, 1, 2, 3, 4)


def test_new_flow_is_pending_and_empty() -> None:
    flow = Flow(KEY, 10.0, history=3)
    assert (flow.owner, flow.reason, flow.socket, flow.outbound, flow.closed) == (
        None,
        UnknownReason.PENDING,
        None,
        None,
        False,
    )
    assert (flow.rx_bytes, flow.tx_bytes, flow.rx_packets, flow.tx_packets) == (0, 0, 0, 0)
    assert (flow.first_seen, flow.last_seen) == (10.0, 10.0)
    flow.rx_history.extend([1.0, 2.0, 3.0, 4.0])
    assert list(flow.rx_history) == [2.0, 3.0, 4.0]


def test_attribute_clears_the_reason_when_there_is_an_owner() -> None:
    flow = Flow(KEY, 0.0, history=1)
    flow.attribute(None, UnknownReason.NO_SOCKET)
    assert (flow.owner, flow.reason) == (None, UnknownReason.NO_SOCKET)
    flow.attribute(ProcessRef(1, "a"), UnknownReason.NO_SOCKET)
    assert (flow.owner, flow.reason) == (ProcessRef(1, "a"), None)


def test_fragment_ports_forget_the_oldest_first() -> None:
    table = FragmentPorts(capacity=2)
    table.learn((1, 2, IPPROTO_UDP, 10), (1000, 53))
    table.learn((1, 2, IPPROTO_UDP, 11), (1001, 53))
    table.learn((1, 2, IPPROTO_UDP, 10), (1000, 53))  # learnt again: now the newest
    table.learn((1, 2, IPPROTO_UDP, 12), (1002, 53))
    assert table.ports((1, 2, IPPROTO_UDP, 11)) is None
    assert table.ports((1, 2, IPPROTO_UDP, 10)) == (1000, 53)
    assert table.ports((1, 2, IPPROTO_UDP, 12)) == (1002, 53)
    assert table.ports((2, 1, IPPROTO_UDP, 10)) is None  # the key includes the direction
