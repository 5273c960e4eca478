"""Linux interface kinds from sysfs, rtnetlink dumps, and the live interface list
(psutil, which reads /proc/net/dev and getifaddrs(3), is the witness)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import psutil
import pytest

from netoproc.platform.interfaces import (
    IFINFOMSG,
    NLMSG,
    RTATTR,
    InterfaceReader,
    interface_kind,
    parse_dump,
    read_interfaces,
)


def fake_interface(
    root: Path, name: str, hw_type: int, *entries: str, virtual: bool = False
) -> None:
    real = root / ("devices/virtual/net" if virtual else "devices/pci0000:00/net") / name
    real.mkdir(parents=True)
    (real / "type").write_text(f"{hw_type}\n")
    for entry in entries:
        (real / entry).mkdir()
    (root / "class").mkdir(exist_ok=True)
    (root / "class" / name).symlink_to(real)


@pytest.mark.parametrize(
    ("name", "hw_type", "entries", "virtual", "kind"),
    [
        ("lo", 772, (), True, "Loopback"),
        ("wlan0", 1, ("wireless",), False, "Wi-Fi"),
        ("br0", 1, ("bridge",), True, "Bridge"),
        ("tun0", 65534, ("tun_flags",), True, "VPN"),
        ("wg0", 65534, (), True, "VPN"),
        ("sit1", 776, (), True, "Tunnel"),
        ("veth0", 1, (), True, "Virtual Ethernet"),
        ("eth0", 1, (), False, "Ethernet"),
        ("ib0", 32, (), False, "Other"),
    ],
)
def test_kinds(tmp_path: Path, name: str, hw_type: int, entries: tuple[str, ...],
               virtual: bool, kind: str) -> None:  # fmt: skip
    fake_interface(tmp_path, name, hw_type, *entries, virtual=virtual)
    assert interface_kind(name, str(tmp_path / "class")) == kind


def test_unknown_interface_kind(tmp_path: Path) -> None:
    assert interface_kind("nope0", str(tmp_path)) == "Unknown"


def test_live_interfaces_are_what_the_kernel_reports() -> None:
    before = psutil.net_io_counters(pernic=True)
    interfaces = {i.name: i for i in read_interfaces()}
    after = psutil.net_io_counters(pernic=True)
    assert set(interfaces) == {name for _index, name in socket.if_nameindex()}
    lo = interfaces["lo"]
    assert (lo.kind, lo.up) == ("Loopback", True)
    stats, addresses = psutil.net_if_stats(), psutil.net_if_addrs()
    for name, found in interfaces.items():
        assert found.up == stats[name].isup
        for family, ours in ((socket.AF_INET, found.ipv4), (socket.AF_INET6, found.ipv6)):
            assert sorted(ours) == sorted(
                a.address for a in addresses.get(name, ()) if a.family == family
            )
        for field, theirs in (("rx_bytes", "bytes_recv"), ("tx_bytes", "bytes_sent"),
                              ("rx_packets", "packets_recv"), ("tx_packets", "packets_sent"),
                              ("rx_errors", "errin"), ("tx_errors", "errout")):  # fmt: skip
            low, high = getattr(before[name], theirs), getattr(after[name], theirs)
            assert low <= getattr(found, field) <= high, (name, field)


def test_a_reader_reads_again_and_looks_at_sysfs_once_per_interface(tmp_path: Path) -> None:
    reader = InterfaceReader(str(tmp_path))  # an empty sysfs: every kind is unknown
    try:
        first = {i.name: i for i in reader.read()}
        fake_interface(tmp_path, "lo", 772, virtual=True)  # too late: the kind was kept
        again = {i.name: i for i in reader.read()}
    finally:
        reader.close()
    assert first["lo"].kind == again["lo"].kind == "Unknown"
    assert again["lo"].rx_packets >= first["lo"].rx_packets


def message(kind: int, body: bytes) -> bytes:
    data = NLMSG.pack(NLMSG.size + len(body), kind, 0, 1, 0) + body
    return data + bytes(-len(data) % 4)


def attribute(kind: int, payload: bytes) -> bytes:
    data = RTATTR.pack(RTATTR.size + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def test_a_dump_spans_datagrams_until_done() -> None:
    link = message(16, IFINFOMSG.pack(0, 1, 7, 1, 0) + attribute(3, b"eth7\0"))
    assert parse_dump(link, IFINFOMSG) == ([((0, 1, 7, 1, 0), {3: b"eth7\0"})], False)
    assert parse_dump(message(3, b"\0" * 4), IFINFOMSG) == ([], True)


def test_a_bad_attribute_ends_its_message_and_bad_framing_is_an_error() -> None:
    bad = IFINFOMSG.pack(0, 1, 7, 1, 0) + RTATTR.pack(200, 3) + b"eth7"
    assert parse_dump(message(16, bad), IFINFOMSG) == ([((0, 1, 7, 1, 0), {})], False)
    with pytest.raises(ValueError, match="truncated"):
        parse_dump(message(16, bad)[:-4], IFINFOMSG)
    with pytest.raises(PermissionError):
        parse_dump(message(2, struct.pack("=i", -1) + bytes(16)), IFINFOMSG)
