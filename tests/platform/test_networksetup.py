"""`networksetup -listallhardwareports` output (docs/MACOS.md §6's block format), parsed."""

from __future__ import annotations

from netoproc.platform.networksetup import parse_hardware_ports
from tests.platform.darwin_buffers import NETWORKSETUP_PORTS


def test_hardware_ports_by_device() -> None:
    assert parse_hardware_ports(NETWORKSETUP_PORTS) == {
        "en4": "Ethernet Adapter (en4)",
        "en0": "Wi-Fi",
        "bridge0": "Thunderbolt Bridge",
        "en1": "Thunderbolt 1",
    }


def test_vlan_section_and_odd_blocks_name_nothing() -> None:
    text = (
        "Hardware Port: Wi-Fi\nDevice: en0\n\n"
        "Device: en9\n\n"  # a device without a port
        "Hardware Port: Bluetooth PAN\nDevice:\n\n"  # a port without a device
        "VLAN Configurations\n===================\n"
        "VLAN User Defined Name: lab\nParent Device: en0\nDevice (VLAN) Tag: 7\n"
    )
    assert parse_hardware_ports(text) == {"en0": "Wi-Fi"}
    assert parse_hardware_ports("") == {}
