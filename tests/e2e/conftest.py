"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["eBPF", "fallback"])
def owner_source(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test twice: with socket owners from the kernel (eBPF), and with the
    fallback that reads the socket table and /proc (NETOP_EBPF=off), which kernels
    without the tracepoints, or runs without CAP_BPF, use."""
    if request.param == "fallback":
        monkeypatch.setenv("NETOP_EBPF", "off")
    else:
        monkeypatch.delenv("NETOP_EBPF", raising=False)
    return str(request.param)
