"""Process names, users and groups (container or unit), cached per process
incarnation (a reused pid is a new process)."""

from __future__ import annotations

import pwd
from collections.abc import Callable

import psutil

from netoproc.model import ProcessRef


class ProcessNames:
    def __init__(self, groups: Callable[[int], str] | None = None) -> None:
        """`groups`: a process's container or unit by pid (Linux: its cgroup), if known."""
        self._cache: dict[int, tuple[float, ProcessRef]] = {}
        self._groups = groups

    def describe(self, pid: int, glimpsed: tuple[str, int] | None = None) -> ProcessRef | None:
        """Name and user of a process; once it has exited, from what was `glimpsed`
        of it (its comm and uid read earlier), else None."""
        try:
            process = psutil.Process(pid)
            started = process.create_time()
            cached = self._cache.get(pid)
            if cached and cached[0] == started:
                return cached[1]
            with process.oneshot():
                name = process.name()
                try:
                    user = process.username()
                except (psutil.AccessDenied, KeyError):
                    user = str(process.uids().real)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._cache.pop(pid, None)
            return _from_glimpse(pid, glimpsed) if glimpsed else None
        except psutil.AccessDenied:
            return ProcessRef(pid, str(pid))
        # names are bytes on disk: undecodable ones arrive as surrogates; show them as \xNN
        name = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        group = self._groups(pid) if self._groups is not None else ""
        ref = ProcessRef(pid, name or str(pid), user, group)
        self._cache[pid] = (started, ref)
        return ref

    def forget_except(self, pids: set[int]) -> None:
        for pid in [p for p in self._cache if p not in pids]:
            del self._cache[pid]


def _from_glimpse(pid: int, glimpsed: tuple[str, int]) -> ProcessRef:
    comm, uid = glimpsed
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return ProcessRef(pid, comm or str(pid), user)
