"""Socket owners from the kernel (eBPF), end to end: the processes that live too
briefly, or close too soon, for any lookup after the fact.

netoproc runs in namespace `a`; tcpdump on the same interface is the witness.
Every byte of every case must land on the right pid, exactly: servers that
close each connection as soon as they answer, a server that exits when its
client hangs up, a pre-forked server (the workers, not the listener's
parent), a UDP client that sends with one sendmmsg and exits, a child that
uses the socket its parent opened, 200 DNS clients that exit the moment their
answer arrives, getaddrinfo/dig/kdig queries in the DNS view, and processes
in other namespaces whose traffic crosses this one (a router's view).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.netns import PEERS, TwoHosts, sh, stop_tcpdump, two_hosts, wait_for_line
from tests.witness import port_traffic as traffic
from tests.witness import tcpdump_packets

pytestmark = pytest.mark.live

OBSERVE = str(Path(__file__).with_name("observe.py"))
Row = dict[str, Any]


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    yield from two_hosts(f"o{os.getpid() % 100000}")


def run_netoproc(hosts: TwoHosts, ns: str, seconds: int) -> subprocess.Popen[str]:
    proc = hosts.netoproc(ns, "--duration", str(seconds), "--format", "json", "--verbose")
    wait_for_line(proc.stderr, "capturing on")
    line = proc.stderr.readline() if proc.stderr else ""
    assert "process owners from eBPF" in line, line
    return proc


def finish(proc: subprocess.Popen[str]) -> dict[int | None, Row]:
    """netoproc's JSON rows by pid (None: unknown)."""
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "owner events lost 0" in err, err
    return {row["pid"]: row for row in json.loads(out)}


def lines(proc: subprocess.Popen[str], timeout: float = 60) -> list[Row]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def counted(row: Row | None) -> dict[str, int]:
    keys = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
    return {k: int(row[k]) if row else 0 for k in keys}


def test_every_byte_on_its_pid(hosts: TwoHosts, tmp_path: Path) -> None:
    servers = {
        "quick": hosts.peer(hosts.a, "quick-server", "np-quick", "5101"),
        "oneshot": hosts.peer(hosts.a, "oneshot-server", "np-oneshot", "5102"),
        "prefork": hosts.peer(hosts.a, "prefork-server", "5103", "3"),
        "echo": hosts.peer(hosts.b, "tcp-server", "5001"),
        "udp": hosts.peer(hosts.b, "udp-server", "5002"),
    }
    ready = {name: json.loads(wait_for_line(s.stdout, "ready")) for name, s in servers.items()}
    pcap = tmp_path / "witness.pcap"
    witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
    netoproc = run_netoproc(hosts, hosts.a, 10)

    # inbound: clients in b, servers here
    inbound = [
        hosts.peer(hosts.b, "short-conns", "np-in", hosts.a4, "5101", "20", "20000", "0"),
        hosts.peer(hosts.b, "tcp-client", "np-in6", hosts.a6, "5102", "200000", "0"),
        hosts.peer(hosts.b, "short-conns", "np-in", hosts.a4, "5103", "12", "30000", "0"),
    ]
    for client in inbound:
        lines(client)
    # outbound: a UDP client living a millisecond, a child using its parent's socket
    burst = lines(hosts.peer(hosts.a, "udp-burst", "np-burst", hosts.b4, "5002", "32", "500"))[0]
    child = lines(hosts.peer(hosts.a, "inherited", "np-child", hosts.b4, "5001", "200000"))[0]
    servers["prefork"].terminate()  # ends the parent; the workers print what they served
    rows = finish(netoproc)
    stop_tcpdump(witness)
    served: dict[int, set[int]] = {}
    for worker_line in servers["prefork"].stdout or []:
        if worker_line.startswith('{"pid"'):
            record = json.loads(worker_line)
            served.setdefault(record["pid"], set()).add(record["client"])
    packets = tcpdump_packets(pcap)

    for name, local, port in (("quick", hosts.a4, 5101), ("oneshot", hosts.a6, 5102)):
        pid = ready[name]["pid"]
        expected = traffic(packets, local, port)
        assert expected["rx_packets"] > 0
        assert counted(rows.get(pid)) == expected, (name, expected, rows)
    assert sum(len(ports) for ports in served.values()) == 12
    for pid, ports in served.items():
        assert pid in ready["prefork"]["workers"]
        assert counted(rows.get(pid)) == traffic(packets, hosts.a4, 5103, ports), pid
    assert counted(rows.get(ready["prefork"]["pid"])) == counted(None)  # the listener's parent
    assert burst["sent"] == 32
    expected = traffic(packets, hosts.a4, burst["lport"])
    assert expected["tx_packets"] == 32
    assert counted(rows.get(burst["pid"])) == expected
    assert counted(rows.get(child["pid"])) == traffic(packets, hosts.a4, child["lport"])
    assert counted(rows.get(child["parent"])) == counted(None)


