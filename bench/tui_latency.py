"""Key-to-repaint latency of the monitor while it captures 100,000 packets a second.

    sudo python bench/tui_latency.py [--pps 100000] [--presses 60] [--flood syn]

Builds two network namespaces joined by a veth pair (tests/e2e/netns.py). In
the first, a process named `np-blast` sends small UDP datagrams to the second
at `--pps`; netoproc runs there too, in a pseudo-terminal of 160x48, capturing
everything. Once the blaster shows up on its screen, the benchmark types keys
into the terminal and times each one from the write to the moment the bytes
of the new screen come back: `2`/`1` switch between the Connection and
Process views (a whole view drawn), `s` cycles the sort (the rows re-sorted
and redrawn). It prints the latencies, the packet rate the interface really
sent, and the drops netoproc reported.

With `--flood KIND`, the second namespace also floods the first with
spoofed-source traffic (tests/e2e/flood_sender.py: `syn`, `scan`, `udp`,
`icmp`; as fast as it can, or at `--flood-pps`) while the keys are typed.

Needs root (namespaces, capture). Everything it starts, it stops by pid.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))  # for tests.e2e

from tests.e2e.netns import TwoHosts, wait_for_line  # noqa: E402
from tests.e2e.peers import set_name  # noqa: E402

SIZE = (160, 48)
PORT = 9
BATCH = 50
FLOOD_SENDER = str(ROOT / "tests" / "e2e" / "flood_sender.py")
SORT_NAMES = ("pid", "name", "user", "sockets", "connections", "rx rate", "tx rate",
              "rx total", "tx total", "traffic")  # fmt: skip


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int),
    )  # fmt: skip


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("hdr", _Msghdr), ("len", ctypes.c_uint))


def blast(host: str, pps: int, seconds: float) -> None:
    """Send `pps` 64-byte datagrams a second, for `seconds`.

    sendmmsg sends a batch per system call, so one process reaches 100,000
    packets a second without taking a whole core from netoproc.
    """
    set_name("np-blast")
    libc = ctypes.CDLL(None, use_errno=True)
    payload = ctypes.create_string_buffer(64)
    iov = _Iovec(ctypes.cast(payload, ctypes.c_void_p), 64)
    batch = (_Mmsghdr * BATCH)()
    for message in batch:
        message.hdr.iov = ctypes.pointer(iov)
        message.hdr.iovlen = 1
    sockets = []
    for i in range(4):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((host, PORT + i))
        sockets.append(s)
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        while sent + BATCH <= int((now - start) * pps):
            done = libc.sendmmsg(sockets[sent // BATCH % 4].fileno(), batch, BATCH, 0)
            sent += BATCH if done < 0 else done  # an ICMP error reported back: carry on
        time.sleep(0.001)


class Terminal:
    """netoproc in a pseudo-terminal, its output read on a thread and timestamped."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, cwd=ROOT)  # fmt: skip
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self.chunks: list[tuple[int, float]] = []  # (end offset, when read)
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                data = b""
            with self.changed:
                if not data:
                    self.chunks.append((-1, time.monotonic()))
                    self.changed.notify_all()
                    return
                self.output += data
                self.chunks.append((len(self.output), time.monotonic()))
                self.changed.notify_all()

    def wait_for(self, marker: bytes, start: int, timeout: float) -> float:
        """When `marker` first appeared in the output after offset `start`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = self.output.find(marker, start)
                if found >= 0:
                    end = found + len(marker)
                    return next(t for offset, t in self.chunks if offset >= end)
                left = deadline - time.monotonic()
                if left <= 0 or (self.chunks and self.chunks[-1][0] == -1):
                    raise TimeoutError(f"{marker!r} never appeared")
                self.changed.wait(left)

    def press(self, key: bytes, marker: bytes, timeout: float = 10.0) -> float:
        """Type `key`; seconds until the screen that shows `marker` came back."""
        with self.changed:
            start = len(self.output)
        sent = time.monotonic()
        os.write(self.master, key)
        return self.wait_for(marker, start, timeout) - sent

    def close(self) -> None:
        if self.proc.poll() is None:
            os.write(self.master, b"q")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        os.close(self.master)


def counter(hosts: TwoHosts, name: str) -> int:
    path = f"/sys/class/net/{hosts.veth_a}/statistics/{name}"
    out = subprocess.run(["ip", "netns", "exec", hosts.a, "cat", path], capture_output=True,
                         text=True, check=True, timeout=10)  # fmt: skip
    return int(out.stdout)


def report(name: str, samples: list[float]) -> None:
    ms = sorted(s * 1e3 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    print(f"{name:<28} n={len(ms):<3} median {statistics.median(ms):6.1f} ms   "
          f"p95 {p95:6.1f} ms   worst {ms[-1]:6.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pps", type=int, default=100_000)
    parser.add_argument("--presses", type=int, default=60)
    parser.add_argument("--flood", choices=("syn", "scan", "udp", "icmp"))
    parser.add_argument("--flood-pps", type=int, default=0, help="0: as fast as it can")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/tui_latency.py: run as root (network namespaces and capture)")

    hosts = TwoHosts(f"lat{os.getpid() % 10000}")
    terminal: Terminal | None = None
    blaster: subprocess.Popen[str] | None = None
    try:
        hosts.up()
        seconds = 60 + args.presses
        blaster = hosts.start(hosts.a, [sys.executable, __file__, "--blast", hosts.b4,
                                        str(args.pps), str(seconds)])  # fmt: skip
        since_start = counter(hosts, "tx_packets")
        terminal = Terminal(["ip", "netns", "exec", hosts.a, sys.executable, "-m", "netoproc"])
        terminal.wait_for(b"np-blast", 0, timeout=30)
        if args.flood:
            subprocess.run(["ip", "-n", hosts.a, "route", "add", "default", "via", hosts.b4],
                           check=True, timeout=10)  # fmt: skip
            link = subprocess.check_output(["ip", "-n", hosts.a, "-j", "link", "show",
                                            hosts.veth_a], timeout=10)  # fmt: skip
            flooder = hosts.start(hosts.b, [sys.executable, FLOOD_SENDER, args.flood, hosts.veth_b,
                                            json.loads(link)[0]["address"], hosts.a4, "80",
                                            str(seconds), str(args.flood_pps)])  # fmt: skip
            wait_for_line(flooder.stderr, "ready")
            flooded, flood_began = counter(hosts, "rx_packets"), time.monotonic()
        time.sleep(3)  # let the rates settle
        packets, started = counter(hosts, "tx_packets"), time.monotonic()

        switches: list[float] = []
        sorts: list[float] = []
        for _ in range(args.presses // 2):
            switches.append(terminal.press(b"2", b"Retrans"))
            time.sleep(0.2)
            switches.append(terminal.press(b"1", b"Sockets"))
            time.sleep(0.2)
        for i in range(args.presses // 2):
            name = SORT_NAMES[i % len(SORT_NAMES)]
            arrow = "↓" if name not in ("pid", "name", "user") else "↑"
            sorts.append(terminal.press(b"s", f"sort: {name} {arrow}".encode()))
            time.sleep(0.2)

        rate = (counter(hosts, "tx_packets") - packets) / (time.monotonic() - started)
        sent = counter(hosts, "tx_packets") - since_start
        drops = re.findall(rb"drops ([0-9,]+)", terminal.output)
        dropped = int(drops[-1].replace(b",", b"")) if drops else 0
        print(f"captured while measuring: {rate:,.0f} packets/s sent on {hosts.veth_a}; "
              f"since netoproc started: {sent:,} sent, {dropped:,} reported dropped "
              f"({dropped / max(sent, 1):.2%})")  # fmt: skip
        if args.flood:
            arrived, lasted = counter(hosts, "rx_packets") - flooded, time.monotonic() - flood_began
            print(f"{args.flood} flood: {arrived:,} packets arrived on {hosts.veth_a} in "
                  f"{lasted:.0f} s ({arrived / lasted:,.0f}/s)")  # fmt: skip
        report("view switch (2 / 1)", switches)
        report("sort (s)", sorts)
    finally:
        if terminal is not None:
            terminal.close()
        if blaster is not None and blaster.poll() is None:
            blaster.send_signal(signal.SIGKILL)
        hosts.down()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--blast"]:
        blast(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        main()
