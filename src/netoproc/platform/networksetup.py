"""Friendly interface names on macOS: `networksetup -listallhardwareports`, parsed.

The output is blocks separated by blank lines (docs/MACOS.md §6; networksetup
is closed source, the format is from its output)::

    Hardware Port: Wi-Fi
    Device: en0
    Ethernet Address: a4:83:e7:00:00:01

then, after the ports, a "VLAN Configurations" section that names no ports.
"""

from __future__ import annotations


def parse_hardware_ports(text: str) -> dict[str, str]:
    """Device name -> hardware port name ("en0" -> "Wi-Fi")."""
    ports: dict[str, str] = {}
    port: str | None = None
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not colon:
            port = None  # a blank line or a section title ends the block
        elif key == "Hardware Port":
            port = value
        elif key == "Device" and port and value:
            ports[value] = port
    return ports
