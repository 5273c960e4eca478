"""A recording process for the kill -9 test: feeds the Recorder a synthetic busy
machine, one snapshot per ledger minute, and prints `written N` each time the
writer has committed another minute (so the test knows what must survive).

    python -m tests.ledger.kill_driver FILE FIRST_MINUTE
"""

from __future__ import annotations

import sys
import time

from netoproc.ledger.recorder import Recorder
from tests.ledger.synth import Desktop

FLOWS = 50
PER_TICK = 1000


def main() -> None:
    path, first = sys.argv[1], int(sys.argv[2])
    recorder = Recorder(path, lambda line: print(line, file=sys.stderr, flush=True))
    desktop = Desktop(flows=FLOWS, names=10, remotes=20, churn=0, per_tick=PER_TICK)
    print("ready", flush=True)
    for minute in range(first, first + 100_000):
        recorder.offer(desktop.tick(minute * 60.0 + 1))
        handed = minute - first  # the minutes before this one went to the writer
        deadline = time.monotonic() + 5
        while recorder.written_minutes < handed and time.monotonic() < deadline:
            time.sleep(0.001)
        print(f"written {recorder.written_minutes}", flush=True)


if __name__ == "__main__":
    main()
