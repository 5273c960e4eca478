"""DNS messages from the wire: the parser behind the DNS observatory.

Owns the DNS wire format as far as netoproc reads it (RFC 1035, EDNS0 of RFC
6891 for the extended rcode, RFC 3597 for unknown types) and DNS over TCP
framing (RFC 1035 4.2.2): `parse_message` turns one message into a `Message`
holding the header, the question section and the answer section rendered for
people; the authority and additional sections are walked and bounds-checked
but not kept, except the OPT record's extended rcode bits (a second OPT record
is an error, RFC 6891 6.1.1). Bytes after the last record are ignored.

Hardened: every failure is a `DnsError` with a short reason, and nothing else
escapes. Section counts are checked against the message length before any
section is read; a compression pointer must point strictly before the name
(or the previous pointer target) it is found in, so every walk ends; names
longer than 255 bytes and label types 0x40/0x80 are errors; every name decoded
is remembered by offset for the rest of the message, so each byte is walked
about once whatever the pointers, and work is linear in the message length.

Names are rendered as dnspython's ``Name.to_text(omit_final_dot=True)`` does
(``"().;\\@$`` escaped with a backslash, bytes outside 0x21-0x7E as ``\\DDD``),
so hostile names carry no control characters; the root name is ``""`` (not
``"."``) and case is kept as received. Names inside rdata follow the same rule
except that the root is ``"."``, so a field is never empty.

Rdata (`Record.data`): A and AAAA (class IN) as `socket.inet_ntop` writes
them; NS, CNAME, PTR, DNAME the target name; MX "preference exchange"; SRV
(class IN) "priority weight port target"; SOA "mname rname serial refresh
retry expire minimum"; TXT and SPF each string quoted and escaped as
dnspython does; any other type RFC 3597's ``\\# length hex``, the hex digits
lowercase in one word. Rdata of these types that does not fill its length
exactly is an error.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

_HEADER = struct.Struct("!6H")  # id, flags, qdcount, ancount, nscount, arcount
_QUESTION = struct.Struct("!2H")  # after the name: qtype, qclass
_RR = struct.Struct("!HHIH")  # after the name: type, class, ttl, rdlength
_U16 = struct.Struct("!H")
_SRV = struct.Struct("!3H")  # priority, weight, port
_SOA = struct.Struct("!5I")  # serial, refresh, retry, expire, minimum

# flags word: QR | opcode(4) | AA | TC | RD | RA | Z | AD | CD | rcode(4)
_QR = 0x8000
_TC = 0x0200
_OPCODE_SHIFT = 11
_MIN_QUESTION = 1 + _QUESTION.size  # the root name and qtype, qclass
_MIN_RR = 1 + _RR.size
MAX_NAME = 255  # wire length, length bytes and the root label included
TYPE_OPT = 41
CLASS_IN = 1

# As dnspython names them, so that both agree on every value.
_TYPE_NAMES = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP",
    18: "AFSDB", 19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP", 23: "NSAP-PTR", 24: "SIG",
    25: "KEY", 26: "PX", 27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT", 33: "SRV", 35: "NAPTR",
    36: "KX", 37: "CERT", 38: "A6", 39: "DNAME", 41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP",
    45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID", 50: "NSEC3",
    51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 56: "NINFO", 59: "CDS",
    60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS",
    66: "DSYNC", 67: "HHIT", 68: "BRID", 99: "SPF", 103: "UNSPEC", 104: "NID", 105: "L32",
    106: "L64", 107: "LP", 108: "EUI48", 109: "EUI64", 128: "NXNAME", 249: "TKEY", 250: "TSIG",
    251: "IXFR", 252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "ANY", 256: "URI", 257: "CAA",
    258: "AVC", 260: "AMTRELAY", 261: "RESINFO", 262: "WALLET", 32768: "TA", 32769: "DLV",
}  # fmt: skip
_RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 11: "DSOTYPENI",
    16: "BADVERS", 17: "BADKEY", 18: "BADTIME", 19: "BADMODE", 20: "BADNAME", 21: "BADALG",
    22: "BADTRUNC", 23: "BADCOOKIE",
}  # fmt: skip

# Label bytes shown as themselves in names; every other byte is escaped.
_NAME_PLAIN = bytes(b for b in range(0x21, 0x7F) if b not in b'"().;\\@$')
_NAME_PLAIN_DOT = _NAME_PLAIN + b"."
_NAME_ESCAPE = [
    chr(b) if b in _NAME_PLAIN else f"\\{b:c}" if 0x21 <= b < 0x7F else f"\\{b:03d}"
    for b in range(256)
]
# Bytes shown as themselves inside a quoted TXT string (space included).
_TEXT_PLAIN = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')
_TEXT_ESCAPE = [
    chr(b) if b in _TEXT_PLAIN else f"\\{b:c}" if 0x20 <= b < 0x7F else f"\\{b:03d}"
    for b in range(256)
]


class DnsError(Exception):
    """A message that is not well-formed DNS; the only exception `parse_message` raises."""


@dataclass(frozen=True, slots=True)
class Question:
    name: str
    qtype: int
    qclass: int


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    rtype: int
    rclass: int
    ttl: int
    data: str


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    response: bool
    opcode: int
    rcode: int  # 12 bits with an OPT record's extended rcode
    truncated: bool
    questions: tuple[Question, ...]
    answers: tuple[Record, ...]


def type_name(rtype: int) -> str:
    return _TYPE_NAMES.get(rtype) or f"TYPE{rtype}"


def rcode_name(rcode: int) -> str:
    return _RCODE_NAMES.get(rcode) or f"RCODE{rcode}"


# A name decoded at an offset: its text, wire length, where its inline part
# ends, and the first compression pointer target in it (-1 when none).
_Seen = dict[int, tuple[str, int, int, int]]


def _label_text(raw: bytes) -> str:
    if raw.translate(None, _NAME_PLAIN):
        return "".join([_NAME_ESCAPE[b] for b in raw])
    return raw.decode("ascii")


def _name(data: bytes, pos: int, seen: _Seen) -> tuple[str, int]:
    """The name at `pos` and the offset after its inline part.

    The usual name, plain labels ending at the root or at a pointer, is read
    here; a pointer to a name not seen yet is followed by `_walk`, and any
    other name (bytes to escape, every error) is read by `_walk` alone.
    """
    start = pos
    size = len(data)
    raws = []
    while pos < size:
        length = data[pos]
        if not 0 < length < 0x40:
            break
        end = pos + 1 + length
        raws.append(data[pos + 1 : end])
        pos = end
    if pos >= size:
        return _walk_inline(data, start, seen)
    if data[pos] == 0:
        tail, tail_wire, first, end = "", 1, -1, pos + 1
    elif data[pos] >= 0xC0 and pos + 1 < size:
        first = (data[pos] & 0x3F) << 8 | data[pos + 1]
        if first >= start:
            return _walk_inline(data, start, seen)
        tail, tail_wire = (seen.get(first) or _walk(data, first, seen))[:2]
        end = pos + 2
    else:
        return _walk_inline(data, start, seen)
    if not raws:
        return tail, end
    wire = tail_wire + pos - start
    joined = b".".join(raws)
    if wire > MAX_NAME or joined.translate(None, _NAME_PLAIN_DOT) or joined.count(46) >= len(raws):
        return _walk_inline(data, start, seen)
    text = f"{joined.decode('ascii')}.{tail}" if tail else joined.decode("ascii")
    seen[start] = (text, wire, end, first)  # a pointer to a label inside is left to `_walk`
    return text, end


def _walk_inline(data: bytes, pos: int, seen: _Seen) -> tuple[str, int]:
    text, _, end, _ = _walk(data, pos, seen)
    return text, end


def _walk(data: bytes, pos: int, seen: _Seen) -> tuple[str, int, int, int]:
    """The name at `pos` with every check, as `seen` holds it.

    Every label and pointer walked is remembered in `seen` with the name that
    starts there, and a walk stops at the first offset already seen, so no
    offset is walked twice. The rules are those of a fresh walk: the first
    pointer must point before the start of the name, every later one before
    the previous target (an entry in `seen` satisfies this for its offset).
    """
    size = len(data)
    offsets: list[int] = []  # of every label and pointer walked
    labels: list[bytes] = []  # b"" for a pointer
    ends: list[int] = []  # per offset: where the inline part it belongs to ends
    limit = pos
    wire = 1  # the root label
    while True:
        hit = seen.get(pos)
        if hit is not None:
            text, tail_wire, end, first = hit
            if first >= limit:
                raise DnsError("compression pointer does not point backwards")
            if wire - 1 + tail_wire > MAX_NAME:
                raise DnsError("name longer than 255 bytes")
            if not offsets:
                return hit
            break
        if pos >= size:
            raise DnsError("name runs past the end")
        length = data[pos]
        if length == 0:
            text, tail_wire, end, first = "", 1, pos + 1, -1
            if not offsets:
                return text, tail_wire, end, first
            break
        if length >= 0xC0:
            if pos + 1 >= size:
                raise DnsError("truncated compression pointer")
            target = (length & 0x3F) << 8 | data[pos + 1]
            if target >= limit:
                raise DnsError("compression pointer does not point backwards")
            offsets.append(pos)
            labels.append(b"")
            ends.extend([pos + 2] * (len(offsets) - len(ends)))
            limit = pos = target
            continue
        if length & 0xC0:
            raise DnsError("unsupported label type")
        wire += length + 1
        if wire > MAX_NAME:
            raise DnsError("name longer than 255 bytes")
        end = pos + 1 + length
        if end > size:
            raise DnsError("label runs past the end")
        offsets.append(pos)
        labels.append(data[pos + 1 : end])
        pos = end
    ends.extend([end] * (len(offsets) - len(ends)))
    wire = tail_wire
    for index in range(len(offsets) - 1, -1, -1):
        raw = labels[index]
        if raw:
            label = _label_text(raw)
            text = f"{label}.{text}" if text else label
            wire += len(raw) + 1
        else:
            first = (data[offsets[index]] & 0x3F) << 8 | data[offsets[index] + 1]
        seen[offsets[index]] = (text, wire, ends[index], first)
    return seen[offsets[0]]


def _rdata_name(data: bytes, pos: int, seen: _Seen) -> tuple[str, int]:
    name, pos = _name(data, pos, seen)
    return name or ".", pos


# Renderers of rdata: (message, rdata start, rdata end, names seen) -> text.
_Renderer = Callable[[bytes, int, int, _Seen], str]


def _exact(what: str, pos: int, end: int) -> None:
    if pos != end:
        raise DnsError(f"{what} record of the wrong length")


def _address(family: int, size: int, what: str) -> _Renderer:
    def render(data: bytes, start: int, end: int, seen: _Seen) -> str:
        if end - start != size:
            raise DnsError(f"{what} record of the wrong length")
        return socket.inet_ntop(family, data[start:end])

    return render


def _target(data: bytes, start: int, end: int, seen: _Seen) -> str:
    name, pos = _rdata_name(data, start, seen)
    _exact("name", pos, end)
    return name


def _mx(data: bytes, start: int, end: int, seen: _Seen) -> str:
    if start + 2 >= end:
        raise DnsError("MX record too short")
    exchange, pos = _rdata_name(data, start + 2, seen)
    _exact("MX", pos, end)
    return f"{_U16.unpack_from(data, start)[0]} {exchange}"


def _srv(data: bytes, start: int, end: int, seen: _Seen) -> str:
    if start + _SRV.size >= end:
        raise DnsError("SRV record too short")
    target, pos = _rdata_name(data, start + _SRV.size, seen)
    _exact("SRV", pos, end)
    return "{} {} {} {}".format(*_SRV.unpack_from(data, start), target)


def _soa(data: bytes, start: int, end: int, seen: _Seen) -> str:
    mname, pos = _rdata_name(data, start, seen)
    if pos >= end:
        raise DnsError("SOA record too short")
    rname, pos = _rdata_name(data, pos, seen)
    _exact("SOA", pos + _SOA.size, end)
    return "{} {} {} {} {} {} {}".format(mname, rname, *_SOA.unpack_from(data, pos))


def _txt(data: bytes, start: int, end: int, seen: _Seen) -> str:
    if start == end:
        raise DnsError("TXT record without strings")
    strings = []
    pos = start
    while pos < end:
        stop = pos + 1 + data[pos]
        if stop > end:
            raise DnsError("TXT string runs past its record")
        raw = data[pos + 1 : stop]
        if raw.translate(None, _TEXT_PLAIN):
            strings.append('"' + "".join([_TEXT_ESCAPE[b] for b in raw]) + '"')
        else:
            strings.append(f'"{raw.decode("ascii")}"')
        pos = stop
    return " ".join(strings)


def _generic(data: bytes, start: int, end: int, seen: _Seen) -> str:
    """RFC 3597: ``\\# length hex``, the hex digits lowercase and unbroken."""
    if start == end:
        return "\\# 0"
    return f"\\# {end - start} {data[start:end].hex()}"


