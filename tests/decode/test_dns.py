"""The DNS wire parser against dnspython, tcpdump and hostile input.

Expected values come from elsewhere than our parser:

- dnspython (the oracle): hypothesis builds random valid messages with it
  (unusual label bytes, compression as its ``to_wire`` does it, extended
  rcodes through EDNS, random ids, flags and opcodes); its own parse of the
  same bytes gives the id, flags, questions and answers we must report, names
  as ``Name.to_text(omit_final_dot=True)``, rdata as ``rdata.to_text()``;
- tcpdump: every port 53 message of the reference captures is compared with
  the checked-in printout (``NAME.out``) and with the installed tcpdump run
  with ``-vv`` (all sections, every question), as far as tcpdump prints it;
  a message we refuse must be one tcpdump marks as broken, and the other way
  round;
- the DNS documents, for the hostile messages built here by hand.

Our conventions differ from dnspython's text on purpose in three places, and
the comparison maps them: the root name is "" (dnspython: "."), names inside
rdata carry no final dot (we compare with dnspython's rdata text relativized
to the root, where the root itself is "@" and ours is "."), and the hex digits
of RFC 3597 rdata are one word (dnspython breaks them every 128 digits and
ends an empty one with a space).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import struct
import subprocess
import tracemalloc
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netoproc.capture.pcapfile import open_capture_file
from netoproc.decode.columnar import decode_block
from netoproc.decode.dns import (
    DnsError,
    Message,
    parse_message,
    rcode_name,
    split_tcp_stream,
    type_name,
)
from netoproc.model import IPPROTO_TCP

CAPTURES = Path(__file__).parents[1] / "data" / "captures" / "tcpdump"
IN = dns.rdataclass.IN
NAMED = {"NS", "CNAME", "PTR", "DNAME", "MX", "SRV", "SOA"}  # rdata with names in it
RENDERED = NAMED | {"A", "AAAA", "TXT", "SPF"}  # the types we render, the rest is RFC 3597
IN_ONLY = {"A", "AAAA", "SRV"}


# dnspython's view, in our conventions ------------------------------------------------------


def name_text(name: dns.name.Name) -> str:
    text: str = name.to_text(omit_final_dot=True)
    return "" if text == "." else text


def rdata_text(rd: dns.rdata.Rdata, rdclass: int) -> str:
    kind = dns.rdatatype.to_text(rd.rdtype)
    if kind in RENDERED and (kind not in IN_ONLY or rdclass == IN):
        text: str = rd.to_text(origin=dns.name.root, relativize=True)
        if kind in NAMED:  # the root relativized to itself is "@"; names have no spaces
            text = " ".join("." if token == "@" else token for token in text.split(" "))
        return text
    marker, length, *digits = rd.to_generic().to_text().split()
    return " ".join([marker, length, "".join(digits)]) if digits else f"{marker} {length}"


@dataclass(frozen=True)
class View:
    id: int
    response: bool
    opcode: int
    rcode: int
    truncated: bool
    questions: list[tuple[str, int, int]]
    answers: list[tuple[str, int, int, int, str]]


def ours(message: Message) -> View:
    return View(
        message.id, message.response, message.opcode, message.rcode, message.truncated,
        [(q.name, q.qtype, q.qclass) for q in message.questions],
        [(r.name, r.rtype, r.rclass, r.ttl, r.data) for r in message.answers],
    )  # fmt: skip


def dnspython(wire: bytes) -> View:
    m = dns.message.from_wire(wire)
    return View(
        m.id, bool(m.flags & dns.flags.QR), m.opcode(), m.rcode(), bool(m.flags & dns.flags.TC),
        [(name_text(q.name), q.rdtype, q.rdclass) for q in m.question],
        [
            (name_text(rrset.name), rrset.rdtype, rrset.rdclass, rrset.ttl,
             rdata_text(rd, rrset.rdclass))
            for rrset in m.answer
            for rd in rrset
        ],
    )  # fmt: skip


def dnspython_parses(wire: bytes) -> bool:
    try:
        dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return False
    return True


# 1. random valid messages built with dnspython ----------------------------------------------

ODD_BYTES = b'abzAZ09-_*.\\"()@$;/ \x00\x01\x1b\n\t\r\x7f\x80\xc0\xe2\xff'
short_labels = st.binary(min_size=1, max_size=8).map(
    lambda raw: bytes(ODD_BYTES[b % len(ODD_BYTES)] if b % 4 == 0 else 0x61 + b % 26 for b in raw)
)
labels = st.one_of(short_labels, short_labels, st.binary(min_size=1, max_size=63))


def wire_length(name_labels: tuple[bytes, ...] | list[bytes]) -> int:
    return sum(len(label) + 1 for label in name_labels)


@st.composite
def names_from(draw: st.DrawFn, bases: list[dns.name.Name]) -> dns.name.Name:
    """A name ending in one of `bases`, so that names share suffixes to compress."""
    base = draw(st.sampled_from(bases))
    prefix = draw(st.lists(labels, max_size=3))
    while prefix and wire_length(prefix) + wire_length(base.labels) > 255:
        prefix.pop()
    return dns.name.Name([*prefix, *base.labels])


@st.composite
def bases(draw: st.DrawFn) -> list[dns.name.Name]:
    found = [dns.name.root]
    for raw in draw(st.lists(st.lists(labels, min_size=1, max_size=4), min_size=1, max_size=3)):
        while wire_length(raw) > 200:
            raw.pop()
        found.append(dns.name.Name([*raw, b""]))
    return found


def unknown_to_dnspython(rdtype: int) -> bool:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType(rdtype)) == f"TYPE{rdtype}"


UNKNOWN_TYPES = st.sampled_from([57, 58, 69, 110, 200, 4000, 65280, 65534]).filter(
    unknown_to_dnspython
)
KNOWN_GENERIC = [  # types dnspython knows and we show as RFC 3597
    ("CAA", '0 issue "ca.example.net"'),
    ("HINFO", '"cpu" "os"'),
    ("SSHFP", "1 1 0123456789abcdef0123456789abcdef01234567"),
    ("HTTPS", '1 . alpn="h2,h3"'),
    ("DS", "60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118"),
]
CLASSES = [
    dns.rdataclass.RdataClass(c) for c in (IN, IN, dns.rdataclass.CH, dns.rdataclass.HS, 1234)
]


@st.composite
def rdata_texts(draw: st.DrawFn, kind: str, names: st.SearchStrategy[dns.name.Name]) -> str:
    """One rdata of `kind` in presentation form, names as dnspython writes them."""
    number = st.integers(0, 65535)
    if kind in ("A", "AAAA"):
        return str(draw(st.ip_addresses(v=4 if kind == "A" else 6)))
    if kind == "MX":
        return f"{draw(number)} {draw(names)}"
    if kind == "SRV":
        return f"{draw(number)} {draw(number)} {draw(number)} {draw(names)}"
    if kind == "SOA":
        numbers = draw(st.lists(st.integers(0, 2**32 - 1), min_size=5, max_size=5))
        return " ".join([str(draw(names)), str(draw(names)), *map(str, numbers)])
    return str(draw(names))  # CNAME, PTR, NS, DNAME


@st.composite
def rrsets(draw: st.DrawFn, names: st.SearchStrategy[dns.name.Name]) -> dns.rrset.RRset:
    owner = draw(names)
    ttl = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["A", "AAAA", "CNAME", "MX", "SRV", "TXT", "PTR", "NS", "SOA",
                                 "DNAME", "SPF", "unknown", "known"]))  # fmt: skip
    many = 1 if kind in ("CNAME", "DNAME", "SOA") else draw(st.integers(1, 3))
    rdclass = dns.rdataclass.RdataClass.IN
    if kind in ("TXT", "SPF"):
        strings = st.lists(st.binary(max_size=255) | short_labels, min_size=1, max_size=3)
        wires = [b"".join(bytes([len(s)]) + s for s in draw(strings)) for _ in range(many)]
        rds = [dns.rdata.from_wire(IN, kind, wire, 0, len(wire)) for wire in wires]
    elif kind == "unknown":
        rdtype = dns.rdatatype.RdataType(draw(UNKNOWN_TYPES))
        rdclass = draw(st.sampled_from(CLASSES))
        rds = [dns.rdata.GenericRdata(rdclass, rdtype, draw(st.binary(max_size=40)))
               for _ in range(many)]  # fmt: skip
    elif kind == "known":
        known, text = draw(st.sampled_from(KNOWN_GENERIC))
        rds = [dns.rdata.from_text(IN, known, text)]
    else:
        rds = [dns.rdata.from_text(IN, kind, draw(rdata_texts(kind, names))) for _ in range(many)]
    rrset = dns.rrset.RRset(owner, rdclass, rds[0].rdtype)
    for rd in rds:
        rrset.add(rd, ttl)
    return rrset


@st.composite
def messages(draw: st.DrawFn) -> dns.message.Message:
    pool = draw(bases())
    names = names_from(pool)
    message = dns.message.Message(id=draw(st.integers(0, 65535)))
    opcode = draw(st.sampled_from([0, 0, 0, 1, 2, 4, 6, 15]))  # UPDATE (5): other sections
    message.flags = draw(st.integers(0, 0xFFFF)) & ~0x780F | opcode << 11
    rcode = draw(st.one_of(st.integers(0, 15), st.integers(0, 4095)))
    if rcode > 15 or draw(st.booleans()):
        message.use_edns(0, payload=draw(st.integers(512, 65535)))
    message.set_rcode(dns.rcode.Rcode(rcode))
    for _ in range(draw(st.integers(0, 2))):
        qtype = dns.rdatatype.RdataType(draw(st.sampled_from([1, 28, 5, 255, 65, 12, 33, 4000])))
        qclass = draw(st.sampled_from([*CLASSES, dns.rdataclass.RdataClass.ANY]))
        message.find_rrset(message.question, draw(names), qclass, qtype, create=True,
                           force_unique=True)  # fmt: skip
    taken = set()  # dnspython merges the records of one (name, class, type) when it reads them
    for section in (message.answer, message.authority, message.additional):
        for rrset in draw(st.lists(rrsets(names), max_size=4 if section is message.answer else 2)):
            key = (rrset.name.canonicalize(), rrset.rdclass, rrset.rdtype, id(section))
            if key not in taken:
                taken.add(key)
                section.append(rrset)
    return message


@settings(derandomize=True, max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(messages())
def test_agrees_with_dnspython_on_random_messages(message: dns.message.Message) -> None:
    wire = message.to_wire(max_size=65535, want_shuffle=False)  # no random shuffle
    assert ours(parse_message(wire)) == dnspython(wire)


def test_extended_rcodes_come_from_the_opt_record() -> None:
    for rcode in (dns.rcode.BADVERS, dns.rcode.BADCOOKIE, dns.rcode.Rcode(4095)):
        message = dns.message.make_response(dns.message.make_query("example.com", "A"))
        message.use_edns(0)
        message.set_rcode(rcode)
        wire = message.to_wire()
        assert wire[3] & 0xF == rcode & 0xF  # the header holds only the low bits
        assert parse_message(wire).rcode == rcode == dns.message.from_wire(wire).rcode()


def test_type_and_rcode_names_are_dnspythons() -> None:
    for value in range(65536):
        assert type_name(value) == dns.rdatatype.to_text(dns.rdatatype.RdataType(value))
    for value in range(4096):
        known = dns.rcode.to_text(dns.rcode.Rcode(value))
        assert rcode_name(value) == (f"RCODE{value}" if known == str(value) else known)


# 2. the reference captures against tcpdump and dnspython ------------------------------------


@dataclass(frozen=True)
class Seen:
    packet: int  # index of the record in the file, as tcpdump numbers its printout
    wire: bytes


@cache
def port53_messages(path: Path) -> tuple[Seen, ...]:
    """Every DNS message of a capture, by our decoder: UDP payloads, TCP streams split."""
    found: list[Seen] = []
    streams: dict[tuple[int, ...], bytes] = {}
    first = 0
    capture = open_capture_file(str(path))
    try:
        blocks = list(capture.blocks())
    finally:
        capture.close()
    for block in blocks:
        batch = decode_block(block)
        assert not batch.dns or len(batch) == len(block), "rows must line up with records"
        for row, payload in batch.dns:
            if int(batch.proto[row]) != IPPROTO_TCP:
                found.append(Seen(first + row, payload))
                continue
            key = tuple(int(batch.column(c)[row]) for c in
                        ("src_hi", "src_lo", "sport", "dst_hi", "dst_lo", "dport"))  # fmt: skip
            complete, streams[key] = split_tcp_stream(streams.get(key, b"") + payload)
            found.extend(Seen(first + row, wire) for wire in complete)
        first += len(block)
    return tuple(found)


FILES = sorted(p for p in CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))
DNS_FILES = [p for p in FILES if port53_messages(p)]
MUST_HAVE = {p.stem for p in FILES if p.stem.startswith(("dns", "edns"))} - {
    "dns_udp_8053", "dns_tcp_8053",  # DNS on port 8053: not DNS to our decoder, nor to tcpdump
}  # fmt: skip
MALFORMED = {"dns-zlip-1", "dns-zlip-2", "dns-zlip-3", "dns-badlabel", "dns_fwdptr"}


def test_every_dns_capture_is_found() -> None:
    assert {p.stem for p in DNS_FILES} >= MUST_HAVE | {"LINKTYPE_PKTAP", "LINKTYPE_IPV6"}
    assert "dns_tcp" in MUST_HAVE and "dnssec" in MUST_HAVE and "dns-zlip-3" in MUST_HAVE


# tcpdump's printout of a DNS message (print-domain.c), as far as we compare it.
OPCODES = ["", "inv_q", "stat", "op3", "notify", "update", "op6", "op7", "op8", "updateA",
           "updateD", "updateDA", "updateM", "updateMA", "zoneInit", "zoneRef"]  # fmt: skip
RCODES = ["", "FormErr", "ServFail", "NXDomain", "NotImp", "Refused", "YXDomain", "YXRRSet",
          "NXRRSet", "NotAuth", "NotZone", "Resp11", "Resp12", "Resp13", "Resp14", "NoChange",
          "BadVers", "Resp17", "Resp18", "Resp19", "Resp20", "Resp21", "Resp22",
          "BadCookie"]  # fmt: skip
BROKEN = re.compile(r"\[\|domain\]|\(invalid\)|<BAD PTR>|<BAD LABEL TYPE>|<LOOP>|NAME TOO LONG")
_PORTS = re.compile(r"[\w:.]+\.(\d+) > [\w:.]+\.(\d+): ")
_CHECKSUM = re.compile(r"\[(?:udp sum ok|bad udp cksum [^\]]*)\] ")
_TCP = re.compile(r"Flags \[[^\]]*\], .*?length (\d+) ?")
_HEAD = re.compile(
    rf"(?P<id>\d+)(?: (?P<op>{'|'.join(OPCODES[1:])}))?"
    rf"(?: ?(?P<rcode>{'|'.join(RCODES[1:])}|Resp\d+))?"
    r"(?P<flags>[-*|$%+]*)(?: \[\d+[a-z]+\]| \[b2&3=0x[0-9a-f]+\])*"
)
_QUESTION = re.compile(
    r" (?:q: )?(?P<type>\S+)(?: (?:CHAOS|HS|ANY|\(Class \d+\)))?\? (?P<name>\S+)"
)
_COUNTS = re.compile(r" (\d+)/(\d+)/(\d+)")


@dataclass
class Printed:
    text: str
    id: int
    opcode: int
    rcode: int | None  # responses only
    flags: str
    questions: list[tuple[str, str]]  # (type, name) as printed
    answers: list[list[str]] | None  # tokens of each answer printed; None for queries
    ancount: int | None


def printed_dns(text: str) -> Printed | str | None:
    """tcpdump's DNS printout in a packet's text; a string when tcpdump marks it broken."""
    ports = _PORTS.search(text)
    if not ports or "53" not in ports.groups():
        return None
    body = _CHECKSUM.sub("", text[ports.end() :], count=1).strip()
    tcp = _TCP.match(body)
    if tcp:
        if tcp[1] == "0":
            return None
        body = body[tcp.end() :]
    if BROKEN.search(body):
        return body
    head = _HEAD.match(body)
    assert head, f"not a DNS printout: {body!r}"
    rest = body[head.end() :]
    end = re.search(r" \(\d+\)$", rest)
    assert end, rest
    rest = rest[: end.start()]
    questions = []
    while question := _QUESTION.match(rest):
        questions.append((question["type"], question["name"]))
        rest = rest[question.end() :].removeprefix(",")
    counts = _COUNTS.match(rest)
    answers = None
    if counts:
        section = re.split(r" (?:ns|ar): ", rest[counts.end() :])[0]
        answers = [item.split() for item in section.split(",")] if section else []
    rcode = head["rcode"] or ""
    return Printed(
        body, int(head["id"]), OPCODES.index(head["op"] or ""),
        (int(rcode[4:]) if rcode.startswith("Resp") else RCODES.index(rcode)) if counts else None,
        head["flags"], questions, answers, int(counts[1]) if counts else None,
    )  # fmt: skip


def tcpdump_name(name: str) -> str:
    """Our name as tcpdump prints it: raw label bytes, M- and ^ for the others, final dot."""
    if name in ("", "."):
        return "."
    out = []
    for label in dns.name.from_text(name, origin=dns.name.root).labels[:-1]:
        for byte in label:
            char = ""
            if byte >= 0x80:
                char, byte = "M-", byte & 0x7F
            if byte < 0x20 or byte == 0x7F:
                char, byte = char + "^", byte ^ 0x40
            out.append(char + chr(byte))
        out.append(".")
    return "".join(out)


def tcpdump_type(printed: str) -> str:
    return re.sub(r"^Type(\d+)$", r"TYPE\1", printed)


def compare_with_tcpdump(message: Message, shown: Printed) -> None:
    assert shown.id == message.id
    assert shown.opcode == message.opcode
    assert (shown.answers is not None) == message.response, shown.text
    if message.response:
        assert shown.rcode == message.rcode
        assert ("|" in shown.flags) == message.truncated
        assert shown.ancount == len(message.answers)
    if shown.questions or not message.response:  # responses show questions with -vv only
        expected = [(type_name(q.qtype), tcpdump_name(q.name)) for q in message.questions]
        assert [(tcpdump_type(t), n) for t, n in shown.questions] == expected
    for tokens, record in zip(shown.answers or [], message.answers, strict=False):
        if tokens[0].endswith("."):  # -v and more print the owner name
            assert tokens.pop(0) == tcpdump_name(record.name)
        if tokens[0] in ("CHAOS", "HS", "ANY"):
            tokens.pop(0)
        elif tokens[0] == "(Class":
            del tokens[:2]
        assert tcpdump_type(tokens[0]) == type_name(record.rtype)
        kind, data = tokens[0], tokens[1:]
        if kind in ("A", "AAAA"):
            assert data == [record.data]
        elif kind in ("CNAME", "NS", "PTR", "DNAME"):
            assert data == [tcpdump_name(record.data)]
        elif kind == "SOA" and data:
            mname, rname, *numbers = record.data.split(" ")
            assert data == [tcpdump_name(mname), tcpdump_name(rname), *numbers]


def checked_in_printout(path: Path) -> list[str]:
    """The printout per packet of ``NAME.out`` (numbered, maybe caplen/len first)."""
    packets: list[str] = []
    head = re.compile(r" {0,4}\d+  (?:caplen \d+ len \d+ )?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ ")
    for line in path.with_suffix(".out").read_text(errors="replace").splitlines():
        if match := head.match(line):
            packets.append(line[match.end() :])
        elif line.strip():
            packets[-1] += "\n" + line
    return packets


def live_printout(path: Path) -> list[str]:
    """The printout per packet of the installed tcpdump with every section (-vv)."""
    tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
    assert Path(tcpdump).exists(), "tcpdump is needed (scripts/test installs it)"
    result = subprocess.run(
        [tcpdump, "-nn", "-vv", "-tt", "-r", str(path)],
        capture_output=True, text=True, errors="replace", timeout=60, check=False,
    )  # fmt: skip
    assert "reading from file" in result.stderr, result.stderr
    packets: list[str] = []
    for line in result.stdout.splitlines():
        if re.match(r"\d+\.\d+ ", line):
            packets.append(line)
        else:
            packets[-1] += "\n" + line
    return packets


def printouts(path: Path) -> dict[str, list[str]]:
    found = {"tcpdump -vv": live_printout(path)}
    if path.with_suffix(".out").exists():
        found[".out"] = checked_in_printout(path)
    return found


@pytest.mark.parametrize("path", DNS_FILES, ids=lambda p: p.stem)
def test_captures_agree_with_tcpdump(path: Path) -> None:
    seen = port53_messages(path)
    first_of_packet = {s.packet: s for s in reversed(seen)}
    for source, packets in printouts(path).items():
        malformed = 0
        for item in seen:
            shown = printed_dns(packets[item.packet])
            assert shown is not None, f"{source}: tcpdump shows no DNS in packet {item.packet}"
            try:
                message = parse_message(item.wire)
            except DnsError:
                malformed += 1
                assert isinstance(shown, str), f"{source} reads what we refuse: {shown.text}"
                continue
            assert not isinstance(shown, str), f"{source} refuses what we read: {shown}"
            if first_of_packet[item.packet] is item:  # tcpdump prints a segment's first only
                compare_with_tcpdump(message, shown)
        if path.stem in MALFORMED:
            assert malformed == len(seen) == 1


@pytest.mark.parametrize("path", DNS_FILES, ids=lambda p: p.stem)
def test_captures_agree_with_dnspython(path: Path) -> None:
    for item in port53_messages(path):
        if dnspython_parses(item.wire):
            assert ours(parse_message(item.wire)) == dnspython(item.wire)
        else:
            with pytest.raises(DnsError):
                parse_message(item.wire)


def test_malformed_captures_are_what_tcpdump_says() -> None:
    """zlip: the UDP length says 8 (tcpdump: "[length 0 < 12] (invalid)"), the IP
    length carries a question whose name points at itself. badlabel and fwdptr:
    64259 questions in 63165 bytes; with one question, the first name is the
    one tcpdump calls "<DOMAIN NAME TOO LONG>" or "<BAD PTR>"."""
    for n in (1, 2, 3):
        path = CAPTURES / f"dns-zlip-{n}.pcap"
        (item,) = port53_messages(path)
        assert "[length 0 < 12] (invalid)" in checked_in_printout(path)[0]
        refused(item.wire, "point")
    for stem, tcpdump_says, reason in [("dns-badlabel", "<DOMAIN NAME TOO LONG>", "255"),
                                       ("dns_fwdptr", "<BAD PTR>", "point")]:  # fmt: skip
        (item,) = port53_messages(CAPTURES / f"{stem}.pcap")
        assert tcpdump_says in checked_in_printout(CAPTURES / f"{stem}.pcap")[0]
        refused(item.wire, "counts")
        refused(item.wire[:4] + struct.pack("!4H", 1, 0, 0, 0) + item.wire[12:], reason)


# 3. DNS over TCP framing -------------------------------------------------------------------


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


QUERY = dns.message.make_query("www.example.com", "AAAA").to_wire()
RESPONSE = port53_messages(CAPTURES / "dns_udp.pcap")[1].wire  # www.tcpdump.org: 2/2/5


def test_the_real_response_is_the_one_tcpdump_printed() -> None:
    assert "2/2/5 www.tcpdump.org. A 192.139.46.66" in live_printout(CAPTURES / "dns_udp.pcap")[1]
    assert len(RESPONSE) == 224


def test_several_messages_in_one_segment() -> None:
    assert split_tcp_stream(framed(QUERY, RESPONSE, QUERY)) == ([QUERY, RESPONSE, QUERY], b"")


def test_a_message_split_across_segments() -> None:
    stream = framed(QUERY, RESPONSE)
    for cut in range(len(stream) + 1):
        first, rest = split_tcp_stream(stream[:cut])
        second, left = split_tcp_stream(rest + stream[cut:])
        assert first + second == [QUERY, RESPONSE] and left == b""
        assert len(first) == (cut >= 2 + len(QUERY)) + (cut == len(stream))


def test_a_length_prefix_split_across_segments() -> None:
    stream = framed(QUERY)
    assert split_tcp_stream(stream[:1]) == ([], stream[:1])
    _, rest = split_tcp_stream(stream[:1])
    assert split_tcp_stream(rest + stream[1:]) == ([QUERY], b"")


def test_zero_length_messages() -> None:
    assert split_tcp_stream(b"\0\0" + framed(QUERY) + b"\0\0\0") == ([b"", QUERY, b""], b"\0")
    with pytest.raises(DnsError):
        parse_message(b"")


# 4. hostile messages -----------------------------------------------------------------------


def header(qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x8180) -> bytes:
    return struct.pack("!6H", 0x1234, flags, qd, an, ns, ar)


def record(name: bytes, rtype: int, rdata: bytes, rclass: int = 1, ttl: int = 60) -> bytes:
    return name + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def refused(wire: bytes, reason: str) -> None:
    """Both we and dnspython refuse it; ours for the given reason."""
    with pytest.raises(DnsError, match=reason):
        parse_message(wire)
    assert not dnspython_parses(wire)


def test_self_pointer() -> None:
    refused(header(qd=1) + b"\xc0\x0c" + b"\0\1\0\1", "point")


def test_two_pointer_loop() -> None:
    # 12: a pointer to 14, 14: a pointer to 12; the answer's name at 16 enters the loop
    loop = b"\xc0\x0e\xc0\x0c"
    refused(header(an=1) + loop + record(b"\xc0\x0c", 1, bytes(4)), "point")


def test_pointer_rules_hold_through_names_already_decoded() -> None:
    # rdata at 23: 02 00 78, a label "\\000x"; at 26 a name "b" + a pointer to 24 (a root
    # byte inside that label); then a name pointing at 23: "\\000x" runs into "b", whose
    # pointer (24) is not before 23, the last target
    wire = header(an=3) + record(b"\0", 65280, b"\x02\x00x")
    wire += record(b"\x01b\xc0\x18", 1, bytes(4)) + record(b"\xc0\x17", 1, bytes(4))
    refused(wire, "point")
    two = wire[:6] + b"\0\2" + wire[8:-16]  # without the third record: fine
    assert [r.name for r in parse_message(two).answers] == ["", "b"]
    assert ours(parse_message(two)) == dnspython(two)


def test_forward_pointer() -> None:
    refused(header(qd=1) + b"\xc0\x12\0\1\0\1" + b"\x01a\0", "point")


def test_pointer_chain_backwards_is_fine() -> None:
    # "a" at 12, a pointer to it at 19, a pointer to that pointer at 25: a name three ways
    wire = header(qd=3) + b"\x01a\0\0\1\0\1" + b"\xc0\x0c\0\1\0\1" + b"\xc0\x13\0\1\0\1"
    assert [q.name for q in parse_message(wire).questions] == ["a", "a", "a"]
    assert dnspython(wire).questions == [("a", 1, 1)] * 3


def test_huge_counts_fail_fast_without_allocating() -> None:
    wire = header(qd=65535, an=65535, ns=65535, ar=65535) + b"\x01a\0\0\1\0\1"
    tracemalloc.start()
    try:
        parse_message(wire)
    except DnsError as error:
        reason = str(error)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert "counts" in reason
    assert peak < 2048
    refused(wire, "counts")


@pytest.mark.parametrize("kind", [0x40, 0x80])
def test_reserved_label_types(kind: int) -> None:
    refused(header(qd=1) + bytes([kind | 1]) + b"a\0\0\1\0\1", "label type")


def long_name(total: int) -> bytes:
    """A name of `total` wire bytes, root label included."""
    out = b""
    left = total - 1
    while left:
        size = min(63, left - 1)
        out += bytes([size]) + b"x" * size
        left -= size + 1
    return out + b"\0"


def test_names_up_to_255_bytes() -> None:
    wire = header(qd=1) + long_name(255) + b"\0\1\0\1"
    assert parse_message(wire).questions[0].name == dnspython(wire).questions[0][0]
    refused(header(qd=1) + long_name(256) + b"\0\1\0\1", "255")


def test_names_too_long_through_a_pointer() -> None:
    # 200 bytes at 12, then "a" * 60 + a pointer to them: 61 + 200 = 261 bytes
    name = long_name(200)
    second = b"\x3c" + b"a" * 60 + b"\xc0\x0c"
    refused(header(qd=2) + name + b"\0\1\0\1" + second + b"\0\1\0\1", "255")


def test_control_and_non_ascii_bytes_are_escaped() -> None:
    hostile = [b"a\x1b[31mred", b"tab\there\nnl", b"\xe2\x80\xaebidi", b"dot.and\\back\x00slash"]
    query = dns.message.make_query(dns.name.Name([*hostile, b""]), "TXT")
    response = dns.message.make_response(query)
    target = dns.name.Name([b"\x07bell", b"\x7f\xff", b""])
    response.answer.append(dns.rrset.from_text(query.question[0].name, 5, "IN", "CNAME",
                                               target.to_text()))  # fmt: skip
    response.answer.append(dns.rrset.from_text(target, 5, "IN", "TXT", '"\\027[2J\\010" "x"'))
    wire = response.to_wire()
    message = parse_message(wire)
    assert ours(message) == dnspython(wire)
    texts = [message.questions[0].name] + [t for r in message.answers for t in (r.name, r.data)]
    for text in texts:
        assert text.isascii() and text.isprintable(), text
    assert message.questions[0].name.startswith("a\\027[31mred.tab\\009here\\010nl.")
    assert message.answers[0].data == "\\007bell.\\127\\255"


def test_every_truncation_of_a_real_response() -> None:
    assert ours(parse_message(RESPONSE)) == dnspython(RESPONSE)
    for cut in range(len(RESPONSE)):
        with pytest.raises(DnsError):
            parse_message(RESPONSE[:cut])
        assert not dnspython_parses(RESPONSE[:cut])


@pytest.mark.parametrize(
    ("rtype", "rdata"),
    [(1, bytes(3)), (1, bytes(5)), (28, bytes(4)), (15, b"\0\1"), (15, b"\0\1\x01a\0\0"),
     (33, b"\0\1\0\1\0\1"), (5, b"\x01a\0\0"), (5, b"\x05a\0"), (16, b""), (16, b"\x05abc"),
     (6, b"\0\0" + bytes(19))],
)  # fmt: skip
def test_malformed_rdata_of_known_types(rtype: int, rdata: bytes) -> None:
    refused(header(qd=0, an=1) + record(b"\0", rtype, rdata), "record|TXT|past|name")


def test_class_specific_types_in_other_classes_are_generic() -> None:
    wire = header(an=2) + record(b"\0", 1, b"\x01a\0\x12\x34", rclass=3) + record(b"\0", 1, b"x", 4)
    assert ours(parse_message(wire)) == dnspython(wire)
    assert [r.data for r in parse_message(wire).answers] == ["\\# 5 0161001234", "\\# 1 78"]


def test_two_opt_records() -> None:
    opt = record(b"\0", 41, b"", rclass=4096, ttl=1 << 24)
    refused(header(ar=2) + opt + opt, "OPT")


class CountingBytes(bytes):
    """Bytes that count how often the parser reads a byte or a slice of them."""

    reads = 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        CountingBytes.reads += 1
        return super().__getitem__(key)


def reads_for(wire: bytes) -> int:
    CountingBytes.reads = 0
    with contextlib.suppress(DnsError):
        parse_message(CountingBytes(wire))
    return CountingBytes.reads


DEEP = b"".join(bytes([1, 0x61 + i % 26]) for i in range(120)) + b"\0"  # 120 labels, 241 bytes


def test_work_is_linear_with_pointer_chains() -> None:
    """4000 names at the top of a 400-pointer chain ending in a 120-label name:
    ~500 steps each for a parser that does not remember the names it decoded."""
    first = 12 + len(DEEP) + 4 + 2 + 10  # where the chain starts: the rdata of answer 0
    chain = b"\xc0\x0c" + b"".join(struct.pack("!H", 0xC000 | first + 2 * i) for i in range(399))
    tops = [first + 2 * (399 - i % 400) for i in range(4000)]
    answers = record(b"\xc0\x0c", 65280, chain) + b"".join(
        record(struct.pack("!H", 0xC000 | top), 1, bytes(4)) for top in tops
    )
    wire = header(qd=1, an=4001) + DEEP + b"\0\1\0\1" + answers
    message = parse_message(wire)
    assert len(message.answers) == 4001
    assert {r.name for r in message.answers} == {message.questions[0].name}
    assert message.questions[0].name == ".".join(chr(0x61 + i % 26) for i in range(120))
    assert reads_for(wire) < 4 * len(wire)


def test_work_is_linear_with_pointers_into_a_long_name() -> None:
    """4000 names pointing at every label of a 120-label name, first to last."""
    answers = b"".join(record(struct.pack("!H", 0xC000 | 12 + 2 * (i % 120)), 1, bytes(4))
                       for i in range(4000))  # fmt: skip
    wire = header(qd=1, an=4000) + DEEP + b"\0\1\0\1" + answers
    labels = [chr(0x61 + i % 26) for i in range(120)]
    names = [r.name for r in parse_message(wire).answers]
    assert names == [".".join(labels[i % 120 :]) for i in range(4000)]
    assert reads_for(wire) < 4 * len(wire)


# fuzzing: only DnsError, printable names, linear work ----------------------------------------


def real_messages() -> list[bytes]:
    found = [s.wire for p in DNS_FILES for s in port53_messages(p) if dnspython_parses(s.wire)]
    return [*sorted(set(found), key=len)[:40], QUERY, RESPONSE]


REAL = real_messages()


SPECIAL_BYTES = [0, 1, 0x3F, 0x40, 0x80, 0xC0, 0xC1, 0xFF]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    wire = bytearray(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "set", "insert", "delete", "cut"]))
        at = draw(st.integers(0, len(wire)))
        if kind == "set" and at < len(wire):
            wire[at] = draw(st.sampled_from(SPECIAL_BYTES) | st.integers(0, 255))
        elif kind == "insert":
            wire[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del wire[at : at + draw(st.integers(1, 4))]
        else:
            del wire[at:]
    return bytes(wire)


def check_hostile(wire: bytes) -> None:
    try:
        message = parse_message(wire)
    except DnsError:
        assert not dnspython_parses(wire), "we refuse what dnspython reads"
        return
    texts = [q.name for q in message.questions]
    texts += [t for r in message.answers for t in (r.name, r.data)]
    for text in texts:
        assert text.isascii() and text.isprintable(), text
    assert reads_for(wire) <= 2 * len(wire) + 16


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(mutated())
def test_mutations_of_real_messages(wire: bytes) -> None:
    check_hostile(wire)


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(st.binary(max_size=80) | st.binary(max_size=12).map(lambda b: header(qd=1, an=1) + b))
def test_random_bytes(wire: bytes) -> None:
    check_hostile(wire)


def test_address_rendering_is_inet_ntop() -> None:
    for text in ("::", "::1", "::ffff:1.2.3.4", "2001:db8::1:0:0:1", "fe80::"):
        rdata = ipaddress.IPv6Address(text).packed
        assert parse_message(header(an=1) + record(b"\0", 28, rdata)).answers[0].data == text
