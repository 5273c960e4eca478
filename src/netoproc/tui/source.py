"""Where snapshots come from, as the app sees it: something it can start and stop.

The app never touches capture or the engine (tests/test_architecture.py):
the command line hands it a source. A live source runs the capture on its
own thread and calls `deliver` once per tick from there; `deliver` only
posts a message, so the UI thread never waits for capture and a slow frame
never holds the capture up. `fail` reports why the source stopped early.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from netoproc.snapshot import Snapshot

Deliver = Callable[[Snapshot], None]
Fail = Callable[[str], None]


class SnapshotSource(Protocol):
    def start(self, deliver: Deliver, fail: Fail) -> None:
        """Begin delivering snapshots; returns at once."""
        ...

    def stop(self) -> None:
        """Stop delivering and release what the source holds; returns when it has."""
        ...


class StaticSource:
    """Snapshots known in advance: a replayed file, or the fixtures of the tests."""

    def __init__(self, *snapshots: Snapshot) -> None:
        self.snapshots = snapshots
        self.stopped = False

    def start(self, deliver: Deliver, fail: Fail) -> None:
        for snapshot in self.snapshots:
            deliver(snapshot)

    def stop(self) -> None:
        self.stopped = True
