"""Test hosts in network namespaces, with tcpdump running beside them as the witness.

`TwoHosts` makes namespaces `a` and `b` joined by a veth pair, with IPv4
(198.18.0.0/24) and IPv6 (2001:db8::/64) addresses, starts processes inside
them, and removes everything (processes first, by pid) on exit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PEERS = str(Path(__file__).with_name("peers.py"))
LINKEMU = str(Path(__file__).with_name("linkemu.py"))
SRC = str(Path(__file__).parents[2] / "src")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@dataclass
class TwoHosts:
    tag: str
    a: str = ""
    b: str = ""
    a4: str = "198.18.0.1"
    b4: str = "198.18.0.2"
    a6: str = "2001:db8::1"
    b6: str = "2001:db8::2"
    veth_a: str = "npa0"
    veth_b: str = "npb0"
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.a, self.b = f"np{self.tag}a", f"np{self.tag}b"

    def up(self) -> None:
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        sh("ip", "link", "add", self.veth_a, "netns", self.a, "type", "veth",
           "peer", "name", self.veth_b, "netns", self.b)  # fmt: skip
        for ns, dev, v4, v6 in (
            (self.a, self.veth_a, self.a4, self.a6),
            (self.b, self.veth_b, self.b4, self.b6),
        ):
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def slow_link(self, delay: float, loss: float = 0.0, seed: int = 1) -> None:
        """A second link between the hosts, through the user-space link emulator:
        a at 198.18.1.1 / 2001:db8:1::1, b at 198.18.1.2 / 2001:db8:1::2."""
        emulator = self.start(None, [sys.executable, LINKEMU, self.a, self.b, str(delay),
                                     str(loss), str(seed)])  # fmt: skip
        wait_for_line(emulator.stdout, "ready")

    def start(self, ns: str | None, argv: Sequence[str]) -> subprocess.Popen[str]:
        """A process in namespace `ns` (None: this one), ended by pid on teardown."""
        env = {**os.environ, "PYTHONPATH": SRC}
        prefix = ["ip", "netns", "exec", ns] if ns else []
        proc = subprocess.Popen(
            [*prefix, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.procs.append(proc)
        return proc

    def peer(self, ns: str, *args: str) -> subprocess.Popen[str]:
        return self.start(ns, [sys.executable, PEERS, *args])

    def netoproc(self, ns: str, *args: str) -> subprocess.Popen[str]:
        return self.start(ns, [sys.executable, "-m", "netoproc", *args])

    def tcpdump(self, ns: str, iface: str, path: Path) -> subprocess.Popen[str]:
        proc = self.start(ns, ["tcpdump", "-i", iface, "-n", "-U", "-B", "65536",
                               "-s", "0", "-w", str(path)])  # fmt: skip
        wait_for_line(proc.stderr, "listening on")
        return proc


def two_hosts(tag: str) -> Iterator[TwoHosts]:
    hosts = TwoHosts(tag)
    try:
        hosts.up()
        yield hosts
    finally:
        hosts.down()


def wait_for_line(stream: IO[str] | None, needle: str, timeout: float = 20.0) -> str:
    assert stream is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"never saw {needle!r}; got {seen!r}")


def stop_tcpdump(proc: subprocess.Popen[str]) -> str:
    """Stop tcpdump cleanly; returns its summary and checks it dropped nothing."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    dropped = re.search(r"(\d+) packets? dropped by kernel", err)
    assert dropped and dropped.group(1) == "0", err
    return err
