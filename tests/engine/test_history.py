"""RateHistory: a minute of rates per process, rows reused, exited processes
forgotten once their minute is quiet, and histories a snapshot took staying
as they were while later ticks go on (and the arrays grow)."""

from __future__ import annotations

import numpy as np

from netoproc.engine.history import RateHistory

Histories = dict[str, tuple[float, ...]]


def record(
    history: RateHistory, rates: dict[str, float], live: set[str]
) -> tuple[Histories, Histories]:
    owners = list(rates)
    values = np.asarray([rates[o] for o in owners], np.float64)
    taken = history.record(owners, values, values / 2, np.asarray([o in live for o in owners]))
    rx, tx = taken.tuples()
    return dict(zip(owners, rx, strict=True)), dict(zip(owners, tx, strict=True))


def test_the_last_minute_oldest_first() -> None:
    history = RateHistory(length=3)
    for value in (1.0, 2.0):
        rx, tx = record(history, {"a": value}, {"a"})
    assert rx["a"] == (1.0, 2.0) and tx["a"] == (0.5, 1.0)
    for value in (3.0, 4.0):
        rx, _ = record(history, {"a": value}, {"a"})
    assert rx["a"] == (2.0, 3.0, 4.0)


def test_an_exited_process_keeps_its_history_while_the_minute_shows_traffic() -> None:
    history = RateHistory(length=3)
    record(history, {"a": 5.0}, {"a"})
    rx, _ = record(history, {"a": 0.0}, set())  # exited: no flows, no sockets
    assert rx["a"] == (5.0, 0.0)
    rx, _ = record(history, {"a": 0.0}, set())
    assert rx["a"] == (5.0, 0.0, 0.0)
    rx, _ = record(history, {"a": 0.0}, set())  # the 5.0 has left the minute
    assert rx["a"] == () and len(history) == 0
    rx, _ = record(history, {"a": 0.0}, set())  # and none starts again for it
    assert rx["a"] == () and len(history) == 0


def test_a_process_without_a_row_is_forgotten_and_its_row_reused() -> None:
    history = RateHistory(length=4, capacity=2)
    record(history, {"a": 1.0, "b": 2.0}, {"a", "b"})
    record(history, {"b": 3.0}, {"b"})  # a has gone
    assert len(history) == 1
    rx, _ = record(history, {"b": 4.0, "c": 9.0}, {"b", "c"})
    assert rx == {"b": (2.0, 3.0, 4.0), "c": (9.0,)}  # c took a's row, and nothing of a's


def test_histories_taken_stay_as_they_were_while_later_ticks_grow_the_arrays() -> None:
    history = RateHistory(length=3, capacity=1)
    owners = ["a"]
    taken = [history.record(owners, np.array([1.0]), np.array([0.0]), np.array([True]))]
    for n in range(2, 40):  # more processes than rows: the arrays grow several times
        owners.append(f"p{n}")
        rates = np.arange(len(owners), dtype=np.float64) + n
        taken.append(history.record(owners, rates, rates, np.ones(len(owners), np.bool_)))
    assert taken[0].tuples()[0] == [(1.0,)]
    assert taken[1].tuples()[0] == [(1.0, 2.0), (3.0,)]
    assert taken[-1].tuples()[0][:2] == [(37.0, 38.0, 39.0), (38.0, 39.0, 40.0)]
