"""Traffic programs for the end-to-end tests, run as separate processes.

Each names itself (prctl PR_SET_NAME, so the kernel's `comm` and every
process table shows the name), moves an exact amount of data, prints one JSON
line describing the sockets it used, and exits. They use only the standard
library so they run anywhere the tests do.

    python peers.py tcp-server PORT              echo: reads N, writes N back, per connection
    python peers.py udp-server PORT              echo every datagram
    python peers.py tcp-client NAME HOST PORT BYTES MS   exchange BYTES, close MS after connecting
    python peers.py udp-client NAME HOST PORT DATAGRAMS SIZE
    python peers.py udp-halves NAME HOST PORT DATAGRAMS SIZE   as udp-client, twice: prints
                                                        {"half": ...} between, waits for SIGUSR1
    python peers.py short-conns NAME HOST PORT COUNT BYTES HOLD_MS
    python peers.py loop-pair SENDER RECEIVER BYTES
    python peers.py dns-servfail ADDRESS PORT    an upstream that answers SERVFAIL to everything
    python peers.py dns-client NAME SERVER QNAME QTYPE
    python peers.py tcp-echo ADDRESS PORT        echo every byte back, as it arrives
    python peers.py rtt-client NAME HOST PORT COUNT GAP_MS   timed requests; tcp_info at the end
    python peers.py bulk-client NAME HOST PORT BYTES    send BYTES with CUBIC; tcp_info at the end
    python peers.py udp-stream NAME HOST PORT RATE SECONDS   RATE datagrams/s, paced, no replies
    python peers.py hold-server PORT                    accept connections and keep them open
    python peers.py hold-conns NAME HOST PORT COUNT SECONDS   open COUNT connections, hold them
    python peers.py udp-sink NAME PORT                  receive datagrams, never answer
    python peers.py quick-server NAME PORT              echo per connection, close at once
    python peers.py oneshot-server NAME PORT            serve one connection, exit on hang-up
    python peers.py prefork-server PORT WORKERS         np-parent listens, np-worker children serve
    python peers.py udp-burst NAME HOST PORT COUNT SIZE  COUNT datagrams in one sendmmsg, exit
    python peers.py dns-burst NAME HOST PORT COUNT      COUNT clients, one after another: each asks
                                                        one question from a port of its own
                                                        (30000 + i), exits when it is answered
    python peers.py inherited NAME HOST PORT BYTES      the parent connects, a child named NAME
                                                        exchanges BYTES on the inherited socket
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

PR_SET_NAME = 15


def set_name(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def recv_exact(conn: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = conn.recv(min(n, 1 << 16))
        if not chunk:
            raise ConnectionError("peer closed early")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def tcp_server(port: int) -> None:
    set_name("np-server")
    servers = []
    for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.listen(256)
        servers.append(s)

    def serve(conn: socket.socket) -> None:
        with conn:
            header = conn.recv(8, socket.MSG_WAITALL)
            if len(header) < 8:
                return
            n = int.from_bytes(header, "big")
            data = recv_exact(conn, n)
            conn.sendall(data)
            conn.recv(1)  # wait for the client to close first

    def accept(s: socket.socket) -> None:
        while True:
            conn, _ = s.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    for s in servers:
        threading.Thread(target=accept, args=(s,), daemon=True).start()
    print(json.dumps({"ready": port}), flush=True)
    threading.Event().wait()


def udp_server(port: int) -> None:
    set_name("np-udpserver")
    socks = []
    for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        socks.append(s)

    def echo(s: socket.socket) -> None:
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(data, peer)

    for s in socks:
        threading.Thread(target=echo, args=(s,), daemon=True).start()
    print(json.dumps({"ready": port}), flush=True)
    threading.Event().wait()


def tcp_exchange(host: str, port: int, n: int) -> tuple[socket.socket, dict[str, object]]:
    conn = socket.create_connection((host, port), timeout=10)
    local = conn.getsockname()
    conn.sendall(n.to_bytes(8, "big") + os.urandom(n))
    recv_exact(conn, n)
    return conn, {"local": local[0], "lport": local[1]}


def tcp_client(name: str, host: str, port: int, n: int, lifetime_ms: int) -> None:
    """Connect, exchange `n` bytes, and close (then exit) `lifetime_ms` after the
    connect began, or at once if the exchange took longer: a `curl`."""
    set_name(name)
    started = time.monotonic()
    conn, info = tcp_exchange(host, port, n)
    print(json.dumps({"pid": os.getpid(), **info}), flush=True)
    time.sleep(max(0.0, lifetime_ms / 1000 - (time.monotonic() - started)))
    conn.close()


def udp_client(name: str, host: str, port: int, count: int, size: int) -> None:
    set_name(name)
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect((host, port))
    for _ in range(count):
        s.send(os.urandom(size))
        s.recv(65535)
    local = s.getsockname()
    time.sleep(0.1)
    s.close()
    print(json.dumps({"pid": os.getpid(), "local": local[0], "lport": local[1]}), flush=True)


def udp_halves(name: str, host: str, port: int, count: int, size: int) -> None:
    """Echo `count` datagrams, say so, wait for SIGUSR1 (at most 30 s), echo
    `count` more on the same socket: a flow the test can disturb in the middle."""
    set_name(name)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect((host, port))
    local = s.getsockname()
    for half in range(2):
        for _ in range(count):
            s.send(os.urandom(size))
            s.recv(65535)
        if half == 0:
            print(json.dumps({"half": local[1]}), flush=True)
            signal.sigtimedwait({signal.SIGUSR1}, 30)
    time.sleep(0.1)
    s.close()
    print(json.dumps({"pid": os.getpid(), "local": local[0], "lport": local[1]}), flush=True)


def short_conns(name: str, host: str, port: int, count: int, n: int, hold_ms: int) -> None:
    set_name(name)
    ports = []
    for _ in range(count):
        started = time.monotonic()
        conn, info = tcp_exchange(host, port, n)
        time.sleep(max(0.0, hold_ms / 1000 - (time.monotonic() - started)))
        conn.close()
        ports.append(info["lport"])
    print(json.dumps({"pid": os.getpid(), "lports": ports}), flush=True)


def loop_pair(sender: str, receiver: str, n: int) -> None:
    """Two processes on loopback: one sends `n` bytes, the other receives them."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    child = os.fork()
    if child == 0:
        set_name(receiver)
        conn, _ = listener.accept()
        recv_exact(conn, n)
        time.sleep(0.1)
        conn.close()
        os._exit(0)
    listener.close()
    set_name(sender)
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(os.urandom(n))
    lport = conn.getsockname()[1]
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    conn.close()
    os.waitpid(child, 0)
    print(json.dumps({"sender": os.getpid(), "receiver": child, "lport": lport, "port": port}))


