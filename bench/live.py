"""Live benchmarks, side by side with nethogs, between two network namespaces.

    sudo python bench/live.py [--quick]

Prints one table:
- loss: the highest small-packet UDP rate iperf3 sends from namespace a to
  b, and how many of those packets netoproc counted (the kernel's interface
  counter is the witness);
- CPU per packet (user + sys, all threads) of netoproc and of `nethogs -C`,
  both watching the same flood at the same time;
- peak RSS of netoproc while 5,000 TCP connections are held for 60 s;
- idle CPU of snapshot and monitor modes over 30 s without traffic;
- wall time of `netoproc --duration 1`, and time to the monitor's first frame.

Public tools only: iperf3 and nethogs (Debian), the kernel's counters and
the children's rusage. `--quick` shortens every phase to prove the script
works (CI runs it so); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from tests.e2e.netns import TwoHosts, two_hosts, wait_for_line

NETOPROC = [sys.executable, "-m", "netoproc"]
OBSERVE = str(Path(__file__).parents[1] / "tests" / "e2e" / "observe.py")
SMALL_PAYLOAD = "18"  # bytes of UDP payload: 46-byte IP packets


def tx_packets(hosts: TwoHosts) -> int:
    path = f"/sys/class/net/{hosts.veth_a}/statistics/tx_packets"
    return int(subprocess.run(["ip", "netns", "exec", hosts.a, "cat", path],
                              capture_output=True, text=True, check=True).stdout)  # fmt: skip


def spawn(argv: list[str]) -> int:
    """A child, silenced, whose rusage `reap` reads."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execvp(argv[0], argv)
    return pid


