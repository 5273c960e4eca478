"""The flow table (slots, hash lookups, clashes, reuse), flow objects, conversation
sides, and the bounded table of fragment ports."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from netoproc.capture.records import FlowColumns
from netoproc.engine.flows import KEY_COLUMNS, ConversationSides, FlowTable, FragmentPorts
from netoproc.model import IPPROTO_UDP, FlowKey, ProcessRef, UnknownReason
from netoproc.snapshot import Traffic

KEY = FlowKey("eth0", IPPROTO_UDP, 1, 2, 3, 4)
ROW = (1, IPPROTO_UDP, 0, 1, 2, 0, 3, 4)  # the key columns: iface id, proto, l_hi, l_lo, ...


def columns(*rows: tuple[int, ...]) -> FlowColumns:
    iface, proto, l_hi, l_lo, lport, r_hi, r_lo, rport = zip(*rows, strict=True)
    signed, unsigned = np.int64, np.uint64
    return FlowColumns(
        np.asarray(iface, signed), np.asarray(proto, signed), np.asarray(l_hi, unsigned),
        np.asarray(l_lo, unsigned), np.asarray(lport, signed), np.asarray(r_hi, unsigned),
        np.asarray(r_lo, unsigned), np.asarray(rport, signed),
    )  # fmt: skip


def hashes(*values: int) -> npt.NDArray[np.uint64]:
    return np.asarray(values, np.uint64)


def test_a_new_flow_is_pending_and_empty() -> None:
    table = FlowTable()
    flow = table.create(KEY, ROW, 99)
    assert (flow.owner, flow.reason, flow.socket) == (None, UnknownReason.PENDING, None)
    a = table.arrays
    assert (a.outbound[flow.slot], a.closed[flow.slot]) == (-1, False)  # nothing seen
    assert table.traffic(flow.slot) == Traffic()
    a.rx_bytes[flow.slot] += 1500
    a.tx_packets[flow.slot] += 2
    assert table.traffic(flow.slot) == Traffic(rx_bytes=1500, tx_packets=2)


def test_attribute_clears_the_reason_and_marks_the_slot_owned() -> None:
    table = FlowTable()
    flow = table.create(KEY, ROW, 1)
    flow.attribute(None, UnknownReason.NO_SOCKET)
    assert (flow.owner, flow.reason, bool(table.arrays.owned[flow.slot])) == (
        None, UnknownReason.NO_SOCKET, False,
    )  # fmt: skip
    flow.attribute(ProcessRef(1, "a"), UnknownReason.NO_SOCKET)
    assert (flow.owner, flow.reason, bool(table.arrays.owned[flow.slot])) == (
        ProcessRef(1, "a"), None, True,
    )  # fmt: skip


def test_find_by_hash_and_exact_key() -> None:
    table = FlowTable()
    other = (1, IPPROTO_UDP, 0, 1, 2, 0, 3, 5)
    first = table.create(KEY, ROW, 7)
    # `other` has the same hash: it must not be mistaken for the first flow
    assert table.find(hashes(7, 7), columns(ROW, other)).tolist() == [first.slot, -1]
    second = table.create(FlowKey("eth0", IPPROTO_UDP, 1, 2, 3, 5), other, 7)
    assert table.find(hashes(7, 7), columns(other, ROW)).tolist() == [second.slot, first.slot]
    table.release(first)
    assert table.find(hashes(7, 7), columns(other, ROW)).tolist() == [second.slot, -1]


def test_slots_are_reused_and_the_table_grows() -> None:
    table = FlowTable(capacity=2)
    made = [table.create(FlowKey("eth0", 17, 1, 2, 3, n), (1, 17, 0, 1, 2, 0, 3, n), n)
            for n in range(5)]  # fmt: skip
    assert table.capacity >= 5
    assert len({f.slot for f in made}) == 5
    table.arrays.tx_bytes[made[1].slot] = 77
    table.release(made[1])
    reused = table.create(KEY, ROW, 1000)
    assert reused.slot == made[1].slot
    assert table.traffic(reused.slot) == Traffic()  # a released slot starts empty
    assert all(
        int(getattr(table.arrays, name)[reused.slot]) == v
        for name, v in zip(KEY_COLUMNS, ROW, strict=True)
    )


def test_conversation_sides_live_while_their_flows_do() -> None:
    sides = ConversationSides()
    sides.add(5, True)
    sides.add(5, True)  # two flows of one conversation (e.g. on two interfaces)
    sides.add(6, False)
    assert sides.lookup(hashes(5, 6, 7)).tolist() == [1, 0, -1]
    sides.remove(5)
    assert sides.lookup(hashes(5)).tolist() == [1]
    sides.remove(5)
    assert sides.lookup(hashes(5)).tolist() == [-1]


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
