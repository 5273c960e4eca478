"""Containers and services, end to end: a host with a Linux bridge, containers
behind it (each its own network namespace, its processes in cgroups shaped as
Docker, Podman and Kubernetes make them), an nftables masquerade on the
uplink and a published port DNAT'ed to a container, and services of the host
in systemd-shaped cgroups, one of them named with hostile bytes.

netoproc runs in the host namespace. tcpdump on the host's interfaces is the
truth: each container process's bytes on its veth and on the bridge (before
NAT) and on the uplink (after NAT) equal what tcpdump saw there, per process
and per container. A container is started and stopped during the run, one
flow's conntrack entry is deleted in its middle (exact: the mapping learnt
is kept), another's as the flow ends (exact if netoproc asked in time, else
`unknown` with the reason), and a connection to a port nothing listens on is
`unknown` with its reason. With
the fallback (no eBPF) the host's services are still named and exact, and
the translated traffic is `unknown` with the reason that it needs eBPF.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from netoproc.model import UnknownReason
from netoproc.platform.cgroups import cgroup2_mount
from tests.e2e.netns import TwoHosts, sh, stop_tcpdump, wait_for_line
from tests.witness import WirePacket, port_traffic, tcpdump_packets

pytestmark = pytest.mark.live

OBSERVE = str(Path(__file__).with_name("observe.py"))
Row = dict[str, Any]

BRIDGE4, UPLINK4, NET4 = "10.88.0.1", "203.0.113.1", "203.0.113.2"
WEB_ID, SHOP_ID, CART_ID = "a1" * 32, "b2" * 32, "c3" * 32
POD = "9b1c2d3e-1111-2222-3333-444455556666"
HOSTILE = b"\x1b]0;owned\x07\t\xff-evil.service"
HOSTILE_LABEL = "\x1b]0;owned\x07\t\\xff-evil.service"  # raw bytes \xff shown as text


@dataclass
class Site:
    """The host (`host`), its uplink's far side (`net`), containers `box1`..`box3`."""

    tag: str
    procs: TwoHosts = field(init=False)
    cgroups: list[Path] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.procs = TwoHosts(self.tag)  # its process handling; the namespaces are made here
        self.host, self.net = f"np{self.tag}h", f"np{self.tag}n"
        mount = cgroup2_mount()
        assert mount is not None, "the tests need a cgroup2 hierarchy"
        self.slice = Path(mount[0]) / f"np{self.tag}.slice"

    def namespace(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def up(self) -> None:
        host, net = self.namespace(self.host), self.namespace(self.net)
        sh("ip", "-n", host, "link", "add", "npbr0", "type", "bridge")
        sh("ip", "-n", host, "addr", "add", f"{BRIDGE4}/24", "dev", "npbr0")
        sh("ip", "-n", host, "link", "set", "npbr0", "up")
        sh("ip", "link", "add", "npup0", "netns", host, "type", "veth",
           "peer", "name", "npup1", "netns", net)  # fmt: skip
        sh("ip", "-n", host, "addr", "add", f"{UPLINK4}/24", "dev", "npup0")
        sh("ip", "-n", net, "addr", "add", f"{NET4}/24", "dev", "npup1")
        sh("ip", "-n", host, "link", "set", "npup0", "up")
        sh("ip", "-n", net, "link", "set", "npup1", "up")
        sh("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = (
            "table ip npnat {\n"
            " chain post { type nat hook postrouting priority srcnat; policy accept;\n"
            '  ip saddr 10.88.0.0/24 oifname "npup0" masquerade\n }\n'
            " chain pre { type nat hook prerouting priority dstnat; policy accept;\n"
            '  iifname "npup0" tcp dport 8080 dnat to 10.88.0.3:80\n }\n'
            "}\n"
        )
        subprocess.run(["ip", "netns", "exec", host, "nft", "-f", "-"], input=rules, text=True,
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        self.slice.mkdir()
        self.cgroups.append(self.slice)

    def box(self, n: int) -> str:
        """Container n: a namespace behind the bridge at 10.88.0.(n+1), veth npv<n>."""
        ns = self.namespace(f"np{self.tag}{n}")
        sh("ip", "link", "add", f"npv{n}", "netns", self.host, "type", "veth",
           "peer", "name", "eth0", "netns", ns)  # fmt: skip
        sh("ip", "-n", self.host, "link", "set", f"npv{n}", "master", "npbr0", "up")
        sh("ip", "-n", ns, "addr", "add", f"10.88.0.{n + 1}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", BRIDGE4)
        return ns

    def unbox(self, ns: str) -> None:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.namespaces.remove(ns)

    def cgroup(self, *parts: str | bytes) -> Path:
        path = self.slice
        for part in parts:
            path = path / os.fsdecode(part)
            if not path.exists():
                path.mkdir()
                self.cgroups.append(path)
        return path

    def start(self, cgroup: Path | None, ns: str | None, argv: list[str]) -> subprocess.Popen[str]:
        """A process in `cgroup` (moved there before it execs) and namespace `ns`."""
        inner = ["ip", "netns", "exec", ns, *argv] if ns else argv
        if cgroup is None:
            return self.procs.start(None, inner)
        script = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        return self.procs.start(None, ["sh", "-c", script, str(cgroup), *inner])

    def peer(self, cgroup: Path | None, ns: str | None, *args: str) -> subprocess.Popen[str]:
        from tests.e2e.netns import PEERS

        return self.start(cgroup, ns, [sys.executable, PEERS, *args])

    def down(self) -> None:
        self.procs.down()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        for path in reversed(self.cgroups):
            for _ in range(50):  # a process just killed leaves its cgroup a moment later
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    runtime = tmp_path / "runtime"
    docker = runtime / "var/lib/docker/containers" / WEB_ID
    docker.mkdir(parents=True)
    (docker / "config.v2.json").write_text(json.dumps({"ID": WEB_ID, "Name": "/np-web"}))
    podman = runtime / "var/lib/containers/storage/overlay-containers"
    podman.mkdir(parents=True)
    (podman / "containers.json").write_text(json.dumps([{"id": SHOP_ID, "names": ["np-shop"]}]))
    logs = runtime / "var/log/containers"
    logs.mkdir(parents=True)
    (logs / f"np-cart-5c_shop_cart-{CART_ID}.log").write_text("")
    monkeypatch.setenv("NETOP_RUNTIME_ROOT", str(runtime))
    site = Site(f"c{os.getpid() % 100000}")
    try:
        site.up()
        yield site
    finally:
        site.down()


def toward(packets: list[WirePacket], remote: str, rport: int) -> dict[str, int]:
    """What a process talking to `remote`:`rport` moved, as it counts it: TX what
    went to that endpoint, RX what came from it (whatever its own address here)."""
    out = {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
    for p in packets:
        if (p.dst, p.dport) == (remote, rport):
            out["tx_bytes"] += p.length
            out["tx_packets"] += 1
        elif (p.src, p.sport) == (remote, rport):
            out["rx_bytes"] += p.length
            out["rx_packets"] += 1
    return out


def plus(*counts: dict[str, int]) -> dict[str, int]:
    return {k: sum(c[k] for c in counts) for k in counts[0]}


KEYS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")


def counted(rows: list[Row]) -> dict[str, int]:
    """The CLI's rows summed (their counts are flat)."""
    return {k: sum(int(r[k]) for r in rows) for k in KEYS}


def totals(rows: list[Row]) -> dict[str, int]:
    """The observer's snapshot rows summed (their counts are under `total`)."""
    return {k: sum(int(r["total"][k]) for r in rows) for k in KEYS}


def size(t: dict[str, int]) -> int:
    return t["rx_bytes"] + t["tx_bytes"]


def finished(proc: subprocess.Popen[str]) -> Row:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    row: Row = json.loads(out.splitlines()[-1])
    return row


def test_containers_behind_a_bridge_and_nat(site: Site, owner_source: str, tmp_path: Path) -> None:
    ebpf = owner_source == "eBPF"
    host, net = site.host, site.net
    box1, box2 = site.box(1), site.box(2)
    web = site.cgroup("system.slice", f"docker-{WEB_ID}.scope")
    shop = site.cgroup("machine.slice", f"libpod-{SHOP_ID}.scope")
    service = site.cgroup("system.slice", "np-test.service")
    hostile = site.cgroup("system.slice", HOSTILE)
    servers = {port: site.peer(None, net, "tcp-server", str(port)) for port in (5001, 5003, 5004,
                                                                                5005)}  # fmt: skip
    servers[5002] = site.peer(None, net, "udp-server", "5002")
    servers[5006] = site.peer(None, net, "udp-server", "5006")
    servers[80] = site.peer(shop, box2, "tcp-server", "80")
    for server in servers.values():
        wait_for_line(server.stdout, "ready")
    shop_pid = servers[80].pid  # sh execs `ip netns exec`, which execs the server
    pcaps = {iface: tmp_path / f"{iface}.pcap" for iface in ("npv1", "npv2", "npbr0", "npup0")}
    witnesses = [site.procs.tcpdump(host, iface, path) for iface, path in pcaps.items()]

    observer = site.start(None, host, [sys.executable, OBSERVE, "14"])
    wait_for_line(observer.stderr, "ready")
    uplink = site.start(None, host, [sys.executable, "-m", "netoproc", "--duration", "13",
                                     "--interface", "npup0", "--format", "json",
                                     "--verbose"])  # fmt: skip
    wait_for_line(uplink.stderr, "capturing on")
    line = uplink.stderr.readline() if uplink.stderr else ""
    assert ("process owners from eBPF" if ebpf else "fallback") in line, line
    # the docker-shaped container dials out through the masquerade; the published
    # port is dialled from outside; the host's services dial out themselves
    clients = {
        "web": site.peer(web, box1, "tcp-client", "np-web", NET4, "5001", "150000", "0"),
        "halves": site.peer(web, box1, "udp-halves", "np-halves", NET4, "5002", "10", "700"),
        "outside": site.peer(None, net, "tcp-client", "np-outside", UPLINK4, "8080", "90000", "0"),
        # held open 1.5 s: the fallback looks sockets up after the fact (see the README)
        "service": site.peer(
            service, host, "tcp-client", "np-service", NET4, "5004", "40000", "1500"
        ),
        "hostile": site.peer(
            hostile, host, "tcp-client", "np-hostile", NET4, "5005", "30000", "1500"
        ),
    }
    wait_for_line(clients["halves"].stdout, "half")
    time.sleep(1.5)  # a tick: netoproc has asked conntrack about the flow by now
    deleted = subprocess.run(["ip", "netns", "exec", host, "conntrack", "-D", "-p", "udp",
                              "-s", "10.88.0.2", "--dport", "5002"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert "1 flow entries have been deleted" in deleted.stderr, deleted.stderr
    os.kill(clients["halves"].pid, signal.SIGUSR1)
    # a flow whose entry is deleted as soon as it ends: if netoproc has not asked
    # by then, its bytes are unknown with the reason
    early = finished(site.peer(None, box1, "udp-client", "np-early", NET4, "5006", "3", "200"))
    subprocess.run(["ip", "netns", "exec", host, "conntrack", "-D", "-p", "udp", "-s",
                    "10.88.0.2", "--dport", "5006"], capture_output=True, timeout=30)  # fmt: skip
    # a connection to a port of the host nothing listens on: no socket, no translation
    probe = site.start(None, net, [sys.executable, "-c", (
        "import socket\n"
        f"socket.create_connection(('{UPLINK4}', 9999), timeout=5).close()\n"
    )])  # fmt: skip
    probe.communicate(timeout=30)
    # a Kubernetes-shaped container started and stopped during the run
    box3 = site.box(3)
    cart = site.cgroup("kubepods.slice", f"kubepods-pod{POD.replace('-', '_')}.slice",
                       f"cri-containerd-{CART_ID}.scope")  # fmt: skip
    shortlived = finished(
        site.peer(cart, box3, "tcp-client", "np-cart", NET4, "5003", "60000", "0")
    )
    site.unbox(box3)
    cart.rmdir()
    site.cgroups.remove(cart)
    ran = {name: finished(proc) for name, proc in clients.items()}
    out, err = observer.communicate(timeout=60)
    assert observer.returncode == 0, err
    snapshot = json.loads(out)
    up_out, up_err = uplink.communicate(timeout=60)
    assert uplink.returncode == 0, up_err
    for witness in witnesses:
        stop_tcpdump(witness)
    packets = {iface: tcpdump_packets(path) for iface, path in pcaps.items()}

    conns = snapshot["connections"]
    processes = {(p["process"] or {}).get("pid"): p for p in snapshot["processes"]}
    reasons = dict(processes[None]["unknown_reasons"])

    def on(iface: str, pid: int | None) -> list[Row]:
        return [c for c in conns if c["iface"] == iface
                and (c["process"] or {}).get("pid") == pid]  # fmt: skip

    web_pid, halves_pid, cart_pid = ran["web"]["pid"], ran["halves"]["pid"], shortlived["pid"]
    up = packets["npup0"]
    truth_up = {
        web_pid: toward(up, NET4, 5001),
        halves_pid: toward(up, NET4, 5002),
        cart_pid: toward(up, NET4, 5003),
        shop_pid: port_traffic(up, UPLINK4, 8080),
        ran["service"]["pid"]: toward(up, NET4, 5004),
        ran["hostile"]["pid"]: toward(up, NET4, 5005),
    }
    assert all(t["rx_packets"] and t["tx_packets"] for t in truth_up.values()), truth_up
    early_truth, probe_truth = toward(up, NET4, 5006), port_traffic(up, UPLINK4, 9999)
    assert early_truth["tx_packets"] == 3 and probe_truth["rx_packets"] >= 1
    rows = {row["pid"]: row for row in json.loads(up_out)}
    groups = {
        web_pid: "docker/np-web",
        halves_pid: "docker/np-web",
        cart_pid: "k8s/shop/np-cart-5c/cart",
        shop_pid: "podman/np-shop",
        ran["service"]["pid"]: "np-test.service",
        ran["hostile"]["pid"]: HOSTILE_LABEL,
    }
    host_services = (ran["service"]["pid"], ran["hostile"]["pid"])
    assert reasons[str(UnknownReason.NAT_NO_ENTRY)] >= size(probe_truth), reasons

    # the host's own services: exact and named, with or without eBPF
    for pid in host_services:
        assert counted([rows[pid]]) == truth_up[pid], (pid, rows)
        assert rows[pid]["group"] == groups[pid]
        assert totals(on("npup0", pid)) == truth_up[pid]
    if not ebpf:
        # a container's sockets are in another namespace: only the kernel's events see them
        translated = [pid for pid in truth_up if pid not in host_services]
        assert not any(pid in rows for pid in translated)
        assert reasons.get(str(UnknownReason.NAT_NEEDS_EBPF), 0) >= sum(
            size(truth_up[pid]) for pid in translated
        ), reasons
        return

    # after NAT: the uplink's bytes on the containers' processes, exactly
    for pid, truth in truth_up.items():
        assert counted([rows[pid]]) == truth, (pid, groups[pid], truth, rows.get(pid))
        assert rows[pid]["group"] == groups[pid]
        assert totals(on("npup0", pid)) == truth, pid
    by_group: dict[str, list[Row]] = {}
    for row in rows.values():
        by_group.setdefault(row["group"] or "", []).append(row)
    assert counted(by_group["docker/np-web"]) == plus(truth_up[web_pid], truth_up[halves_pid])
    # the flow whose entry was deleted as it ended: exact, or unknown with the reason
    if early["pid"] in rows:
        assert counted([rows[early["pid"]]]) == early_truth
    else:
        assert size(counted([rows[None]])) >= size(early_truth)
    if on("npup0", early["pid"]):  # (its veth's and bridge's bytes are its own anyway)
        assert totals(on("npup0", early["pid"])) == early_truth
    else:
        assert reasons[str(UnknownReason.NAT_NO_ENTRY)] >= size(early_truth) + size(probe_truth)
    # before NAT: each veth's bytes on its side's process, and the bridge's
    veth = {1: packets["npv1"], 2: packets["npv2"]}
    before = {
        ("npv1", web_pid): toward(veth[1], NET4, 5001),
        ("npv1", halves_pid): toward(veth[1], NET4, 5002),
        ("npv2", shop_pid): port_traffic(veth[2], "10.88.0.3", 80),
        ("npbr0", web_pid): toward(packets["npbr0"], NET4, 5001),
        ("npbr0", halves_pid): toward(packets["npbr0"], NET4, 5002),
        ("npbr0", shop_pid): port_traffic(packets["npbr0"], "10.88.0.3", 80),
    }
    for (iface, pid), truth in before.items():
        assert truth["rx_packets"] and truth["tx_packets"], (iface, pid)
        assert totals(on(iface, pid)) == truth, (iface, pid, truth)
    for pid, group in groups.items():
        assert processes[pid]["process"]["group"] == group
    for pid, truth in truth_up.items():  # the figures, for `pytest -s`
        print(f"uplink {groups[pid]!r} pid {pid}: {truth}")
    for (iface, pid), truth in before.items():
        print(f"{iface} {groups[pid]!r} pid {pid}: {truth}")
    assert "conntrack" not in up_err  # no lookup failed or was deferred


def podman(site: Site, conf: Path, *args: str, check: bool = True) -> str:
    """podman in the test's host namespace: its bridge (CNI or netavark), masquerade
    and port mappings are made there, never in the machine's own namespace
    (nsenter: `ip netns exec` would mount a /sys without the cgroups podman needs)."""
    done = subprocess.run(["nsenter", f"--net=/run/netns/{site.host}", "podman", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CONTAINERS_CONF": str(conf)})  # fmt: skip
    assert done.returncode == 0 or not check, done.stderr
    return done.stdout


def test_a_real_podman_container(tmp_path: Path) -> None:
    """`podman run` itself: a container dialling out through podman's masquerade
    and one serving a published port, both named from podman's own state, every
    uplink byte on their processes, as tcpdump saw them. No image is needed: the
    root file system is an empty directory with the host's /usr mounted read-only
    (`--rootfs`), so the test needs no registry."""
    site = Site(f"p{os.getpid() % 100000}")
    tag = site.tag
    conf = tmp_path / "containers.conf"
    # the process's own file limits: a runtime that raises them needs CAP_SYS_RESOURCE
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n')
    root = tmp_path / "rootfs"
    for d in ("usr", "etc", "tmp", "peers"):
        (root / d).mkdir(parents=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (root / link).symlink_to(target)
    peers = str(Path(__file__).parent)
    # crun refuses a machine with cgroup v1 and v2 controllers side by side; runc copes
    runtime = ["--runtime", "runc"] if subprocess.run(
        ["which", "runc"], capture_output=True).returncode == 0 else []  # fmt: skip
    common = [*runtime, "-v", "/usr:/usr:ro", "-v", f"{peers}:/peers:ro", "--network", "bridge"]
    names = (f"np-shop-{tag}", f"np-web-{tag}")
    try:
        site.up()
        sh("ip", "-n", site.host, "link", "del", "npbr0")  # podman brings its own, on 10.88/16
        net = site.net
        server = site.peer(None, net, "tcp-server", "5001")
        wait_for_line(server.stdout, "ready")
        podman(site, conf, "run", "-d", "--rm", *common, "-p", "8080:80", "--name", names[0],
               "--rootfs", str(root), "/usr/bin/python3", "/peers/peers.py", "tcp-server",
               "80")  # fmt: skip
        pcap = tmp_path / "up.pcap"
        witness = site.procs.tcpdump(site.host, "npup0", pcap)
        uplink = site.start(None, site.host, [sys.executable, "-m", "netoproc", "--duration",
                                              "8", "--interface", "npup0", "--format", "json",
                                              "--verbose"])  # fmt: skip
        wait_for_line(uplink.stderr, "capturing on")
        podman(site, conf, "run", "--rm", *common, "--name", names[1], "--rootfs", str(root),
               "/usr/bin/python3", "/peers/peers.py", "tcp-client", "np-web", NET4, "5001",
               "150000", "0")  # fmt: skip
        for _ in range(50):  # the published server answers once podman has set up its port
            outside = site.peer(None, net, "tcp-client", "np-outside", UPLINK4, "8080", "90000",
                                "0")  # fmt: skip
            said, _ = outside.communicate(timeout=30)
            if outside.returncode == 0:
                client_port = json.loads(said)["lport"]
                break
            time.sleep(0.1)
        out, err = uplink.communicate(timeout=60)
        assert uplink.returncode == 0, err
        stop_tcpdump(witness)
    finally:
        for name in names:
            podman(site, conf, "rm", "--force", "--ignore", "--time", "0", name)
        site.down()
    rows = json.loads(out)
    packets = tcpdump_packets(pcap)
    truth = {
        f"podman/{names[1]}": toward(packets, NET4, 5001),
        f"podman/{names[0]}": port_traffic(packets, UPLINK4, 8080, {client_port}),
    }
    for group, expected in truth.items():
        assert expected["rx_packets"] and expected["tx_packets"], group
        mine = [row for row in rows if row["group"] == group]
        assert mine, (group, rows)
        assert counted(mine) == expected, (group, mine)
        print(f"uplink {group!r}: {expected}")  # the figures, for `pytest -s`
    assert {row["process"] for row in rows if row["group"] == f"podman/{names[1]}"} == {"np-web"}