def test_dns_clients_that_exit_on_their_answer(hosts: TwoHosts, tmp_path: Path) -> None:
    """200 clients, each exiting the moment its answer is read (0.1 ms after it
    arrives): every one named, to the byte."""
    server = hosts.peer(hosts.b, "udp-server", "53")
    wait_for_line(server.stdout, "ready")
    pcap = tmp_path / "witness.pcap"
    witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
    netoproc = run_netoproc(hosts, hosts.a, 8)
    clients = lines(hosts.peer(hosts.a, "dns-burst", "np-dns", hosts.b4, "53", "200"))
    rows = finish(netoproc)
    stop_tcpdump(witness)
    packets = tcpdump_packets(pcap)

    assert len(clients) == 200
    for client in clients:
        expected = traffic(packets, hosts.a4, client["lport"])
        assert (expected["tx_packets"], expected["rx_packets"]) == (1, 1)
        assert counted(rows.get(client["pid"])) == expected, client


def test_resolver_clients_in_the_dns_view(hosts: TwoHosts, tmp_path: Path) -> None:
    """getaddrinfo (A and AAAA over one socket), dig and kdig against dnsmasq one
    hop away: every query in the DNS view, each with its process."""
    resolver = hosts.b4
    dnsmasq = hosts.start(hosts.b, [
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
        f"--listen-address={resolver}", "--pid-file=", "--log-facility=-", "--local=/test/",
        "--host-record=host.test,198.18.5.2,2001:db8::5:2",
    ])  # fmt: skip
    wait_for_line(dnsmasq.stderr, "cleared cache")
    # `ip netns exec` puts /etc/netns/NAME/resolv.conf over /etc/resolv.conf
    netns_etc = Path("/etc/netns") / hosts.a
    netns_etc.mkdir(parents=True)
    try:
        (netns_etc / "resolv.conf").write_text(f"nameserver {resolver}\noptions attempts:1\n")
        for _ in range(50):  # dnsmasq logs before it answers
            probe = subprocess.run(
                ["ip", "netns", "exec", hosts.a, "dig", "+short", "+time=1", "host.test"],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            if probe.stdout.strip() == "198.18.5.2":
                break
        observer = hosts.start(hosts.a, [sys.executable, OBSERVE, "6"])
        wait_for_line(observer.stderr, "ready")
        pids: dict[str, list[int]] = {"np-gai": [], "dig": [], "kdig": []}
        for _ in range(3):
            gai = hosts.start(hosts.a, [sys.executable, "-c", (
                "import socket, sys\n"
                f"sys.path.insert(0, {str(Path(PEERS).parent)!r})\n"
                "from peers import set_name\n"
                "set_name('np-gai')\n"
                "socket.getaddrinfo('host.test', 80, type=socket.SOCK_STREAM)\n"
            )])  # fmt: skip
            gai.communicate(timeout=30)
            pids["np-gai"].append(gai.pid)
            for tool in ("dig", "kdig"):
                proc = hosts.start(hosts.a, [tool, "+tries=1" if tool == "dig" else "+retry=0",
                                             "AAAA", "host.test"])  # fmt: skip
                proc.communicate(timeout=30)
                pids[tool].append(proc.pid)
        out, err = observer.communicate(timeout=60)
        assert observer.returncode == 0, err
    finally:
        (netns_etc / "resolv.conf").unlink(missing_ok=True)
        netns_etc.rmdir()
    snapshot = json.loads(out)
    assert snapshot["health"]["owners"] == "eBPF"
    queries = [q for q in snapshot["dns"]["queries"] if q["name"] == "host.test"]
    by_pid: dict[int, list[Row]] = {}
    for query in queries:
        assert query["process"] is not None, queries
        by_pid.setdefault(query["process"]["pid"], []).append(query)
    for name, started in pids.items():
        for pid in started:
            asked = by_pid.get(pid, [])
            assert asked and all(q["process"]["name"] == name for q in asked), (name, queries)
    for pid in pids["np-gai"]:  # getaddrinfo asks A and AAAA
        assert sorted(q["qtype"] for q in by_pid[pid]) == ["A", "AAAA"]
    assert len(queries) == sum(len(by_pid[pid]) for started in pids.values() for pid in started)


def test_processes_behind_a_router(tmp_path: Path) -> None:
    """netoproc on a router between two namespaces, as on a host with containers
    behind veths: no socket of its own carries the traffic, and each interface's
    bytes land on the process on its side (the client's toward x, the server's
    toward y), exactly, with RX and TX from that process's side."""
    tag = f"r{os.getpid() % 100000}"
    router, x, y = f"np{tag}r", f"np{tag}x", f"np{tag}y"
    hosts = TwoHosts(tag)  # for its process handling; the namespaces are made here
    try:
        for ns in (router, x, y):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, near, far, prefix in ((x, "nprx0", "npxr0", "198.18.10"),
                                      (y, "npry0", "npyr0", "198.18.11")):  # fmt: skip
            sh("ip", "link", "add", near, "netns", router, "type", "veth",
               "peer", "name", far, "netns", ns)  # fmt: skip
            sh("ip", "-n", router, "addr", "add", f"{prefix}.1/24", "dev", near)
            sh("ip", "-n", ns, "addr", "add", f"{prefix}.2/24", "dev", far)
            sh("ip", "-n", router, "link", "set", near, "up")
            sh("ip", "-n", ns, "link", "set", far, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"{prefix}.1")
        sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        server = hosts.peer(y, "tcp-server", "5001")
        wait_for_line(server.stdout, "ready")
        server_pid = server.pid  # `ip netns exec` execs the peer: the same pid
        echo = hosts.peer(y, "udp-server", "5002")
        wait_for_line(echo.stdout, "ready")
        pcaps = {iface: tmp_path / f"{iface}.pcap" for iface in ("nprx0", "npry0")}
        witnesses = [hosts.tcpdump(router, iface, path) for iface, path in pcaps.items()]
        netoproc = run_netoproc(hosts, router, 5)
        tcp = lines(hosts.peer(x, "tcp-client", "np-far", "198.18.11.2", "5001", "150000", "0"))
        udp = lines(hosts.peer(x, "udp-client", "np-farudp", "198.18.11.2", "5002", "20", "300"))
        rows = finish(netoproc)
        for witness in witnesses:
            stop_tcpdump(witness)
    finally:
        hosts.down()
        for ns in (router, x, y):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    toward_x = tcpdump_packets(pcaps["nprx0"])
    toward_y = tcpdump_packets(pcaps["npry0"])
    client, udp_client = tcp[0], udp[0]
    # each process's figures are from its own side, as if netoproc ran beside it
    for pid, packets, local, port in (
        (client["pid"], toward_x, "198.18.10.2", client["lport"]),
        (udp_client["pid"], toward_x, "198.18.10.2", udp_client["lport"]),
        (server_pid, toward_y, "198.18.11.2", 5001),
    ):
        expected = traffic(packets, local, port)
        assert expected["rx_packets"] > 0 and expected["tx_packets"] > 0
        assert counted(rows.get(pid)) == expected, (pid, rows)