def reap(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MiB) of a child, once it has finished."""
    _, _, usage = os.wait4(pid, 0)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


IPERF3_STREAM_SETUP = 1


def blast(hosts: TwoHosts, seconds: int) -> tuple[float, int]:
    """iperf3's unlimited UDP flood; (its packets per second, the kernel's packet count)."""
    server = hosts.start(hosts.b, ["iperf3", "-s", "-1"])
    time.sleep(0.5)
    before = tx_packets(hosts)
    sender = hosts.start(hosts.a, ["iperf3", "-c", hosts.b4, "-u", "-b", "0", "-l", SMALL_PAYLOAD,
                                   "-t", str(seconds), "--json"])  # fmt: skip
    report = json.loads(sender.communicate(timeout=seconds + 60)[0])
    sent = tx_packets(hosts) - before
    server.wait(timeout=30)
    return report["end"]["sum"]["packets"] / seconds, sent


def loss(hosts: TwoHosts, seconds: int) -> tuple[float, int, int]:
    """(iperf3's rate, datagrams iperf3 sent, datagrams of that flow netoproc counted)."""
    server = hosts.start(hosts.b, ["iperf3", "-s", "-1"])
    time.sleep(0.5)
    observer = hosts.start(hosts.a, [sys.executable, OBSERVE, str(seconds + 4)])
    wait_for_line(observer.stderr, "ready")
    sender = hosts.start(hosts.a, ["iperf3", "-c", hosts.b4, "-u", "-b", "0", "-l", SMALL_PAYLOAD,
                                   "-t", str(seconds), "--json"])  # fmt: skip
    report = json.loads(sender.communicate(timeout=seconds + 60)[0])
    sent = int(report["end"]["sum"]["packets"])
    snapshot = json.loads(observer.communicate(timeout=120)[0])
    server.wait(timeout=30)
    flood = [c for c in snapshot["connections"] if c["proto"] == 17 and c["rport"] == 5201]
    # iperf3 opens a UDP stream with one datagram of its own before the data
    # (UDP_CONNECT_MSG); its report counts only the data
    seen = sum(c["total"]["tx_packets"] for c in flood) - IPERF3_STREAM_SETUP
    return sent / seconds, sent, seen


def cpu_against_nethogs(hosts: TwoHosts, seconds: int) -> tuple[float, float, int]:
    netoproc = spawn(["ip", "netns", "exec", hosts.a, *NETOPROC, "--duration", str(seconds + 4)])
    nethogs = spawn(["ip", "netns", "exec", hosts.a, "nethogs", "-t", "-C", "-d", "1",
                     "-c", str(seconds + 4), hosts.veth_a])  # fmt: skip
    time.sleep(2)
    _, sent = blast(hosts, seconds)
    netoproc_cpu, _ = reap(netoproc)
    nethogs_cpu, _ = reap(nethogs)
    return netoproc_cpu / sent * 1e6, nethogs_cpu / sent * 1e6, sent


def connections_rss(hosts: TwoHosts, count: int, hold: int) -> float:
    server = hosts.peer(hosts.b, "hold-server", "5001")
    wait_for_line(server.stdout, "ready")
    netoproc = spawn(["ip", "netns", "exec", hosts.a, *NETOPROC, "--duration", str(hold + 10)])
    time.sleep(2)
    holder = hosts.peer(hosts.a, "hold-conns", "np-holder", hosts.b4, "5001", str(count), str(hold))
    holder.communicate(timeout=hold + 300)
    return reap(netoproc)[1]


def monitor(hosts: TwoHosts) -> tuple[int, int]:
    """The monitor in a pseudo-terminal: (pid, terminal fd)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.execvp("ip", ["ip", "netns", "exec", hosts.a, *NETOPROC])
    return pid, fd


def read_for(fd: int, seconds: float, until: bytes | None = None) -> bytes:
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and until in data):
        ready, _, _ = select.select([fd], [], [], 0.01)
        if ready:
            try:
                data += os.read(fd, 65536)
            except OSError:
                break
    return data


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle(hosts: TwoHosts, seconds: int) -> tuple[float, float]:
    """Steady-state CPU, % of a core, with no traffic: (snapshot mode, monitor)."""
    snapshot = spawn(["ip", "netns", "exec", hosts.a, *NETOPROC, "--duration", str(seconds + 6)])
    time.sleep(3)  # past start-up
    before = cpu_seconds(snapshot)
    time.sleep(seconds)
    snapshot_cpu = cpu_seconds(snapshot) - before
    reap(snapshot)
    pid, fd = monitor(hosts)
    read_for(fd, 3.0)
    before = cpu_seconds(pid)
    read_for(fd, seconds)  # draining the terminal, as a terminal would
    tui_cpu = cpu_seconds(pid) - before
    os.write(fd, b"q")
    read_for(fd, 5.0)
    reap(pid)
    return snapshot_cpu / seconds * 100, tui_cpu / seconds * 100


def startup(hosts: TwoHosts) -> tuple[float, float]:
    started = time.monotonic()
    subprocess.run(["ip", "netns", "exec", hosts.a, *NETOPROC, "--duration", "1"],
                   capture_output=True, check=True, timeout=60)  # fmt: skip
    wall = time.monotonic() - started
    started = time.monotonic()
    pid, fd = monitor(hosts)
    screen = read_for(fd, 10.0, until=b"TX Total")  # the process table's header is drawn
    first_frame = time.monotonic() - started if b"TX Total" in screen else float("nan")
    os.write(fd, b"q")
    read_for(fd, 5.0)
    reap(pid)
    return wall, first_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    # An installed package has its bytecode compiled (pip does it); a source
    # tree may not, and compiling 40 modules would be timed as start-up.
    compileall.compile_dir(Path(__file__).parents[1] / "src" / "netoproc", quiet=1)
    flood, conns, hold, quiet = (2, 200, 3, 3) if args.quick else (10, 5000, 60, 30)
    tag = os.getpid() % 10000
    rows: list[tuple[str, str]] = []
    for hosts in two_hosts(f"l{tag}"):
        rate, sent, seen = loss(hosts, flood)
        rows.append(("UDP flood, 46-byte IP packets (iperf3 -u -b 0)", f"{rate:,.0f} packets/s"))
        lost = 1 - seen / sent
        counted = f"{sent:,} / {seen:,} ({lost:.2%} lost)"
        rows.append(("datagrams sent (iperf3) / counted by netoproc", counted))
    for hosts in two_hosts(f"c{tag}"):
        ours, theirs, sent = cpu_against_nethogs(hosts, flood)
        rows.append((f"CPU per packet, same flood ({sent:,} packets): netoproc / nethogs -C",
                     f"{ours:.2f} / {theirs:.2f} µs ({ours / theirs:.2f}x)"))  # fmt: skip
    for hosts in two_hosts(f"r{tag}"):
        rss = connections_rss(hosts, conns, hold)
        rows.append((f"peak RSS, {conns:,} TCP connections held {hold} s", f"{rss:.0f} MiB"))
    for hosts in two_hosts(f"i{tag}"):
        snapshot, tui = idle(hosts, quiet)
        cpu = f"{snapshot:.2f}% / {tui:.2f}% of a core"
        rows.append((f"idle CPU over {quiet} s: snapshot / monitor", cpu))
    for hosts in two_hosts(f"s{tag}"):
        wall, frame = startup(hosts)
        times = f"{wall:.2f} s / {frame:.2f} s"
        rows.append(("`--duration 1` wall time / first monitor frame", times))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", flush=True)


if __name__ == "__main__":
    main()
