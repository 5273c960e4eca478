"""Reading macOS kernel records with ctypes: base classes and one clean error.

The layouts themselves live with their parsers (`pcblist`, `libproc`,
`ifmib`), transcribed from xnu's headers; their sizes and offsets are
asserted against docs/MACOS.md in the tests. Every Mac is
little-endian, so the structures are too, whatever machine runs the tests.
"""

from __future__ import annotations

import ctypes
from typing import TypeVar


class KernelDataError(Exception):
    """A kernel buffer that is truncated or does not hold what its layout says."""


class Struct(ctypes.LittleEndianStructure):
    """Natural alignment, as the C compiler lays the structure out."""


class Packed4(ctypes.LittleEndianStructure):
    """`#pragma pack(4)`: 8-byte members are aligned to 4 bytes only."""

    _pack_ = 4
    _layout_ = "ms"  # what _pack_ implies; said so Python >= 3.14 does not warn


class In6Addr(ctypes.Union):
    """`struct in6_addr` (or `in_addr_4in6`: an IPv4 address in the last 4 bytes)."""

    _fields_ = (("s6_addr", ctypes.c_uint8 * 16), ("s6_addr32", ctypes.c_uint32 * 4))


S = TypeVar("S", bound=ctypes.Structure)


def read_struct(layout: type[S], buf: bytes, offset: int, what: str, size: int | None = None) -> S:
    """The structure at `offset`; `size` is the record's own length where it has one,
    which may exceed the structure (newer kernels append fields) but not fall short."""
    need = ctypes.sizeof(layout)
    if size is not None and size < need:
        raise KernelDataError(f"{what}: a {size}-byte record where the layout needs {need}")
    if offset < 0 or offset + need > len(buf):
        left = max(0, len(buf) - offset)
        raise KernelDataError(f"{what}: truncated, {left} bytes at offset {offset} of {need}")
    return layout.from_buffer_copy(buf, offset)
