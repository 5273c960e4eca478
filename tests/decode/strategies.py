"""Hypothesis strategies for valid-ish captured packets, built with tests.builders.

`framed()` draws one record: an IPv4 or IPv6 packet (options, fragments, TSO,
extension headers, jumbograms, BIG TCP; TCP, UDP, ICMP and other protocols)
inside any link header netoproc reads, sometimes cut by a snap length, with
its wire length. Hypothesis favours small values, so rare variants are
triggered by the largest value of a small range.
"""

from __future__ import annotations

from hypothesis import strategies as st

from netoproc.capture import records as lt
from tests import builders as b

LINKTYPES = (
    lt.LINKTYPE_NULL, lt.LINKTYPE_ETHERNET, lt.LINKTYPE_RAW, lt.LINKTYPE_DLT_RAW_12,
    lt.LINKTYPE_DLT_RAW_14, lt.LINKTYPE_LOOP, lt.LINKTYPE_LINUX_SLL, lt.LINKTYPE_LINUX_SLL2,
    lt.LINKTYPE_IPV4, lt.LINKTYPE_IPV6, lt.LINKTYPE_PKTAP, lt.LINKTYPE_USER2_PKTAP,
)  # fmt: skip


ports = st.one_of(st.just(53), st.integers(0, 65535))


@st.composite
def transports(draw: st.DrawFn) -> tuple[int, bytes]:
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "other"]))
    payload = draw(st.binary(max_size=48))
    if kind == "tcp":
        segment = b.tcp(
            draw(ports), draw(ports), payload, flags=draw(st.integers(0, 255)),
            seq=draw(st.integers(0, 2**32 - 1)), ack=draw(st.integers(0, 2**32 - 1)),
            options=draw(st.binary(max_size=40)),
            data_offset=draw(st.integers(0, 15)) if draw(st.integers(0, 7)) == 7 else None,
        )  # fmt: skip
        return b.TCP, segment
    if kind == "udp":
        return b.UDP, b.udp(draw(ports), draw(ports), payload)
    if kind == "icmp":
        return draw(st.sampled_from([b.ICMP, b.ICMPV6])), b.icmp(8, 0, payload)
    return draw(st.sampled_from([b.GRE, 50, b.NONE, 103, 255])), payload


def _addresses(draw: st.DrawFn, v6: bool) -> tuple[str, str]:
    pool = ["2001:db8::1", "fe80::1", "::1", "2001:db8:ffff::53"] if v6 else [
        "192.0.2.1", "10.0.0.1", "127.0.0.1", "255.255.255.255",
    ]  # fmt: skip
    return draw(st.sampled_from(pool)), draw(st.sampled_from(pool))


@st.composite
def ipv4_packets(draw: st.DrawFn) -> tuple[bytes, int]:
    """An IPv4 packet and how many more bytes the wire had."""
    proto, body = draw(transports())
    src, dst = _addresses(draw, False)
    fragment = draw(st.sampled_from(["none"] * 5 + ["first", "later", "last"]))
    tso = proto in (b.TCP, b.UDP) and draw(st.integers(0, 9)) == 9
    packet = b.ipv4(
        proto, body, src=src, dst=dst, ident=draw(st.integers(0, 65535)),
        options=draw(st.sampled_from([b"", b"", b"", b"\x94\x04\0\0"]) | st.binary(max_size=40)),
        more_fragments=fragment in ("first", "later"),
        offset=8 * draw(st.integers(1, 8191)) if fragment in ("later", "last") else 0,
        df=draw(st.booleans()), total_length=0 if tso else None,
    )  # fmt: skip
    if not tso and draw(st.integers(0, 7)) == 7:  # a total length off by a little
        total = max(0, len(packet) + draw(st.integers(-30, 2)))
        packet = packet[:2] + total.to_bytes(2, "big") + packet[4:]
    extra = draw(st.sampled_from([0, 0, 1, 1000, 70000])) if tso else 0
    return packet, extra


