"""What the views have in common: sort orders, and the small interface the app drives them by.

A view is a widget that can show a snapshot in a given order. Each names
its sort keys; `s` cycles through them, `S` reverses the direction, and a
key's natural direction (biggest first for traffic, A to Z for names) is
where each one starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from textual.widget import Widget

from netoproc.snapshot import Snapshot

RowT = TypeVar("RowT")


@dataclass(frozen=True, slots=True)
class SortKey(Generic[RowT]):
    name: str
    key: Callable[[RowT], Any]
    descending: bool = False
    aliases: tuple[str, ...] = ()  # other --sort names that mean this key here


@dataclass(frozen=True, slots=True)
class Order:
    """A view's current sort: which key, and whether reversed from its natural direction."""

    index: int = 0
    reversed: bool = False

    def descending(self, keys: Sequence[SortKey[Any]]) -> bool:
        return keys[self.index].descending != self.reversed

    def label(self, keys: Sequence[SortKey[Any]]) -> str:
        return f"{keys[self.index].name} {'↓' if self.descending(keys) else '↑'}"

    def next(self, keys: Sequence[SortKey[Any]]) -> Order:
        return Order((self.index + 1) % len(keys))

    def flipped(self) -> Order:
        return Order(self.index, not self.reversed)


def sort_rows(rows: Sequence[RowT], keys: Sequence[SortKey[RowT]], order: Order) -> list[RowT]:
    return sorted(rows, key=keys[order.index].key, reverse=order.descending(keys))


def initial_order(keys: Sequence[SortKey[Any]], name: str) -> Order:
    """The order named `name` (from --sort), or the view's first when it has no such key."""
    for i, key in enumerate(keys):
        if name == key.name or name in key.aliases:
            return Order(i)
    return Order()


class View(Protocol):
    """A widget the app switches to and feeds snapshots."""

    TITLE: ClassVar[str]
    SORTS: ClassVar[Sequence[SortKey[Any]]]

    def show(self, snapshot: Snapshot, order: Order) -> None: ...

    @property
    def keyboard_target(self) -> Widget: ...

    def position(self) -> str:
        """Where the cursor is, for the status bar ("12/340"), or ""."""
        ...
