"""A user-space link emulator: delay and loss between two namespaces.

This kernel has no netem, so the tests make their own slow, lossy link: one
TUN device in each namespace, both held open by a forwarder process that
passes every packet to the other side after `delay` seconds, dropping a
`loss` share of them. TUN devices keep working after being moved into
another namespace, so the forwarder runs here and serves both.

    python linkemu.py NS_A NS_B DELAY LOSS SEED
creates tun devices `npta` (in NS_A: 198.18.1.1/24, 2001:db8:1::1/64) and
`nptb` (in NS_B: .2 / ::2), prints "ready", and forwards until killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import os
import random
import select
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SIDES = (("npta", "198.18.1.1", "2001:db8:1::1"), ("nptb", "198.18.1.2", "2001:db8:1::2"))


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def main() -> None:
    ns_a, ns_b, delay, loss, seed = (
        sys.argv[1],
        sys.argv[2],
        float(sys.argv[3]),
        float(sys.argv[4]),
        int(sys.argv[5]),
    )
    fds = []
    for (name, v4, v6), ns in zip(SIDES, (ns_a, ns_b), strict=True):
        fds.append(open_tun(name))
        ip("link", "set", name, "netns", ns)
        ip("-n", ns, "addr", "add", f"{v4}/24", "dev", name)
        ip("-n", ns, "addr", "add", f"{v6}/64", "dev", name, "nodad")
        ip("-n", ns, "link", "set", name, "up")
    print("ready", flush=True)
    rng = random.Random(seed)
    due: list[tuple[float, int, int, bytes]] = []  # (when, order, destination fd, packet)
    order = 0
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else 1.0
        readable, _, _ = select.select(fds, [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            other = fds[1] if fd == fds[0] else fds[0]
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if rng.random() >= loss:
                    order += 1
                    heapq.heappush(due, (now + delay, order, other, packet))
        while due and due[0][0] <= time.monotonic():
            _, _, fd, packet = heapq.heappop(due)
            with contextlib.suppress(OSError):  # the namespace is going away
                os.write(fd, packet)


if __name__ == "__main__":
    main()
