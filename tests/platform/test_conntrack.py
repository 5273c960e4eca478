"""ctnetlink messages, built and read as the kernel's UAPI lays them out
(linux/netfilter/nfnetlink_conntrack.h): requests byte for byte, answers
(entries, ENOENT, errors, stale and damaged messages) parsed or refused."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, NatEntry, parse_addr
from netoproc.platform.conntrack import (
    Conntrack,
    ConntrackError,
    get_request,
    parse_answer,
)

NESTED = 0x8000


def nla(kind: int, payload: bytes) -> bytes:
    """An attribute, padded to 4 bytes, written out flat (not with the code's helper)."""
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def v4(text: str) -> bytes:
    return socket.inet_aton(text)


def tuple_v4(kind: int, src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    ip = nla(1, v4(src)) + nla(2, v4(dst))  # CTA_IP_V4_SRC, CTA_IP_V4_DST
    ports = (
        nla(1, bytes([proto])) + nla(2, struct.pack(">H", sport)) + nla(3, struct.pack(">H", dport))
    )
    return nla(kind | NESTED, nla(1 | NESTED, ip) + nla(2 | NESTED, ports))


def message(kind: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 4321) + body


def entry_message(seq: int) -> bytes:
    """A masqueraded TCP connection as the kernel reports it (type CT_NEW, with the
    status, timeout, protoinfo and id attributes around the tuples)."""
    body = struct.pack("=BBH", socket.AF_INET, 0, 0)
    body += tuple_v4(1, "10.88.0.2", "203.0.113.2", IPPROTO_TCP, 40000, 80)
    body += tuple_v4(2, "203.0.113.2", "203.0.113.1", IPPROTO_TCP, 80, 40000)
    body += nla(3, struct.pack(">I", 0x1BE))  # CTA_STATUS
    body += nla(7, struct.pack(">I", 431999))  # CTA_TIMEOUT
    body += nla(4 | NESTED, nla(1 | NESTED, nla(1, b"\x03")))  # CTA_PROTOINFO: TCP state
    body += nla(12, struct.pack(">I", 77))  # CTA_ID
    return message(0x100, seq, body)


def error_message(seq: int, code: int) -> bytes:
    return message(2, seq, struct.pack("=i", -code) + b"\0" * 16)


MASQUERADED = NatEntry(
    IPPROTO_TCP,
    (parse_addr("10.88.0.2"), 40000, parse_addr("203.0.113.2"), 80),
    (parse_addr("203.0.113.2"), 80, parse_addr("203.0.113.1"), 40000),
)


def test_a_get_request_byte_for_byte() -> None:
    t = (parse_addr("203.0.113.2"), 80, parse_addr("203.0.113.1"), 40000)
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + tuple_v4(
        2, "203.0.113.2", "203.0.113.1", IPPROTO_TCP, 80, 40000
    )
    expected = struct.pack("=IHHII", 16 + len(body), 0x101, 1, 9, 0) + body
    assert get_request(9, IPPROTO_TCP, t, reply=True) == expected
    orig = get_request(9, IPPROTO_TCP, t, reply=False)
    assert orig[20:24] == struct.pack("=HH", len(body) - 4, 1 | NESTED)


def test_an_ipv6_request() -> None:
    src, dst = parse_addr("2001:db8::1"), parse_addr("2001:db8::2")
    request = get_request(3, IPPROTO_UDP, (src, 53, dst, 5353), reply=False)
    assert request[16] == socket.AF_INET6
    assert socket.inet_pton(socket.AF_INET6, "2001:db8::1") in request
    assert struct.unpack_from("=I", request)[0] == len(request)


def test_an_entry_is_read() -> None:
    assert parse_answer(entry_message(5), 5) == MASQUERADED


def test_ipv6_entries_are_read() -> None:
    a, b = (
        socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
        socket.inet_pton(socket.AF_INET6, "2001:db8::2"),
    )

    def t6(kind: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
        ip = nla(3, src) + nla(4, dst)
        ports = (
            nla(1, bytes([17]))
            + nla(2, struct.pack(">H", sport))
            + nla(3, struct.pack(">H", dport))
        )
        return nla(kind | NESTED, nla(1 | NESTED, ip) + nla(2 | NESTED, ports))

    body = (
        struct.pack("=BBH", socket.AF_INET6, 0, 0) + t6(1, a, b, 1000, 53) + t6(2, b, a, 53, 1000)
    )
    entry = parse_answer(message(0x100, 1, body), 1)
    one, two = parse_addr("2001:db8::1"), parse_addr("2001:db8::2")
    assert entry == NatEntry(IPPROTO_UDP, (one, 1000, two, 53), (two, 53, one, 1000))


def test_no_entry_is_none_and_other_errors_are_errors() -> None:
    assert parse_answer(error_message(5, errno.ENOENT), 5) is None
    with pytest.raises(ConntrackError, match="EPERM"):
        parse_answer(error_message(5, errno.EPERM), 5)


def test_answers_to_earlier_requests_are_skipped() -> None:
    data = error_message(4, errno.EPERM) + entry_message(5)
    assert parse_answer(data, 5) == MASQUERADED
    assert parse_answer(entry_message(4), 5) is None


def test_damaged_messages_are_refused_not_crashed_on() -> None:
    good = entry_message(5)
    for cut in (20, 40, 60, len(good) - 3):
        damaged = struct.pack("=I", len(good)) + good[4:cut]
        with pytest.raises(ConntrackError):
            parse_answer(damaged, 5)
    # an attribute claiming more than its message holds
    body = struct.pack("=BBH", 2, 0, 0) + struct.pack("=HH", 200, 1 | NESTED) + b"\0" * 8
    with pytest.raises(ConntrackError):
        parse_answer(message(0x100, 5, body), 5)
    # tuples without ports (ICMP) or one tuple only: no entry
    body = struct.pack("=BBH", 2, 0, 0) + nla(1 | NESTED, nla(1 | NESTED, nla(1, v4("10.0.0.1"))))
    assert parse_answer(message(0x100, 5, body), 5) is None
    assert parse_answer(b"", 5) is None
    assert parse_answer(b"\xff" * 15, 5) is None


def test_the_kernel_answers_a_question_with_no_entry() -> None:
    """A real ctnetlink socket (this namespace): a tuple nothing uses has no entry."""
    try:
        tracker = Conntrack()
    except OSError as exc:
        pytest.fail(f"cannot open a ctnetlink socket as root: {exc}")
    try:
        from netoproc.model import FlowKey

        key = FlowKey("lo", IPPROTO_UDP, parse_addr("192.0.2.1"), 9, parse_addr("192.0.2.2"), 9)
        assert tracker.find(key) is None
        assert tracker.asked == 2
    finally:
        tracker.close()
