"""Who gets the bytes: socket owners from the kernel (eBPF) against the fallback.

    sudo python bench/owners.py [--clients 200] [--skip-cost]

Part 1 runs the cases that lose owners when sockets are looked up after the
fact, twice: with eBPF owners, and with the fallback (socket table, /proc
and the fast lane: NETOP_EBPF=off, the path kernels without the tracepoints
or runs without CAP_BPF take). netoproc watches namespace `a` while:
  - DNS clients each send one question and exit the moment the answer comes;
  - a long-lived server in `a` closes each connection as soon as it answered;
  - one-shot servers in `a` each serve one connection and exit on hang-up;
  - a pre-forked server in `a` (its parent holds the listener, workers serve);
  - UDP clients each send 16 datagrams with one sendmmsg and exit;
  - children use a TCP socket their parent opened.
The share is bytes on the right pid over tcpdump's bytes for the case.

Part 2 (unless --skip-cost): the tracer's load time (open, load, attach;
best and median of 10) and its cost at 100,000 sends a second: a sender
paced at that rate on one UDP socket for 5 s, the kernel's own accounting
of the programs' run time (kernel.bpf_stats_enabled), and the sender's
system time with and without the tracer attached.

Needs root. Everything it starts, it stops by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))  # for tests.e2e
sys.path.insert(0, str(ROOT / "src"))

from tests.e2e.netns import TwoHosts, stop_tcpdump, wait_for_line  # noqa: E402
from tests.witness import port_traffic, tcpdump_packets  # noqa: E402

ONESHOT_FIRST = 5200


def lines(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"a peer failed: {err.strip()}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def run_cases(mode: str, clients: int, workdir: Path) -> dict[str, tuple[int, int]]:
    """Case -> (bytes on the right pid, tcpdump's bytes)."""
    if mode == "fallback":
        os.environ["NETOP_EBPF"] = "off"
    else:
        os.environ.pop("NETOP_EBPF", None)
    hosts = TwoHosts(f"w{os.getpid() % 100000}")
    hosts.up()
    try:
        ready = {}
        servers = {
            "quick": hosts.peer(hosts.a, "quick-server", "np-quick", "5101"),
            "prefork": hosts.peer(hosts.a, "prefork-server", "5103", "4"),
            "dns": hosts.peer(hosts.b, "udp-server", "53"),
            "echo": hosts.peer(hosts.b, "tcp-server", "5001"),
        }
        oneshots = [hosts.peer(hosts.a, "oneshot-server", "np-oneshot", str(ONESHOT_FIRST + i))
                    for i in range(10)]  # fmt: skip
        for name, proc in [*servers.items(), *((f"oneshot{i}", p) for i, p in enumerate(oneshots))]:
            ready[name] = json.loads(wait_for_line(proc.stdout, "ready"))
        pcap = workdir / f"{mode}.pcap"
        witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
        monitor = hosts.netoproc(hosts.a, "--duration", "3600", "--format", "json")
        time.sleep(2)  # capturing by then

        dns = lines(hosts.peer(hosts.a, "dns-burst", "np-dns", hosts.b4, "53", str(clients)))
        lines(hosts.peer(hosts.b, "short-conns", "np-in", hosts.a4, "5101", "50", "20000", "0"))
        for i in range(len(oneshots)):
            lines(hosts.peer(hosts.b, "tcp-client", "np-in", hosts.a4, str(ONESHOT_FIRST + i),
                             "50000", "0"))  # fmt: skip
        lines(hosts.peer(hosts.b, "short-conns", "np-in", hosts.a4, "5103", "40", "20000", "0"))
        bursts = [lines(hosts.peer(hosts.a, "udp-burst", "np-burst", hosts.b4, "53", "16",
                                   "200"))[0] for _ in range(20)]  # fmt: skip
        children = [lines(hosts.peer(hosts.a, "inherited", "np-child", hosts.b4, "5001",
                                     "50000"))[0] for _ in range(10)]  # fmt: skip
        time.sleep(1.5)  # the last packets reach the engine
        servers["prefork"].terminate()
        monitor.terminate()
        out, err = monitor.communicate(timeout=60)
        if monitor.returncode != 0:
            raise SystemExit(f"netoproc failed: {err.strip()}")
        stop_tcpdump(witness)
        served: dict[int, set[int]] = {}
        for line in servers["prefork"].stdout or []:
            if line.startswith('{"pid"'):
                record = json.loads(line)
                served.setdefault(int(record["pid"]), set()).add(int(record["client"]))
    finally:
        hosts.down()
    rows = {row["pid"]: row for row in json.loads(out) if row["pid"] is not None}
    packets = tcpdump_packets(pcap)

    def share(pid: object, port: int, peers: set[int] | None = None) -> tuple[int, int]:
        truth = port_traffic(packets, hosts.a4, port, peers)
        row = rows.get(pid, {})
        got = {k: int(row.get(k, 0)) for k in truth}
        whole = sum(truth[k] for k in ("rx_bytes", "tx_bytes"))
        return (whole if got == truth else 0), whole

    def total(pairs: list[tuple[int, int]]) -> tuple[int, int]:
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)

    return {
        f"{clients} DNS clients exiting on their answer": total(
            [share(c["pid"], int(str(c["lport"]))) for c in dns]),
        "a server closing each connection at once (50)": share(ready["quick"]["pid"], 5101),
        "one-shot servers exiting on hang-up (10)": total(
            [share(ready[f"oneshot{i}"]["pid"], ONESHOT_FIRST + i) for i in range(10)]),
        "a pre-forked server's workers (40 connections)": total(
            [share(pid, 5103, ports) for pid, ports in served.items()]),
        "UDP clients: one sendmmsg, exit (20)": total(
            [share(b["pid"], int(str(b["lport"]))) for b in bursts]),
        "children using their parent's socket (10)": total(
            [share(c["pid"], int(str(c["lport"]))) for c in children]),
    }  # fmt: skip


