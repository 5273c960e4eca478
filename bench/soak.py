"""Soak: a long run at a steady packet rate with connection and process churn.

    sudo python bench/soak.py [--seconds 1800] [--every 30]

Namespace `a` runs a live session (the same code as `netoproc`) while:
- a steady UDP stream flows to namespace `b` (a few thousand packets/s);
- every half second a new short-lived process connects over TCP, moves data
  and exits (connection churn and process churn, new pids all the time);
- DNS questions go to a resolver in `b` (dnsmasq), answered or not.

Every `--every` seconds it samples the session's process: RSS, threads,
open descriptors, and the engine's table sizes (flows, process rows, DNS
log, pending DNS transactions). At the end it prints the samples and a
verdict: RSS after warm-up flat within 10 %, tables bounded, no growth in
threads or descriptors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from tests.e2e.netns import TwoHosts, two_hosts, wait_for_line

DRIVER = """
import json, os, sys, threading
from netoproc.clock import SystemClock
from netoproc.session import LiveSession, Settings

session = LiveSession(Settings(), SystemClock())
every, seconds = float(sys.argv[1]), float(sys.argv[2])
state = {"next": 0.0}

def sample(snapshot):
    if snapshot.time < state["next"]:
        return
    state["next"] = snapshot.time + every
    status = open("/proc/self/status").read()
    rss = int(next(l for l in status.splitlines() if l.startswith("VmRSS")).split()[1])
    engine = session.engine
    dns = engine.dns
    print(json.dumps({
        "t": snapshot.time, "rss_kib": rss, "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")), "flows": len(engine.flows),
        "slots": engine.table.capacity, "rows": len(snapshot.processes),
        "dns_log": len(dns._log) if dns else 0,
        "dns_pending": len(dns._pending) if dns else 0,
        "packets": snapshot.health.packets, "drops": snapshot.health.kernel_drops,
    }), flush=True)

print("ready", file=sys.stderr, flush=True)
try:
    session.run(seconds, on_tick=sample)
finally:
    session.close()
"""


def churn(hosts: TwoHosts, seconds: float) -> None:
    """New processes and connections all the time, plus DNS questions."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        hosts.peer(hosts.a, "tcp-client", f"np-churn{n % 100}", hosts.b4, "5001", "20000", "100")
        if n % 2 == 0:
            name = f"n{n}.soak.test" if n % 4 else f"nx{n}.nowhere.test"
            hosts.start(hosts.a, ["dig", "+tries=1", "+time=1", f"@{hosts.b4}", name])
        time.sleep(0.5)
        # reap what has finished, so the harness itself does not grow
        for proc in [p for p in hosts.procs if p.poll() is not None]:
            hosts.procs.remove(proc)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1800)
    parser.add_argument("--every", type=float, default=30)
    args = parser.parse_args()
    for hosts in two_hosts(f"k{os.getpid() % 10000}"):
        for server in (hosts.peer(hosts.b, "tcp-server", "5001"),
                       hosts.peer(hosts.b, "udp-server", "5002")):  # fmt: skip
            wait_for_line(server.stdout, "ready")
        resolver = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--pid-file=",
                    "--bind-interfaces", f"--listen-address={hosts.b4}",
                    "--address=/soak.test/198.18.9.9", "--local=/nowhere.test/"]  # fmt: skip
        hosts.start(hosts.b, resolver)
        driver = hosts.start(hosts.a, [sys.executable, "-c", DRIVER, str(args.every),
                                       str(args.seconds)])  # fmt: skip
        wait_for_line(driver.stderr, "ready")
        # a steady stream: ~2,000 datagrams/s for the whole run
        hosts.peer(hosts.a, "udp-stream", "np-steady", hosts.b4, "5002", "2000",
                   str(int(args.seconds)))  # fmt: skip
        churn(hosts, args.seconds - 5)
        out, err = driver.communicate(timeout=args.seconds + 120)
        samples = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        report(samples, err)


def report(samples: list[dict[str, float]], err: str) -> None:
    if not samples:
        print("no samples", err)
        return
    start = samples[0]["t"]
    print(f"{'s':>6}{'RSS MiB':>9}{'threads':>9}{'fds':>6}{'flows':>7}{'slots':>7}{'rows':>7}"
          f"{'dns log':>9}{'pending':>9}{'packets':>11}{'drops':>7}")  # fmt: skip
    for s in samples:
        print(f"{s['t'] - start:>6.0f}{s['rss_kib'] / 1024:>9.1f}{s['threads']:>9}{s['fds']:>6}"
              f"{s['flows']:>7}{s['slots']:>7}{s['rows']:>7}{s['dns_log']:>9}{s['dns_pending']:>9}"
              f"{s['packets']:>11,}{s['drops']:>7}")  # fmt: skip
    warm = [s for s in samples if s["t"] - start >= min(300, (samples[-1]["t"] - start) / 3)]
    rss = [s["rss_kib"] for s in warm]
    spread = (max(rss) - min(rss)) / min(rss)
    print(
        f"RSS after warm-up: {min(rss) / 1024:.1f}-{max(rss) / 1024:.1f} MiB ({spread:.1%} spread)"
    )
    threads, fds = sorted({s["threads"] for s in samples}), sorted({s["fds"] for s in warm})
    flows, log = max(s["flows"] for s in samples), max(s["dns_log"] for s in samples)
    rows = max(s["rows"] for s in samples)
    print(
        f"threads {threads}, fds {fds}, flows at most {flows}, process rows at most {rows}, "
        f"DNS log at most {log}"
    )


if __name__ == "__main__":
    main()
