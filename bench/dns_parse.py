"""DNS throughput: messages per second parsed, and parsed and matched.

    python bench/dns_parse.py [--messages 200000] [--repeat 5] [--dnspython]

The corpus is built once with dnspython: queries (some with EDNS) and
responses with a CNAME chain and several A/AAAA records, name compression as
dnspython writes it: the mix of messages a desktop resolver sees. Each
parser runs over the corpus until `--messages` messages are parsed; best of
`--repeat` runs, in CPU time of this process (other load on a shared machine
does not count). `--dnspython` adds dnspython's own parser for
comparison. A last row times the DNS engine: every query and its response
go through `DnsTracker.observe` on their own client port, so each message is
parsed and matched to its transaction (latency, answer, resolver statistics,
names for addresses). Prints one table.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import dns.message
import dns.name
import dns.rrset

from netoproc.decode.dns import parse_message
from netoproc.engine.dns import DnsTracker
from netoproc.model import IPPROTO_UDP, FlowKey, parse_addr

NAMES = ["www.example.com", "api.github.com", "login.microsoftonline.com", "a.b.c.example.org",
         "cdn.jsdelivr.net", "mail.google.com", "x.co"]  # fmt: skip


def corpus() -> list[bytes]:
    messages = []
    for i, name in enumerate(NAMES):
        qtype = "AAAA" if i % 3 == 2 else "A"
        query = dns.message.make_query(name, qtype, use_edns=0 if i % 2 else None)
        query.id = 1000 + i
        messages.append(query.to_wire(want_shuffle=False))
        response = dns.message.make_response(query)
        owner = dns.name.from_text(name)
        chain = [owner, *(dns.name.from_text(f"edge{j}.cdn{i}.example.net") for j in range(i % 3))]
        for here, there in itertools.pairwise(chain):
            response.answer.append(dns.rrset.from_text(here, 300, "IN", "CNAME", there.to_text()))
        addresses = [f"192.0.2.{i * 8 + k}" for k in range(2 + i % 2)]
        if qtype == "AAAA":
            addresses = [f"2001:db8::{i}:{k}" for k in range(2 + i % 2)]
        response.answer.append(dns.rrset.from_text(chain[-1], 60, "IN", qtype, *addresses))
        messages.append(response.to_wire(want_shuffle=False))
    return messages


def rate(parse: Callable[[bytes], object], messages: list[bytes], count: int, repeat: int) -> float:
    rounds = max(1, count // len(messages))
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(rounds):
            for message in messages:
                parse(message)
        best = min(best, time.process_time() - start)
    return rounds * len(messages) / best


def matched_rate(messages: list[bytes], count: int, repeat: int) -> float:
    """Messages per second through the tracker: each query then its response, matched."""
    client, server = parse_addr("192.0.2.1"), parse_addr("192.0.2.53")
    pairs = list(zip(messages[0::2], messages[1::2], strict=True))
    rounds = max(1, count // len(messages))
    best = float("inf")
    for _ in range(repeat):
        tracker = DnsTracker()
        observe = tracker.observe
        start = time.process_time()
        for r in range(rounds):
            key = FlowKey("eth0", IPPROTO_UDP, client, 1024 + r % 60000, server, 53)
            for query, response in pairs:
                observe(r * 0.001, key, True, query)
                observe(r * 0.001 + 0.0002, key, False, response)
        best = min(best, time.process_time() - start)
    return rounds * len(messages) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dnspython", action="store_true", help="also time dnspython")
    args = parser.parse_args()

    messages = corpus()
    queries = messages[0::2]
    responses = messages[1::2]
    sizes = [len(m) for m in messages]
    print(f"corpus: {len(queries)} queries, {len(responses)} responses, "
          f"{min(sizes)}-{max(sizes)} bytes")  # fmt: skip
    parsers: list[tuple[str, Callable[[bytes], object]]] = [("netoproc", parse_message)]
    if args.dnspython:
        parsers.append(("dnspython", dns.message.from_wire))
    print(f"{'parser':<10} {'queries/s':>12} {'responses/s':>12} {'mixed/s':>12} {'µs/msg':>8}")
    for label, parse in parsers:
        count = args.messages if parse is parse_message else args.messages // 50
        q = rate(parse, queries, count, args.repeat)
        r = rate(parse, responses, count, args.repeat)
        mixed = rate(parse, messages, count, args.repeat)
        print(f"{label:<10} {q:>12,.0f} {r:>12,.0f} {mixed:>12,.0f} {1e6 / mixed:>8.2f}")
    matched = matched_rate(messages, args.messages, args.repeat)
    print(f"{'parsed and matched (DNS engine)':<36} {matched:>12,.0f} {1e6 / matched:>8.2f}")


if __name__ == "__main__":
    main()
