"""A steady TCP stream for the real-terminal test, run as two processes.

    python -m tests.tui.streamer sink PORT             echo everything back, one client at a time
    python -m tests.tui.streamer stream NAME PORT SECONDS
                                                      send 10 KB every 0.1 s to 127.0.0.1:PORT
                                                      and read the echo, for SECONDS at most

The stream names itself (prctl PR_SET_NAME) so the monitor shows that name.
Both stop by themselves: the stream after SECONDS, the sink when it ends.
"""

from __future__ import annotations

import socket
import sys
import time

from tests.e2e.peers import recv_exact, set_name

CHUNK = 10_000
PERIOD = 0.1


def sink(port: int) -> None:
    set_name("np-sink")
    server = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(1 << 16):
            conn.sendall(data)


def stream(name: str, port: int, seconds: float) -> None:
    set_name(name)
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.sendall(b"x" * CHUNK)
        recv_exact(conn, CHUNK)
        time.sleep(PERIOD)
    conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        sink(int(sys.argv[2]))
    else:
        stream(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