@st.composite
def ipv6_packets(draw: st.DrawFn) -> tuple[bytes, int]:
    """An IPv6 packet and how many more bytes the wire had."""
    proto, body = draw(transports())
    options = st.sampled_from([b"", b.router_alert(), bytes([0x1E, 2, 7, 7])])
    headers = [
        st.builds(b.destination_options, options),
        st.builds(b.routing, st.lists(st.sampled_from(["2001:db8::9", "::2"]), max_size=3)),
        st.builds(b.fragment, st.sampled_from([0, 0, 8, 1448]), more=st.booleans()),
        st.builds(b.authentication, st.sampled_from([bytes(12), bytes(16)])),
    ]
    ext: list[tuple[int, bytes]] = draw(st.just([]) | st.lists(st.one_of(headers), max_size=3))
    size = draw(st.sampled_from(["normal"] * 4 + ["jumbo", "zero"]))
    hop_by_hop = size == "jumbo" or draw(st.integers(0, 3)) == 3
    hbh_options = draw(options)
    extra = draw(st.sampled_from([0, 1, 70000])) if size != "normal" else 0
    src, dst = _addresses(draw, True)

    def build(jumbo: int | None) -> bytes:
        jumbo_option = b"" if jumbo is None else b.jumbo_option(jumbo)
        hbh = [b.hop_by_hop(jumbo_option + hbh_options)] if hop_by_hop else []
        length = None if size == "normal" else 0
        return b.ipv6(proto, body, src=src, dst=dst, ext=[*hbh, *ext], payload_length=length)

    packet = build(None if size != "jumbo" else 0)
    if size == "jumbo":  # RFC 2675: the length of all that follows the IPv6 header
        packet = build(max(0, len(packet) - 40 + extra + draw(st.sampled_from([0, 0, 1, -1]))))
    return packet, extra


@st.composite
def framed(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """(frame, link type, wire length): an IP packet in any link header we read."""
    packet, extra = draw(st.one_of(ipv4_packets(), ipv6_packets()))
    v6 = packet[0] >> 4 == 6
    link = draw(st.sampled_from(["ether", "sll", "sll2", "null", "loop", "raw", "ipvx", "pktap"]))
    if link == "ether":
        vlans = draw(st.lists(st.integers(0, 4095), max_size=3))
        frame, linktype = b.ethernet(packet, vlans=vlans), lt.LINKTYPE_ETHERNET
    elif link == "sll":
        frame, linktype = b.sll(packet, pkttype=draw(st.integers(0, 4))), lt.LINKTYPE_LINUX_SLL
    elif link == "sll2":
        frame = b.sll2(
            packet, ifindex=draw(st.integers(0, 2**32 - 1)), pkttype=draw(st.integers(0, 4))
        )
        linktype = lt.LINKTYPE_LINUX_SLL2
    elif link == "null":
        family = draw(st.sampled_from([30, 24, 28, 10] if v6 else [2]))
        frame = b.null(packet, family=family, big_endian=draw(st.booleans()))
        linktype = lt.LINKTYPE_NULL
    elif link == "loop":
        frame, linktype = b.loop(packet), lt.LINKTYPE_LOOP
    elif link == "raw":
        frame = packet
        linktype = draw(
            st.sampled_from([lt.LINKTYPE_RAW, lt.LINKTYPE_DLT_RAW_12, lt.LINKTYPE_DLT_RAW_14])
        )
    elif link == "ipvx":
        frame, linktype = packet, lt.LINKTYPE_IPV6 if v6 else lt.LINKTYPE_IPV4
    else:
        inner = draw(st.sampled_from([(1, b.ethernet(packet)), (0, b.null(packet)), (12, packet)]))
        pid, epid = draw(st.integers(-1, 99999)), draw(st.integers(-1, 99999))
        comm, ecomm = draw(st.sampled_from(["", "curl"])), draw(st.sampled_from(["", "Safari"]))
        ifname, flags = draw(st.sampled_from(["en0", "utun2"])), draw(st.integers(0, 7))
        dlt, inner_frame = inner
        if draw(st.booleans()):
            frame = b.pktap_v1(
                inner_frame, dlt=dlt, ifname=ifname, flags=flags, pid=pid, comm=comm, epid=epid,
                ecomm=ecomm, length=draw(st.sampled_from([156, 108])),
            )  # fmt: skip
        else:
            frame = b.pktap_v2(
                inner_frame, dlt=dlt, ifname=ifname, flags=flags, pid=pid, comm=comm, epid=epid,
                ecomm=ecomm or None,
            )  # fmt: skip
        linktype = draw(st.sampled_from([lt.LINKTYPE_PKTAP, lt.LINKTYPE_USER2_PKTAP]))
    wire = len(frame) + extra
    if draw(st.integers(0, 5)) == 5:  # a snap length cut (hypothesis favours 0: test 5)
        frame = frame[: draw(st.integers(0, len(frame)))]
    return frame, linktype, wire
