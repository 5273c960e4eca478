"""The Linux capture's readers wait long when idle and stop at once when woken.

Each case runs in a namespace of its own whose only interface is down, so no
packet can end a wait early: only `wake` can.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.live

READER = """
import sys, threading, time
from netoproc.capture.linux import LinuxFirstPackets, READ_WAIT, open_capture
reader = open_capture() if sys.argv[1] == "ring" else LinuxFirstPackets()
read = (lambda: reader.read(5.0)) if sys.argv[1] == "ring" else reader.read
got = []
waiting = threading.Thread(target=lambda: got.append(read()))
started = time.monotonic()
waiting.start()
time.sleep(0.2)
woken = time.monotonic()
reader.wake()
waiting.join(3)
print(woken - started, time.monotonic() - woken, waiting.is_alive(), got, READ_WAIT)
reader.close()
"""


@pytest.fixture
def quiet_namespace() -> Iterator[str]:
    name = f"npq{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


@pytest.mark.parametrize("reader", ["ring", "first-packets"])
def test_a_waiting_read_ends_as_soon_as_it_is_woken(quiet_namespace: str, reader: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", quiet_namespace, sys.executable, "-c", READER, reader],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    before_wake, after_wake, alive, got, read_wait = done.stdout.split(maxsplit=4)
    assert alive == "False"
    assert got.startswith("[[]]")  # nothing arrived: the wake alone ended the wait
    assert float(after_wake) < 0.1
    assert float(read_wait) > float(before_wake)  # unwoken, it would have waited longer
