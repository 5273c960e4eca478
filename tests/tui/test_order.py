"""Sort orders: natural directions, cycling, reversing, and --sort names."""

from __future__ import annotations

from netoproc.tui.order import Order, SortKey, initial_order, sort_rows

KEYS: tuple[SortKey[int], ...] = (
    SortKey("size", lambda n: n, descending=True),
    SortKey("name", lambda n: str(n), aliases=("pid",)),
)


def test_each_key_starts_in_its_natural_direction_and_s_wraps_around() -> None:
    order = Order()
    assert order.label(KEYS) == "size ↓"
    order = order.flipped()
    assert order.label(KEYS) == "size ↑"
    order = order.next(KEYS)
    assert order.label(KEYS) == "name ↑"  # not reversed: a new column starts afresh
    assert order.next(KEYS) == Order(0)


def test_sort_rows_follows_the_order() -> None:
    assert sort_rows([3, 10, 2], KEYS, Order()) == [10, 3, 2]
    assert sort_rows([3, 10, 2], KEYS, Order(1)) == [10, 2, 3]


def test_initial_order_knows_names_and_aliases_and_falls_back_to_the_first() -> None:
    assert initial_order(KEYS, "name") == Order(1)
    assert initial_order(KEYS, "pid") == Order(1)
    assert initial_order(KEYS, "connections") == Order(0)
