"""The command line as users meet it: options, messages and exit codes.

Each case runs the real program in a subprocess. Exit codes: 1 not root,
2 capture device or file unavailable, 3 invalid arguments.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netoproc import __version__

CAPTURES = Path(__file__).parent / "data" / "captures" / "tcpdump"
BIN = Path(sys.executable).parent


def run(
    *args: str, argv0: str | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / argv0)] if argv0 else [sys.executable, "-m", "netoproc"]
    return subprocess.run([*prefix, *command, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args",
    [
        ["--duration", "0.5"],
        ["--duration", "3600.5"],
        ["--duration", "soon"],
        ["--duration", "nan"],
        ["--bpf-buffer", "4095"],
        ["--bpf-buffer", "16777217"],
        ["--bpf-buffer", "2.5"],
        ["--interval", "0.05"],
        ["--interval", "11"],
        ["--format", "xml"],
        ["--sort", "bytes"],
        ["--no-such-option"],
        ["--monitor", "--duration", "5"],
        ["--duration"],
        ["extra-positional"],
        ["--view", "sockets"],
        ["--format", "ndjson"],
        ["--monitor", "--format", "jsonl"],
        ["--monitor", "--listen"],
        ["--monitor", "--view", "dns"],
        ["--view", "connection"],  # the monitor would start: --view is for tables
        ["--read", "x.pcap", "--listen", "9786"],
        ["--view", "dns", "--no-dns", "--duration", "1"],
        ["--listen", "0"],
        ["--listen", "65536"],
        ["--listen", "localhost:http"],
        ["--listen", "::1:9786"],
        ["--listen", "[::1]9786"],
        ["--listen", ":9786"],
        ["--ledger-only"],
        ["--ledger", "usage.db", "--read", "capture.pcap"],
        ["--ledger", "usage.db", "--ledger-only", "--monitor"],
        ["--ledger-limit", "0.5"],
        ["--format", "json", "report"],  # `report` only as the first argument
    ],
)
def test_invalid_arguments_exit_3_with_one_clear_line(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 3
    assert result.stdout == ""
    first, hint = result.stderr.splitlines()
    assert first.startswith("error: ")
    assert hint == "Try 'netoproc --help' for more information."
    assert "Traceback" not in result.stderr


def test_help_and_version() -> None:
    helped = run("--help")
    assert helped.returncode == 0
    options = (
        "duration monitor format filter interface sort no-color no-dns bpf-buffer interval read "
        "view listen"
    )
    for option in options.split():
        assert f"--{option}" in helped.stdout
    assert "IP-layer bytes" in helped.stdout
    for group in ("mode", "what is shown", "capture:", "usage ledger", "general:", "examples:"):
        assert group in helped.stdout
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.splitlines()[0] == f"netoproc {__version__}"  # backends: test_backends


@pytest.mark.parametrize("name", ["netop", "netoproc"])
def test_not_root_is_told_to_use_sudo(name: str) -> None:
    # a user namespace makes us uid 65534 with no privilege over this machine
    result = run("--duration", "1", argv0=name, prefix=("unshare", "--map-user=65534"))
    assert result.returncode == 1
    assert result.stderr == f"error: {name} requires root privileges. Run with: sudo {name}\n"
    assert result.stdout == ""


def test_unknown_interface_exits_2_naming_it() -> None:
    result = run("--duration", "1", "--interface", "nosuch0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "nosuch0" in result.stderr and "no such interface" in result.stderr


@pytest.mark.parametrize(
    ("address", "named"),
    [("192.0.2.1:9786", "192.0.2.1:9786"), ("[2001:db8::7]:80", "[2001:db8::7]:80"),
     ("no-such-host.invalid:9786", "no-such-host.invalid:9786")],
)  # fmt: skip
def test_unbindable_listen_address_exits_2_naming_it(address: str, named: str) -> None:
    result = run("--listen", address, "--duration", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: cannot listen on {named}: ")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("9786", ("127.0.0.1", 9786)), ("0.0.0.0:80", ("0.0.0.0", 80)),
     ("[::]:9786", ("::", 9786)), ("host.example:1", ("host.example", 1))],
)  # fmt: skip
def test_listen_addresses(text: str, parsed: tuple[str, int]) -> None:
    from netoproc.cli import parse_listen

    assert parse_listen(text) == parsed


def test_listen_needs_root() -> None:
    result = run("--listen", argv0="netoproc", prefix=("unshare", "--map-user=65534"))
    assert result.returncode == 1 and "requires root" in result.stderr


def test_read_needs_no_root_and_prints_processes_from_pktap() -> None:
    result = run("--read", str(CAPTURES / "LINKTYPE_PKTAP.pcap"), "--format", "json",
                 prefix=("unshare", "--map-user=65534"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["pid"] is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        (b"", "too short"),
        (b"not a capture file at all, sorry", "not a pcap"),
    ],
)
def test_unreadable_read_file_exits_2(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "input.pcap"
    if content is not None:
        path.write_bytes(content)
    result = run("--read", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert result.stdout == ""


def test_truncated_read_file_warns_and_shows_what_came_before(tmp_path: Path) -> None:
    whole = (CAPTURES / "dns_tcp.pcap").read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(whole[:-10])
    full, cut = run("--read", str(CAPTURES / "dns_tcp.pcap")), run("--read", str(path))
    assert cut.returncode == 0
    assert cut.stderr.startswith("warning: ") and cut.stderr.count("\n") == 1
    full_row, cut_row = (
        full.stdout.splitlines()[1].split("\t"),
        cut.stdout.splitlines()[1].split("\t"),
    )
    assert int(cut_row[4]) + int(cut_row[5]) == int(full_row[4]) + int(full_row[5]) - 1


def test_closed_pipe_is_quiet() -> None:
    big = str(CAPTURES / "edns-opts.pcap")
    shell = f"{sys.executable} -m netoproc --read {big} --format pretty | head -c 10"
    result = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=60)
    assert result.stderr == ""


@pytest.mark.live
def test_sigterm_ends_a_snapshot_early_and_prints_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "netoproc", "--duration", "60", "--format", "json", "--verbose"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    assert "capturing on" in proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert isinstance(json.loads(out), list)
    assert "packets" in err


@pytest.mark.parametrize("args", [(), ("--monitor",)])
def test_monitor_mode_checks_root_before_opening_the_screen(args: tuple[str, ...]) -> None:
    result = run(*args, argv0="netoproc", prefix=("unshare", "--map-user=65534"))
    assert result.returncode == 1
    assert result.stderr == "error: netoproc requires root privileges. Run with: sudo netoproc\n"
    assert result.stdout == ""  # the terminal was never switched to the full screen


def test_monitor_on_an_unknown_interface_exits_2_before_opening_the_screen() -> None:
    result = run("--interface", "nosuch0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "nosuch0" in result.stderr
    assert result.stdout == ""


def test_monitor_replaying_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    result = run("--monitor", "--read", str(tmp_path / "missing.pcap"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "No such file" in result.stderr
    assert result.stdout == ""


def test_a_plain_snapshot_never_loads_the_exporters_library() -> None:
    code = (
        "import sys\n"
        "from netoproc.cli import main\n"
        f"main(['--read', {str(CAPTURES / 'dns_tcp.pcap')!r}, '--view', 'dns'])\n"
        "print('prometheus_client' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.stderr.strip() == "False"
    assert result.stdout.startswith("time\tprocess\tpid\tname")


def test_the_group_view_sums_the_process_view() -> None:
    """A replay names no containers: one `-` row with every process's traffic."""
    capture = str(CAPTURES / "dns_tcp.pcap")
    processes = json.loads(run("--read", capture, "--format", "json").stdout)
    groups = json.loads(run("--read", capture, "--view", "group", "--format", "json").stdout)
    assert [g["group"] for g in groups] == [None]
    for key in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"):
        assert groups[0][key] == sum(p[key] for p in processes)
    assert groups[0]["processes"] == len(processes)
