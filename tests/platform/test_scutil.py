"""`scutil --dns` text in the format of docs/MACOS.md §5.1 (configd dnsinfo_logging.h), parsed."""

from __future__ import annotations

from netoproc.platform.scutil import parse_scutil_dns, servers_by_interface
from tests.platform.darwin_buffers import SCUTIL_DNS


def test_sections_resolvers_and_fields() -> None:
    resolvers = parse_scutil_dns(SCUTIL_DNS)
    assert [(r.section, r.number) for r in resolvers] == [
        ("", 1), ("", 2), ("", 3), ("scoped", 1), ("scoped", 2),
    ]  # fmt: skip
    first, mdns, vpn, scoped, link_local = resolvers
    assert (first.nameservers, first.search, first.if_index, first.if_name) == (
        ["192.168.1.1", "8.8.8.8"], ["lan"], 6, "en0",
    )  # fmt: skip
    assert (mdns.domain, mdns.options, mdns.nameservers) == ("local", "mdns", [])
    assert (vpn.domain, vpn.if_name, vpn.flags) == (
        "corp.example", "utun3", ("Supplemental", "Request A records"),
    )  # fmt: skip
    assert scoped.flags == ("Scoped", "Request A records", "Request AAAA records")
    assert scoped.nameservers == ["192.168.1.1", "fe80::1%en0"]
    assert (link_local.if_index, link_local.nameservers) == (0, ["fe80::aa%en7"])


def test_servers_per_interface() -> None:
    """Scoped resolvers give their interface; a link-local server's scope names one too."""
    assert servers_by_interface(parse_scutil_dns(SCUTIL_DNS)) == {
        "en0": ("192.168.1.1", "8.8.8.8", "fe80::1"),
        "utun3": ("10.0.0.1",),
        "en7": ("fe80::aa",),
    }


def test_debug_output_and_servers_of_no_interface() -> None:
    text = (
        "DNS configuration\n\nresolver #1\n  nameserver[0] : 9.9.9.9\n"
        "  flags    : 0x00000002 (Request A records)\n  reach    : 0x00000002 (Reachable)\n"
        "  config id: Default: 0\n\ngeneration = 1234\n"
    )
    (resolver,) = parse_scutil_dns(text)
    assert resolver.flags == ("Request A records",)
    assert servers_by_interface([resolver]) == {"": ("9.9.9.9",)}


def test_service_specific_section() -> None:
    text = (
        "DNS configuration (for service-specific queries)\n\nresolver #1\n"
        "  nameserver[0] : 10.1.1.1\n  if_index : 9 (en5)\n  service_identifier : 3\n"
    )
    (resolver,) = parse_scutil_dns(text)
    assert (resolver.section, resolver.if_name) == ("service-specific", "en5")


def test_no_configuration() -> None:
    assert parse_scutil_dns("No DNS configuration available\n") == []
    assert servers_by_interface(parse_scutil_dns("")) == {}
