"""InodeOwners on a fake /proc tree (fd symlinks made by the test): full rescan,
owners of shared sockets, find() stopping early, processes vanishing mid-scan,
forgetting closed sockets; and one live lookup of this process's own socket."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from netoproc.platform.procfs import InodeOwners
from tests.platform.live import Sockets, inode

# pid -> fd -> link target
TREE = {
    100: {3: "socket:[1000]", 4: "/dev/null", 5: "socket:[2000]"},
    200: {7: "socket:[1000]", 8: "pipe:[55]", 9: "anon_inode:[eventfd]"},
    300: {1: "socket:[3000]"},
    400: {0: "/dev/pts/0"},
}


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    for pid, fds in TREE.items():
        fd_dir = tmp_path / str(pid) / "fd"
        fd_dir.mkdir(parents=True)
        for fd, target in fds.items():
            (fd_dir / str(fd)).symlink_to(target)
    (tmp_path / "net").mkdir()  # not a process
    (tmp_path / "self").symlink_to("100")
    (tmp_path / "500").mkdir()  # a process whose fds cannot be listed
    return tmp_path


def scanned_pids(owners: InodeOwners, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids `owners` reads from now on, in order."""
    seen: list[int] = []
    scan = owners._scan_pid

    def counting(pid: int, found: dict[int, list[tuple[int, int]]]) -> None:
        seen.append(pid)
        scan(pid, found)

    monkeypatch.setattr(owners, "_scan_pid", counting)
    return seen


def test_rescan_maps_socket_inodes_to_holders(proc: Path) -> None:
    owners = InodeOwners(str(proc))
    owners.rescan()
    assert owners.holders(1000) == [(100, 3), (200, 7)]
    assert owners.owner(1000) == (100, 3)  # shared: the lowest pid
    assert owners.owner(2000) == (100, 5)
    assert owners.owner(3000) == (300, 1)
    assert owners.holders(55) == []  # a pipe is not a socket
    assert owners.owner(4242) is None


def test_find_stops_once_every_inode_is_found(proc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owners = InodeOwners(str(proc))
    seen = scanned_pids(owners, monkeypatch)
    owners.find([3000])
    assert owners.owner(3000) == (300, 1)
    assert seen == [500, 400, 300]  # all new, highest pid first; 200 and 100 are not read
    seen.clear()
    owners.find([3000, 0])  # known already, and 0 (no inode): nothing to read
    assert seen == []


def test_find_reads_recent_owners_then_new_processes_then_the_rest(
    proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners = InodeOwners(str(proc))
    owners.rescan()
    seen = scanned_pids(owners, monkeypatch)
    (proc / "300" / "fd" / "2").symlink_to("socket:[3001]")  # pid 300 opens another socket
    owners.find([3001])
    assert owners.owner(3001) == (300, 2)
    assert seen == [500, 400, 300]  # nothing recent or new: highest pid first

    (proc / "600" / "fd").mkdir(parents=True)  # a new process
    (proc / "100" / "fd" / "6").symlink_to("socket:[1001]")
    (proc / "300" / "fd" / "10").symlink_to("socket:[3002]")
    seen.clear()
    owners.find([3002])
    assert seen == [300]  # the owner of the last new socket first
    seen.clear()
    owners.find([1001])
    assert seen == [300, 600, 500, 400, 200, 100]
    assert owners.owner(1001) == (100, 6)


def test_locate_answers_without_touching_the_map(proc: Path) -> None:
    owners = InodeOwners(str(proc))
    assert owners.locate({3000}) == {3000: [(300, 1)]}  # 500, 400 hold none; then it stops
    assert owners.locate({2000})[2000] == [(100, 5)]
    assert owners.owner(2000) is None and owners.owner(3000) is None


def test_the_owner_is_glimpsed_with_its_whole_name(proc: Path) -> None:
    """comm keeps 15 bytes of a name; a cut one is completed from the command line,
    as process tables do, but only when the command line is that program."""
    names = {
        100: (b"short\n", b"/usr/bin/short\0-v\0"),
        200: (b"systemd-resolve\n", b"/lib/systemd/systemd-resolved\0"),
        300: (b"kworker-written\n", b"/usr/bin/other-program\0"),
    }
    for pid, (comm, cmdline) in names.items():
        (proc / str(pid) / "comm").write_bytes(comm)
        (proc / str(pid) / "cmdline").write_bytes(cmdline)
    owners = InodeOwners(str(proc))
    owners.locate({2000, 3000})
    owners.find([1000])
    uid = os.getuid()
    assert owners.glimpsed == {100: ("short", uid), 300: ("kworker-written", uid)}
    (proc / "100" / "fd" / "9").symlink_to("socket:[4000]")
    (proc / "200" / "fd" / "2").symlink_to("socket:[4001]")
    owners.locate({4001})
    assert owners.glimpsed[200] == ("systemd-resolved", uid)


def test_find_reports_nothing_for_unknown_inodes_after_reading_everything(
    proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners = InodeOwners(str(proc))
    seen = scanned_pids(owners, monkeypatch)
    owners.find([9999])
    assert owners.holders(9999) == []
    assert sorted(seen) == [100, 200, 300, 400, 500]


def test_a_process_exiting_mid_scan_is_harmless(
    proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners = InodeOwners(str(proc))
    scan = owners._scan_pid
    readlink = os.readlink

    def exit_first(pid: int, found: dict[int, list[tuple[int, int]]]) -> None:
        if pid == 200:
            shutil.rmtree(proc / "200")  # gone between listing /proc and reading its fds
        scan(pid, found)

    def closing(path: str) -> str:
        if path.endswith("/100/fd/5"):  # closed between listing the fds and reading the link
            raise FileNotFoundError(path)
        return readlink(path)

    monkeypatch.setattr(owners, "_scan_pid", exit_first)
    monkeypatch.setattr(os, "readlink", closing)
    owners.rescan()
    assert owners.holders(1000) == [(100, 3)]
    assert owners.owner(3000) == (300, 1)
    assert owners.owner(2000) is None


def test_forget_missing_drops_closed_sockets(proc: Path) -> None:
    owners = InodeOwners(str(proc))
    owners.rescan()
    owners.forget_missing({1000})
    assert (owners.owner(1000), owners.owner(2000), owners.owner(3000)) == ((100, 3), None, None)


def test_a_missing_proc_root_knows_nothing(tmp_path: Path) -> None:
    owners = InodeOwners(str(tmp_path / "absent"))
    owners.rescan()
    owners.find([1])
    assert owners.owner(1) is None


def test_live_finds_this_process_and_fd(sockets: Sockets) -> None:
    s = sockets.listener()
    owners = InodeOwners()
    owners.find([inode(s)])
    assert owners.holders(inode(s)) == [(os.getpid(), s.fileno())]