def dns_servfail(address: str, port: int) -> None:
    set_name("np-servfail")
    s = socket.socket(family(address), socket.SOCK_DGRAM)
    s.bind((address, port))
    print(json.dumps({"ready": port}), flush=True)
    while True:
        query, peer = s.recvfrom(4096)
        if len(query) >= 12:
            # same id and question; QR, RD, RA set; rcode 2 (SERVFAIL); no answers
            flags = 0x8000 | (int.from_bytes(query[2:4], "big") & 0x0100) | 0x0080 | 2
            s.sendto(
                query[:2] + flags.to_bytes(2, "big") + query[4:6] + bytes(6) + query[12:], peer
            )


def dns_client(name: str, server: str, qname: str, qtype: str) -> None:
    """One query over UDP from a named process; prints its id and local port."""
    set_name(name)
    codes = {"A": 1, "AAAA": 28, "TXT": 16, "MX": 15}
    ident = int.from_bytes(os.urandom(2), "big")
    question = b"".join(len(p).to_bytes(1, "big") + p.encode() for p in qname.split("."))
    message = (
        ident.to_bytes(2, "big")
        + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + question
        + b"\x00"
        + codes[qtype].to_bytes(2, "big")
        + b"\x00\x01"
    )
    s = socket.socket(family(server), socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(message, (server, 53))
    s.recvfrom(4096)
    print(json.dumps({"pid": os.getpid(), "id": ident, "lport": s.getsockname()[1]}), flush=True)


TCP_INFO = 11
TCP_CONGESTION = 13


def kernel_tcp_info(conn: socket.socket) -> dict[str, float]:
    """The kernel's own view of this socket (struct tcp_info, linux/tcp.h)."""
    raw = conn.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 232)
    rtt_us, rttvar_us = struct.unpack_from("=II", raw, 68)
    (total_retrans,) = struct.unpack_from("=I", raw, 100)
    return {"rtt_ms": rtt_us / 1000, "rttvar_ms": rttvar_us / 1000, "total_retrans": total_retrans}


