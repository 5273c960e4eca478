"""The terminal driver's input thread, on a pseudo-terminal: keys arrive, a lone
Esc becomes a key once its sequence cannot go on, the idle thread does not
wake, and setting the exit event ends it at once."""

from __future__ import annotations

import os
import pty
import signal
import threading
import time
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual import events
from textual.app import App
from textual.message import Message

from netoproc.tui.driver import QuietDriver


class Recorder(QuietDriver):
    def __init__(self, app: App[None]) -> None:
        super().__init__(app)
        self.keys: list[str] = []

    def process_message(self, message: Message) -> None:
        if isinstance(message, events.Key):
            self.keys.append(message.key)


@pytest.fixture
async def driver() -> AsyncIterator[tuple[Recorder, int]]:
    """A driver reading the far end of a pseudo-terminal, and the near end to type into
    (a driver is made inside the app's event loop)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTSTP, signal.SIGCONT)}
    near, far = pty.openpty()
    tty.setraw(far)  # as the app sets its terminal: bytes arrive as typed, not by lines
    recorder = Recorder(App())
    recorder.fileno = far
    try:
        yield recorder, near
    finally:
        recorder.close()
        os.close(near)
        os.close(far)
        for number, handler in handlers.items():
            signal.signal(number, handler)


def wait_for(check: object, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def wakeups(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    switches = ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
    return sum(int(line.split()[1]) for line in status.splitlines() if line.startswith(switches))


async def test_keys_a_lone_escape_an_idle_sleep_and_a_prompt_end(
    driver: tuple[Recorder, int],
) -> None:
    recorder, terminal = driver
    thread = threading.Thread(target=recorder.run_input_thread)
    thread.start()
    try:
        os.write(terminal, b"q\xc3")  # a key, and half of a two-byte character
        os.write(terminal, b"\xa9")
        wait_for(lambda: len(recorder.keys) >= 2)
        assert recorder.keys[:2] == ["q", "é"]
        os.write(terminal, b"\x1b")  # nothing follows: after its timeout, Escape
        wait_for(lambda: "escape" in recorder.keys)
        assert recorder.keys == ["q", "é", "escape"]
        time.sleep(1.5)  # past the polls that follow a key
        before = wakeups(thread)
        time.sleep(1.0)
        assert wakeups(thread) - before <= 1  # Textual's own thread: ten a second
        started = time.monotonic()
        recorder.exit_event.set()
        thread.join(timeout=5)
        assert not thread.is_alive() and time.monotonic() - started < 0.5
    finally:
        recorder.exit_event.set()
        thread.join(timeout=5)
