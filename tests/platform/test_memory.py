"""Freed heap goes back to the system: measured by the kernel (VmRSS), in a
fresh interpreter each, since the allocator's state is the whole process's."""

from __future__ import annotations

import subprocess
import sys

# A large block freed first (as libbpf frees the parsed BTF), then 40 MiB of
# 200 KiB blocks with one small block allocated after them, then the blocks freed:
# prints the resident MiB the frees left behind.
SCRIPT = """
import sys
from netoproc.platform import memory

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

if "pin" in sys.argv:
    memory.pin_mmap_threshold()
big = bytes(20 << 20)
del big
before = rss()
blocks = [bytes(200 << 10) for _ in range(200)]
survivor = bytes(1024)
del blocks
if "give-back" in sys.argv:
    memory.give_back()
print(round(rss() - before, 1))
"""


def _left_behind(*how: str) -> float:
    run = subprocess.run([sys.executable, "-c", SCRIPT, *how], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return float(run.stdout)


def test_without_either_the_freed_blocks_stay_resident() -> None:
    # the habit the module exists for: if glibc ever stops it, this says so
    assert _left_behind() > 20


def test_a_pinned_threshold_unmaps_large_blocks_when_freed() -> None:
    assert _left_behind("pin") < 5


def test_give_back_returns_free_heap_pages() -> None:
    assert _left_behind("give-back") < 5
