"""Making untrusted strings safe to show, and numbers readable.

Process names, DNS names and interface names come from other processes and
from the network. `printable` turns anything that could move the cursor,
change colours, break a TSV row or reorder text (control characters, escape
sequences, bidirectional overrides, invalid UTF-8 already decoded with
backslashreplace) into visible escapes. Units live here so the TUI and the
snapshot formats print them the same way.
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


def binary_size(value: float) -> str:
    """Bytes in binary units, as the pretty snapshot shows them: 0 B, 1.5 KiB, 2.0 MiB."""
    if value < 1024:
        return f"{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if round(value, 1) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def decimal_rate(value: float) -> str:
    """Bytes per second in base-10 units (1 KB/s = 1000 B/s)."""
    if value < 1000:
        return f"{value:.0f} B/s"
    for unit in ("KB/s", "MB/s", "GB/s"):
        value /= 1000
        if round(value, 1) < 1000 or unit == "GB/s":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


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
