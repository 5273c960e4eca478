"""The recorder: takes every Snapshot a session makes, writes a minute at a time.

`offer` runs on the session's thread and only keeps a reference: when a
snapshot belongs to a new minute (by its own time: data, not a clock read),
the last snapshot of the minute before goes to the writer thread, which
computes the minute's deltas (tally.py) and writes them in one transaction.
A kill loses at most the minute in progress.

When the file cannot be written (disk full, read-only, locked by another
connection, not openable), one line says so and recording pauses: the
minutes wait in memory (up to MAX_PENDING; older ones are then dropped and
counted) and each new minute tries again; a line says when it resumes. A
file that is damaged, not a ledger, of a newer schema or refused for safety
stops recording for the run, after one line. The capture goes on either way.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable

from netoproc.ledger.store import LedgerError, Limits, Store, explain
from netoproc.ledger.tally import Counts, Key, Tally
from netoproc.snapshot import Snapshot

log = logging.getLogger("netoproc")
MAX_PENDING = 120  # minutes kept in memory while the file cannot be written
STOP_SECONDS = 10.0


class Recorder:
    def __init__(
        self,
        path: str,
        say: Callable[[str], None],
        *,
        minute: float = 60.0,
        limits: Limits | None = None,
    ) -> None:
        self.path = path
        self.minute = minute
        self.limits = limits or Limits()
        self._say = say
        self._tally = Tally()
        self._held: Snapshot | None = None
        self._held_minute = 0
        self._queue: queue.SimpleQueue[tuple[int, Snapshot] | None] = queue.SimpleQueue()
        self._pending: dict[int, dict[Key, list[int]]] = {}
        self._store: Store | None = None
        self._paused: str | None = None  # the problem already told
        self.stopped: str | None = None  # a lasting problem: recording is off
        self.dropped_minutes = 0
        self.written_minutes = 0
        # opened here, before the capture's threads run, so SQLite's descriptors can be
        # told apart from anything else the process opens
        self._open(check_fds=True)
        self._thread = threading.Thread(target=self._run, name="netoproc-ledger", daemon=True)
        self._thread.start()

    def notice(self) -> str:
        """What the monitor's status bar says about the ledger: nothing while it records."""
        if self.stopped is not None:
            return "ledger stopped (see on exit)"
        if self._paused is not None:
            return "ledger paused: " + self._paused.rpartition(": ")[2]
        return ""

    # session thread --------------------------------------------------------

    def offer(self, snapshot: Snapshot) -> None:
        """Called with every snapshot, in order; cheap."""
        index = math.floor(snapshot.time / self.minute)
        if self._held is not None and index != self._held_minute:
            self._queue.put((self._held_minute, self._held))
        self._held, self._held_minute = snapshot, index

    def close(self) -> None:
        """Write what is held (the minute in progress) and stop the writer."""
        if self._held is not None:
            self._queue.put((self._held_minute, self._held))
            self._held = None
        self._queue.put(None)
        self._thread.join(timeout=STOP_SECONDS)
        if self._store is not None and not self._thread.is_alive():
            self._store.close()
            self._store = None

    # writer thread ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            index, snapshot = item
            try:
                rows = self._tally.advance(snapshot)
            except Exception as exc:  # a bug: say it once, keep the capture going
                self._stop(f"{type(exc).__name__}: {exc}")
                continue
            start = int(index * self.minute)
            if self.stopped is None and rows:
                into = self._pending.setdefault(start, {})
                for key, counts in rows.items():
                    kept = into.get(key)
                    if kept is None:
                        into[key] = list(counts)
                    else:
                        for i in range(4):
                            kept[i] += counts[i]
                while len(self._pending) > MAX_PENDING:
                    del self._pending[min(self._pending)]
                    self.dropped_minutes += 1
            self._flush()

    def _open(self, *, check_fds: bool) -> None:
        try:
            self._store = Store(self.path, self.limits, check_fds=check_fds)
        except Exception as exc:  # OSError, sqlite3.Error, LedgerError: one line
            self._problem(explain(self.path, exc))

    def _flush(self) -> None:
        if self.stopped is not None or not self._pending:
            return
        if self._store is None:
            self._open(check_fds=False)
            if self._store is None:
                return
        for start in sorted(self._pending):
            rows: dict[Key, Counts] = {
                k: (c[0], c[1], c[2], c[3]) for k, c in self._pending[start].items()
            }
            try:
                self._store.write(start, rows)
            except Exception as exc:
                self._problem(explain(self.path, exc))
                return
            del self._pending[start]
            self.written_minutes += 1
        if self._paused is not None:
            self._paused = None
            late = (
                f"; {self.dropped_minutes} minutes could not be kept"
                if self.dropped_minutes
                else ""
            )
            self._say(f"ledger: {self.path}: recording again{late}")

    def _problem(self, error: LedgerError) -> None:
        if error.lasting:
            self._stop(str(error))
            return
        if self._paused is None:
            self._paused = str(error)
            self._say(f"ledger: {error}; recording paused, retrying each minute")
        if self._store is not None and "locked" not in str(error) and "busy" not in str(error):
            # reopen next time: read-only and full files may come back as they were
            self._store.close()
            self._store = None

    def _stop(self, message: str) -> None:
        if self.stopped is None:
            self.stopped = message
            self._pending.clear()
            self._say(f"ledger: {message}; recording stopped (the capture goes on)")
        if self._store is not None:
            self._store.close()
            self._store = None
