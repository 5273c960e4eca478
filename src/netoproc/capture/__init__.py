"""Where packets come from: the live kernel capture of this OS, or a capture file.

Every source produces `RecordBlock`s. `open_live` picks the OS's capture once;
nothing else in the program asks which OS it runs on.
"""

from __future__ import annotations

import sys
from typing import Protocol

from netoproc.capture.records import CounterBatch, InterfaceTable, RecordBlock, RttSamples


class CaptureUnavailable(Exception):
    """The capture device cannot be opened; the message names the device and the cause."""


class LiveCapture(Protocol):
    interfaces: InterfaceTable

    def read(self, timeout: float) -> list[RecordBlock]:
        """Finished blocks, waiting up to `timeout` seconds for the first (or less)."""
        ...

    def wake(self) -> None:
        """End a `read` waiting in another thread now (the session is stopping)."""
        ...

    def drain(self) -> list[RecordBlock]:
        """Everything captured so far, including partly filled blocks."""
        ...

    def kernel_drops(self) -> int: ...

    def counts(self, wall_offset: float) -> tuple[CounterBatch, RttSamples] | None:
        """What the kernel counted per flow since the last call, if it counts (Linux
        eBPF); `wall_offset` turns monotonic seconds into wall-clock ones."""
        ...

    def counting(self) -> tuple[str, str, int]:
        """How packets are counted (CaptureHealth.counting), why not in the kernel,
        and how many packets the kernel's full counter map left to the packet path."""
        ...

    def close(self) -> None: ...


class FirstPackets(Protocol):
    """Packets that open flows, delivered one by one as soon as they are sent."""

    def read(self, limit: int = 256) -> list[tuple[int, bytes, int, str]]:
        """(link type, the packet's first bytes, its length, interface name) of what
        arrived, waiting briefly."""
        ...

    def wake(self) -> None:
        """End a `read` waiting in another thread now."""
        ...

    def close(self) -> None: ...


def describe_live(kernel_counts: bool) -> tuple[str, list[str]]:
    """This OS's live capture as --version names it, and the privileges this process
    lacks for it; probes without opening anything. `kernel_counts`: as for open_live."""
    if not sys.platform.startswith(("darwin", "linux")):
        return f"none on {sys.platform} (--read replays files)", []
    if sys.platform.startswith("darwin"):
        from netoproc.capture import darwin

        return darwin.describe()
    from netoproc.capture import linux

    return linux.describe(kernel_counts)


def open_first_packets(interface: str | None) -> FirstPackets | None:
    """A fast lane for flows whose process may exit within milliseconds; None if
    this OS's capture does not need one (it names the process in each packet)."""
    if sys.platform.startswith("darwin"):
        return None  # PKTAP names the process in every packet
    from netoproc.capture import linux

    return linux.LinuxFirstPackets(interface)


def open_live(
    interface: str | None, buffer_bytes: int, keep_dns: bool, kernel_counts: bool = True
) -> LiveCapture:
    """This OS's capture. `kernel_counts` False: read every packet, even where the
    kernel could count them (Linux eBPF)."""
    if sys.platform.startswith("darwin"):
        from netoproc.capture import darwin

        return darwin.open_capture(interface, buffer_bytes, keep_dns)
    if sys.platform.startswith("linux"):
        from netoproc.capture import linux

        return linux.open_capture(interface, buffer_bytes, keep_dns, kernel_counts)
    raise CaptureUnavailable(f"live capture is not available on {sys.platform} yet")
