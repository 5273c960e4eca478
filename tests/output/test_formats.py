"""The snapshot formats, byte for byte: golden files, the README's examples, hostile names.

Golden files are the contract; regenerate them only on purpose with
`NETOPROC_UPDATE_GOLDEN=1 pytest tests/output`.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from netoproc.model import ProcessRef
from netoproc.output.formats import FORMATS
from netoproc.snapshot import ProcessRow, Snapshot, Traffic
from tests.fixtures import T0, long_run_snapshot, readme_snapshot

GOLDEN = Path(__file__).with_name("golden")

README = Path(__file__).parents[2] / "README.md"


def readme_examples() -> list[str]:
    """The README's code blocks: the tables it shows are what the formats print."""
    return re.findall(r"^```\n(.*?)^```$", README.read_text(), re.S | re.M)


def readme_example(first_line: str) -> str:
    (block,) = [b for b in readme_examples() if b.startswith(first_line)]
    return block


def render(fmt: str, snapshot: Snapshot) -> str:
    out = io.StringIO()
    FORMATS[fmt](snapshot, out)
    return out.getvalue()


@pytest.mark.parametrize("fixture", [readme_snapshot, long_run_snapshot])
@pytest.mark.parametrize(("fmt", "suffix"), [("tsv", "tsv"), ("json", "json"), ("pretty", "txt")])
def test_golden(fmt: str, suffix: str, fixture: Callable[[], Snapshot]) -> None:
    text = render(fmt, fixture())
    path = GOLDEN / f"{fixture.__name__.removesuffix('_snapshot')}.{suffix}"
    if os.environ.get("NETOPROC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_tsv_and_json_are_the_readmes() -> None:
    assert render("tsv", readme_snapshot()) == readme_example("pid\tprocess\t")
    assert render("json", readme_snapshot()) == readme_example('[\n  {\n    "pid": 1842')


def test_pretty_is_the_readmes_first_example() -> None:
    example = readme_example("$ sudo netoproc --duration 5 --format pretty\n")
    assert render("pretty", readme_snapshot()) == example.split("\n", 1)[1]


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
    assert render("tsv", empty) == readme_example("pid\tprocess\t").splitlines(keepends=True)[0]
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
