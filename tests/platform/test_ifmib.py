"""ifalldata (struct ifmibdata per interface) built from docs/MACOS.md §6, parsed."""

from __future__ import annotations

import ctypes

import pytest

from netoproc.platform.darwin_structs import KernelDataError
from netoproc.platform.ifmib import IFALLDATA_MIB, IfData64, IfMibData, parse_ifalldata
from tests.platform.darwin_buffers import IFALLDATA_MIB as DOCUMENTED_MIB
from tests.platform.darwin_buffers import IFT_ETHER, IFT_LOOP, ifmibdata


def test_layouts_are_the_documented_ones() -> None:
    # docs/MACOS.md §6: if_data64 128 B (pack 4); ifmibdata 180 B with ifmd_data at 52
    assert (ctypes.sizeof(IfData64), ctypes.sizeof(IfMibData)) == (128, 180)
    assert IfMibData.ifmd_data.offset == 52
    data = {"ifi_ipackets": 24, "ifi_ierrors": 32, "ifi_opackets": 40, "ifi_oerrors": 48,
            "ifi_collisions": 56, "ifi_ibytes": 64, "ifi_obytes": 72, "ifi_imcasts": 80,
            "ifi_omcasts": 88, "ifi_iqdrops": 96, "ifi_noproto": 104,
            "ifi_lastchange_sec": 120}  # fmt: skip
    assert {n: getattr(IfData64, n).offset for n in data} == data
    assert IFALLDATA_MIB == DOCUMENTED_MIB


def test_counters_are_64_bit() -> None:
    big = 5 << 32 | 123  # beyond what getifaddrs' 32-bit if_data can hold
    buf = ifmibdata("en0", ibytes=big, obytes=big + 1, ipackets=7, opackets=8, ierrors=1,
                    oerrors=2) + ifmibdata("lo0", iftype=IFT_LOOP, up=False)  # fmt: skip
    en0, lo0 = parse_ifalldata(buf)
    assert (en0.name, en0.up, en0.iftype) == ("en0", True, IFT_ETHER)
    assert (en0.rx_bytes, en0.tx_bytes) == (big, big + 1)
    assert (en0.rx_packets, en0.tx_packets, en0.rx_errors, en0.tx_errors) == (7, 8, 1, 2)
    assert (lo0.name, lo0.up, lo0.iftype) == ("lo0", False, IFT_LOOP)


def test_a_detaching_interface_is_an_empty_record_and_skipped() -> None:
    # make_ifmibdata (xnu if_mib.c) writes a zeroed ifmibdata for an interface not attached
    buf = ifmibdata("en0") + bytes(180) + ifmibdata("utun3")
    assert [c.name for c in parse_ifalldata(buf)] == ["en0", "utun3"]


@pytest.mark.parametrize("size", [1, 179, 181, 359])
def test_a_partial_record_is_a_clean_error(size: int) -> None:
    with pytest.raises(KernelDataError, match=f"ifalldata: {size} bytes"):
        parse_ifalldata((ifmibdata("en0") * 2)[:size])


def test_garbage_is_a_clean_error() -> None:
    with pytest.raises(KernelDataError, match="record 1 has no terminated interface name"):
        parse_ifalldata(ifmibdata("en0") + b"\x41" * 180)
