"""Floods and scans: netoproc beside `nethogs -C` under hostile traffic.

    sudo python bench/flood.py [--kind syn|scan|udp|icmp] [--seconds 300] [--every 10] [--pps 0]

Namespace `b` writes spoofed frames onto the veth pair toward namespace `a`
(tests/e2e/flood_sender.py: SYNs from random sources to port 80, a SYN scan
of every port, UDP from random source ports, ICMP echoes from random
sources) as fast as it can, or at `--pps`. Port 80 has no listener, so `a`
answers each SYN with a RST (its default route points at `b`, so the
backscatter really leaves). In `a`, a live session (the same code as
`netoproc`) and `nethogs -C` watch the same traffic at the same time.

Every `--every` seconds it samples both: RSS and CPU (from /proc), and for
netoproc its flows, packets, kernel and queue drops, folded packets and the
largest flood row. At the end: packets that crossed the veth (the kernel's
counters are the witness), CPU per packet for each, RSS after the first
minute, and the engine's bounds reached.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from tests.e2e.netns import TwoHosts, two_hosts, wait_for_line

SENDER = str(Path(__file__).parents[1] / "tests" / "e2e" / "flood_sender.py")
PORT = 80

DRIVER = """
import json, resource, sys, time
from netoproc.clock import SystemClock
from netoproc.output.text import flood_line
from netoproc.session import LiveSession, Settings

session = LiveSession(Settings(), SystemClock())
every, seconds = float(sys.argv[1]), float(sys.argv[2])
state = {"next": 0.0, "last": None, "lag": 0.0}

def sample(snapshot):
    now = time.monotonic()
    if state["last"] is not None:
        state["lag"] = max(state["lag"], now - state["last"])
    state["last"] = now
    if snapshot.time < state["next"]:
        return
    state["next"] = snapshot.time + every
    usage = resource.getrusage(resource.RUSAGE_SELF)
    status = open("/proc/self/status").read()
    rss = int(next(l for l in status.splitlines() if l.startswith("VmRSS")).split()[1])
    h = snapshot.health
    top = h.floods[0] if h.floods else None
    print(json.dumps({
        "t": snapshot.time, "rss_kib": rss, "cpu": usage.ru_utime + usage.ru_stime,
        "flows": len(session.engine.flows), "packets": h.packets,
        "drops": h.kernel_drops + h.queue_drops, "folded": h.folded_packets,
        "flood_rows": len(h.floods), "sources": top.sources if top else 0,
        "tick_gap": state["lag"], "limits": dict(h.limits),
    }), flush=True)
    state["lag"] = 0.0

print("ready", file=sys.stderr, flush=True)
try:
    last = session.run(seconds, on_tick=sample)
finally:
    session.close()
print(json.dumps({"rows": [flood_line(row) for row in last.health.floods[:5]]}), flush=True)
"""


def counters(hosts: TwoHosts) -> int:
    """Packets that crossed a's end of the veth, both ways."""
    base = f"/sys/class/net/{hosts.veth_a}/statistics"
    argv = ["ip", "netns", "exec", hosts.a, "cat", f"{base}/rx_packets", f"{base}/tx_packets"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return sum(int(x) for x in out.stdout.split())


def proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("syn", "scan", "udp", "icmp"), default="syn")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--every", type=float, default=10)
    parser.add_argument("--pps", type=float, default=0, help="0: as fast as the sender can")
    parser.add_argument("--no-nethogs", action="store_true")
    args = parser.parse_args()
    for hosts in two_hosts(f"f{os.getpid() % 10000}"):
        subprocess.run(["ip", "-n", hosts.a, "route", "add", "default", "via", hosts.b4],
                       check=True)  # fmt: skip
        link = subprocess.check_output(["ip", "-n", hosts.a, "-j", "link", "show", hosts.veth_a])
        mac = json.loads(link)[0]["address"]
        driver = hosts.start(hosts.a, [sys.executable, "-c", DRIVER, str(args.every),
                                       str(args.seconds + 4)])  # fmt: skip
        wait_for_line(driver.stderr, "ready")
        nethogs = None
        if not args.no_nethogs:
            nethogs = hosts.start(hosts.a, ["nethogs", "-t", "-C", "-d", "1", hosts.veth_a])
        time.sleep(2)
        before, started = counters(hosts), time.monotonic()
        sender = hosts.start(hosts.b, [sys.executable, SENDER, args.kind, hosts.veth_b, mac,
                                       hosts.a4, str(PORT), str(args.seconds),
                                       str(args.pps)])  # fmt: skip
        hogs: list[tuple[float, float, float]] = []
        while sender.poll() is None and time.monotonic() < started + args.seconds + 60:
            if nethogs is not None and nethogs.poll() is None:
                hogs.append((time.monotonic() - started, *proc_sample(nethogs.pid)))
            time.sleep(args.every)
        sent = int(sender.communicate(timeout=60)[0].strip() or 0)
        seconds = time.monotonic() - started
        time.sleep(1)
        crossed = counters(hosts) - before
        if nethogs is not None:
            hogs.append((time.monotonic() - started, *proc_sample(nethogs.pid)))
            nethogs.kill()
        out, err = driver.communicate(timeout=args.seconds + 120)
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        samples = [line for line in lines if "rows" not in line]
        report(args, samples, hogs, sent, seconds, crossed, err)
        for final in lines:
            for row in final.get("rows", ()):
                print(f"netoproc --verbose: {row}")


