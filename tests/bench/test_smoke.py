"""The benchmarks and the fuzzer still run: each in its smallest form.

Their numbers are not checked here (timing on a shared CI machine means
nothing); what is checked is that every script runs to the end, exits 0 and
prints the rows its table promises. The real runs, and their results, are in
the README's Performance section.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

SMOKE = [
    pytest.param(["bench/offline.py", "--packets", "20000", "--repeat", "1"], ["throughput:"],
                 id="offline"),
    pytest.param(["bench/dns_parse.py", "--messages", "2000", "--repeat", "1"],
                 ["parsed and matched"], id="dns_parse"),
    pytest.param(["bench/tui_refresh.py", "--processes", "50", "--connections", "200",
                  "--ticks", "3"], ["Process", "Connection"], id="tui_refresh"),
    pytest.param(["fuzz/run.py", "--inputs", "300"], ["peak RSS"], id="fuzz"),
    pytest.param(["bench/ledger.py", "--flows", "300", "--names", "50", "--minutes", "3",
                  "--days", "0.02", "--desk-flows", "30"],
                 ["offer (session thread", "transaction", "database growth", "file on disk"],
                 id="ledger"),
]  # fmt: skip
LIVE_SMOKE = [
    pytest.param(["bench/live.py", "--quick"],
                 ["UDP flood", "nethogs -C", "peak RSS", "idle CPU", "wall time"], id="live"),
    pytest.param(["bench/tui_latency.py", "--pps", "2000", "--presses", "4"],
                 ["view switch", "sort (s)"], id="tui_latency"),
    pytest.param(["bench/short_lived.py", "--count", "5", "--lifetimes", "0,10", "--pps", "1000"],
                 ["lives    0 ms", "lives   10 ms", "attributed"], id="short_lived"),
    pytest.param(["bench/owners.py", "--clients", "5", "--rate", "1000", "--seconds", "0.5"],
                 ["DNS clients", "pre-forked", "tracer load time", "programs ran"], id="owners"),
    pytest.param(["bench/counting.py", "--quick"],
                 ["engine with", "counting in the kernel", "nethogs -C", "two unlimited senders"],
                 id="counting"),
    pytest.param(["bench/soak.py", "--seconds", "8", "--every", "4"],
                 ["RSS after warm-up", "threads"], id="soak"),
    pytest.param(["bench/flood.py", "--seconds", "6", "--every", "2", "--pps", "20000"],
                 ["syn flood:", "netoproc: RSS", "nethogs -C: RSS"], id="flood"),
    pytest.param(["bench/flood.py", "--kind", "scan", "--seconds", "4", "--every", "2",
                  "--pps", "20000", "--no-nethogs"], ["scan flood:", "netoproc: RSS"],
                 id="flood_scan"),
]  # fmt: skip


def _run(argv: list[str], expected: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr
    for needle in expected:
        assert needle in result.stdout, (needle, result.stdout)


@pytest.mark.parametrize(("argv", "expected"), SMOKE)
def test_offline_scripts_run(argv: list[str], expected: list[str]) -> None:
    _run(argv, expected)


@pytest.mark.live
@pytest.mark.parametrize(("argv", "expected"), LIVE_SMOKE)
def test_live_scripts_run(argv: list[str], expected: list[str]) -> None:
    _run(argv, expected)
