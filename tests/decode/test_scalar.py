"""The scalar decoder on crafted packets, one header feature per test.

Expected values come from the builder arguments (addresses, ports, lengths,
identifiers), from the protocol documents (RFC 2675 jumbograms, the BIG TCP
and TSO rules tcpdump applies) and, for PKTAP, from xnu's header layouts.
The two tcpdump reference PKTAP captures are checked against their bytes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netoproc.capture import records as lt
from netoproc.decode.scalar import Malformed, Packet, decode_record
from netoproc.model import Direction, parse_addr
from tests import builders as b

CAPTURES = Path(__file__).parents[1] / "data" / "captures" / "tcpdump"
SEGMENT = b.tcp(40000, 443, b"hello", flags=b.PSH | b.ACK, seq=7, ack=9)
DATAGRAM = b.udp(5353, 53, b"query")


def decode(
    frame: bytes, linktype: int, wirelen: int | None = None, caplen: int | None = None
) -> Packet:
    result = try_decode(frame, linktype, wirelen, caplen)
    assert isinstance(result, Packet)
    return result


def try_decode(
    frame: bytes, linktype: int, wirelen: int | None = None, caplen: int | None = None
) -> Packet | None:
    cap = len(frame) if caplen is None else caplen
    buf = b"\xee" * 3 + frame[:cap] + bytes(256)  # the record does not start at 0
    return decode_record(buf, 3, cap, len(frame) if wirelen is None else wirelen, linktype)


def v4_tcp(**kwargs: object) -> bytes:
    return b.ipv4(b.TCP, SEGMENT, **kwargs)  # type: ignore[arg-type]


# -- link layers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("vlans", "tpids"),
    [
        ([10], None),
        ([200, 2001], None),  # QinQ: 802.1ad outside, 802.1Q inside
        ([1, 2, 3], [0x9100, 0x88A8, 0x8100]),
    ],
)
def test_vlan_tags_are_walked(vlans: list[int], tpids: list[int] | None) -> None:
    packet = decode(b.ethernet(v4_tcp(), vlans=vlans, tpids=tpids), lt.LINKTYPE_ETHERNET)
    assert (packet.sport, packet.dport, packet.ip_length) == (40000, 443, 20 + len(SEGMENT))
    assert packet.src == parse_addr("192.0.2.1")


def test_vlan_tags_around_a_non_ip_frame_are_not_ip() -> None:
    frame = b.ethernet(bytes(28), vlans=[200, 2001], ethertype=b.ETHERTYPE_ARP)
    assert try_decode(frame, lt.LINKTYPE_ETHERNET) is None


def test_endless_or_truncated_vlan_stacks_are_malformed() -> None:
    with pytest.raises(Malformed):
        decode(b.ethernet(v4_tcp(), vlans=[1] * 9, tpids=[0x8100] * 9), lt.LINKTYPE_ETHERNET)
    frame = b.ethernet(v4_tcp(), vlans=[1, 2])
    with pytest.raises(Malformed):
        decode(frame, lt.LINKTYPE_ETHERNET, caplen=16)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("family", [b.AF_INET6_LINUX, b.AF_INET6_BSD, b.AF_INET6_FREEBSD, 30])
def test_null_in_both_byte_orders(big_endian: bool, family: int) -> None:
    v4 = decode(b.null(v4_tcp(), big_endian=big_endian), lt.LINKTYPE_NULL)
    assert (v4.src, v4.sport) == (parse_addr("192.0.2.1"), 40000)
    frame = b.null(b.ipv6(b.UDP, DATAGRAM), family=family, big_endian=big_endian)
    v6 = decode(frame, lt.LINKTYPE_NULL)
    assert (v6.dst, v6.dport, v6.ip_length) == (parse_addr("2001:db8::2"), 53, 40 + len(DATAGRAM))


def test_null_with_another_family_is_not_ip() -> None:
    assert try_decode(b.null(v4_tcp(), family=7), lt.LINKTYPE_NULL) is None


def test_loop_is_network_byte_order() -> None:
    assert decode(b.loop(v4_tcp()), lt.LINKTYPE_LOOP).dport == 443
    assert try_decode(b.null(v4_tcp()), lt.LINKTYPE_LOOP) is None  # little-endian 2 is not 2


@pytest.mark.parametrize(
    ("pkttype", "direction"),
    [
        (b.PACKET_OUTGOING, Direction.TX),
        (b.PACKET_HOST, Direction.RX),
        (b.PACKET_BROADCAST, Direction.RX),
    ],
)
def test_sll2_gives_interface_and_direction(pkttype: int, direction: Direction) -> None:
    packet = decode(b.sll2(v4_tcp(), ifindex=0x01020304, pkttype=pkttype), lt.LINKTYPE_LINUX_SLL2)
    assert (packet.ifindex, packet.direction, packet.sport) == (0x01020304, direction, 40000)


def test_sll_gives_direction() -> None:
    out = decode(b.sll(v4_tcp(), pkttype=b.PACKET_OUTGOING), lt.LINKTYPE_LINUX_SLL)
    into = decode(b.sll(b.ipv6(b.TCP, SEGMENT), pkttype=b.PACKET_HOST), lt.LINKTYPE_LINUX_SLL)
    assert (out.direction, into.direction, out.ifindex) == (Direction.TX, Direction.RX, -1)


@pytest.mark.parametrize(
    "linktype", [lt.LINKTYPE_RAW, lt.LINKTYPE_DLT_RAW_12, lt.LINKTYPE_DLT_RAW_14]
)
def test_raw_ip_takes_the_version(linktype: int) -> None:
    assert decode(v4_tcp(), linktype).src == parse_addr("192.0.2.1")
    assert decode(b.ipv6(b.TCP, SEGMENT), linktype).src == parse_addr("2001:db8::1")
    assert try_decode(b"\x50" + bytes(40), linktype) is None


def test_ipv4_and_ipv6_link_types_insist_on_their_version() -> None:
    assert decode(v4_tcp(), lt.LINKTYPE_IPV4).dport == 443
    assert decode(b.ipv6(b.TCP, SEGMENT), lt.LINKTYPE_IPV6).dport == 443
    with pytest.raises(Malformed):
        decode(b.ipv6(b.TCP, SEGMENT), lt.LINKTYPE_IPV4)
    with pytest.raises(Malformed):
        decode(v4_tcp(), lt.LINKTYPE_IPV6)


def test_unknown_link_type_is_not_ip() -> None:
    assert try_decode(v4_tcp(), 147) is None


# -- PKTAP ---------------------------------------------------------------------------


@pytest.mark.parametrize("linktype", [lt.LINKTYPE_PKTAP, lt.LINKTYPE_USER2_PKTAP])
@pytest.mark.parametrize("length", [108, 156])
def test_pktap_v1(linktype: int, length: int) -> None:
    frame = b.pktap_v1(
        b.ethernet(v4_tcp()), ifname="en7", flags=b.PTH_FLAG_DIR_OUT, pid=4321, comm="curl",
        epid=99, ecomm="other", length=length,
    )  # fmt: skip
    packet = decode(frame, linktype)
    assert (packet.pid, packet.comm, packet.ifname) == (4321, "curl", "en7")
    assert (packet.direction, packet.ifindex, packet.dport) == (Direction.TX, -1, 443)


def test_pktap_v1_delegated_process_wins() -> None:
    frame = b.pktap_v1(
        b.ethernet(v4_tcp()), flags=b.PTH_FLAG_DIR_IN | b.PTH_FLAG_PROC_DELEGATED,
        pid=88, comm="nsurlsessiond", epid=1234, ecomm="Safari",
    )  # fmt: skip
    packet = decode(frame, lt.LINKTYPE_PKTAP)
    assert (packet.pid, packet.comm, packet.direction) == (1234, "Safari", Direction.RX)


def test_pktap_delegation_without_an_effective_pid_keeps_the_pid() -> None:
    frame = b.pktap_v1(
        b.ethernet(v4_tcp()), flags=b.PTH_FLAG_PROC_DELEGATED, pid=88, comm="d", epid=0
    )
    packet = decode(frame, lt.LINKTYPE_PKTAP)
    assert (packet.pid, packet.comm, packet.direction) == (88, "d", Direction.UNKNOWN)


def test_pktap_v2() -> None:
    frame = b.pktap_v2(
        b.ethernet(b.ipv6(b.UDP, DATAGRAM)), ifname="utun3", flags=b.PTH_FLAG_DIR_IN,
        pid=321, comm="mDNSResponder", epid=-1, ecomm=None,
    )  # fmt: skip
    packet = decode(frame, lt.LINKTYPE_PKTAP)
    assert (packet.pid, packet.comm, packet.ifname, packet.direction) == (
        321, "mDNSResponder", "utun3", Direction.RX,
    )  # fmt: skip
    assert (packet.sport, packet.dport) == (5353, 53)


def test_pktap_v2_delegated_and_absent_strings() -> None:
    frame = b.pktap_v2(
        b.ethernet(v4_tcp()), ifname="en0", flags=b.PTH_FLAG_PROC_DELEGATED | b.PTH_FLAG_DIR_OUT,
        pid=50, comm=None, epid=777, ecomm="Mail",
    )  # fmt: skip
    packet = decode(frame, lt.LINKTYPE_PKTAP)
    assert (packet.pid, packet.comm, packet.direction) == (777, "Mail", Direction.TX)
    bare = decode(b.pktap_v2(b.ethernet(v4_tcp()), ifname=None, pid=5), lt.LINKTYPE_PKTAP)
    assert (bare.pid, bare.comm, bare.ifname) == (5, None, None)


@pytest.mark.parametrize(
    ("dlt", "inner"), [(0, b.null(b.ipv6(b.TCP, SEGMENT))), (12, b.ipv6(b.TCP, SEGMENT))]
)
def test_pktap_inner_null_and_raw(dlt: int, inner: bytes) -> None:
    packet = decode(b.pktap_v1(inner, dlt=dlt, pid=1), lt.LINKTYPE_PKTAP)
    assert (packet.src, packet.sport, packet.pid) == (parse_addr("2001:db8::1"), 40000, 1)


def test_pktap_inner_link_we_do_not_read_is_not_ip() -> None:
    assert try_decode(b.pktap_v1(v4_tcp(), dlt=9, pid=1), lt.LINKTYPE_PKTAP) is None


def test_pktap_header_longer_than_the_record_is_malformed() -> None:
    with pytest.raises(Malformed):
        decode(b.pktap_v1(b"", length=156)[:150], lt.LINKTYPE_PKTAP)
    short = (100).to_bytes(4, "little") + b.pktap_v1(b.ethernet(v4_tcp()))[4:]
    with pytest.raises(Malformed):  # a length field that ends before pth_ecomm
        decode(short, lt.LINKTYPE_PKTAP)
    with pytest.raises(Malformed):
        decode(b.pktap_v2(b"", ifname="en0")[:41], lt.LINKTYPE_PKTAP)


@pytest.mark.parametrize("name", ["LINKTYPE_PKTAP", "LINKTYPE_USER2_PKTAP"])
def test_pktap_reference_captures(name: str) -> None:
    """tcpdump's PKTAP samples: tcpdump -e shows the frame; the process is in the header bytes.

    ``tcpdump -e`` prints "DLT EN10MB (1) len 108": an Ethernet frame behind a
    108-byte header. The hexdump of that header shows, little-endian (offsets
    of tcpdump's print-pktap.c): ifname "en0" at 12, flags 0x2 (outbound) at
    36, pid 0x200 = 512 at 52 and an all-zero comm at 56 (no name).
    """
    path = CAPTURES / f"{name}.pcap"
    shown = subprocess.run(
        ["tcpdump", "-e", "-nn", "-r", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "DLT EN10MB (1) len 108, length 182: " in shown
    assert "10.32.4.27.63538 > 10.32.100.15.53: " in shown
    raw = path.read_bytes()
    record = raw[40:]
    assert record[12:16] == b"en0\0" and record[36:40] == b"\x02\0\0\0"
    assert record[52:56] == b"\x00\x02\x00\x00" and record[56:73] == bytes(17)
    packet = decode(record, lt.LINKTYPE_PKTAP)
    assert (packet.pid, packet.comm, packet.ifname, packet.direction) == (
        512,
        "",
        "en0",
        Direction.TX,
    )
    assert (packet.sport, packet.dport, packet.ip_length) == (63538, 53, 60)


# -- IPv4 --------------------------------------------------------------------------


@pytest.mark.parametrize("options", [b"\x94\x04\0\0", b"\x01" * 11, bytes([7, 39, 4]) + bytes(36)])
def test_ipv4_options_move_the_transport_header(options: bytes) -> None:
    packet = decode(v4_tcp(options=options), lt.LINKTYPE_RAW)
    header = 20 + len(options) + (-len(options) % 4)
    assert (packet.sport, packet.dport, packet.seq, packet.ack) == (40000, 443, 7, 9)
    assert (packet.ip_length, packet.payload_length) == (header + len(SEGMENT), 5)
    assert packet.tcp_flags == b.PSH | b.ACK


def test_ipv4_options_cut_by_the_capture_are_malformed() -> None:
    with pytest.raises(Malformed):
        decode(v4_tcp(options=bytes(40)), lt.LINKTYPE_RAW, caplen=40)


@pytest.mark.parametrize("ihl", [4, 0])
def test_ipv4_header_length_below_20_is_malformed(ihl: int) -> None:
    with pytest.raises(Malformed):
        decode(v4_tcp(ihl=ihl), lt.LINKTYPE_RAW)


def test_ipv4_first_fragment_has_ports_and_fragment_id() -> None:
    packet = decode(b.ipv4(b.UDP, DATAGRAM, ident=0xBEEF, more_fragments=True), lt.LINKTYPE_RAW)
    assert (packet.transport, packet.sport, packet.dport, packet.fragment_id) == (
        True,
        5353,
        53,
        0xBEEF,
    )


def test_ipv4_later_fragment_has_no_ports() -> None:
    body = b"\x12\x34" * 20  # bytes that would read as ports if mistaken for a header
    for more in (True, False):
        frame = b.ipv4(b.UDP, body, ident=0xBEEF, offset=1480, more_fragments=more)
        packet = decode(frame, lt.LINKTYPE_RAW)
        assert (packet.transport, packet.sport, packet.dport) == (False, 0, 0)
        assert (packet.fragment_id, packet.proto, packet.ip_length) == (0xBEEF, b.UDP, 60)


def test_ipv4_unfragmented_has_no_fragment_id() -> None:
    assert decode(v4_tcp(df=True), lt.LINKTYPE_RAW).fragment_id == -1


@pytest.mark.parametrize("proto", [b.TCP, b.UDP])
def test_ipv4_total_length_zero_is_tso_for_tcp_and_udp(proto: int) -> None:
    body = SEGMENT if proto == b.TCP else DATAGRAM
    frame = b.ethernet(b.ipv4(proto, body, total_length=0))
    packet = decode(frame, lt.LINKTYPE_ETHERNET, wirelen=80066)
    assert packet.ip_length == 80066 - 14
    assert packet.payload_length == 80066 - 14 - 20 - (20 if proto == b.TCP else 8)


def test_ipv4_total_length_zero_is_malformed_for_other_protocols() -> None:
    """tcpdump: "[total length 0 < header length 20] (invalid)" (icmp-length-zero)."""
    with pytest.raises(Malformed):
        decode(b.ipv4(b.ICMP, b.icmp(), total_length=0), lt.LINKTYPE_RAW, wirelen=84)


def test_ipv4_total_length_beyond_the_wire_is_malformed() -> None:
    frame = v4_tcp(total_length=20 + len(SEGMENT) + 1)
    with pytest.raises(Malformed):
        decode(frame, lt.LINKTYPE_RAW)
    assert decode(frame, lt.LINKTYPE_RAW, wirelen=len(frame) + 1).ip_length == len(frame) + 1


def test_ethernet_padding_is_not_counted() -> None:
    frame = b.ethernet(b.ipv4(b.UDP, b.udp(1, 2))) + bytes(18)
    packet = decode(frame, lt.LINKTYPE_ETHERNET)
    assert (packet.ip_length, packet.payload_length) == (28, 0)


# -- transport ---------------------------------------------------------------------


@pytest.mark.parametrize(("body", "short"), [(SEGMENT, 20), (DATAGRAM, 8)], ids=["tcp", "udp"])
def test_capture_ending_inside_the_transport_header(body: bytes, short: int) -> None:
    proto = b.TCP if body is SEGMENT else b.UDP
    frame = b.ipv4(proto, body)
    for cut in range(0, short):
        packet = decode(frame, lt.LINKTYPE_RAW, caplen=20 + cut)
        ports = (40000, 443) if proto == b.TCP else (5353, 53)
        if cut < 4:
            assert (packet.transport, packet.sport, packet.dport) == (False, 0, 0)
        else:  # tcpdump prints the ports it has: "a.b.c.d.40000 > ...: [|tcp]"
            assert (packet.transport, (packet.sport, packet.dport)) == (True, ports)
            assert (packet.tcp_flags, packet.seq, packet.payload_length) == (
                0,
                0,
                len(body) - short,
            )
        assert packet.ip_length == 20 + len(body)


def test_transport_header_longer_than_its_packet_is_malformed() -> None:
    for caplen in (24, 40):
        with pytest.raises(Malformed):
            decode(b.ipv4(b.TCP, SEGMENT[:12]), lt.LINKTYPE_RAW, caplen=caplen)
    with pytest.raises(Malformed):
        decode(b.ipv4(b.TCP, b.tcp(1, 2, data_offset=4)), lt.LINKTYPE_RAW)
    with pytest.raises(Malformed):
        decode(b.ipv4(b.TCP, b.tcp(1, 2, data_offset=15)), lt.LINKTYPE_RAW)


def test_tcp_options_and_payload() -> None:
    segment = b.tcp(1, 2, b"x" * 33, options=b"\x02\x04\x05\xb4" + b"\x01" * 8)
    packet = decode(b.ipv6(b.TCP, segment), lt.LINKTYPE_RAW)
    assert (packet.payload_length, packet.payload_offset) == (33, 3 + 40 + 32)


def test_icmp_and_other_protocols_have_no_ports() -> None:
    icmp = decode(b.ipv4(b.ICMP, b.icmp()), lt.LINKTYPE_RAW)
    gre = decode(b.ipv6(b.GRE, bytes(12)), lt.LINKTYPE_RAW)
    assert (icmp.proto, icmp.transport, icmp.sport, icmp.ip_length) == (b.ICMP, True, 0, 28)
    assert (gre.proto, gre.transport, gre.dport, gre.ip_length) == (b.GRE, True, 0, 52)


# -- IPv6 --------------------------------------------------------------------------


def test_ipv6_jumbogram() -> None:
    size = 70000
    frame = b.ethernet(
        b.ipv6(b.TCP, SEGMENT, ext=[b.hop_by_hop(b.jumbo_option(size))], payload_length=0)
    )
    packet = decode(frame, lt.LINKTYPE_ETHERNET, wirelen=14 + 40 + size)
    assert (packet.ip_length, packet.proto, packet.dport) == (40 + size, b.TCP, 443)
    assert packet.payload_length == size - 8 - 20


def test_ipv6_jumbo_option_after_other_options() -> None:
    options = b.router_alert() + b"\x01\x00" + b.jumbo_option(70000)  # PadN 0 keeps 4n+2
    frame = b.ipv6(b.UDP, DATAGRAM, ext=[b.hop_by_hop(options)], payload_length=0)
    assert decode(frame, lt.LINKTYPE_RAW, wirelen=70040).ip_length == 70040


def test_ipv6_jumbo_larger_than_the_wire_is_malformed() -> None:
    frame = b.ipv6(b.TCP, SEGMENT, ext=[b.hop_by_hop(b.jumbo_option(70000))], payload_length=0)
    with pytest.raises(Malformed):
        decode(frame, lt.LINKTYPE_RAW, wirelen=70039)


def test_ipv6_hop_by_hop_without_jumbo_and_zero_length_is_malformed() -> None:
    frame = b.ipv6(b.TCP, SEGMENT, ext=[b.hop_by_hop(b.router_alert())], payload_length=0)
    with pytest.raises(Malformed):
        decode(frame, lt.LINKTYPE_RAW, wirelen=70000)


@pytest.mark.parametrize("proto", [b.TCP, b.UDP])
def test_big_tcp_without_hop_by_hop_takes_the_wire_length(proto: int) -> None:
    body = SEGMENT if proto == b.TCP else DATAGRAM
    frame = b.ethernet(b.ipv6(proto, body, payload_length=0))
    packet = decode(frame, lt.LINKTYPE_ETHERNET, wirelen=80054)
    assert (packet.ip_length, packet.sport) == (80040, 40000 if proto == b.TCP else 5353)


def test_zero_payload_length_below_64k_is_an_empty_payload() -> None:
    """As tcpdump (icmpv6-length-zero): BIG TCP needs >64 KiB of TCP or UDP."""
    icmp = decode(b.ipv6(b.ICMPV6, b.icmp(128), payload_length=0), lt.LINKTYPE_RAW)
    assert (icmp.ip_length, icmp.proto) == (40, b.ICMPV6)
    big_icmp = decode(
        b.ipv6(b.ICMPV6, b.icmp(128), payload_length=0), lt.LINKTYPE_RAW, wirelen=80000
    )
    assert big_icmp.ip_length == 40
    with pytest.raises(Malformed):  # an empty payload has no room for TCP
        decode(b.ipv6(b.TCP, SEGMENT, payload_length=0), lt.LINKTYPE_RAW, wirelen=65535)
    with pytest.raises(Malformed):  # nor for an extension header
        decode(
            b.ipv6(b.UDP, DATAGRAM, ext=[b.fragment()], payload_length=0),
            lt.LINKTYPE_RAW,
            wirelen=80000,
        )


def test_ipv6_payload_length_beyond_the_wire_is_malformed() -> None:
    frame = b.ipv6(b.UDP, DATAGRAM, payload_length=len(DATAGRAM) + 1)
    with pytest.raises(Malformed):
        decode(frame, lt.LINKTYPE_RAW)


@pytest.mark.parametrize(
    "ext",
    [
        [b.hop_by_hop(b.router_alert())],
        [b.routing(["2001:db8::10", "2001:db8::11"])],
        [b.destination_options(bytes([0x1E, 3, 1, 2, 3]))],
        [b.authentication()],
        [b.authentication(bytes(16))],
        [b.hop_by_hop(), b.destination_options(), b.routing(), b.fragment(), b.authentication()],
    ],
)
def test_ipv6_extension_headers_are_walked(ext: list[tuple[int, bytes]]) -> None:
    frame = b.ethernet(b.ipv6(b.UDP, DATAGRAM, ext=ext))
    packet = decode(frame, lt.LINKTYPE_ETHERNET)
    chain = sum(len(raw) for _, raw in ext)
    assert (packet.proto, packet.sport, packet.dport) == (b.UDP, 5353, 53)
    assert (packet.ip_length, packet.payload_length) == (40 + chain + len(DATAGRAM), 5)
    assert packet.payload_offset == 3 + 14 + 40 + chain + 8


def test_ipv6_first_fragment_has_ports() -> None:
    frame = b.ipv6(b.TCP, SEGMENT, ext=[b.fragment(0, more=True, ident=0xA1B2C3D4)])
    packet = decode(frame, lt.LINKTYPE_RAW)
    assert (packet.transport, packet.dport, packet.fragment_id) == (True, 443, 0xA1B2C3D4)


def test_ipv6_later_fragment_has_no_ports() -> None:
    frame = b.ipv6(b.UDP, b"\x12\x34" * 10, ext=[b.fragment(1448, ident=77)])
    packet = decode(frame, lt.LINKTYPE_RAW)
    assert (packet.transport, packet.sport, packet.proto) == (False, 0, b.UDP)
    assert (packet.fragment_id, packet.ip_length) == (77, 40 + 8 + 20)


def test_ipv6_extension_header_cut_by_the_capture_is_portless() -> None:
    frame = b.ipv6(b.UDP, DATAGRAM, ext=[b.routing()])
    packet = decode(frame, lt.LINKTYPE_RAW, caplen=44)
    assert (packet.transport, packet.proto, packet.ip_length) == (False, b.ROUTING, len(frame))


def test_too_many_ipv6_extension_headers_are_malformed() -> None:
    frame = b.ipv6(b.UDP, DATAGRAM, ext=[b.destination_options()] * 17)
    with pytest.raises(Malformed):
        decode(frame, lt.LINKTYPE_RAW)


def test_ipv6_bad_version_is_malformed() -> None:
    with pytest.raises(Malformed):
        decode(b.ipv6(b.UDP, DATAGRAM, version=4), lt.LINKTYPE_IPV6)