def report(args: argparse.Namespace, samples: list[dict[str, object]],
           hogs: list[tuple[float, float, float]], sent: int, seconds: float, crossed: int,
           err: str) -> None:  # fmt: skip
    if not samples:
        print("no samples", err)
        return
    if "Traceback" in err:
        print(err)
    start = float(str(samples[0]["t"]))
    print(f"{args.kind} flood: {sent:,} frames sent in {seconds:.0f} s ({sent / seconds:,.0f}/s); "
          f"{crossed:,} packets crossed the veth (in and out)")  # fmt: skip
    print(f"{'s':>6}{'RSS MiB':>9}{'CPU %':>7}{'flows':>7}{'packets':>12}{'drops':>11}"
          f"{'folded':>12}{'rows':>6}{'sources':>13}{'tick gap':>10}")  # fmt: skip
    previous = (start, 0.0)
    for s in samples:
        t, cpu = float(str(s["t"])), float(str(s["cpu"]))
        share = (cpu - previous[1]) / (t - previous[0]) * 100 if t > previous[0] else 0.0
        previous = (t, cpu)
        print(f"{t - start:>6.0f}{int(str(s['rss_kib'])) / 1024:>9.1f}{share:>7.0f}"
              f"{s['flows']:>7}{int(str(s['packets'])):>12,}{int(str(s['drops'])):>11,}"
              f"{int(str(s['folded'])):>12,}{s['flood_rows']:>6}{int(str(s['sources'])):>13,}"
              f"{float(str(s['tick_gap'])):>9.2f}s")  # fmt: skip
    last = samples[-1]
    after = [s for s in samples if float(str(s["t"])) - start >= min(60, seconds / 3)] or samples
    rss = [int(str(s["rss_kib"])) / 1024 for s in after]
    cpu = float(str(last["cpu"])) - float(str(samples[0]["cpu"]))
    print(f"netoproc: RSS after the first minute {min(rss):.1f}-{max(rss):.1f} MiB; "
          f"CPU {cpu:.1f} s, {cpu / max(crossed, 1) * 1e6:.2f} us a packet; "
          f"drops {int(str(last['drops'])):,} of {crossed:,}; "
          f"folded {int(str(last['folded'])):,} packets; flows at most "
          f"{max(int(str(s['flows'])) for s in samples)}")  # fmt: skip
    print(f"netoproc bounds reached: {last['limits']}")
    if hogs:
        hog_cpu, low, high = (
            hogs[-1][1] - hogs[0][1],
            min(h[2] for h in hogs),
            max(h[2] for h in hogs),
        )
        print(f"nethogs -C: RSS {low:.1f}-{high:.1f} MiB; CPU {hog_cpu:.1f} s, "
              f"{hog_cpu / max(crossed, 1) * 1e6:.2f} us a packet")  # fmt: skip


if __name__ == "__main__":
    main()
