"""The kernel's owner events (Linux eBPF): decoding, and the tracer on this kernel.

The live tests load the real program (as root) and watch sockets of this
test process, whose pid, name and ports are known; the tracer sees the whole
machine, so everything else it reports is ignored.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netoproc import ebpf
from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, OwnerSighting, parse_addr, v4
from netoproc.platform import owners
from netoproc.platform.owners import EVENT, EVENT_FIELDS, OwnerTracer, decode_event

OBJECT = Path(ebpf.__file__).with_name("owners.bpf.o")
live = pytest.mark.skipif(os.geteuid() != 0, reason="loading eBPF programs needs root")


def record(family: int, proto: int, local: bytes, lport: int, remote: bytes, rport: int,
           comm: bytes = b"dig", tgid: int = 4242, netns: int = 7) -> bytes:  # fmt: skip
    return EVENT.pack(99, 123456789, tgid, 1000, netns, family, proto, 1, local.ljust(16, b"\0"),
                      remote.ljust(16, b"\0"), lport, rport, 0, comm.ljust(16, b"\0"))  # fmt: skip


def test_events_decode_both_families() -> None:
    four = decode_event(record(2, IPPROTO_UDP, bytes([192, 0, 2, 1]), 40000,
                               bytes([198, 51, 100, 2]), 53))  # fmt: skip
    assert four is not None
    assert (four.proto, four.laddr, four.lport, four.raddr, four.rport) == (
        IPPROTO_UDP, v4(0xC0000201), 40000, v4(0xC6336402), 53,
    )  # fmt: skip
    assert (four.tgid, four.started, four.comm, four.uid, four.netns, four.cgroup) == (
        4242, 123456789, "dig", 1000, 7, 99,
    )  # fmt: skip
    local, remote = (
        socket.inet_pton(socket.AF_INET6, a) for a in ("2001:db8::1", "::ffff:192.0.2.9")
    )
    six = decode_event(record(10, IPPROTO_TCP, local, 443, remote, 1))
    assert six is not None
    assert (six.laddr, six.raddr) == (parse_addr("2001:db8::1"), parse_addr("192.0.2.9"))


def test_hostile_names_and_short_records() -> None:
    event = decode_event(record(2, IPPROTO_UDP, bytes(4), 1, bytes(4), 2, comm=b"\x1b[2J\xff\xfe"))
    assert event is not None and event.comm == "\x1b[2J\\xff\\xfe"  # escaped where it is shown
    assert decode_event(b"\0" * (EVENT.size - 1)) is None


@pytest.fixture
def sockets() -> Iterator[Callable[[], socket.socket]]:
    """UDP sockets for a test, closed after it whatever happens."""
    made: list[socket.socket] = []

    def make() -> socket.socket:
        made.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def tracer() -> Iterator[OwnerTracer]:
    t = OwnerTracer()
    t.start()
    yield t
    t.close()


def wait_for(
    tracer: OwnerTracer, done: Callable[[list[OwnerSighting]], bool]
) -> list[OwnerSighting]:
    mine: list[OwnerSighting] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not done(mine):
        mine += [s for s in tracer.take() if s.process.pid == os.getpid()]
        time.sleep(0.01)
    return mine


@live
def test_the_tracer_names_a_socket_as_it_sends(
    tracer: OwnerTracer, sockets: Callable[[], socket.socket]
) -> None:
    receiver = sockets()
    receiver.bind(("127.0.0.1", 0))
    sender = sockets()
    sender.connect(receiver.getsockname())
    for _ in range(50):  # a busy socket is one event, not one per send
        sender.send(b"x")
    receiver.recv(1)
    lport, rport = sender.getsockname()[1], receiver.getsockname()[1]
    want = {(IPPROTO_UDP, lport, rport), (IPPROTO_UDP, rport, 0)}  # the receiver is unconnected
    mine = wait_for(tracer, lambda got: want <= {(s.proto, s.lport, s.rport) for s in got})
    assert {(s.proto, s.lport, s.rport) for s in mine} == want
    assert all(s.process.name == "python" or s.process.name.startswith("py") for s in mine), mine
    assert all(not s.foreign and s.laddr == v4(0x7F000001) for s in mine)
    assert tracer.lost() == 0


@live
def test_the_tracer_reads_ipv6_endpoints(tracer: OwnerTracer) -> None:
    """IPv6 addresses come from the socket by plain loads (tp_btf), word by word."""
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener,
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as client,
    ):
        listener.bind(("::1", 0))
        listener.listen(1)
        client.connect(listener.getsockname()[:2])
        server, _ = listener.accept()
        with server:
            client.send(b"ping")
            server.recv(4)
            lport, rport = client.getsockname()[1], server.getsockname()[1]
            want = {(lport, rport), (rport, lport)}
            mine = wait_for(tracer, lambda got: want <= {(s.lport, s.rport) for s in got})
    ours = [s for s in mine if (s.lport, s.rport) in want]
    assert {(s.lport, s.rport) for s in ours} == want
    assert all(s.proto == IPPROTO_TCP for s in ours)
    assert all(s.laddr == s.raddr == parse_addr("::1") for s in ours), ours


def test_a_missing_tracepoint_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without sock_send_length refuses the tp_btf programs at load;
    the reason given is the tracepoint, not the refusal."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ebpf.BpfRefused("the kernel refused the owners programs (No such process)")

    monkeypatch.setattr(owners, "BpfObject", refuse)
    monkeypatch.setattr(owners, "kernel_has_tracepoint", lambda name: name == "inet_sock_set_state")
    with pytest.raises(ebpf.BpfUnavailable) as caught:
        OwnerTracer()
    assert str(caught.value) == "kernel lacks the sock_send_length tracepoint (Linux 6.4 or newer)"
    monkeypatch.setattr(owners, "kernel_has_tracepoint", lambda name: True)
    with pytest.raises(ebpf.BpfRefused, match=r"^the kernel refused the owners programs"):
        OwnerTracer()


@live
def test_a_full_ring_loses_events_counted_never_wrong_and_retries(
    sockets: Callable[[], socket.socket],
) -> None:
    """A ring of one page, not read while 300 sockets send: most events are lost
    and counted; those that arrive name the right process; the next send of a
    socket whose event was lost is reported then."""
    tracer = OwnerTracer(ring_bytes=4096)
    try:
        receiver = sockets()
        receiver.bind(("127.0.0.1", 0))
        senders = [sockets() for _ in range(300)]
        for s in senders:
            s.connect(receiver.getsockname())
            s.send(b"x")
        assert tracer.lost() > 200
        tracer.start()
        ports = {s.getsockname()[1] for s in senders}
        first = wait_for(tracer, lambda got: len(got) > 0)
        assert 0 < len(first) < 300 and {s.lport for s in first} <= ports | {0}
        got = list(first)
        for _ in range(50):  # each round sends again from the sockets not heard of yet
            heard = {s.lport for s in got}
            if ports <= heard:
                break
            for sender in senders:
                if sender.getsockname()[1] not in heard:
                    sender.send(b"x")
            got += wait_for(tracer, lambda more: len(more) > 0)
        assert ports <= {s.lport for s in got}
        assert all(s.process.pid == os.getpid() for s in got)
    finally:
        tracer.close()


@live
def test_without_cap_bpf_it_says_what_is_missing() -> None:
    code = ("from netoproc.ebpf import BpfUnavailable\n"
            "from netoproc.platform.owners import OwnerTracer\n"
            "try:\n    OwnerTracer()\nexcept BpfUnavailable as exc:\n    print(exc)\n")  # fmt: skip
    result = subprocess.run(
        ["setpriv", "--inh-caps=-bpf,-perfmon", "--bounding-set=-bpf,-perfmon",
         sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "needs CAP_BPF and CAP_PERFMON"


def test_the_event_layout_matches_the_program(tmp_path: Path) -> None:
    """A C compiler's reading of owners.h: every field where EVENT reads it."""
    fields = [name for name, _ in EVENT_FIELDS]
    codes = [code for _, code in EVENT_FIELDS]
    program = tmp_path / "layout.c"
    program.write_text(
        '#include <stdio.h>\n#include <stddef.h>\n#include "kernel.h"\n#include "owners.h"\n'
        "int main(void) {\n"
        '  printf("%zu\\n", sizeof(struct owner_event));\n'
        + "".join(f'  printf("%zu\\n", offsetof(struct owner_event, {f}));\n' for f in fields)
        + "  return 0;\n}\n"
    )
    binary = tmp_path / "layout"
    subprocess.run(["cc", "-I", str(OBJECT.parent), str(program), "-o", str(binary)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    printed = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    size, *offsets = (int(n) for n in printed.split())
    assert size == EVENT.size
    assert offsets == [struct.calcsize("=" + "".join(codes[:i])) for i in range(len(codes))]
