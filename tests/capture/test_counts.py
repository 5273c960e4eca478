"""Counting in the kernel (Linux eBPF): the filter's layouts, and the filter on
this kernel against bytes this test really sends.

The live tests attach the filter to a packet socket of their own bound to
loopback, where every packet shows twice (sent, then received): each is
counted once for the sender's flow and once for the receiver's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from netoproc import ebpf
from netoproc.capture.counts import COUNTS, KEY, SAMPLE, KernelCounts
from netoproc.capture.records import CounterBatch, InterfaceTable
from netoproc.model import IPPROTO_TCP, IPPROTO_UDP

HEADERS = Path(ebpf.__file__).parent
live = pytest.mark.skipif(os.geteuid() != 0, reason="loading eBPF programs needs root")


def test_the_layouts_match_the_program(tmp_path: Path) -> None:
    """A C compiler's reading of counts.h: every field where the numpy dtypes read it."""
    checks = [(f"struct {struct}", dtype) for struct, dtype in
              (("flow_key", KEY), ("flow_counts", COUNTS), ("rtt_sample", SAMPLE))]  # fmt: skip
    lines = []
    for struct, dtype in checks:
        lines.append(f'  printf("%zu\\n", sizeof({struct}));')
        lines += [f'  printf("%zu\\n", offsetof({struct}, {f}));' for f in dtype.names or ()]
    program = tmp_path / "layout.c"
    program.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "kernel.h"\n'
                       '#include "counts.h"\nint main(void) {\n' + "\n".join(lines)
                       + "\n  return 0;\n}\n")  # fmt: skip
    binary = tmp_path / "layout"
    subprocess.run(["cc", "-I", str(HEADERS), str(program), "-o", str(binary)], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    printed = [int(n) for n in subprocess.run([str(binary)], capture_output=True, text=True,
                                              check=True).stdout.split()]  # fmt: skip
    expected = []
    for _, dtype in checks:
        expected += [dtype.itemsize, *(dtype.fields[f][1] for f in dtype.names or ())]  # type: ignore[index]
    assert printed == expected


@pytest.fixture
def loopback() -> Iterator[tuple[socket.socket, KernelCounts]]:
    """A packet socket on lo with the counting filter, and the filter."""
    counter = KernelCounts(InterfaceTable())
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
    try:
        counter.attach(sock)
        sock.bind(("lo", 3))
        sock.setblocking(False)
        yield sock, counter
    finally:
        sock.close()
        counter.close()


def _flows(batches: list[CounterBatch]) -> dict[tuple[int, int, int], np.ndarray]:
    """(proto, lport, rport) -> [rx_bytes, tx_bytes, rx_packets, tx_packets] summed."""
    out: dict[tuple[int, int, int], np.ndarray] = {}
    for b in batches:
        for i in range(len(b)):
            key = (int(b.key.proto[i]), int(b.key.lport[i]), int(b.key.rport[i]))
            row = np.array([b.rx_bytes[i], b.tx_bytes[i], b.rx_packets[i], b.tx_packets[i]])
            out[key] = out.get(key, np.zeros(4, np.int64)) + row
    return out


def _passed_up(sock: socket.socket, ports: set[int]) -> int:
    """Packets of IPv4 TCP/UDP on `ports` that reached the socket (loopback carries
    other programs' traffic too)."""
    n = 0
    while True:
        try:
            packet = sock.recv(1 << 16)
        except BlockingIOError:
            return n
        if len(packet) >= 24 and packet[0] == 0x45:
            sport, dport = (
                int.from_bytes(packet[20:22], "big"),
                int.from_bytes(packet[22:24], "big"),
            )
            n += sport in ports or dport in ports


@live
def test_udp_and_tcp_counted_to_the_byte_nothing_taken_twice(
    loopback: tuple[socket.socket, KernelCounts],
) -> None:
    """A sender that never stops while the counters are taken 50 times: every
    datagram is counted exactly once on each side, across every switch of maps."""
    sock, counter = loopback
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sender.connect(receiver.getsockname())
        sent = 0
        stop = threading.Event()

        def blast() -> None:
            nonlocal sent
            while not stop.is_set():
                sender.send(b"x" * 72)
                sent += 1

        batches = []
        thread = threading.Thread(target=blast)
        thread.start()
        for _ in range(50):
            batches.append(counter.take(0.0)[0])
            time.sleep(0.005)
        stop.set()
        thread.join()
        batches.append(counter.take(0.0)[0])
        lport, rport = sender.getsockname()[1], receiver.getsockname()[1]
        flows = _flows(batches)
        size = 20 + 8 + 72
        assert sent > 1000
        assert flows[(IPPROTO_UDP, lport, rport)].tolist() == [0, sent * size, 0, sent]
        assert flows[(IPPROTO_UDP, rport, lport)].tolist() == [sent * size, 0, sent, 0]
        assert _passed_up(sock, {lport, rport}) == 0  # nothing of it reached the socket
    finally:
        receiver.close()
        sender.close()


@live
def test_tcp_data_is_counted_and_control_segments_passed_up(
    loopback: tuple[socket.socket, KernelCounts],
) -> None:
    sock, counter = loopback
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            for _ in range(20):
                client.sendall(b"y" * 1000)
                got = 0
                while got < 1000:
                    got += len(peer.recv(4096))
        time.sleep(0.05)
    batch, rtt = counter.take(0.0)
    tcp = [i for i in range(len(batch)) if batch.key.proto[i] == IPPROTO_TCP]
    assert len(tcp) == 2  # the client's side and the server's
    sent = [i for i in tcp if batch.segments_sent[i] > 0]
    assert len(sent) == 1 and batch.segments_sent[sent[0]] == 20
    assert batch.retransmits[sent[0]] == 0
    assert len(rtt) >= 1 and (rtt.rtt > 0).all() and (rtt.rtt < 1).all()
    # SYN, SYN-ACK and the FINs went up whole, each seen twice on loopback
    assert _passed_up(sock, {port}) >= 2 * 4


@live
def test_a_full_counter_map_passes_packets_up_and_counts_them() -> None:
    """Room for 8 flows, 20 flows sending: the rest reach the socket, counted as
    overflow; counted plus passed up is everything sent."""
    counter = KernelCounts(InterfaceTable(), max_flows=8)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
    try:
        counter.attach(sock)
        sock.bind(("lo", 3))
        sock.setblocking(False)
        receiver.bind(("127.0.0.1", 0))
        for s in senders:
            s.connect(receiver.getsockname())
            for _ in range(5):
                s.send(b"z" * 10)
        time.sleep(0.05)
        batch = counter.take(0.0)[0]
        ports = {receiver.getsockname()[1]}
        mine = [
            i
            for i in range(len(batch))
            if ports & {int(batch.key.lport[i]), int(batch.key.rport[i])}
        ]
        counted = int(batch.rx_packets[mine].sum() + batch.tx_packets[mine].sum())
        passed = _passed_up(sock, ports)
        assert len(batch) == 8  # full
        assert counted + passed == 20 * 5 * 2
        assert counter.overflow()[0] >= passed > 0  # loopback's other traffic may overflow too
    finally:
        for s in [sock, receiver, *senders]:
            s.close()
        counter.close()
