"""The monitor in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen.

netoproc runs inside a network namespace of its own (loopback only) while a
process that names itself `np-stream` streams to a local sink. The test
walks through the views, filters, expands, quits, and checks that the
terminal is back as it was: the alternate screen left, the cursor shown,
mouse reporting off, the shell's exit status 0. The same is checked for
Ctrl-C, SIGTERM, SIGHUP and an internal error.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

pytestmark = pytest.mark.live

ROOT = Path(__file__).parents[2]
PORT = 5301
SIZE = (160, 40)
# the pane's own size, not one inherited from the test runner's environment
TERMINAL_ENV = "env -u COLUMNS -u LINES TERM=xterm-256color"


def wait_for(
    what: str, check: Callable[[], bool], tmux: Tmux | None = None, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    screen = f"; the screen:\n{tmux.screen()}" if tmux else ""
    raise AssertionError(f"timed out waiting for {what}{screen}")


class Tmux:
    """One tmux server of our own (its own socket), one pane, one command."""

    def __init__(self, socket_name: str) -> None:
        self.socket = socket_name

    def __call__(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                                text=True, timeout=10, check=True)  # fmt: skip
        return result.stdout

    def start(self, command: str) -> None:
        # the pane survives the command, so the screen after exit can be read
        self("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(SIZE[0]),
             "-y", str(SIZE[1]), f"{command}; echo EXIT=$?; sleep 600")  # fmt: skip

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def lines(self) -> list[str]:
        return self.screen().splitlines()

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "t", *keys)

    def flag(self, name: str) -> str:
        return self("display-message", "-p", "-t", "t", f"#{{{name}}}").strip()

    def status(self) -> str:
        lines = self.lines()
        return lines[-1] if lines else ""

    def program_pid(self) -> int:
        """The pid of the program the pane's shell started (netoproc itself)."""
        shell = int(self.flag("pane_pid"))
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        return int(children[0])

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)  # fmt: skip


def showing(tmux: Tmux, view: str) -> bool:
    return tmux.status().lstrip().startswith(view)


def assert_restored(tmux: Tmux, exit_line: str = "EXIT=0") -> None:
    wait_for("the program to exit", lambda: exit_line in tmux.screen(), tmux)
    assert tmux.flag("alternate_on") == "0"  # back on the normal screen
    assert tmux.flag("cursor_flag") == "1"  # cursor visible
    assert tmux.flag("mouse_any_flag") == "0"  # no mouse reporting left on
    assert tmux.flag("keypad_cursor_flag") == "0"
    assert "running" not in tmux.screen()  # nothing of the TUI left on the shell's screen


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    name = f"nptui{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    # a server of its own per test: the last one may still be shutting down
    server = Tmux(f"netoproc-test-{uuid.uuid4().hex[:12]}")
    yield server
    server.kill()


def in_namespace(namespace: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


def netoproc_command(namespace: str, *args: str) -> str:
    argv = in_namespace(namespace, sys.executable, "-m", "netoproc", *args)
    return f"cd {ROOT} && {TERMINAL_ENV} " + " ".join(argv)


@pytest.fixture
def stream(namespace: str) -> Iterator[None]:
    procs: list[subprocess.Popen[str]] = []
    sink = subprocess.Popen(
        in_namespace(namespace, sys.executable, "-m", "tests.tui.streamer", "sink", str(PORT)),
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    procs.append(sink)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        argv = ("stream", "np-stream", str(PORT), "60")
        procs.append(subprocess.Popen(
            in_namespace(namespace, sys.executable, "-m", "tests.tui.streamer", *argv), cwd=ROOT,
            text=True,
        ))  # fmt: skip
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        if sink.stdout:
            sink.stdout.close()


RATE = re.compile(r"\b\d+(?:\.\d)?[KM]\b")  # a compact, non-zero rate: 98K, 1.2M


def test_views_filter_expand_and_quit_in_a_real_terminal(
    tmux: Tmux, namespace: str, stream: None
) -> None:
    tmux.start(netoproc_command(namespace, "--interval", "0.5"))

    def streamer_row() -> str:
        return next((line for line in tmux.lines() if " np-stream " in line), "")

    wait_for("np-stream with non-zero rates", lambda: len(RATE.findall(streamer_row())) >= 2, tmux)
    assert tmux.status().lstrip().startswith("Process")

    tmux.keys("Tab")
    wait_for("the Connection view", partial(showing, tmux, "Connection"), tmux)
    wait_for("the stream's connection", lambda: any(
        "np-stream" in line and f"127.0.0.1:{PORT}" in line and "KB/s" in line
        for line in tmux.lines()
    ), tmux)  # fmt: skip
    for view in ("Interface", "DNS", "Process"):
        tmux.keys("Tab")
        wait_for(f"the {view} view", partial(showing, tmux, view), tmux)
        if view == "Interface":
            assert "lo (Loopback)" in tmux.screen()

    tmux.keys("/", "np-str", "Enter")
    wait_for("the filter", lambda: "filter: np-str" in tmux.status(), tmux)
    rows = [line for line in tmux.lines()[2:-1] if line.strip()]
    assert rows and all("np-stream" in line for line in rows), rows

    tmux.keys("Enter")
    wait_for("the expanded connection", lambda: any(
        re.search(rf"[├└]─ fd=\d+ +TCP +127\.0\.0\.1:\d+ → 127\.0\.0\.1:{PORT} +ESTABLISHED +lo",
                  line)
        for line in tmux.lines()
    ), tmux)  # fmt: skip

    tmux.keys("q")
    assert_restored(tmux)


@pytest.mark.parametrize("stop", ["ctrl-c", "SIGTERM", "SIGHUP"])
def test_the_terminal_is_restored_however_the_monitor_is_stopped(
    tmux: Tmux, namespace: str, stop: str
) -> None:
    tmux.start(netoproc_command(namespace))
    wait_for("the monitor", lambda: "sort: traffic" in tmux.status(), tmux)
    if stop == "ctrl-c":
        tmux.keys("C-c")
    else:
        os.kill(tmux.program_pid(), getattr(signal, stop))
    assert_restored(tmux)


def test_the_terminal_is_restored_after_an_internal_error(tmux: Tmux) -> None:
    # a snapshot the views cannot draw: the app fails while drawing it
    code = (
        "import dataclasses, sys;"
        "from netoproc.tui.app import MonitorOptions, run_monitor;"
        "from netoproc.tui.source import StaticSource;"
        "from tests.fixtures import monitor_snapshot;"
        "broken = dataclasses.replace(monitor_snapshot(), processes=(None,));"
        "sys.exit(run_monitor(StaticSource(broken), MonitorOptions()))"
    )
    tmux.start(f'cd {ROOT} && {TERMINAL_ENV} {sys.executable} -c "{code}"')
    assert_restored(tmux, exit_line="EXIT=4")
    screen = tmux.screen()
    assert "error: unexpected AttributeError" in screen
    assert "Traceback" not in screen
