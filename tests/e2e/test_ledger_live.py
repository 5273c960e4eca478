"""The ledger end to end: known traffic recorded over several ledger minutes, then
`netoproc report`'s per-process bytes equal tcpdump's, exactly.

NETOP_LEDGER_MINUTE=4 makes a ledger minute 4 seconds long (a knob for tests
only), so the run crosses several minutes in a few seconds; the traffic comes in
waves, one per minute, from processes of the same names.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.netns import TwoHosts, stop_tcpdump, two_hosts, wait_for_line
from tests.e2e.test_snapshot_live import TCP_PORT, UDP_PORT, _totals
from tests.witness import tcpdump_packets

pytestmark = pytest.mark.live
MINUTE = 4


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoHosts]:
    monkeypatch.setenv("NETOP_LEDGER_MINUTE", str(MINUTE))
    yield from two_hosts(f"l{os.getpid() % 100000}")


def _report(path: Path, *args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "netoproc", "report", "--ledger", str(path), "--format", "json",
         *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_report_per_process_bytes_equal_tcpdump(hosts: TwoHosts, tmp_path: Path) -> None:
    for server in (hosts.peer(hosts.b, "tcp-server", str(TCP_PORT)),
                   hosts.peer(hosts.b, "udp-server", str(UDP_PORT))):  # fmt: skip
        wait_for_line(server.stdout, "ready")
    pcap = tmp_path / "witness.pcap"
    ledger = tmp_path / "usage.db"
    witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
    netoproc = hosts.netoproc(hosts.a, "--ledger", str(ledger), "--ledger-only",
                              "--duration", str(4 * MINUTE + 2), "--verbose")  # fmt: skip
    wait_for_line(netoproc.stderr, "recording the ledger")
    flows: dict[str, list[tuple[str, int, str, int]]] = {"np-ltcp": [], "np-ludp": []}
    started = time.monotonic()
    for wave in range(3):
        time.sleep(max(0.0, started + wave * MINUTE - time.monotonic()))
        clients = {
            "np-ltcp": hosts.peer(hosts.a, "tcp-client", "np-ltcp", hosts.b4, str(TCP_PORT),
                                  str(100000 * (wave + 1)), "100"),
            "np-ludp": hosts.peer(hosts.a, "udp-client", "np-ludp", hosts.b4, str(UDP_PORT),
                                  "20", "500"),
        }  # fmt: skip
        for name, client in clients.items():
            out, err = client.communicate(timeout=30)
            assert client.returncode == 0, err
            info = json.loads(out)
            port = TCP_PORT if name == "np-ltcp" else UDP_PORT
            flows[name].append((str(info["local"]), int(info["lport"]), hosts.b4, port))
    _, err = netoproc.communicate(timeout=60)
    assert netoproc.returncode == 0, err
    assert "ledger:" not in err  # no problem to report
    stop_tcpdump(witness)

    packets = tcpdump_packets(pcap)
    doc = _report(ledger, "--since", "1h")
    got = {row["process"]: row for row in doc["rows"]}  # type: ignore[attr-defined]
    for name, ends in flows.items():
        expected = {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
        for local, lport, remote, rport in ends:
            for k, v in _totals(packets, local, lport, remote, rport).items():
                expected[k] += v
        assert expected["tx_packets"] > 0
        assert {k: got[name][k] for k in expected} == expected, name
    db = sqlite3.connect(ledger)
    minutes = db.execute("SELECT count(DISTINCT t) FROM minutes").fetchone()[0]
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    assert minutes >= 3  # the waves fell in different ledger minutes
    assert stat.S_IMODE(os.stat(ledger).st_mode) == 0o600


def test_kill_9_of_a_recording_netoproc_keeps_the_file_sound(
    hosts: TwoHosts, tmp_path: Path
) -> None:
    """netoproc itself, recording, killed -9 five times while traffic flows."""
    server = hosts.peer(hosts.b, "tcp-server", str(TCP_PORT))
    wait_for_line(server.stdout, "ready")
    ledger = tmp_path / "usage.db"
    for kill in range(5):
        proc = hosts.netoproc(hosts.a, "--ledger", str(ledger), "--ledger-only", "--verbose")
        wait_for_line(proc.stderr, "recording the ledger")
        client = hosts.peer(hosts.a, "tcp-client", "np-kill", hosts.b4, str(TCP_PORT),
                            "50000", "100")  # fmt: skip
        client.communicate(timeout=30)
        time.sleep(MINUTE * 1.5 + 0.3 * kill)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        db = sqlite3.connect(ledger)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
    doc = _report(ledger, "--since", "1h", "--format", "json")
    rows = {row["process"]: row for row in doc["rows"]}  # type: ignore[attr-defined]
    assert int(rows["np-kill"]["tx_bytes"]) > 0
