"""Run a live session for a while and print its last snapshot as JSON.

The end-to-end tests run this inside a network namespace to see what the
TUI would show (DNS log, connections, interfaces) without a terminal:
    python observe.py SECONDS
prints "ready" on stderr once capturing, then the snapshot on stdout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys

from netoproc.clock import SystemClock
from netoproc.session import LiveSession, Settings


def main() -> None:
    kernel_owners = os.environ.get("NETOP_EBPF", "").lower() not in ("off", "0", "no")  # as cli.py
    session = LiveSession(Settings(interval=0.5, kernel_owners=kernel_owners), SystemClock())
    signal.signal(signal.SIGTERM, lambda *_: session.stop())
    try:
        snapshot = session.run(
            float(sys.argv[1]), on_ready=lambda: print("ready", file=sys.stderr, flush=True)
        )
    finally:
        session.close()
    # the rows as tuples: asdict converts tuples of dataclasses, not lazy Rows
    rows = dataclasses.replace(
        snapshot, processes=tuple(snapshot.processes), connections=tuple(snapshot.connections)
    )
    print(json.dumps(dataclasses.asdict(rows)))


if __name__ == "__main__":
    main()
