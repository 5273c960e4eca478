"""Hostile names from the wire, through the whole pipeline, into every format and view.

A pcapng file as a Mac would record it names the sending process (Apple's
process information block) and the interface; both names carry escape
sequences, a bell, tabs, newlines, a C1 CSI and invalid UTF-8. The DNS
traffic in it asks for and answers with names made of the same bytes. The
file goes through the real reader, decoder and engine (`netoproc --read` and
`replay`), then out through tsv, json and pretty and onto each of the
monitor's views (the Interface view shows the OS's counters, which a replay
does not have; its cards are covered with fixture snapshots in tests/tui).
Nothing may reach the terminal raw, TSV rows keep their six fields, JSON
stays valid and gives back the name as it was decoded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.name
import dns.rrset
import pytest

from netoproc.session import Settings, replay
from netoproc.tui.app import MonitorOptions, make_app
from netoproc.tui.source import StaticSource
from tests import builders as b
from tests.tui.screen import screen_text

ME, WEB, RESOLVER = "192.0.2.10", "203.0.113.9", "192.0.2.53"
PROCESS_NAME = b"\x1b]0;pwned\x07\x9b31m\xff\tev\nil"
SHOWN_NAME = "\\x1b]0;pwned\\x07\\x9b31m\\xff\\tev\\nil"  # every hostile byte made visible
IFACE_NAME = b"en\x1b[2J0"
QNAME = dns.name.Name([b"\x1b[2Jq\x07", b"ex\tam\nple", b""])
TARGET = dns.name.Name([b"\x9b\xff\xe2\x80\xaebidi", b"test", b""])

# anything a terminal would act on: C0 controls but newline, DEL, C1, bidi overrides
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _dns_exchange() -> tuple[bytes, bytes]:
    query = dns.message.make_query(QNAME, "A", id=77)
    answer = dns.message.make_response(query)
    answer.answer.append(dns.rrset.from_text(QNAME, 60, "IN", "CNAME", TARGET.to_text()))
    answer.answer.append(dns.rrset.from_text(TARGET, 60, "IN", "A", WEB))
    return query.to_wire(), answer.to_wire()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    query, answer = _dns_exchange()
    packets = [
        b.ipv4(b.UDP, b.udp(53000, 53, query), src=ME, dst=RESOLVER),
        b.ipv4(b.UDP, b.udp(53, 53000, answer), src=RESOLVER, dst=ME),
        b.ipv4(b.TCP, b.tcp(50000, 443, flags=b.SYN), src=ME, dst=WEB),
        b.ipv4(b.TCP, b.tcp(443, 50000, flags=b.SYN | b.ACK), src=WEB, dst=ME),
        b.ipv4(b.TCP, b.tcp(50000, 443, bytes(300), flags=b.ACK | b.PSH), src=ME, dst=WEB),
        b.ipv4(b.TCP, b.tcp(443, 50000, bytes(1200), flags=b.ACK), src=WEB, dst=ME),
    ]
    outbound = [True, False, True, False, True, False]
    blocks = [b.pcapng_shb(), b.pcapng_idb(1, name=IFACE_NAME), b.pcapng_pib(4242, PROCESS_NAME)]
    for i, (packet, out) in enumerate(zip(packets, outbound, strict=True)):
        ticks = (int(b.T0) + i) * 10**6
        blocks.append(b.pcapng_epb(0, ticks, b.ethernet(packet), flags=2 if out else 1, process=0))
    path = tmp_path_factory.mktemp("hostile") / "hostile.pcapng"
    path.write_bytes(b"".join(blocks))
    return path


def _netoproc(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "netoproc", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


@pytest.mark.parametrize("fmt", ["tsv", "json", "pretty"])
def test_formats_show_hostile_names_inert(capture: Path, fmt: str) -> None:
    text = _netoproc("--read", str(capture), "--format", fmt)
    body = text.replace("\t", " ") if fmt == "tsv" else text  # tsv's own separators
    assert not RAW_CONTROL.search(body), body
    if fmt == "tsv":
        header, *rows = text.splitlines()
        assert all(row.count("\t") == header.count("\t") == 5 for row in rows)
        assert [row.split("\t")[:2] for row in rows] == [["4242", SHOWN_NAME]]
    elif fmt == "json":
        (row,) = json.loads(text)
        # the name as decoded: real control characters, invalid bytes as \xNN text
        assert row["process"] == PROCESS_NAME.decode("utf-8", "backslashreplace")
        assert (row["rx_bytes"], row["tx_bytes"]) > (0, 0)
    else:
        assert SHOWN_NAME[:19] + "…" in text


async def test_every_view_shows_hostile_names_inert(capture: Path) -> None:
    snapshot, problem = replay(str(capture), duration=None, settings=Settings())
    assert problem is None and snapshot.dns is not None
    (query,) = snapshot.dns.queries
    assert query.name == QNAME.to_text(omit_final_dot=True)
    assert query.process is not None and query.process.pid == 4242
    (web,) = [c for c in snapshot.connections if c.remote_text == WEB]
    assert web.domain == query.name  # the name asked for, which the filter matches
    app = make_app(StaticSource(snapshot), MonitorOptions())
    shown = {}
    async with app.run_test(size=(200, 50)) as pilot:
        for view in "1234":
            await pilot.press(view)
            await pilot.pause()
            shown[view] = screen_text(app)
            assert not RAW_CONTROL.search(shown[view]), view
    assert SHOWN_NAME[:12] in shown["1"]
    assert "\\x1b]0;pwned" in shown["2"] and "en\\x1b[2J0" in shown["2"]
    # DNS names in the presentation format's decimal escapes, as dig prints them
    assert "\\x1b]0;pwned" in shown["4"] and "\\027[2Jq\\007.ex\\009am\\010ple" in shown["4"]
    assert "en\\x1b[2J0" in shown["4"]  # the resolver's interface
