"""Loopback sockets opened by the test process itself, for the live platform tests."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TypeVar

from netoproc.model import parse_addr

LOCAL = "127.0.0.1"
T = TypeVar("T")


class Sockets:
    """Sockets a test opens; all closed at the end of the test."""

    def __init__(self) -> None:
        self.opened: list[socket.socket] = []

    def new(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        return self.keep(socket.socket(family, kind))

    def keep(self, s: socket.socket) -> socket.socket:
        self.opened.append(s)
        return s

    def listener(self) -> socket.socket:
        s = self.new()
        s.bind((LOCAL, 0))
        s.listen()
        return s

    def tcp_pair(self) -> tuple[socket.socket, socket.socket, socket.socket]:
        """(listener, client, accepted server side), connected over loopback."""
        listener = self.listener()
        client = self.new()
        client.connect(listener.getsockname())
        server, _ = listener.accept()
        return listener, client, self.keep(server)

    def close(self) -> None:
        for s in self.opened:
            s.close()


def inode(s: socket.socket) -> int:
    return os.fstat(s.fileno()).st_ino


def endpoint(s: socket.socket, *, peer: bool = False) -> tuple[int, int]:
    """(address in model form, port) of a socket's local or remote end."""
    host, port = (s.getpeername() if peer else s.getsockname())[:2]
    return parse_addr(host), port


def free_port(kind: int) -> int:
    """A loopback port nothing is bound to (at the moment of asking)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCAL, 0))
        port: int = s.getsockname()[1]
    return port


def wait_for(probe: Callable[[], T | None], timeout: float = 5.0) -> T:
    """Poll `probe` until it gives an answer, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (answer := probe()) is None:
        assert time.monotonic() < deadline, "timed out waiting for the kernel"
        time.sleep(0.002)
    return answer