def load_times() -> tuple[float, float]:
    from netoproc.platform.owners import OwnerTracer

    times = []
    for _ in range(10):
        started = time.perf_counter()
        tracer = OwnerTracer()
        times.append(time.perf_counter() - started)
        tracer.close()
    return min(times) * 1000, statistics.median(times) * 1000


def paced_sends(rate: int, seconds: float) -> tuple[int, float]:
    """Send `rate` datagrams a second on one socket for `seconds`, from a child;
    returns (sent, the child's system CPU seconds)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(sink.getsockname())
        sent, start = 0, time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            for _ in range(max(0, int(elapsed * rate) - sent)):
                s.send(b"x")
                sent += 1
                sink.recv(1)  # loopback delivers at once
            time.sleep(0.001)
        os.write(w, sent.to_bytes(8, "big"))
        os._exit(0)
    os.close(w)
    sent = int.from_bytes(os.read(r, 8), "big")
    os.close(r)
    _, _, usage = os.wait4(pid, 0)
    return sent, usage.ru_stime


def bpf_stats(name: str) -> tuple[int, int]:
    """(run count, run time ns) of the loaded program called `name`."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    for prog in json.loads(out):
        if prog.get("name") == name:
            return int(prog.get("run_cnt", 0)), int(prog.get("run_time_ns", 0))
    return 0, 0


def cost(rate: int, seconds: float) -> list[str]:
    from netoproc.platform.owners import OwnerTracer

    _, without = paced_sends(rate, seconds)
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    tracer = OwnerTracer()
    tracer.start()
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        sent, with_tracer = paced_sends(rate, seconds)
        after = resource.getrusage(resource.RUSAGE_SELF)
        runs, ns = bpf_stats("on_send")
        recv_runs, recv_ns = bpf_stats("on_recv")
    finally:
        tracer.close()
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text("0")
    own = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    programs = ns + recv_ns
    return [
        f"  {rate:,} sends/s for {seconds:g} s ({sent:,} sends, each also received)",
        f"  programs ran {runs + recv_runs:,} times, {programs / max(1, runs + recv_runs):.0f} ns"
        f" each: {100 * programs / 1e9 / seconds:.2f} % of a core",
        f"  sender's system time: {without:.2f} s without the tracer, {with_tracer:.2f} s with",
        f"  netoproc's tracer thread (this process): {100 * own / seconds:.2f} % of a core",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="DNS clients")
    parser.add_argument("--rate", type=int, default=100_000, help="sends a second (cost)")
    parser.add_argument("--seconds", type=float, default=5.0, help="of paced sends (cost)")
    parser.add_argument("--skip-cost", action="store_true", help="part 1 only")
    args = parser.parse_args()
    if not 1 <= args.clients <= 5000 or args.rate < 1 or args.seconds <= 0:
        parser.error("--clients 1 to 5000, --rate and --seconds above 0")
    workdir = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True,
                                  check=True).stdout.strip())  # fmt: skip
    results = {mode: run_cases(mode, args.clients, workdir) for mode in ("fallback", "eBPF")}
    print("bytes on the right pid / tcpdump's bytes: fallback | eBPF")
    for case in results["eBPF"]:
        cells = []
        for mode in ("fallback", "eBPF"):
            right, whole = results[mode][case]
            cells.append(f"{100 * right / whole:5.1f} %" if whole else "   - ")
        print(f"  {case:48} {cells[0]} | {cells[1]}")
    if not args.skip_cost:
        best, median = load_times()
        print(f"tracer load time: best {best:.1f} ms, median {median:.1f} ms (10 loads)")
        print("tracer cost:")
        for line in cost(args.rate, args.seconds):
            print(line)


if __name__ == "__main__":
    main()
