"""Each process's rates over the last minute, one value a tick.

A tick's rates are one pair of arrays, indexed by each process's row; the
last minute is the last HISTORY_SECONDS pairs. A tick adds a pair and
changes none, so a snapshot keeps the pairs it saw and reads its processes'
histories from them whenever it is read, however many ticks later.

A process keeps a history while it has flows or sockets, and after it exits
only while the minute still shows traffic: with processes coming and going
all day, memory stays the same. Rows are reused.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt

HISTORY_SECONDS = 60
_NEVER = -(1 << 62)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclasses.dataclass(frozen=True, slots=True)
class Histories:
    """Some processes' histories as of one tick: the ticks' rate arrays, oldest
    first, each process's row in them and how many of the last it spans."""

    ticks: tuple[tuple[F64, F64], ...]
    rows: I64
    kept: I64  # 0: no history

    def tuples(self) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
        """(rx, tx) histories, oldest value first, in the order of `rows`."""
        n = len(self.rows)
        if not self.ticks:
            return [()] * n, [()] * n
        rows = np.maximum(self.rows, 0)
        out = []
        for side in (0, 1):
            window = np.stack([tick[side][rows] for tick in self.ticks], axis=1).tolist()
            length = len(self.ticks)
            out.append([tuple(values[length - k :]) if k else () for values, k in
                        zip(window, self.kept.tolist(), strict=True)])  # fmt: skip
        return out[0], out[1]


class RateHistory:
    def __init__(self, length: int = HISTORY_SECONDS, capacity: int = 64) -> None:
        self.length = length
        self._ticks: deque[tuple[F64, F64]] = deque(maxlen=length)
        self._tick = 0
        self._row: dict[Hashable, int] = {}
        self._owner: list[Hashable] = []  # row -> owner
        self._free: list[int] = []
        self._capacity = capacity
        self._n = np.zeros(capacity, np.int64)  # values kept, up to `length`
        self._moved = np.full(capacity, _NEVER, np.int64)  # last tick with a rate not 0
        self._seen = np.zeros(capacity, np.int64)  # last tick the row's owner had a row
        self._used = np.zeros(capacity, np.bool_)

    def record(self, owners: Sequence[Hashable], rx: F64, tx: F64, live: Bool) -> Histories:
        """Add this tick's rates of `owners` (every owner with a row this tick;
        the others are forgotten); `live`: the owner still has flows or sockets."""
        self._tick = tick = self._tick + 1
        row, n = self._row, len(owners)
        rows = np.fromiter((row.get(owner, -1) for owner in owners), np.int64, n)
        for i in np.flatnonzero((rows < 0) & live).tolist():
            rows[i] = self._allocate(owners[i])
        have = np.flatnonzero(rows >= 0)
        at = rows[have]
        rx_tick, tx_tick = np.zeros(self._capacity), np.zeros(self._capacity)
        rx_tick[at], tx_tick[at] = rx[have], tx[have]
        self._ticks.append((rx_tick, tx_tick))
        self._n[at] = np.minimum(self._n[at] + 1, self.length)
        self._moved[at[(rx[have] != 0) | (tx[have] != 0)]] = tick
        self._seen[at] = tick
        # exited, and nothing but zeros left in the minute
        quiet = ~live[have] & (self._moved[at] <= tick - self._n[at])
        for r in at[quiet].tolist():
            self._release(r)
        rows[have[quiet]] = -1
        for r in np.flatnonzero(self._used & (self._seen < tick)).tolist():
            self._release(r)  # no row this tick: gone
        kept = np.where(rows >= 0, self._n[np.maximum(rows, 0)], 0)
        return Histories(tuple(self._ticks), rows, kept)

    def __len__(self) -> int:
        return len(self._row)

    def _allocate(self, owner: Hashable) -> int:
        if self._free:
            r = self._free.pop()
            self._owner[r] = owner
        else:
            r = len(self._owner)
            self._owner.append(owner)
            if r == self._capacity:
                self._grow(self._capacity * 2)
        self._row[owner] = r
        self._n[r] = 0
        self._moved[r] = _NEVER
        self._used[r] = True
        return r

    def _grow(self, capacity: int) -> None:
        """Room for more rows; the ticks kept grow too (snapshots keep the old ones)."""
        extra = capacity - self._capacity
        self._ticks = deque(
            ((np.pad(rx, (0, extra)), np.pad(tx, (0, extra))) for rx, tx in self._ticks),
            maxlen=self.length,
        )
        self._n = np.pad(self._n, (0, extra))
        self._moved = np.pad(self._moved, (0, extra), constant_values=_NEVER)
        self._seen = np.pad(self._seen, (0, extra))
        self._used = np.pad(self._used, (0, extra))
        self._capacity = capacity

    def _release(self, r: int) -> None:
        del self._row[self._owner[r]]
        self._used[r] = False
        self._free.append(r)
