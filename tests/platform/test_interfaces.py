"""Linux interface kinds from sysfs, and the live interface list."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from netoproc.platform.interfaces import interface_kind, read_interfaces


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


def test_live_interfaces_include_loopback_with_the_kernels_counters() -> None:
    before = psutil.net_io_counters(pernic=True)["lo"]
    interfaces = {i.name: i for i in read_interfaces()}
    after = psutil.net_io_counters(pernic=True)["lo"]
    lo = interfaces["lo"]
    assert (lo.kind, lo.up) == ("Loopback", True)
    assert "127.0.0.1" in lo.ipv4
    assert before.bytes_recv <= lo.rx_bytes <= after.bytes_recv
    assert set(interfaces) == {name for _index, name in socket.if_nameindex()}
