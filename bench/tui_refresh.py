"""CPU cost of one monitor refresh with 1,000 processes and 5,000 connections.

    python bench/tui_refresh.py [--processes 1000] [--connections 5000] [--ticks 40]

Runs the real app headless (Textual's test driver) at 80x24 and 200x60 and
feeds it snapshots the way the capture thread does, alternating two
different ones so every row changes every tick. For the Process and the
Connection view it reports, per tick, the UI thread's CPU time (median,
95th percentile and worst; the worst ticks are Python's full garbage
collections, which walk every object of the snapshots) of:

    show     filter + sort + row list: what a snapshot costs before drawing
    draw     formatting every line on screen
    tick     the whole refresh: the message, show, the bars and Textual's
             compositor writing the frame (to a null terminal)

The target is a tick of at most 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # for tests.fixtures

from tests.fixtures import busy_snapshot

from netoproc.snapshot import Snapshot
from netoproc.tui.app import MonitorOptions, SnapshotArrived, make_app
from netoproc.tui.source import StaticSource
from netoproc.tui.table import RowTable

SIZES = ((80, 24), (200, 60))
VIEWS = (("Process", "1"), ("Connection", "2"))


def _ms(samples: list[float]) -> str:
    ms = sorted(s * 1e3 for s in samples)
    p95 = ms[round(0.95 * (len(ms) - 1))]
    return f"{statistics.median(ms):5.1f} {p95:5.1f} {ms[-1]:5.1f}"


async def measure(
    size: tuple[int, int], key: str, ticks: list[Snapshot], pattern: str | None
) -> tuple[list[float], list[float], list[float]]:
    app = make_app(StaticSource(ticks[0]), MonitorOptions(filter=pattern))
    show: list[float] = []
    draw: list[float] = []
    tick: list[float] = []
    async with app.run_test(size=size) as pilot:
        await pilot.press(key)
        await pilot.pause()
        view = app.views[app.active]
        table = view.keyboard_target
        assert isinstance(table, RowTable)
        for snapshot in ticks:
            started = time.thread_time()
            view.show(snapshot.filtered(pattern), app.orders[app.active])
            show.append(time.thread_time() - started)
            started = time.thread_time()
            for y in range(table.size.height):
                table.render_line(y)
            draw.append(time.thread_time() - started)
        for snapshot in ticks:
            await pilot.pause()
            started = time.thread_time()
            app.post_message(SnapshotArrived(snapshot))
            await pilot.pause()  # handled and painted
            tick.append(time.thread_time() - started)
    return show, draw, tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--ticks", type=int, default=40)
    args = parser.parse_args()
    snapshots = [busy_snapshot(args.processes, args.connections, seed=s) for s in (1, 2)]
    ticks = [snapshots[i % 2] for i in range(args.ticks)]
    print(f"{args.processes:,} processes, {args.connections:,} connections, {args.ticks} ticks;")
    print("UI thread CPU per tick in ms: median, 95th percentile, worst")
    print(f"{'view':<11} {'size':>7} {'filter':<10} {'show':>17} {'draw':>17} {'tick':>17}")
    for name, key in VIEWS:
        for size in SIZES:
            for pattern in (None, "worker-00"):
                show, draw, tick = asyncio.run(measure(size, key, ticks, pattern))
                label = f"{size[0]}x{size[1]}"
                print(f"{name:<11} {label:>7} {pattern or '-':<10} {_ms(show)} {_ms(draw)} "
                      f"{_ms(tick)}")  # fmt: skip


if __name__ == "__main__":
    main()
