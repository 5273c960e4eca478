"""Counting in the kernel (Linux eBPF) against reading every packet, and against nethogs.

    sudo python bench/counting.py [--pps 100000] [--seconds 10] [--quick]

Between two network namespaces joined by a veth pair, iperf3 sends 46-byte
UDP packets from a to b at a fixed rate (`--pps`), in phases of `--seconds`:
the flood alone (the baseline), then with netoproc counting in the kernel,
netoproc reading every packet (NETOP_EBPF=off), and `nethogs -C` watching.
For each watcher: its own CPU per packet (user + sys of the process and its
threads while the flood runs, from /proc/PID/stat; start-up excluded) and the
machine's added CPU per packet, against packets iperf3 sent. The machine's
added CPU is attributed, not subtracted: `perf record -a -g` samples every
CPU while the flood runs, and a sample is the watcher's if it ran in the
watcher's process, or in any other context inside the kernel's packet-socket
receive path (packet_rcv, tpacket_rcv: the copy a packet socket costs every
packet) or inside a BPF program, less what those frames took in the flood
alone. (All CPUs' busy time from /proc/stat, less the flood alone's, was
the first method: on a virtual machine the flood alone varies by more than
any watcher adds.)

Then the highest rate two unlimited iperf3 senders reach, and how many of
their datagrams netoproc counted; and the engine's tick with 5,000 and 50,000
flows (each of its own process, every flow moving every tick), in-process.

Public tools only: iperf3, nethogs and perf (Debian), the kernel's counters
and rusage. Needs root. `--quick` proves the script runs; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.e2e.netns import TwoHosts, two_hosts, wait_for_line  # noqa: E402

NETOPROC = [sys.executable, "-m", "netoproc"]
OBSERVE = str(ROOT / "tests" / "e2e" / "observe.py")
PAYLOAD = 18  # bytes of UDP payload: 46-byte IP packets
SETUP_DATAGRAMS = 1  # iperf3 opens each UDP stream with one datagram outside its count
PERF_HZ = 2999  # samples a second on each CPU
# a sample in one of these frames is a watcher's wherever it ran: the kernel's
# packet-socket receive path, and BPF programs (netoproc's filter and tracer)
CAPTURE_FRAMES = frozenset({"packet_rcv", "tpacket_rcv", "packet_rcv_spkt", "packet_rcv_fanout"})
BPF_FRAME_PREFIXES = ("bpf_prog_", "__bpf_prog_", "bpf_trace_run")


def busy_jiffies() -> int:
    """All CPUs' time running anything: user, nice, system, irq and softirq (not
    idle, iowait, or the time a hypervisor took the CPU away: steal)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, stat.readline().split()[1:8])
    return user + nice + system + irq + softirq


