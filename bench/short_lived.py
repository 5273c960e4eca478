"""How many processes that live only milliseconds after their first packet get attributed.

    sudo python bench/short_lived.py [--count 200] [--lifetimes 0,1,2,5,10] [--pps 0]

Builds two network namespaces joined by a veth pair (tests/e2e/netns.py); `b`
echoes UDP. In `a`, `netoproc --format json` runs while a launcher forks
`--count` clients per lifetime, one after another: each names itself
`np-short`, sends one DNS question to port 53 of `b`, waits for the echo
(about 0.1 ms),
sleeps the lifetime, and exits with its socket still open, which is when the
kernel forgets the socket. This is what a `dig` against a resolver that far
away looks like, or a `curl` that fails fast. `--pps` adds a stream of UDP
datagrams from another process (`np-load`) to keep the capture and engine
busy meanwhile. The answer is the share of clients netoproc's JSON names by
pid and name; the rest went to `unknown`.

Needs root (namespaces, capture). Everything it starts, it stops by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))  # for tests.e2e

from tests.e2e.netns import TwoHosts, wait_for_line  # noqa: E402
from tests.e2e.peers import set_name  # noqa: E402

PORT = 53  # the fast lane watches TCP SYNs and DNS queries, what short-lived clients send
# one DNS question, `short.test A`: the echo comes back as its (odd) answer
QUERY = bytes.fromhex("1234010000010000000000000573686f727404746573740000010001")
LOAD_PORT = 9
FIRST_PORT = 20000
NAME = "np-short"
GAP = 0.03  # between clients: each one's lookups are done before the next starts


def launch(host: str, ports: range, lifetime_ms: float) -> list[int]:
    """Fork a client from each of `ports`, one after another; their pids."""
    pids = []
    for port in ports:
        pid = os.fork()
        if pid == 0:  # the client: nothing here may raise past os._exit
            try:
                set_name(NAME)
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(2)
                s.bind(("0.0.0.0", port))
                s.connect((host, PORT))
                s.send(QUERY)
                s.recv(64)
                time.sleep(lifetime_ms / 1000)
            finally:
                os._exit(0)  # the socket closes with the process, not before
        os.waitpid(pid, 0)
        pids.append(pid)
        time.sleep(GAP)
    return pids


def client_main(host: str, count: int, lifetimes: list[float]) -> None:
    """Runs inside namespace a (re-executed by `main`)."""
    time.sleep(2)  # netoproc is capturing by then (its first snapshot takes < 1 s)
    # a port of its own for each client: a 5-tuple used again within minutes is,
    # to netoproc as to the kernel's counters, the same flow as before
    result = {
        str(ms): launch(host, range(FIRST_PORT + i * count, FIRST_PORT + (i + 1) * count), ms)
        for i, ms in enumerate(lifetimes)
    }
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="clients per lifetime")
    parser.add_argument("--lifetimes", default="0,1,2,5,10", help="milliseconds, comma-separated")
    parser.add_argument("--pps", type=int, default=0, help="background UDP datagrams per second")
    parser.add_argument("--client", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        lifetimes = [float(x) for x in args.lifetimes.split(",")]
    except ValueError:
        parser.error(f"--lifetimes: not a list of milliseconds: {args.lifetimes!r}")
    if not 1 <= args.count * len(lifetimes) <= 60000 - FIRST_PORT or min(lifetimes) < 0:
        parser.error("--count x lifetimes must be 1 to 40,000 clients, each lifetime >= 0")
    if args.pps < 0:
        parser.error("--pps must be 0 or more")
    if args.client:
        client_main(args.client[0], int(args.client[1]), lifetimes)
        return

    hosts = TwoHosts(f"s{os.getpid() % 100000}")
    hosts.up()
    try:
        echo = hosts.peer(hosts.b, "udp-server", str(PORT))
        wait_for_line(echo.stdout, "ready")
        seconds = 3600  # ended by SIGTERM once the clients are done; it prints then
        if args.pps:
            sink = hosts.peer(hosts.b, "udp-sink", "np-sink", str(LOAD_PORT))
            wait_for_line(sink.stdout, "ready")
            hosts.peer(hosts.a, "udp-stream", "np-load", hosts.b4, str(LOAD_PORT),
                       str(args.pps), str(seconds))  # fmt: skip
        monitor = hosts.netoproc(hosts.a, "--duration", str(seconds), "--format", "json")
        launcher = hosts.start(hosts.a, [sys.executable, __file__, "--lifetimes", args.lifetimes,
                                         "--client", hosts.b4, str(args.count)])  # fmt: skip
        launched, err = launcher.communicate(timeout=600)
        if launcher.returncode != 0:
            raise SystemExit(f"launcher failed: {err.strip()}")
        time.sleep(1)  # the last clients' packets reach the engine
        monitor.send_signal(signal.SIGTERM)
        out, err = monitor.communicate(timeout=60)
        if monitor.returncode != 0:
            raise SystemExit(f"netoproc failed: {err.strip()}")
        named = {row["pid"] for row in json.loads(out) if row["process"] == NAME}
        print(f"{args.count} clients per lifetime, background {args.pps} datagrams/s")
        for ms, pids in json.loads(launched).items():
            hits = sum(pid in named for pid in pids)
            print(f"  lives {float(ms):4g} ms after its first packet: "
                  f"{hits}/{len(pids)} attributed ({100 * hits / len(pids):.1f} %)")  # fmt: skip
    finally:
        hosts.down()


if __name__ == "__main__":
    main()
