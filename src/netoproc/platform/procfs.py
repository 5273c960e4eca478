"""Which processes hold which sockets on Linux: /proc/<pid>/fd → socket inodes.

A full scan reads every fd link of every process; it is run only when the
socket table shows inodes the map does not know. To find the owner of a
brand-new socket quickly (a connection that lives 50 ms must still be
attributed), `find` scans the processes most likely to own it first (those
that opened sockets recently, then ones not seen before) and stops as soon
as every inode it was asked for is found. The /proc root is a parameter so
tests can point it at a tree of their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

SOCKET_PREFIX = "socket:["
COMM_MAX = 15  # the kernel keeps this many bytes of a process's name in comm


class InodeOwners:
    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        # inode -> every (pid, fd) holding it, lowest pid first
        self._holders: dict[int, list[tuple[int, int]]] = {}
        self._known_pids: set[int] = set()
        self._recent: dict[int, None] = {}  # pids that recently owned new sockets, newest last
        # (comm, uid) read the moment `find` met a socket's owner: a short-lived
        # process may be gone before anyone asks for its name
        self.glimpsed: dict[int, tuple[str, int]] = {}

    def holders(self, inode: int) -> list[tuple[int, int]]:
        return self._holders.get(inode, [])

    def owner(self, inode: int) -> tuple[int, int] | None:
        """The deterministic owner of a socket: the lowest pid holding it."""
        found = self._holders.get(inode)
        return found[0] if found else None

    def _pids(self) -> list[int]:
        try:
            return [int(e.name) for e in os.scandir(self.proc_root) if e.name.isdigit()]
        except OSError:
            return []

    def _scan_pid(self, pid: int, found: dict[int, list[tuple[int, int]]]) -> None:
        fd_dir = f"{self.proc_root}/{pid}/fd"
        try:
            entries = os.listdir(fd_dir)
        except OSError:  # exited, or not ours to read
            return
        for name in entries:
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue
            if target.startswith(SOCKET_PREFIX):
                inode = int(target[len(SOCKET_PREFIX) : -1])
                found.setdefault(inode, []).append((pid, int(name)))

    def rescan(self) -> None:
        """Rebuild the whole map from every process."""
        found: dict[int, list[tuple[int, int]]] = {}
        pids = sorted(self._pids())
        for pid in pids:
            self._scan_pid(pid, found)
        self._holders = found
        self._known_pids = set(pids)

    def find(self, inodes: Iterable[int]) -> None:
        """Make sure the owners of `inodes` are known, scanning as little as possible."""
        wanted = {i for i in inodes if i and i not in self._holders}
        if wanted:
            self._holders.update(self.locate(wanted))

    def locate(self, inodes: set[int]) -> dict[int, list[tuple[int, int]]]:
        """Every socket of the processes scanned until all of `inodes` turned up (or
        no process was left), holders lowest pid first. The map is left as it was."""
        pids = self._pids()
        new = [p for p in pids if p not in self._known_pids]
        live = set(pids)
        order = [p for p in reversed(self._recent) if p in live]
        order += sorted(new, reverse=True)
        order += sorted(live - set(order), reverse=True)
        found: dict[int, list[tuple[int, int]]] = {}
        for pid in order:
            self._scan_pid(pid, found)
            if inodes <= found.keys():
                break
        self._known_pids = live  # new ones are now known; the dead are forgotten
        for holders in found.values():
            holders.sort()
        for inode in inodes & found.keys():
            owner = found[inode][0][0]
            self._recent.pop(owner, None)
            self._recent[owner] = None
            self._glimpse(owner)
        while len(self._recent) > 64:
            del self._recent[next(iter(self._recent))]
        while len(self.glimpsed) > 1024:
            del self.glimpsed[next(iter(self.glimpsed))]
        return found

    def _glimpse(self, pid: int) -> None:
        try:
            name = process_name(pid, self.proc_root)
            uid = os.stat(f"{self.proc_root}/{pid}").st_uid
        except OSError:
            return
        self.glimpsed[pid] = (name, uid)

    def forget_missing(self, live_inodes: set[int]) -> None:
        """Drop sockets that no longer exist."""
        for inode in [i for i in self._holders if i not in live_inodes]:
            del self._holders[inode]


def process_name(pid: int, proc_root: str = "/proc") -> str:
    """A process's name: its comm, or the command line's program if comm was cut short
    (as `ps -o comm` and psutil name it). Undecodable bytes are shown as \\xNN."""
    with open(f"{proc_root}/{pid}/comm", "rb") as f:
        comm = f.read().rstrip(b"\n")
    if len(comm) >= COMM_MAX:  # cut short: the command line may have it whole
        with open(f"{proc_root}/{pid}/cmdline", "rb") as f:
            whole = os.path.basename(f.read().split(b"\0", 1)[0])
        if whole.startswith(comm):
            comm = whole
    return comm.decode("utf-8", "backslashreplace")


class ProcFacts:
    """What ProcessNames asks of a Linux process, from /proc (platform/processes.py)."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root

    def started(self, pid: int) -> float:
        """Clock ticks from boot to the process's start (stat's 22nd field)."""
        try:
            with open(f"{self.proc_root}/{pid}/stat", "rb") as f:
                stat = f.read()
            return int(stat[stat.rindex(b")") + 2 :].split()[19])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            raise ProcessLookupError(pid) from None

    def name_and_uid(self, pid: int) -> tuple[str, int]:
        try:
            with open(f"{self.proc_root}/{pid}/status", "rb") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith(b"Uid:"))
            return process_name(pid, self.proc_root), uid
        except (FileNotFoundError, ProcessLookupError, StopIteration, IndexError, ValueError):
            raise ProcessLookupError(pid) from None
