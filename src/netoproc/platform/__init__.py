"""Who owns a socket, which interfaces exist: the operating system's side.

`open_platform()` picks the backend for this OS, once; nothing outside this
package (and `capture`) asks which OS it runs on.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Protocol

from netoproc.model import FlowKey, InterfaceInfo, NatEntry, OwnerSighting, SocketInfo


class PlatformError(Exception):
    """The operating system's socket tables cannot be read."""


class Platform(Protocol):
    def lookup(self, keys: Iterable[FlowKey]) -> dict[FlowKey, SocketInfo | None] | None:
        """Owners of new flows now, or None when a full table is the better answer."""
        ...

    def prefetch(self, flows: Iterable[tuple[int, int, int, int, int]]) -> None:
        """Look up (proto, laddr, lport, raddr, rport) flows that just opened, from
        the fast-lane thread, so `lookup` can answer for processes already gone."""
        ...

    def sightings(self) -> list[OwnerSighting]:
        """Processes the kernel saw using sockets since the last call (Linux eBPF)."""
        ...

    def owner_source(self) -> tuple[str, str, int]:
        """Where owners come from (CaptureHealth.owners), why not from the kernel if
        not (owners_why), and how many kernel events were lost."""
        ...

    @property
    def fast_lane(self) -> bool:
        """Whether `prefetch` is worth calling: owners are looked up after the fact."""
        ...

    def translations(self, keys: Iterable[FlowKey]) -> dict[FlowKey, NatEntry | None] | None:
        """The kernel's address translation for flows no local socket carries (Linux
        conntrack): an entry, None where it has none; None for them all when the
        tracker cannot be asked (no CAP_NET_ADMIN, no nf_conntrack_netlink)."""
        ...

    def socket_table(self) -> list[SocketInfo]: ...

    def interfaces(self) -> list[InterfaceInfo]: ...

    def resolvers(self) -> dict[str, tuple[str, ...]]:
        """Configured DNS servers per interface name ("" when not tied to one)."""
        ...

    def close(self) -> None: ...


def describe_owners(kernel_owners: bool) -> tuple[str, list[str]]:
    """Where this OS's socket owners come from, as --version names it, and the
    privileges this process lacks for that; probes without opening anything."""
    if not sys.platform.startswith(("darwin", "linux")):
        return f"none on {sys.platform}", []
    if sys.platform.startswith("darwin"):
        from netoproc.platform import darwin

        return darwin.describe_owners()
    from netoproc.platform import linux

    return linux.describe_owners(kernel_owners)


def open_platform(kernel_owners: bool = True) -> Platform:
    """This OS's platform. `kernel_owners` False: do not ask the kernel to report
    socket owners as they happen (Linux eBPF), use the socket table alone."""
    if sys.platform.startswith("darwin"):
        from netoproc.platform import darwin

        return darwin.DarwinPlatform()
    if sys.platform.startswith("linux"):
        from netoproc.platform import linux

        return linux.LinuxPlatform(kernel_owners=kernel_owners)
    raise PlatformError(f"no socket-table backend for {sys.platform} yet")
