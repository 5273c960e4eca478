"""The terminal driver: Textual's own, with an input thread that sleeps while no key comes.

Textual's input thread wakes ten times a second, to see whether the app is
ending and whether a lone Esc has waited long enough to be a key. Idle, that
was a fifth of the monitor's CPU. This one waits for the terminal or for the
end (`exit_event` wakes it through a pipe), and polls at Textual's pace only
for a moment after each key, while a key sequence may still be incomplete.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from codecs import getincrementaldecoder
from typing import Any

from textual._xterm_parser import XTermParser
from textual.drivers.linux_driver import LinuxDriver

KEY_POLL_SECONDS = 0.1  # as Textual's own thread polls
KEY_POLLS = 10  # after a key, this many polls (~1 s): an Esc sequence ends well within them


class WakingEvent(threading.Event):
    """An event whose `set` also writes to a pipe a selector waits on."""

    def __init__(self, wake_fd: int) -> None:
        super().__init__()
        self.wake_fd = wake_fd  # -1 once the pipe is closed

    def set(self) -> None:
        super().set()
        if self.wake_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.wake_fd, b"x")


class QuietDriver(LinuxDriver):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake_read, self._wake_write = os.pipe()  # not inherited; pipe2 is Linux's
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        self.exit_event: WakingEvent = WakingEvent(self._wake_write)

    def run_input_thread(self) -> None:
        parser = XTermParser(self._debug)
        decode = getincrementaldecoder("utf-8")().decode
        # select(2), as Textual's: kqueue cannot wait on a terminal on macOS
        selector = selectors.SelectSelector()
        selector.register(self.fileno, selectors.EVENT_READ)
        selector.register(self._wake_read, selectors.EVENT_READ)
        polls = 0
        try:
            while not self.exit_event.is_set():
                ready = selector.select(KEY_POLL_SECONDS if polls else None)
                polls = max(0, polls - 1)
                for key, _mask in ready:
                    if key.fd == self._wake_read:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_read, 64)
                        continue
                    data = os.read(self.fileno, 4096)
                    if not data:  # input closed
                        return
                    for event in parser.feed(decode(data)):
                        self.process_message(event)
                    polls = KEY_POLLS
                for event in parser.tick():
                    self.process_message(event)
        finally:
            selector.close()

    def close(self) -> None:
        super().close()
        self.exit_event.wake_fd = -1
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
