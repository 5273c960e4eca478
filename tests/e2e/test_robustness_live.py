"""The most boring program on the machine: live runs under faults and hostile names.

- netoproc sends no packets (the namespace's transmit counters do not move
  while it runs there alone with traffic arriving), opens no network
  connection and writes no file (strace of every thread);
- an interface deleted and another created while it runs: every byte the
  test's processes sent is counted, on the interface it crossed;
- a pid reused by a new process within one run (a pid namespace where the
  test picks the pids): two processes, two rows, each with its own bytes;
- a process whose name carries escape sequences, tabs and newlines, shown
  by all three snapshot formats at once;
- output piped into `head -1` or into a reader that has already gone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.netns import PEERS, SRC, TwoHosts, sh, two_hosts, wait_for_line

pytestmark = pytest.mark.live

UDP_PORT = 5002
OBSERVE = str(Path(__file__).with_name("observe.py"))


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    yield from two_hosts(f"r{os.getpid() % 100000}")


def _udp_totals(count: int, size: int) -> dict[str, int]:
    """What a udp-client's exchange with the echo server is, in IPv4 bytes."""
    wire = count * (size + 8 + 20)
    return {"rx_bytes": wire, "tx_bytes": wire, "rx_packets": count, "tx_packets": count}


def _client(hosts: TwoHosts, name: str, host: str, count: int, size: int) -> dict[str, object]:
    client = hosts.peer(hosts.a, "udp-client", name, host, str(UDP_PORT), str(count), str(size))
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, err
    info: dict[str, object] = json.loads(out)
    return info


# no side effects -------------------------------------------------------------------


