"""Addresses: one object per value in use, whatever read it, and still right once
the table of them starts again."""

from __future__ import annotations

import socket

from netoproc import model
from netoproc.model import addr_from_bytes, address, format_addr, parse_addr, v4


def test_an_address_read_twice_is_one_object() -> None:
    raw4, raw6 = socket.inet_aton("192.0.2.7"), socket.inet_pton(socket.AF_INET6, "2001:db8::7")
    assert addr_from_bytes(raw4) is addr_from_bytes(bytes(raw4)) is v4(0xC0000207)
    assert addr_from_bytes(raw6) is addr_from_bytes(bytes(raw6))
    big = (1 << 100) + 12345
    assert address(big) is address(int(str(big)))  # made apart, kept as one


def test_the_table_is_bounded_and_starts_again() -> None:
    first = address((1 << 99) + 1)
    for i in range(model.ADDRESSES_KEPT + 1):
        address((1 << 98) + i)
    assert len(model._ADDRESSES) <= model.ADDRESSES_KEPT
    again = address(int(str((1 << 99) + 1)))
    assert again == first and format_addr(parse_addr("192.0.2.7")) == "192.0.2.7"
