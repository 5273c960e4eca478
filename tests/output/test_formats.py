"""The snapshot formats, byte for byte: golden files, the guide's examples, hostile names.

Golden files are the contract; regenerate them only on purpose with
`NETOPROC_UPDATE_GOLDEN=1 pytest tests/output`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from netoproc.model import ProcessRef
from netoproc.output.formats import FORMATS
from netoproc.snapshot import ProcessRow, Snapshot, Traffic
from tests.fixtures import T0, guide_snapshot, long_run_snapshot

GOLDEN = Path(__file__).with_name("golden")

# The user's guide, SNAPSHOT OUTPUT, verbatim.
GUIDE_TSV = """\
pid\tprocess\trx_bytes\ttx_bytes\trx_packets\ttx_packets
1842\tchrome\t1200000\t340000\t800\t200
5678\tcurl\t50000\t10000\t100\t50
-\tunknown\t45000\t0\t30\t0
"""
GUIDE_JSON = """\
[
  {
    "pid": 1842,
    "process": "chrome",
    "rx_bytes": 1200000,
    "tx_bytes": 340000,
    "rx_packets": 800,
    "tx_packets": 200
  },
  {
    "pid": 5678,
    "process": "curl",
    "rx_bytes": 50000,
    "tx_bytes": 10000,
    "rx_packets": 100,
    "tx_packets": 50
  },
  {
    "pid": null,
    "process": "unknown",
    "rx_bytes": 45000,
    "tx_bytes": 0,
    "rx_packets": 30,
    "tx_packets": 0
  }
]
"""
# The guide's pretty rows for chrome, curl and TOTAL (its header and unknown
# rows are one column off from its own data rows, so those are not comparable).
GUIDE_PRETTY_LINES = [
    "Per-Process Network Traffic",
    "=" * 78,
    "1842     chrome                    1.1 MiB    332.0 KiB        800        200",
    "5678     curl                     48.8 KiB      9.8 KiB        100         50",
    "         TOTAL                     1.2 MiB    341.8 KiB        930        250",
]


def render(fmt: str, snapshot: Snapshot) -> str:
    out = io.StringIO()
    FORMATS[fmt](snapshot, out)
    return out.getvalue()


@pytest.mark.parametrize("fixture", [guide_snapshot, long_run_snapshot])
@pytest.mark.parametrize(("fmt", "suffix"), [("tsv", "tsv"), ("json", "json"), ("pretty", "txt")])
def test_golden(fmt: str, suffix: str, fixture: Callable[[], Snapshot]) -> None:
    text = render(fmt, fixture())
    path = GOLDEN / f"{fixture.__name__.removesuffix('_snapshot')}.{suffix}"
    if os.environ.get("NETOPROC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_tsv_and_json_are_the_guides() -> None:
    assert render("tsv", guide_snapshot()) == GUIDE_TSV
    assert render("json", guide_snapshot()) == GUIDE_JSON


def test_pretty_matches_the_guides_rows() -> None:
    lines = render("pretty", guide_snapshot()).splitlines()
    for expected in GUIDE_PRETTY_LINES:
        assert expected in lines
    assert "-        unknown                  43.9 KiB          0 B         30          0" in lines


def test_folded_exited_processes_have_no_pid_and_keep_their_plain_name() -> None:
    tsv = render("tsv", long_run_snapshot()).splitlines()
    assert tsv[1] == "-\tcurl\t3120000\t624000\t6240\t3120"
    rows = json.loads(render("json", long_run_snapshot()))
    assert {"pid": None, "process": "curl"}.items() <= rows[0].items()
    pretty = render("pretty", long_run_snapshot()).splitlines()
    assert pretty[4].startswith("-        curl (312 exited)    ")
    # a long name is cut, the note never
    assert pretty[8].startswith("-        back… (1,234 exited)  ")


def test_empty_snapshot() -> None:
    empty = Snapshot(time=T0, started=T0, interval=1.0)
    assert render("tsv", empty) == GUIDE_TSV.splitlines(keepends=True)[0]
    assert json.loads(render("json", empty)) == []
    assert render("pretty", empty).splitlines()[-1].split() == [
        "TOTAL",
        "0",
        "B",
        "0",
        "B",
        "0",
        "0",
    ]


HOSTILE = "evil\x1b[31m\ttab\nnew\u202eline\x9b2J\\"


@pytest.mark.parametrize("fmt", ["tsv", "json", "pretty"])
def test_hostile_process_names_stay_inert(fmt: str) -> None:
    snapshot = Snapshot(
        time=T0, started=T0, interval=1.0,
        processes=(ProcessRow(ProcessRef(7, HOSTILE), Traffic(10, 20, 1, 2)),),
    )  # fmt: skip
    text = render(fmt, snapshot)
    assert "\x1b" not in text and "\x9b" not in text and "\u202e" not in text
    assert "\r" not in text
    if fmt == "tsv":
        header, row = text.splitlines()
        assert row.count("\t") == header.count("\t") == 5
        assert row.split("\t")[1] == "evil\\x1b[31m\\ttab\\nnew\\u202eline\\x9b2J\\"
    elif fmt == "json":
        text.encode("ascii")
        assert json.loads(text)[0]["process"] == HOSTILE  # the exact name, safely escaped
    else:
        assert len(text.splitlines()) == 7