@pytest.fixture
def quiet_host() -> Iterator[tuple[str, str]]:
    """Namespace q (IPv4 only, so the kernel itself sends nothing: no IPv6
    router solicitations or MLD reports) and r, whose neighbour entry for q
    is static, so even ARP never makes q answer."""
    tag = f"{os.getpid() % 100000}"
    q, r = f"npq{tag}", f"npr{tag}"
    try:
        sh("ip", "netns", "add", q)
        sh("ip", "netns", "add", r)
        sh("ip", "netns", "exec", q, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
           "net.ipv6.conf.default.disable_ipv6=1")  # fmt: skip
        sh("ip", "link", "add", "q0", "netns", q, "type", "veth", "peer", "name", "r0",
           "netns", r)  # fmt: skip
        sh("ip", "-n", q, "addr", "add", "198.18.9.1/24", "dev", "q0")
        sh("ip", "-n", r, "addr", "add", "198.18.9.2/24", "dev", "r0")
        for ns, dev in ((q, "q0"), (q, "lo"), (r, "r0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        mac = json.loads(subprocess.check_output(["ip", "-n", q, "-j", "link", "show", "q0"]))
        sh("ip", "-n", r, "neigh", "replace", "198.18.9.1", "lladdr", mac[0]["address"],
           "dev", "r0", "nud", "permanent")  # fmt: skip
        yield q, r
    finally:
        for ns in (q, r):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _sent_packets(ns: str) -> dict[str, int]:
    links = json.loads(subprocess.check_output(["ip", "-n", ns, "-s", "-j", "link"]))
    return {link["ifname"]: link["stats64"]["tx"]["packets"] for link in links}


# what a syscall acts on, as strace -yy shows it: "write(1<pipe:[123]>, ..."
FD_CALL = re.compile(r"^(?:\d+ +)?(\w+)\((\d+)<([^>]*)>")
OPEN_CALL = re.compile(r'^(?:\d+ +)?(open|openat|creat)\((?:[^,]*, )?"([^"]*)"(?:, ([A-Z_|]+))?')
FILE_CHANGE = re.compile(
    r"^(?:\d+ +)?(?:mkdir|rename|unlink|f?truncate|(?:sym)?link|f?chmod|[fl]?chown)(?:at2?)?\("
)
SENDS = ("connect", "sendto", "sendmsg", "sendmmsg", "write", "writev", "pwrite64", "pwritev")


def _side_effects(trace: str) -> list[str]:
    """Lines of an strace log where the process sent, connected or wrote to
    anything but a netlink socket (questions to the kernel), a local socket
    or its own stdout/stderr pipes; or opened a file for writing."""
    found = []
    for line in trace.splitlines():
        call = FD_CALL.match(line)
        if call and call.group(1) in SENDS:
            target = call.group(3)
            if not target.startswith(("NETLINK:", "UNIX", "pipe:", "/dev/null")):
                found.append(line)
            continue
        opened = OPEN_CALL.match(line)
        if opened and re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND", opened.group(3) or ""):
            if opened.group(2) != "/dev/null":
                found.append(line)
            continue
        if FILE_CHANGE.match(line):
            found.append(line)
    return found


@pytest.mark.parametrize(
    ("line", "counts"),
    [
        ('12 write(5<UDP:[198.18.9.1:5->198.18.9.2:53]>, "x", 1) = 1', True),
        ('12 sendto(4<PACKET:[123]>, "x", 1, 0, NULL, 0) = 1', True),
        ("12 connect(4<TCP:[123]>, {sa_family=AF_INET, sin_port=htons(80)}, 16) = 0", True),
        (
            '12 openat(AT_FDCWD</>, "/tmp/log", O_WRONLY|O_CREAT|O_CLOEXEC, 0666) = 3</tmp/log>',
            True,
        ),
        ('12 renameat2(AT_FDCWD</>, "/a", AT_FDCWD</>, "/b", 0) = 0', True),
        ('12 unlink("/tmp/x") = 0', True),
        ('12 write(3</tmp/x>, "a", 1) = 1', True),
        ('12 write(1<pipe:[5]>, "[]", 2) = 2', False),
        ("12 sendto(6<NETLINK:[SOCK_DIAG:1]>, [], 72, 0, NULL, 0) = 72", False),
        ('12 openat(AT_FDCWD</>, "/proc/net/dev", O_RDONLY|O_CLOEXEC) = 3</proc/1/net/dev>', False),
        ('12 readlink("/proc/1/fd/3", "socket:[1]", 4096) = 10', False),
    ],
)
def test_the_side_effect_check_tells_them_apart(line: str, counts: bool) -> None:
    assert _side_effects(line) == ([line] if counts else [])


def test_sends_nothing_connects_nowhere_writes_no_file(
    quiet_host: tuple[str, str], tmp_path: Path
) -> None:
    q, r = quiet_host
    env = {**os.environ, "PYTHONPATH": SRC}
    sink = subprocess.Popen(
        ["ip", "netns", "exec", q, sys.executable, PEERS, "udp-sink", "np-sink", "53"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    stream = None
    try:
        wait_for_line(sink.stdout, "ready")
        # DNS-port datagrams that are no DNS: the parser, the counters and the
        # lookups all run while the namespace must stay silent
        stream = subprocess.Popen(["ip", "netns", "exec", r, sys.executable, PEERS, "udp-stream",
                                   "np-stream", "198.18.9.1", "53", "500", "6"],
                                  stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
        before = _sent_packets(q)
        trace = tmp_path / "netoproc.strace"
        run = subprocess.run(
            ["ip", "netns", "exec", q, "strace", "-f", "-qq", "-yy", "-o", str(trace),
             "-e", "trace=%file,%network,%desc",
             sys.executable, "-m", "netoproc", "--duration", "3", "--format", "json"],
            capture_output=True, text=True, timeout=60,
            env={**env, "PYTHONDONTWRITEBYTECODE": "1"},  # the interpreter's caches are not ours
        )  # fmt: skip
        after = _sent_packets(q)
    finally:
        for proc in (sink, stream):
            if proc is not None:
                proc.kill()
                proc.communicate(timeout=10)
    assert run.returncode == 0, run.stderr
    rows = {row["process"]: row for row in json.loads(run.stdout)}
    assert rows["np-sink"]["rx_packets"] > 100  # it was watching the traffic
    assert after == before and set(before) == {"lo", "q0"}
    log = trace.read_text()
    assert "sendto(" in log  # strace saw the netlink questions: the check below is real
    assert _side_effects(log) == []


NEEDED = "net_raw,sys_ptrace,dac_read_search"
KERNEL_OWNERS = "net_raw,bpf,perfmon"


@pytest.mark.parametrize(
    ("capabilities", "attributed", "owners"),
    [
        (NEEDED, True, "from the socket table"),
        ("net_raw,dac_read_search", False, "from the socket table"),
        (KERNEL_OWNERS, True, "from eBPF"),
        (f"{KERNEL_OWNERS},{NEEDED}", True, "from eBPF"),
    ],
)
def test_the_documented_capabilities_are_all_it_needs(
    hosts: TwoHosts, capabilities: str, attributed: bool, owners: str
) -> None:
    """With only the documented capabilities, another user's traffic has its
    owner: from the kernel with CAP_BPF and CAP_PERFMON (and no /proc access at
    all), else from /proc; without CAP_SYS_PTRACE, /proc cannot name it."""
    server = hosts.peer(hosts.b, "udp-server", str(UDP_PORT))
    wait_for_line(server.stdout, "ready")
    only = ",".join(["-all", *(f"+{c}" for c in capabilities.split(","))])
    netoproc = hosts.start(hosts.a, ["setpriv", f"--inh-caps={only}", f"--bounding-set={only}",
                                     sys.executable, "-m", "netoproc", "--duration", "3",
                                     "--format", "json", "--verbose"])  # fmt: skip
    wait_for_line(netoproc.stderr, "capturing on")
    said = netoproc.stderr.readline() if netoproc.stderr else ""
    assert f"process owners {owners}" in said, said
    datagrams = 30
    script = (f"echo $$; exec 3<>/dev/udp/{hosts.b4}/{UDP_PORT}; "
              f"for i in $(seq {datagrams}); do printf x >&3; sleep 0.02 3>&-; done")  # fmt: skip
    nobody = hosts.start(hosts.a, ["setpriv", "--reuid=65534", "--regid=65534",
                                   "--clear-groups", "bash", "-c", script])  # fmt: skip
    out, err = nobody.communicate(timeout=30)
    assert nobody.returncode == 0, err
    rows, err = netoproc.communicate(timeout=60)
    assert netoproc.returncode == 0, err
    by_pid = {row["pid"]: row for row in json.loads(rows)}
    sent = datagrams * (1 + 8 + 20)
    if attributed:
        row = by_pid[int(out.split()[0])]
        assert (row["process"], row["tx_bytes"], row["tx_packets"]) == ("bash", sent, datagrams)
    else:
        # the namespace's own IPv6 housekeeping is unattributed too
        assert set(by_pid) == {None} and by_pid[None]["tx_bytes"] >= sent


# faults ----------------------------------------------------------------------------


def test_interfaces_deleted_and_created_while_running(hosts: TwoHosts) -> None:
    server = hosts.peer(hosts.b, "udp-server", str(UDP_PORT))
    wait_for_line(server.stdout, "ready")
    observer = hosts.start(hosts.a, [sys.executable, OBSERVE, "6"])
    wait_for_line(observer.stderr, "ready")

    old = _client(hosts, "np-old", hosts.b4, 50, 700)
    sh("ip", "-n", hosts.a, "link", "del", hosts.veth_a)  # both ends go
    sh("ip", "link", "add", "npa1", "netns", hosts.a, "type", "veth", "peer", "name", "npb1",
       "netns", hosts.b)  # fmt: skip
    for ns, address in ((hosts.a, "198.18.3.1/24"), (hosts.b, "198.18.3.2/24")):
        dev = "npa1" if ns == hosts.a else "npb1"
        sh("ip", "-n", ns, "addr", "add", address, "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
    new = _client(hosts, "np-new", "198.18.3.2", 40, 500)

    out, err = observer.communicate(timeout=60)
    assert observer.returncode == 0, err
    snapshot = json.loads(out)
    rows = {row["process"]["name"]: row for row in snapshot["processes"] if row["process"]}
    for name, info, expected in (("np-old", old, _udp_totals(50, 700)),
                                 ("np-new", new, _udp_totals(40, 500))):  # fmt: skip
        assert rows[name]["process"]["pid"] == info["pid"]
        assert {k: rows[name]["total"][k] for k in expected} == expected, name
    ifaces = {c["process"]["name"]: c["iface"] for c in snapshot["connections"] if c["process"]}
    assert (ifaces["np-old"], ifaces["np-new"]) == (hosts.veth_a, "npa1")
    assert "npa1" in {card["name"] for card in snapshot["interfaces"]}
    assert snapshot["health"]["kernel_drops"] == 0


REUSE_DRIVER = textwrap.dedent("""
    import json, subprocess, sys
    from tests.e2e.netns import wait_for_line

    peers, host, port = sys.argv[1:4]
    netoproc = subprocess.Popen(
        [sys.executable, "-m", "netoproc", "--duration", "5", "--format", "json", "--verbose"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_line(netoproc.stderr, "capturing on")

    def client(name, pid, count, size):
        with open("/proc/sys/kernel/ns_last_pid", "w") as last:
            last.write(str(pid - 1))  # the next process in this namespace gets `pid`
        proc = subprocess.Popen([sys.executable, peers, "udp-client", name, host, port,
                                 str(count), str(size)], stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate(timeout=30)
        return {"pid": proc.pid, **json.loads(out)}

    first = client("np-first", 300, 30, 400)
    second = client("np-second", 300, 20, 900)
    out, err = netoproc.communicate(timeout=60)
    print(json.dumps({"first": first, "second": second, "rows": json.loads(out)}))
""")


def test_a_reused_pid_is_a_new_process(hosts: TwoHosts) -> None:
    server = hosts.peer(hosts.b, "udp-server", str(UDP_PORT))
    wait_for_line(server.stdout, "ready")
    # a pid namespace of its own, where nothing else forks, so the test picks the pids
    driver = hosts.start(hosts.a, ["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                                   "-c", REUSE_DRIVER, PEERS, hosts.b4, str(UDP_PORT)])  # fmt: skip
    out, err = driver.communicate(timeout=90)
    assert driver.returncode == 0, err
    result = json.loads(out)
    assert result["first"]["pid"] == result["second"]["pid"] == 300
    rows = {(row["pid"], row["process"]): row for row in result["rows"]}
    for name, expected in (("np-first", _udp_totals(30, 400)),
                           ("np-second", _udp_totals(20, 900))):  # fmt: skip
        row = rows[300, name]
        assert {k: row[k] for k in expected} == expected, name


# hostile names, pipes --------------------------------------------------------------

HOSTILE = "\x1b[31mev\til\nx"  # 12 bytes: fits the kernel's 15-byte comm
SHOWN = "\\x1b[31mev\\til\\nx"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def test_a_hostile_process_name_in_every_format(hosts: TwoHosts) -> None:
    server = hosts.peer(hosts.b, "udp-server", str(UDP_PORT))
    wait_for_line(server.stdout, "ready")
    runs = {}
    for fmt in ("tsv", "json", "pretty"):
        runs[fmt] = hosts.netoproc(hosts.a, "--duration", "4", "--format", fmt, "--verbose")
        wait_for_line(runs[fmt].stderr, "capturing on")
    info = _client(hosts, HOSTILE, hosts.b4, 10, 100)
    out = {}
    for fmt, proc in runs.items():
        out[fmt], err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        body = out[fmt].replace("\t", " ") if fmt == "tsv" else out[fmt]
        assert not RAW_CONTROL.search(body), (fmt, body)
    tsv = [line.split("\t") for line in out["tsv"].splitlines()]
    assert {len(fields) for fields in tsv} == {6}
    assert [str(info["pid"]), SHOWN] in [fields[:2] for fields in tsv]
    rows = {row["pid"]: row for row in json.loads(out["json"])}
    assert rows[info["pid"]]["process"] == HOSTILE  # JSON carries it exactly, escaped
    assert f"{info['pid']:<8} {SHOWN}" in out["pretty"]


@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_piped_into_a_reader_that_leaves(hosts: TwoHosts, reader: str) -> None:
    shell = f"{sys.executable} -m netoproc --duration 2 | {reader}; echo status=${{PIPESTATUS[0]}}"
    result = subprocess.run(
        ["ip", "netns", "exec", hosts.a, "bash", "-c", shell],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC},
    )  # fmt: skip
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[-1] == "status=0"
    if reader == "head -1":
        assert lines[:-1] == ["\t".join(("pid", "process", "rx_bytes", "tx_bytes",
                                         "rx_packets", "tx_packets"))]  # fmt: skip
