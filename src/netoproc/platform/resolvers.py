"""Configured DNS servers per interface on Linux.

/etc/resolv.conf's servers belong to the interfaces holding a default route
(that is where the kernel sends them); systemd-resolved's per-link servers
belong to their link. Parsers take text, so tests can feed recorded files;
`read_resolvers` reads the real ones, with every root a parameter.
"""

from __future__ import annotations

import os
import socket


def parse_resolv_conf(text: str) -> tuple[str, ...]:
    servers = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    return tuple(dict.fromkeys(servers))


def parse_resolved_link(text: str) -> tuple[str, ...]:
    """Servers from a systemd-resolved link state file (/run/systemd/resolve/netif/N)."""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "DNS":
            # entries look like "192.0.2.53", "2001:db8::53%3" or "192.0.2.53#dns.example"
            return tuple(dict.fromkeys(v.split("#", 1)[0] for v in value.split()))
    return ()


def parse_default_routes(ipv4_routes: str, ipv6_routes: str) -> tuple[str, ...]:
    """Interfaces with a default route, from /proc/net/route and /proc/net/ipv6_route."""
    found = []
    for line in ipv4_routes.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            found.append(fields[0])
    for line in ipv6_routes.splitlines():
        fields = line.split()
        if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
            found.append(fields[9])
    return tuple(dict.fromkeys(found))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def read_resolvers(
    resolv_conf: str = "/etc/resolv.conf",
    resolved_links: str = "/run/systemd/resolve/netif",
    proc_net: str = "/proc/net",
) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    servers = parse_resolv_conf(_read(resolv_conf))
    routes = parse_default_routes(_read(f"{proc_net}/route"), _read(f"{proc_net}/ipv6_route"))
    for name in routes:
        found[name] = servers
    try:
        links = [entry for entry in os.listdir(resolved_links) if entry.isdigit()]
    except OSError:
        links = []
    for entry in links:
        link_servers = parse_resolved_link(_read(os.path.join(resolved_links, entry)))
        try:
            name = socket.if_indextoname(int(entry))
        except OSError:
            continue
        if link_servers:
            found[name] = link_servers
    return found
