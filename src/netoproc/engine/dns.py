"""DNS transactions: queries matched to responses, latency, resolver health,
and the names behind addresses.

A query is a DNS message a local socket sends; its response arrives on the
same flow. They are matched by flow (client and server endpoints),
transaction id and question; latency is the difference of their packet
timestamps. A query unanswered after `TIMEOUT` seconds becomes "timeout".
Messages over TCP are reassembled per flow and direction (length-prefixed,
several per segment, split across segments).

A local resolver (a stub such as systemd-resolved on 127.0.0.53, or dnsmasq)
asks upstream on behalf of the application that asked it: an upstream query
for the same question, sent shortly after a local server received it, is
shown as the application's.

Like the rest of the engine: no I/O, no clock, bounded memory.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from netoproc.decode.dns import (
    DnsError,
    Message,
    parse_message,
    rcode_name,
    split_tcp_stream,
    type_name,
)
from netoproc.model import DNS_PORT, IPPROTO_TCP, FlowKey, ProcessRef, format_addr, parse_addr
from netoproc.snapshot import DnsQueryRow, DnsView, ResolverRow

TIMEOUT = 5.0
DELEGATION_WINDOW = 2.0
LOG_SIZE = 1000
MAX_PENDING = 8192
MAX_NAMES = 65536
MAX_STREAMS = 4096  # TCP DNS streams being reassembled (one message of <= 64 KiB each)
MAX_RESOLVERS = 1024  # (interface, server) pairs with statistics
NOERROR, NXDOMAIN = 0, 3
TYPE_A, TYPE_AAAA, TYPE_CNAME = 1, 28, 5

OwnerOf = Callable[[FlowKey], ProcessRef | None]
MatchKey = tuple[FlowKey, int, str, int]  # flow, transaction id, question name (lower), type


@dataclass(slots=True)
class _Transaction:
    ts: float
    key: FlowKey  # the client's flow: local = the asking socket
    name: str
    qtype: int
    transport: str
    on_behalf: FlowKey | None = None  # asked by a local resolver for this client flow
    owner: ProcessRef | None = None
    response: str = ""
    rcode: str = ""
    latency_ms: float | None = None


@dataclass(slots=True)
class _ResolverStats:
    queries: int = 0
    failures: int = 0
    answered: int = 0
    latency_total: float = 0.0


def describe(message: Message, qtype: int) -> str:
    """The Response column: answers of the asked type, the CNAME the chain ends at, or the rcode."""
    if message.rcode != NOERROR:
        return rcode_name(message.rcode)
    if message.truncated and not message.answers:
        return "truncated"  # the client will ask again over TCP
    wanted = [r.data for r in message.answers if r.rtype == qtype]
    if wanted:
        return ", ".join(wanted)
    cnames = [r.data for r in message.answers if r.rtype == TYPE_CNAME]
    if cnames:
        return f"CNAME {cnames[-1]}"
    return "NODATA"


class DnsTracker:
    def __init__(self, *, timeout: float = TIMEOUT, log_size: int = LOG_SIZE) -> None:
        self.timeout = timeout
        self._pending: OrderedDict[MatchKey, _Transaction] = OrderedDict()
        self._log: deque[_Transaction] = deque(maxlen=log_size)
        self._served: OrderedDict[tuple[str, int], tuple[float, FlowKey]] = OrderedDict()
        self._stats: dict[tuple[str, int], _ResolverStats] = {}
        self._names: OrderedDict[int, str] = OrderedDict()
        # next seq, buffered; oldest first
        self._streams: OrderedDict[tuple[FlowKey, bool], tuple[int, bytes]] = OrderedDict()
        self.malformed = 0
        # bounds reached: pending questions given up, streams dropped, servers not counted
        self.pending_overflow = self.streams_overflow = self.resolvers_overflow = 0

    # packets -----------------------------------------------------------------

    def observe(
        self, ts: float, key: FlowKey, outbound: bool, payload: bytes, seq: int = 0
    ) -> None:
        """One port-53 payload seen on `key`; `outbound` when the local socket sent it."""
        if key.proto == IPPROTO_TCP:
            for message in self._reassemble(key, outbound, payload, seq):
                self._message(ts, key, outbound, message, "TCP")
        else:
            self._message(ts, key, outbound, payload, "UDP")

    def _reassemble(self, key: FlowKey, outbound: bool, payload: bytes, seq: int) -> list[bytes]:
        stream = (key, outbound)
        expected, buffered = self._streams.get(stream, (seq, b""))
        if seq != expected:
            if (seq - expected) & 0xFFFFFFFF >= 0x80000000:  # retransmitted data
                overlap = (expected - seq) & 0xFFFFFFFF
                if overlap >= len(payload):
                    return []
                payload, seq = payload[overlap:], expected
            else:  # a gap: what was buffered can never complete
                buffered = b""
        # the length prefix bounds what waits: at most one 64 KiB message per stream
        messages, rest = split_tcp_stream(buffered + payload)
        self._streams[stream] = ((seq + len(payload)) & 0xFFFFFFFF, rest)
        self._streams.move_to_end(stream)
        if len(self._streams) > MAX_STREAMS:
            self._streams.popitem(last=False)
            self.streams_overflow += 1
        return messages

    def _message(self, ts: float, key: FlowKey, outbound: bool, raw: bytes, transport: str) -> None:
        try:
            message = parse_message(raw)
        except DnsError:
            self.malformed += 1
            return
        if not message.questions:
            return
        question = message.questions[0]
        name_key = question.name.lower()
        if not message.response:
            if outbound:
                self._query(ts, key, message, question.name, question.qtype, transport)
            elif key.lport == DNS_PORT:  # a local resolver was asked: remember by whom
                client = FlowKey(key.iface, key.proto, key.raddr, key.rport, key.laddr, key.lport)
                self._served[(name_key, question.qtype)] = (ts, client)
                self._served.move_to_end((name_key, question.qtype))
                if len(self._served) > MAX_PENDING:
                    self._served.popitem(last=False)
            return
        if outbound:
            return  # a local server answering: the client side logs the transaction
        pending = self._pending.pop((key, message.id, name_key, question.qtype), None)
        if pending is not None:
            self._complete(pending, ts, message)

    def _query(
        self, ts: float, key: FlowKey, message: Message, name: str, qtype: int, transport: str
    ) -> None:
        match = (key, message.id, name.lower(), qtype)
        if match in self._pending:
            return  # a retransmission of the same query: latency counts from the first
        transaction = _Transaction(ts, key, name, qtype, transport)
        served = self._served.get((name.lower(), qtype))
        if served is not None and 0 <= ts - served[0] <= DELEGATION_WINDOW and served[1] != key:
            transaction.on_behalf = served[1]
        self._pending[match] = transaction
        if len(self._pending) > MAX_PENDING:
            _, oldest = self._pending.popitem(last=False)
            self.pending_overflow += 1
            self._finish(oldest, "timeout", "timeout", None)
        self._log.append(transaction)

    def _complete(self, transaction: _Transaction, ts: float, message: Message) -> None:
        latency = max(0.0, (ts - transaction.ts) * 1000.0)
        self._finish(transaction, describe(message, transaction.qtype),
                     rcode_name(message.rcode), latency)  # fmt: skip
        if message.rcode == NOERROR:
            for record in message.answers:
                if record.rtype in (TYPE_A, TYPE_AAAA):
                    self._remember(record.data, transaction.name)

    def _finish(
        self, transaction: _Transaction, response: str, rcode: str, latency: float | None
    ) -> None:
        transaction.response, transaction.rcode, transaction.latency_ms = response, rcode, latency
        key = transaction.key
        stats = self._stats.get((key.iface, key.raddr))
        if stats is None:
            if len(self._stats) >= MAX_RESOLVERS:
                self.resolvers_overflow += 1
                return
            stats = self._stats[(key.iface, key.raddr)] = _ResolverStats()
        stats.queries += 1
        if rcode != "NOERROR":
            stats.failures += 1
        if latency is not None:
            stats.answered += 1
            stats.latency_total += latency

    def _remember(self, address: str, name: str) -> None:
        try:
            addr = parse_addr(address)
        except ValueError:
            return
        self._names[addr] = name
        self._names.move_to_end(addr)
        if len(self._names) > MAX_NAMES:
            self._names.popitem(last=False)

    def name_for(self, addr: int) -> str | None:
        return self._names.get(addr)

    # ticks -------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Queries without an answer for `timeout` seconds become timeouts."""
        while self._pending:
            match, oldest = next(iter(self._pending.items()))
            if oldest.ts > now - self.timeout:
                break
            del self._pending[match]
            self._finish(oldest, "timeout", "timeout", None)

    def limits(self) -> Iterator[tuple[str, int]]:
        """Bounds reached, and how often (see CaptureHealth.limits)."""
        if self.pending_overflow:
            yield (
                f"DNS questions pending past {MAX_PENDING:,}: timed out early",
                self.pending_overflow,
            )
        if self.streams_overflow:
            yield f"DNS TCP streams past {MAX_STREAMS:,}: dropped", self.streams_overflow
        if self.resolvers_overflow:
            yield f"DNS servers past {MAX_RESOLVERS:,}: not counted", self.resolvers_overflow

    def forget_flow(self, key: FlowKey) -> None:
        self._streams.pop((key, True), None)
        self._streams.pop((key, False), None)

    def view(self, owner_of: OwnerOf, configured: dict[str, tuple[str, ...]]) -> DnsView:
        rows = []
        for t in self._log:
            if t.owner is None:
                t.owner = owner_of(t.on_behalf or t.key)
            rows.append(
                DnsQueryRow(
                    time=t.ts,
                    process=t.owner,
                    name=t.name,
                    qtype=type_name(t.qtype),
                    response=t.response or "…",
                    rcode=t.rcode,
                    latency_ms=t.latency_ms,
                    resolver=format_addr(t.key.raddr),
                    iface=t.key.iface,
                    transport=t.transport,
                )
            )
        everywhere = {server for servers in configured.values() for server in servers}
        resolvers = []
        seen = set()
        for (iface, address), stats in sorted(self._stats.items()):
            text = format_addr(address)
            seen.add((iface, text))
            resolvers.append(
                ResolverRow(
                    iface=iface,
                    server=text,
                    queries=stats.queries,
                    failures=stats.failures,
                    avg_latency_ms=stats.latency_total / stats.answered if stats.answered else None,
                    configured=text in everywhere,
                )
            )
        for iface, servers in sorted(configured.items()):
            for server in servers:
                if (iface, server) not in seen:
                    resolvers.append(ResolverRow(iface, server, 0, 0, None, configured=True))
        return DnsView(resolvers=tuple(resolvers), queries=tuple(rows), malformed=self.malformed)