def spawn(argv: list[str], env: dict[str, str] | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execvpe(argv[0], argv, env or dict(os.environ))
    return pid


def cpu_seconds(pid: int) -> float:
    """User + system time of a process and all its threads, so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood(hosts: TwoHosts, pps: int, seconds: int, perf_data: Path) -> tuple[int, int]:
    """A paced flood, sampled by perf into `perf_data`; (datagrams iperf3 sent,
    busy jiffies meanwhile)."""
    server = hosts.start(hosts.b, ["iperf3", "-s", "-1"])
    time.sleep(0.5)
    perf = subprocess.Popen(["perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", str(PERF_HZ),
                             "-o", str(perf_data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)  # perf is sampling
    busy = busy_jiffies()
    rate = str(pps * PAYLOAD * 8)  # iperf3 paces the UDP payload's bits
    sender = hosts.start(hosts.a, ["iperf3", "-c", hosts.b4, "-u", "-l", str(PAYLOAD), "-b", rate,
                                   "-t", str(seconds), "--json"])  # fmt: skip
    report = json.loads(sender.communicate(timeout=seconds + 60)[0])
    busy = busy_jiffies() - busy
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=60)
    server.wait(timeout=30)
    return int(report["end"]["sum"]["packets"]), busy


def attributed(perf_data: Path, pid: int | None) -> tuple[float, float, float]:
    """CPU seconds perf sampled: in process `pid`; elsewhere in the packet-socket
    receive path (a capture's filter runs there); elsewhere in other BPF programs
    (tracepoints: netoproc's owner tracer)."""
    script = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "pid,ip,sym"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    own = capture = programs = 0
    for sample in script.split("\n\n"):
        lines = sample.strip("\n").split("\n")
        if not lines[0].strip():
            continue
        if int(lines[0].split()[0]) == pid:
            own += 1
            continue
        frames = [line.split(maxsplit=1)[-1] for line in lines[1:]]
        if any(f in CAPTURE_FRAMES for f in frames):
            capture += 1
        elif any(f.startswith(BPF_FRAME_PREFIXES) for f in frames):
            programs += 1
    perf_data.unlink()
    return own / PERF_HZ, capture / PERF_HZ, programs / PERF_HZ


def cpu_phases(hosts: TwoHosts, pps: int, seconds: int, scratch: Path) -> list[str]:
    hz = os.sysconf("SC_CLK_TCK")
    perf_data = scratch / "perf.data"
    sent, busy = flood(hosts, pps, seconds, perf_data)
    _, capture, programs = attributed(perf_data, None)
    # the capture path and BPF programs with no watcher
    base_per_packet = (capture + programs) / sent
    lines = [f"fixed-rate flood: {sent / seconds:,.0f} packets/s for {seconds} s "
             f"(alone: {busy / hz / seconds:.1%} of the machine busy, "
             f"{base_per_packet * 1e6:.3f} µs/packet in capture paths, BPF)"]  # fmt: skip
    watchers = {
        "netoproc, counting in the kernel": (NETOPROC, {}),
        "netoproc, every packet (NETOP_EBPF=off)": (NETOPROC, {"NETOP_EBPF": "off"}),
        "nethogs -C": (
            ["nethogs", "-t", "-C", "-d", "1", "-c", str(seconds + 5), hosts.veth_a],
            {},
        ),
    }
    results = {}
    for name, (argv, extra) in watchers.items():
        if argv is NETOPROC:
            argv = [*argv, "--duration", str(seconds + 5)]
        pid = spawn(["ip", "netns", "exec", hosts.a, *argv], {**os.environ, **extra})
        time.sleep(2)  # started: its start-up is not the flood's cost
        before = cpu_seconds(pid)
        sent, _ = flood(hosts, pps, seconds, perf_data)
        own = cpu_seconds(pid) - before
        os.waitpid(pid, 0)
        sampled, capture, programs = attributed(perf_data, pid)  # `ip netns exec` execs
        added = sampled + max(0.0, capture + programs - base_per_packet * sent)
        results[name] = (own / sent * 1e6, added / sent * 1e6)
        lines.append(f"  {name:40} own {own / sent * 1e6:6.3f} µs/packet, "
                     f"machine added {added / sent * 1e6:6.3f} µs/packet "
                     f"(sampled: {sampled / sent * 1e6:.3f} in the process, "
                     f"{capture / sent * 1e6:.3f} in the capture path, "
                     f"{programs / sent * 1e6:.3f} in tracepoint programs)")  # fmt: skip
    ours, theirs = results["netoproc, counting in the kernel"], results["nethogs -C"]
    if theirs[0] > 0 and theirs[1] > 0:
        lines.append(f"  kernel counting / nethogs: own {ours[0] / theirs[0]:.3f}x, "
                     f"machine added {ours[1] / theirs[1]:.3f}x")  # fmt: skip
    return lines


def loss(hosts: TwoHosts, seconds: int) -> str:
    """Two unlimited senders; netoproc's count of their datagrams."""
    servers = [hosts.start(hosts.b, ["iperf3", "-s", "-1", "-p", str(port)])
               for port in (5201, 5202)]  # fmt: skip
    time.sleep(0.5)
    observer = hosts.start(hosts.a, [sys.executable, OBSERVE, str(seconds + 4)])
    wait_for_line(observer.stderr, "ready")
    senders = [hosts.start(hosts.a, ["iperf3", "-c", hosts.b4, "-p", str(port), "-u", "-b", "0",
                                     "-l", str(PAYLOAD), "-t", str(seconds), "--json"])
               for port in (5201, 5202)]  # fmt: skip
    sent = sum(int(json.loads(s.communicate(timeout=seconds + 60)[0])["end"]["sum"]["packets"])
               for s in senders)  # fmt: skip
    snapshot = json.loads(observer.communicate(timeout=120)[0])
    for server in servers:
        server.wait(timeout=30)
    flows = [c for c in snapshot["connections"] if c["proto"] == 17 and c["rport"] in (5201, 5202)]
    seen = sum(c["total"]["tx_packets"] for c in flows) - SETUP_DATAGRAMS * len(flows)
    h = snapshot["health"]
    return (f"two unlimited senders: {sent / seconds:,.0f} packets/s, {sent:,} sent, {seen:,} "
            f"counted, {sent - seen:,} lost; kernel drops {h['kernel_drops']}, counting "
            f"{h['counting']!r}")  # fmt: skip


def tick_times(flows: int, ticks: int = 8) -> tuple[float, float, float]:
    """(median tick ms, median ms to take the kernel's counts, median ms to read
    every process and connection row the tick left) with `flows` flows, each its
    own process, every one moving every tick."""
    from netoproc.capture.records import CounterBatch, FlowColumns, InterfaceTable
    from netoproc.engine import Engine
    from netoproc.engine.floods import MAX_FLOWS
    from netoproc.model import IPPROTO_TCP, OwnerSighting, ProcessRef

    # the flow table's bound raised to hold them all (by default flows past
    # 20,000 fold into one row: see engine/floods.py)
    engine = Engine(started=0.0, max_flows=max(MAX_FLOWS, flows))
    local = (0xFFFF << 32) | 0x0A000001
    remote = (0xFFFF << 32) | 0x0A000002
    ports = 1024 + np.arange(flows) % 60000
    remotes = remote + np.arange(flows) // 60000
    pairs = zip(ports.tolist(), remotes.tolist(), strict=True)
    engine.sight([OwnerSighting(IPPROTO_TCP, local, p, r, 443, ProcessRef(100_000 + i, f"p{i}"))
                  for i, (p, r) in enumerate(pairs)])  # fmt: skip
    zeros = np.zeros(flows, np.int64)
    key = FlowColumns(
        iface=np.ones(flows, np.int64), proto=np.full(flows, IPPROTO_TCP, np.int64),
        l_hi=np.zeros(flows, np.uint64), l_lo=np.full(flows, local, np.uint64),
        lport=ports.astype(np.int64), r_hi=np.zeros(flows, np.uint64),
        r_lo=remotes.astype(np.uint64), rport=np.full(flows, 443, np.int64),
    )  # fmt: skip
    times: list[float] = []
    ingest: list[float] = []
    read: list[float] = []
    for k in range(ticks):
        batch = CounterBatch(
            key=key, rx_bytes=np.full(flows, 1500), tx_bytes=np.full(flows, 52),
            rx_packets=np.ones(flows, np.int64), tx_packets=np.ones(flows, np.int64),
            first_ts=np.full(flows, k + 0.5), last_ts=np.full(flows, k + 0.9),
            retransmits=zeros, segments_sent=zeros, peer_retransmits=zeros, dup_acks=zeros,
            interfaces=InterfaceTable({1: "eth0"}),
        )  # fmt: skip
        started = time.perf_counter()
        engine.ingest_counts(batch)
        taken = time.perf_counter()
        snapshot = engine.tick(k + 1.0)
        done = time.perf_counter()
        assert len(list(snapshot.processes)) == len(list(snapshot.connections)) == flows
        if k:  # the first tick makes every flow
            ingest.append((taken - started) * 1000)
            times.append((done - taken) * 1000)
            read.append((time.perf_counter() - done) * 1000)
    return statistics.median(times), statistics.median(ingest), statistics.median(read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pps", type=int, default=100_000, help="fixed flood rate")
    parser.add_argument("--seconds", type=int, default=10, help="per phase")
    parser.add_argument("--quick", action="store_true", help="seconds-long phases, small engine")
    args = parser.parse_args()
    if args.pps < 1 or args.seconds < 1:
        parser.error("--pps and --seconds must be positive")
    seconds, pps = (2, 2000) if args.quick else (args.seconds, args.pps)
    for flows in (200,) if args.quick else (5_000, 50_000):
        tick, ingest, read = tick_times(flows)
        print(f"engine with {flows:,} flows: tick {tick:.1f} ms, taking the counts "
              f"{ingest:.1f} ms, reading every row {read:.1f} ms (medians)")  # fmt: skip
    for hosts in two_hosts(f"k{os.getpid() % 100000}"):
        with tempfile.TemporaryDirectory() as scratch:
            for line in cpu_phases(hosts, pps, seconds, Path(scratch)):
                print(line, flush=True)
        print(loss(hosts, seconds))


if __name__ == "__main__":
    main()