def tcp_echo(address: str, port: int) -> None:
    set_name("np-echo")
    s = socket.socket(family(address), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(16)

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    print(json.dumps({"ready": port}), flush=True)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def rtt_client(name: str, host: str, port: int, count: int, gap_ms: int) -> None:
    set_name(name)
    conn = socket.create_connection((host, port), timeout=10)
    for _ in range(count):
        conn.sendall(os.urandom(100))
        recv_exact(conn, 100)
        time.sleep(gap_ms / 1000)
    info = kernel_tcp_info(conn)
    time.sleep(0.5)
    print(json.dumps({"pid": os.getpid(), "lport": conn.getsockname()[1], **info}), flush=True)
    conn.close()


def bulk_client(name: str, host: str, port: int, n: int) -> None:
    set_name(name)
    conn = socket.socket(family(host), socket.SOCK_STREAM)
    conn.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, b"cubic")  # loss, not pacing, decides
    conn.settimeout(60)
    conn.connect((host, port))

    def drain() -> None:  # the echo comes back; read it so the server never blocks
        while conn.recv(1 << 16):
            pass

    reader = threading.Thread(target=drain)
    reader.start()
    conn.sendall(os.urandom(n))
    conn.shutdown(socket.SHUT_WR)
    reader.join()
    info = kernel_tcp_info(conn)
    print(json.dumps({"pid": os.getpid(), "lport": conn.getsockname()[1], **info}), flush=True)
    conn.close()


def udp_stream(name: str, host: str, port: int, rate: int, seconds: int) -> None:
    set_name(name)
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    payload = os.urandom(200)
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            s.sendto(payload, (host, port))
            sent += 1
        time.sleep(0.01)
    print(json.dumps({"pid": os.getpid(), "sent": sent}), flush=True)


def raise_fd_limit(needed: int) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(needed, hard), max(needed, hard)))


def hold_server(port: int) -> None:
    set_name("np-holdserver")
    raise_fd_limit(20000)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    held = []
    print(json.dumps({"ready": port}), flush=True)
    while True:
        held.append(s.accept()[0])


def hold_conns(name: str, host: str, port: int, count: int, seconds: int) -> None:
    set_name(name)
    raise_fd_limit(count + 100)
    conns = [socket.create_connection((host, port), timeout=30) for _ in range(count)]
    print(json.dumps({"pid": os.getpid(), "holding": len(conns)}), flush=True)
    time.sleep(seconds)
    for conn in conns:
        conn.close()


def listen(port: int, backlog: int = 256) -> socket.socket:
    """A dual-stack TCP listener on `port`."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(backlog)
    return s


def serve_once(conn: socket.socket) -> int:
    """Read a length-prefixed message, echo it, close at once; the client's port."""
    with conn:
        port = int(conn.getpeername()[1])
        header = conn.recv(8, socket.MSG_WAITALL)
        if len(header) == 8:
            conn.sendall(recv_exact(conn, int.from_bytes(header, "big")))
    return port


def quick_server(name: str, port: int) -> None:
    """A long-lived server that closes each connection as soon as it has answered,
    as `python3 -m http.server` does."""
    set_name(name)
    s = listen(port)
    print(json.dumps({"ready": port, "pid": os.getpid()}), flush=True)
    while True:
        serve_once(s.accept()[0])


def oneshot_server(name: str, port: int) -> None:
    """Serve one connection, echoing until the client hangs up, then exit."""
    set_name(name)
    s = listen(port)
    print(json.dumps({"ready": port, "pid": os.getpid()}), flush=True)
    conn, _ = s.accept()
    with conn:
        while data := conn.recv(1 << 16):
            conn.sendall(data)


def prefork_server(port: int, workers: int) -> None:
    """A listener in np-parent, connections served by np-worker children, each of
    which prints its pid and the client port of every connection it served."""
    set_name("np-parent")
    s = listen(port)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            set_name("np-worker")
            while True:
                client = serve_once(s.accept()[0])
                # one write(2) per line: the workers share the pipe, and a line split
                # in two lets another worker's land in its middle
                line = json.dumps({"pid": os.getpid(), "client": client}) + "\n"
                os.write(sys.stdout.fileno(), line.encode())
        children.append(pid)

    def stop(_signum: int, _frame: object) -> None:  # the workers go with the parent
        for child in children:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"ready": port, "pid": os.getpid(), "workers": children}), flush=True)
    threading.Event().wait()


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Mmsghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int), ("_end_of_msghdr", ctypes.c_int),  # struct msghdr ends 8-aligned
        ("len", ctypes.c_uint),
    )  # fmt: skip


