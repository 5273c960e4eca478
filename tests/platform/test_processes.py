"""ProcessNames over /proc (ProcFacts): names and users as psutil, the witness,
reads them; one incarnation cached, a reused pid named anew, a gone process
named from its glimpse, a stat line whose name holds spaces and parentheses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from netoproc.model import ProcessRef
from netoproc.platform.processes import ProcessNames
from netoproc.platform.procfs import ProcFacts


@pytest.fixture
def long_named_child(tmp_path: Path) -> Iterator[int]:
    """A child whose program name is longer than comm keeps."""
    program = tmp_path / "a-program-with-a-long-name"
    program.symlink_to(sys.executable)
    child = subprocess.Popen([str(program), "-c", "import time; time.sleep(30)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_names_and_users_are_what_psutil_reads(long_named_child: int) -> None:
    names = ProcessNames(ProcFacts())
    for pid in (os.getpid(), long_named_child, 1):
        process = psutil.Process(pid)
        assert names.describe(pid) == ProcessRef(pid, process.name(), process.username())
    assert names.describe(long_named_child).name == "a-program-with-a-long-name"  # type: ignore[union-attr]


def fake_process(proc: Path, pid: int, comm: bytes, started: int, uid: int = 0) -> None:
    (proc / str(pid)).mkdir(exist_ok=True)
    stat = b"%d (%s) S 1 %d 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0" % (pid, comm, pid, started)
    (proc / str(pid) / "stat").write_bytes(stat)
    (proc / str(pid) / "comm").write_bytes(comm + b"\n")
    (proc / str(pid) / "status").write_bytes(b"Name:\tx\nUid:\t%d\t%d\t%d\t%d\n" % ((uid,) * 4))


def test_one_incarnation_is_read_once_and_a_reused_pid_anew(tmp_path: Path) -> None:
    fake_process(tmp_path, 40, b"a) b (c", started=1000)
    names = ProcessNames(ProcFacts(str(tmp_path)), groups=lambda pid: f"g{pid}")
    assert names.describe(40) == ProcessRef(40, "a) b (c", "root", "g40")
    (tmp_path / "40" / "comm").write_bytes(b"renamed\n")
    assert names.describe(40).name == "a) b (c"  # type: ignore[union-attr]  # same start
    fake_process(tmp_path, 40, b"newcomer", started=2000, uid=4242424)
    assert names.describe(40) == ProcessRef(40, "newcomer", "4242424", "g40")  # no such user


def test_a_gone_process_is_named_from_its_glimpse_or_not_at_all(tmp_path: Path) -> None:
    names = ProcessNames(ProcFacts(str(tmp_path)))
    assert names.describe(41, ("short-lived", 0)) == ProcessRef(41, "short-lived", "root")
    assert names.describe(41) is None
    fake_process(tmp_path, 42, b"\xff\xfeodd", started=5)
    assert names.describe(42).name == "\\xff\\xfeodd"  # type: ignore[union-attr]