# By type, for every class; A, AAAA and SRV are defined for class IN only
# (RFC 1035 3.4, RFC 2782) and are rendered generically in other classes.
_RENDERERS: dict[int, _Renderer] = {
    2: _target,  # NS
    5: _target,  # CNAME
    12: _target,  # PTR
    39: _target,  # DNAME
    15: _mx,
    6: _soa,
    16: _txt,
    99: _txt,  # SPF
}
_IN_RENDERERS: dict[int, _Renderer] = {
    **_RENDERERS,
    1: _address(socket.AF_INET, 4, "A"),
    28: _address(socket.AF_INET6, 16, "AAAA"),
    33: _srv,
}


def parse_message(data: bytes) -> Message:
    size = len(data)
    if size < _HEADER.size:
        raise DnsError("shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if _HEADER.size + qdcount * _MIN_QUESTION + (ancount + nscount + arcount) * _MIN_RR > size:
        raise DnsError("section counts exceed the message")
    seen: _Seen = {}
    pos = _HEADER.size
    questions = []
    for _ in range(qdcount):
        name, pos = _name(data, pos, seen)
        if pos + _QUESTION.size > size:
            raise DnsError("truncated question")
        qtype, qclass = _QUESTION.unpack_from(data, pos)
        pos += _QUESTION.size
        questions.append(Question(name, qtype, qclass))
    answers = []
    for _ in range(ancount):
        name, pos, rtype, rclass, ttl, start = _record(data, pos, seen)
        renderers = _IN_RENDERERS if rclass == CLASS_IN else _RENDERERS
        text = renderers.get(rtype, _generic)(data, start, pos, seen)
        answers.append(Record(name, rtype, rclass, ttl, text))
    for _ in range(nscount):
        pos = _record(data, pos, seen)[1]
    rcode = flags & 0xF
    opt = False
    for _ in range(arcount):
        _, pos, rtype, _, ttl, _ = _record(data, pos, seen)
        if rtype == TYPE_OPT:
            if opt:
                raise DnsError("more than one OPT record")
            opt = True
            rcode |= (ttl >> 24) << 4  # the upper 8 of the 12 bits
    return Message(
        ident, bool(flags & _QR), (flags >> _OPCODE_SHIFT) & 0xF, rcode, bool(flags & _TC),
        tuple(questions), tuple(answers),
    )  # fmt: skip


def _record(data: bytes, pos: int, seen: _Seen) -> tuple[str, int, int, int, int, int]:
    """A resource record at `pos`: name, rdata end, type, class, ttl, rdata start."""
    name, pos = _name(data, pos, seen)
    start = pos + _RR.size
    if start > len(data):
        raise DnsError("truncated resource record")
    rtype, rclass, ttl, rdlength = _RR.unpack_from(data, pos)
    if start + rdlength > len(data):
        raise DnsError("rdata runs past the end")
    return name, start + rdlength, rtype, rclass, ttl, start


def split_tcp_stream(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete length-prefixed messages at the start of `buffer`, and the rest.

    A zero length prefix yields an empty message (which `parse_message` refuses).
    """
    messages = []
    pos = 0
    size = len(buffer)
    while pos + 2 <= size:
        end = pos + 2 + _U16.unpack_from(buffer, pos)[0]
        if end > size:
            break
        messages.append(buffer[pos + 2 : end])
        pos = end
    return messages, buffer[pos:]