def udp_burst(name: str, host: str, port: int, count: int, size: int) -> None:
    """Send `count` datagrams of `size` bytes with one sendmmsg call and exit
    straight away: a process that lives about a millisecond."""
    set_name(name)
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.connect((host, port))
    payload = ctypes.create_string_buffer(os.urandom(size), size)
    iov = _Iovec(ctypes.cast(payload, ctypes.c_void_p), size)
    messages = (_Mmsghdr * count)()
    for m in messages:
        m.iov, m.iovlen = ctypes.pointer(iov), 1
    libc = ctypes.CDLL(None, use_errno=True)
    sent = libc.sendmmsg(s.fileno(), messages, count, 0)
    local = s.getsockname()
    print(json.dumps({"pid": os.getpid(), "sent": sent, "lport": local[1]}), flush=True)
    os._exit(0)


DNS_BURST_PORTS = 30000
# one DNS question, `short.test A`
QUESTION = bytes.fromhex("1234010000010000000000000573686f727404746573740000010001")


def dns_burst(name: str, host: str, port: int, count: int) -> None:
    """Fork `count` clients one after another; each sends one question from a
    port of its own (ephemeral ones come round again within a few hundred) and
    exits the moment the answer is read. Prints one JSON line per client: its
    pid and port."""
    for i in range(count):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                set_name(name)
                s = socket.socket(family(host), socket.SOCK_DGRAM)
                s.settimeout(2)
                s.bind(("::" if ":" in host else "0.0.0.0", DNS_BURST_PORTS + i))
                s.connect((host, port))
                os.write(w, s.getsockname()[1].to_bytes(2, "big"))
                s.send(QUESTION)
                s.recv(512)
            finally:
                os._exit(0)
        os.close(w)
        lport = int.from_bytes(os.read(r, 2), "big")
        os.close(r)
        os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "lport": lport}), flush=True)


def inherited(name: str, host: str, port: int, n: int) -> None:
    """The parent (np-opener) connects and forks; only the child, named `name`,
    uses the socket; the parent closes its copy unused and waits."""
    set_name("np-opener")
    conn = socket.create_connection((host, port), timeout=10)
    pid = os.fork()
    if pid == 0:
        set_name(name)
        conn.sendall(n.to_bytes(8, "big") + os.urandom(n))
        recv_exact(conn, n)
        conn.close()
        os._exit(0)
    lport = conn.getsockname()[1]
    conn.close()
    os.waitpid(pid, 0)
    print(json.dumps({"parent": os.getpid(), "pid": pid, "lport": lport}), flush=True)


def udp_sink(name: str, port: int) -> None:
    set_name(name)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print(json.dumps({"ready": port, "pid": os.getpid()}), flush=True)
    while True:
        s.recv(65535)


COMMANDS = {
    "tcp-server": (tcp_server, (int,)),
    "udp-server": (udp_server, (int,)),
    "tcp-client": (tcp_client, (str, str, int, int, int)),
    "udp-client": (udp_client, (str, str, int, int, int)),
    "udp-halves": (udp_halves, (str, str, int, int, int)),
    "short-conns": (short_conns, (str, str, int, int, int, int)),
    "loop-pair": (loop_pair, (str, str, int)),
    "dns-servfail": (dns_servfail, (str, int)),
    "dns-client": (dns_client, (str, str, str, str)),
    "tcp-echo": (tcp_echo, (str, int)),
    "rtt-client": (rtt_client, (str, str, int, int, int)),
    "bulk-client": (bulk_client, (str, str, int, int)),
    "udp-stream": (udp_stream, (str, str, int, int, int)),
    "hold-server": (hold_server, (int,)),
    "hold-conns": (hold_conns, (str, str, int, int, int)),
    "udp-sink": (udp_sink, (str, int)),
    "quick-server": (quick_server, (str, int)),
    "oneshot-server": (oneshot_server, (str, int)),
    "prefork-server": (prefork_server, (int, int)),
    "udp-burst": (udp_burst, (str, str, int, int, int)),
    "inherited": (inherited, (str, str, int, int)),
    "dns-burst": (dns_burst, (str, str, int, int)),
}

if __name__ == "__main__":
    command, kinds = COMMANDS[sys.argv[1]]
    command(*(kind(arg) for kind, arg in zip(kinds, sys.argv[2:], strict=True)))  # type: ignore[operator]
