"""Process names, users and groups (container or unit), cached per process
incarnation (a reused pid is a new process).

What a process is called comes from the OS through `ProcessFacts`: /proc on
Linux (platform/procfs.py), psutil on macOS (platform/darwin.py).
"""

from __future__ import annotations

import pwd
from collections.abc import Callable
from typing import Protocol

from netoproc.model import ProcessRef


class ProcessFacts(Protocol):
    """Both raise ProcessLookupError once the process is gone, PermissionError if
    it may not be read."""

    def started(self, pid: int) -> float:
        """When the process started, in any unit: with its pid, it names one incarnation."""
        ...

    def name_and_uid(self, pid: int) -> tuple[str, int]:
        """Its name (printable or not) and real user id."""
        ...


class ProcessNames:
    def __init__(self, facts: ProcessFacts, groups: Callable[[int], str] | None = None) -> None:
        """`groups`: a process's container or unit by pid (Linux: its cgroup), if known."""
        self._facts = facts
        self._cache: dict[int, tuple[float, ProcessRef]] = {}
        self._groups = groups

    def describe(self, pid: int, glimpsed: tuple[str, int] | None = None) -> ProcessRef | None:
        """Name and user of a process; once it has exited, from what was `glimpsed`
        of it (its comm and uid read earlier), else None."""
        try:
            started = self._facts.started(pid)
            cached = self._cache.get(pid)
            if cached and cached[0] == started:
                return cached[1]
            name, uid = self._facts.name_and_uid(pid)
        except ProcessLookupError:
            self._cache.pop(pid, None)
            return _from_glimpse(pid, glimpsed) if glimpsed else None
        except PermissionError:
            return ProcessRef(pid, str(pid))
        group = self._groups(pid) if self._groups is not None else ""
        ref = ProcessRef(pid, name or str(pid), user_name(uid), group)
        self._cache[pid] = (started, ref)
        return ref

    def forget_except(self, pids: set[int]) -> None:
        for pid in [p for p in self._cache if p not in pids]:
            del self._cache[pid]


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no such user here (e.g. a container's own)
        return str(uid)


def _from_glimpse(pid: int, glimpsed: tuple[str, int]) -> ProcessRef:
    comm, uid = glimpsed
    return ProcessRef(pid, comm or str(pid), user_name(uid))
