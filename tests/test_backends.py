"""--version names the backends this machine offers, probed without privileges.

The probes read what can be known without root (libbpf, the kernel's BTF,
this process's capabilities) and say what capturing would need.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from netoproc import __version__
from netoproc.backends import version_text
from netoproc.capture import linux as capture_linux
from netoproc.platform import linux as platform_linux


def version(*prefix: str, env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "netoproc", "--version"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout.splitlines()


def test_as_root_it_names_the_ring_the_kernel_and_the_tracer() -> None:
    lines = version()
    assert lines[0] == f"netoproc {__version__}"
    release = os.uname().release
    assert lines[1] == f"capture: AF_PACKET ring + eBPF counting (kernel {release})"
    assert lines[2] == "owners: eBPF tracer; fallback: /proc + sock_diag"
    assert len(lines) == 3  # root lacks nothing


def test_without_privileges_it_says_the_same_and_what_capturing_needs() -> None:
    # a user namespace makes us uid 65534 with no capability over this machine
    lines = version("unshare", "--map-user=65534")
    assert lines[1].startswith("capture: AF_PACKET ring + eBPF counting")
    assert lines[-1] == (
        "needs root (sudo netoproc) to capture: this process lacks CAP_NET_RAW, CAP_BPF, "
        "CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE; --read and report need no privileges"
    )


def test_ebpf_turned_off_names_the_fallbacks() -> None:
    lines = version(env={"NETOP_EBPF": "off"})
    assert "counting in the kernel turned off" in lines[1]
    assert lines[2] == "owners: /proc + sock_diag (the eBPF tracer turned off)"
    assert lines[3] == "eBPF: turned off (NETOP_EBPF=off)"


def test_without_libbpf_it_says_why_there_is_no_ebpf(monkeypatch: pytest.MonkeyPatch) -> None:
    def unusable(*, core: bool) -> str:
        return "libbpf.so.1 is not usable (not found)"

    monkeypatch.setattr(capture_linux, "unusable", unusable)
    monkeypatch.setattr(platform_linux, "unusable", unusable)
    lines = version_text("netop", "9.9", True).splitlines()
    assert lines[0] == "netop 9.9"
    assert lines[1].endswith("; no counting in the kernel: libbpf.so.1 is not usable (not found))")
    assert (
        lines[2]
        == "owners: /proc + sock_diag (no eBPF tracer: libbpf.so.1 is not usable (not found))"
    )


def test_netop_names_itself() -> None:
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "netop"), "--version"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.startswith(f"netop {__version__}\n")
