"""Making untrusted strings safe to show, and numbers readable.

Process names, DNS names and interface names come from other processes and
from the network. `printable` turns anything that could move the cursor,
change colours, break a TSV row or reorder text (control characters, escape
sequences, bidirectional overrides, invalid UTF-8 already decoded with
backslashreplace) into visible escapes. Byte counts and rates are written
here, in every unit any view uses, so the monitor and the snapshot formats
write them the same way.
"""

from __future__ import annotations

import unicodedata

from netoproc.model import proto_name
from netoproc.snapshot import FloodRow

_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control or formatting character shown as an escape."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


def _scaled_size(value: float, base: int, units: tuple[str, ...]) -> str:
    """`value` bytes in the first unit (a `base` apart) that keeps it below `base`."""
    if value < base:
        return f"{int(value)} B"
    for unit in units:
        value /= base
        if round(value, 1) < base or unit == units[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def binary_size(value: float) -> str:
    """Bytes in binary units, as the pretty snapshot shows them: 0 B, 1.5 KiB, 2.0 MiB."""
    return _scaled_size(value, 1024, ("KiB", "MiB", "GiB", "TiB"))


def compact_rate(rate: float) -> str:
    """A rate in at most four characters, base 10, as the Process view shows it: 512, 12K, 2.1M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if rate >= scale * 0.9995:
            value = rate / scale
            return f"{value:.1f}{unit}" if value < 9.95 else f"{min(value, 999):.0f}{unit}"
    return f"{rate:.0f}"


def rate_text(rate: float) -> str:
    """A rate as the Connection view writes it: 512 B/s, 12 KB/s, 1.2 MB/s.

    Base-10 units (1 KB/s = 1000 B/s), as the colour thresholds are; one decimal
    below 10, whole numbers above, so it never needs more than 8 cells.
    """
    if round(rate) < 1000:
        return f"{rate:.0f} B/s"
    value = rate
    for unit in ("KB/s", "MB/s", "GB/s"):
        value /= 1000
        if round(value, 1) < 10:
            return f"{value:.1f} {unit}"
        if round(value) < 1000 or unit == "GB/s":
            return f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def decimal_size(value: int) -> str:
    """Bytes in base-10 units, like the rates: 512 B, 102.0 KB, 128.5 MB."""
    return _scaled_size(value, 1000, ("KB", "MB", "GB", "TB"))


def flood_line(row: FloodRow) -> str:
    """One folded flood or scan, as `--verbose` reports it:
    "flood on TCP :80 (eth0): 1,200,000 packets, 48,000,000 bytes from ~950,123 sources; ..."."""
    what = f"{proto_name(row.proto)} {row.port_text}".strip()
    where = f"{what} ({row.iface})" if row.iface else what
    sources = ("" if row.sources_exact else "~") + f"{row.sources:,}"
    owner = f"{row.process.name} ({row.process.pid})" if row.process else row.reason
    return printable(
        f"flood on {where}: {row.total.packets:,} packets, {row.total.bytes:,} bytes "
        f"from {sources} sources; {owner}"
    )
