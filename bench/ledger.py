"""The ledger's cost per minute, and how fast its file grows.

    python bench/ledger.py [--flows 5000] [--names 1000] [--minutes 10] [--days 3]

Cost: a synthetic machine with `--flows` connections of `--names` process
names (to twice as many remote names), every connection moving bytes every
minute and 1 % of them replaced each minute: the worst case for the ledger, a
row per flow per minute. For each of `--minutes` minutes it times, in CPU time
of this process: `offer` (what the session's thread pays per tick), the
minute's deltas (tally, on the writer thread) and its transaction (store).

Growth: a simulated busy desktop (`--desk-flows` connections, 80 names, 600
remote names, 2 % replaced a minute, all moving bytes every minute) recorded
for `--days` days, one minute at a time with the default retention (minutes
48 hours, hours 60 days, days 5 years); the file's size at the end of each day.
Prints two tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from tests.ledger.synth import Desktop

from netoproc.ledger.recorder import Recorder
from netoproc.ledger.store import Store
from netoproc.ledger.tally import Tally

T0 = 1_800_000_000 - 1_800_000_000 % 86400


def _size(path: str) -> int:
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))


def cost(flows: int, names: int, minutes: int, where: str) -> None:
    desktop = Desktop(flows=flows, names=names, remotes=2 * names, churn=flows // 100)
    tally = Tally()
    store = Store(os.path.join(where, "cost.db"))
    snapshots = [desktop.tick(T0 + 60.0 * m) for m in range(minutes)]
    recorder = Recorder(os.path.join(where, "offer.db"), print)
    offer = []
    for s in snapshots:
        start = time.process_time()
        recorder.offer(s)
        offer.append(time.process_time() - start)
    recorder.close()
    deltas, writes, rows = [], [], []
    for m, s in enumerate(snapshots):
        start = time.process_time()
        minute = tally.advance(s)
        middle = time.process_time()
        store.write(int(T0 + 60 * m), minute)
        deltas.append(middle - start)
        writes.append(time.process_time() - middle)
        rows.append(len(minute))
    store.close()
    print(f"ledger cost per minute: {flows:,} flows, {names:,} names, {minutes} minutes "
          f"(CPU ms, median / max)")  # fmt: skip
    print(f"  offer (session thread, per tick) {1e3 * statistics.median(offer):8.3f} / "
          f"{1e3 * max(offer):8.3f}")  # fmt: skip
    print(f"  deltas (writer thread)           {1e3 * statistics.median(deltas):8.1f} / "
          f"{1e3 * max(deltas):8.1f}")  # fmt: skip
    print(f"  transaction (writer thread)      {1e3 * statistics.median(writes):8.1f} / "
          f"{1e3 * max(writes):8.1f}   ({statistics.median(rows):,.0f} rows a minute)")  # fmt: skip
    total = statistics.median(deltas) + statistics.median(writes)
    print(f"  per minute in all                {1e3 * total:8.1f}   "
          f"({100 * total / 60:.3f} % of a core)")  # fmt: skip


def growth(days: float, flows: int, where: str) -> None:
    path = os.path.join(where, "desk.db")
    desktop = Desktop(flows=flows, names=80, remotes=600, churn=max(1, flows // 50),
                      per_tick=20000)  # fmt: skip
    tally = Tally()
    store = Store(path)
    print(f"database growth, busy desktop: {flows} flows, 80 names, 600 remote names")
    print("  day       file size   minutes rows   hours rows   days rows   growth")
    previous = 0
    minutes = int(days * 1440)
    for m in range(minutes):
        store.write(T0 + 60 * m, tally.advance(desktop.tick(T0 + 60.0 * m)))
        if (m + 1) % 1440 == 0 or m + 1 == minutes:
            db = store.db
            counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("minutes", "hours", "days")]  # fmt: skip
            size = store.used_bytes()
            print(f"  {(m + 1) / 1440:5.2f}   {size / 2**20:9.1f} MiB   {counts[0]:12,}"
                  f"   {counts[1]:10,}   {counts[2]:9,}   "
                  f"{(size - previous) / 2**20:+.1f} MiB")  # fmt: skip
            previous = size
    store.close()
    print(f"  file on disk at the end: {_size(path) / 2**20:.1f} MiB (with its WAL)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=5000)
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--desk-flows", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as where:
        cost(args.flows, args.names, args.minutes, where)
        growth(args.days, args.desk_flows, where)


if __name__ == "__main__":
    main()
