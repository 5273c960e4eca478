"""The composition root: picks the capture source, the platform and the clock,
owns the threads, and runs the loop that feeds the engine.

Live: a capture thread moves finished kernel blocks into a bounded queue
(never waiting: a full queue drops the block and counts its packets); the
engine thread takes the owners the kernel reported (Linux eBPF: the
platform's own thread collects them), decodes, ingests, asks the platform
about new flows at once, refreshes the socket table, and ticks. Without the
kernel's owners, a third thread, the fast lane, watches the packets that open
flows (TCP SYNs, DNS queries) one by one and has the platform look their
sockets up the moment they leave, so a process that exits a few milliseconds
later is still named. Replay (`--read`): one thread, and time comes from the
packets, so the same file always gives the same answer.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from netoproc.capture import FirstPackets, LiveCapture, open_first_packets, open_live
from netoproc.capture.records import RecordBlock, merge_blocks
from netoproc.clock import Clock
from netoproc.decode.columnar import decode_block
from netoproc.decode.scalar import Malformed, decode_record
from netoproc.engine import Engine
from netoproc.model import FlowKey
from netoproc.platform import Platform, PlatformError, memory, open_platform
from netoproc.snapshot import Snapshot

log = logging.getLogger("netoproc")
T = TypeVar("T")

QUEUE_BYTES = 64 << 20
# Blocks that arrive within this long of each other are decoded as one batch:
# each batch has a fixed cost, so a steady trickle must not become 100 batches/s.
COALESCE_SECONDS = 0.02
COALESCE_BYTES = 16 << 20
CAPTURE_WAIT = 5.0  # idle, the capture thread sleeps; `wake` ends the wait when the session stops
SOCKET_TABLE_SECONDS = 5.0  # a full TCP table walk costs the kernel milliseconds
# At most one full table instead of lookups this often: under a flood of new flows
# the platform's "too many at once" must not turn every batch into a table dump.
FALLBACK_TABLE_SECONDS = 1.0
PREFETCH_PER_SECOND = 2000  # a SYN flood must not turn into a lookup flood
# Unknown flows asked about in the connection tracker per tick (two netlink
# round trips each, ~12 us): a scan's thousands of unknown flows wait their turn.
NAT_PER_TICK = 256
# The fast lane must run within about a millisecond of a packet, even while the
# engine thread holds the GIL; Python's default hand-over interval is 5 ms. It
# waits for the interpreter again after each of its ~15 reads of /proc and
# netlink, so a tick (tens of ms with 1,000 flows) held it up 15-40 ms at 1 ms
# and ~10 ms at 0.2 ms (timed while bench/short_lived.py ran).
GIL_SWITCH_SECONDS = 0.0002


@dataclass(frozen=True, slots=True)
class Settings:
    interface: str | None = None
    buffer_bytes: int = 2 << 20
    dns: bool = True
    interval: float = 1.0
    kernel_owners: bool = True  # Linux: ask the kernel to report socket owners (eBPF)
    kernel_counts: bool = True  # Linux: let the kernel count most packets per flow (eBPF)


class BlockQueue:
    """Blocks from the capture thread to the engine thread, bounded in bytes."""

    def __init__(self, capacity: int = QUEUE_BYTES) -> None:
        self._blocks: deque[RecordBlock] = deque()
        self._bytes = 0
        self._capacity = capacity
        self._ready = threading.Condition()
        self.dropped_packets = 0

    def put(self, block: RecordBlock) -> bool:
        with self._ready:
            if self._bytes + len(block.data) > self._capacity:
                self.dropped_packets += len(block)
                return False
            self._blocks.append(block)
            self._bytes += len(block.data)
            self._ready.notify()
            return True

    def get(self, timeout: float) -> RecordBlock | None:
        with self._ready:
            if not self._blocks and timeout > 0:
                self._ready.wait(timeout)
            if not self._blocks:
                return None
            block = self._blocks.popleft()
            self._bytes -= len(block.data)
            return block


class LiveSession:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        capture: LiveCapture | None = None,
        platform: Platform | None = None,
        first_packets: FirstPackets | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        memory.pin_mmap_threshold()  # before the kernel programs load
        self.capture = capture or open_live(
            settings.interface, settings.buffer_bytes, settings.dns, settings.kernel_counts
        )
        try:
            self.platform: Platform | None = platform or open_platform(settings.kernel_owners)
        except PlatformError as exc:
            log.warning("no process attribution: %s", exc)
            self.platform = None
        if first_packets is None and capture is None and self.platform and self.platform.fast_lane:
            first_packets = open_first_packets(settings.interface)
        self.first_packets = first_packets
        self.engine = Engine(
            started=clock.now(),
            interval=settings.interval,
            process_lookups=bool(self.platform),
            dns=settings.dns,
        )
        self.queue = BlockQueue()
        self.stopping = threading.Event()
        self._platform_errors = 0  # questions to the OS that failed (see CaptureHealth)
        self._errors_lock = threading.Lock()
        self._capture_thread = threading.Thread(
            target=self._capture_loop, name="netoproc-capture", daemon=True
        )
        self._first_packets_thread = threading.Thread(
            target=self._first_packets_loop, name="netoproc-first-packets", daemon=True
        )
        self._next_table = 0.0
        self._table_read = -float("inf")  # monotonic time of the last full socket table

    # capture threads ----------------------------------------------------------

    def _capture_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                blocks = self.capture.read(CAPTURE_WAIT)
            except OSError as exc:  # e.g. the one interface went away: keep trying
                log.debug("capture read failed: %s", exc)
                self.stopping.wait(0.5)
                continue
            for block in blocks:
                self.queue.put(block)
        try:
            for block in self.capture.drain():
                self.queue.put(block)
        except OSError as exc:
            log.debug("capture drain failed: %s", exc)

    def _first_packets_loop(self) -> None:
        assert self.first_packets is not None and self.platform is not None
        self.platform.prefetch([])  # sets up its netlink socket before the first packet
        budget, refilled = float(PREFETCH_PER_SECOND), self.clock.monotonic()
        while not self.stopping.is_set():
            flows = []
            try:
                arrived = self.first_packets.read()
            except OSError as exc:
                log.debug("first-packet read failed: %s", exc)
                self.stopping.wait(0.5)
                continue
            for linktype, data, length, _iface in arrived:
                try:
                    packet = decode_record(data, 0, len(data), length, linktype)
                except Malformed:
                    continue
                if packet is not None and packet.transport:
                    flows.append((packet.proto, packet.src, packet.sport, packet.dst, packet.dport))
            now = self.clock.monotonic()
            budget = min(PREFETCH_PER_SECOND, budget + (now - refilled) * PREFETCH_PER_SECOND)
            refilled = now
            if flows and budget >= 1:
                flows = flows[: int(budget)]
                budget -= len(flows)
                self._ask("prefetch", self.platform.prefetch, flows)

    # engine thread ----------------------------------------------------------

    def _ask(self, what: str, question: Callable[..., T], *args: Any) -> T | None:
        """A question to the OS, which may fail for a moment (a process vanishing, /proc
        briefly unreadable): the run goes on, the failure is counted."""
        try:
            return question(*args)
        except (OSError, PlatformError) as exc:
            with self._errors_lock:  # the fast lane's thread asks too
                self._platform_errors += 1
            log.debug("%s failed: %s", what, exc)
            return None

    def _refresh_sockets(self) -> None:
        platform = self.platform
        if platform is not None:
            table = self._ask("socket table", platform.socket_table)
            if table is not None:
                self.engine.update_sockets(table)
                memory.give_back()  # what the table's parse freed
            resolvers = self._ask("resolvers", platform.resolvers)
            if resolvers is not None:
                self.engine.update_resolvers(resolvers)
        self._table_read = self.clock.monotonic()
        self._next_table = self._table_read + SOCKET_TABLE_SECONDS

    def _sight(self) -> None:
        """The owners the kernel reported since the last call, to the engine."""
        if self.platform is not None:
            self.engine.sight(self.platform.sightings())

    def _ingest(self, block: RecordBlock) -> None:
        batch = decode_block(block, dns_payloads=self.settings.dns)
        self._sight()  # first: a new flow's owner is usually among them
        self._look_up(self.engine.ingest(batch))

    def _take_counts(self) -> None:
        """What the kernel counted since the last tick (Linux eBPF), to the engine."""
        offset = self.clock.now() - self.clock.monotonic()  # the kernel counts in monotonic ns
        taken = self._ask("kernel counters", self.capture.counts, offset)
        if taken is not None:
            counts, rtt = taken
            self._look_up(self.engine.ingest_counts(counts))
            self.engine.add_rtt(rtt)
        self.engine.note_counting(*self.capture.counting())

    def _look_up(self, new: list[FlowKey]) -> None:
        """Owners for new flows the kernel did not name, from the platform at once."""
        platform = self.platform
        if new and platform is not None:
            found = self._ask("socket lookup", platform.lookup, new)
            if found is None:  # too many at once (or no answer): one full table for them all
                if self.clock.monotonic() >= self._table_read + FALLBACK_TABLE_SECONDS:
                    self._refresh_sockets()
                # else they stay pending: the next full table answers them
            else:
                self.engine.attribute(found)

    def _translate(self) -> None:
        """Flows no socket here carries, through the connection tracker: a flow seen
        through NAT takes the owner of the socket behind the translation."""
        platform = self.platform
        if platform is not None:
            questions = self.engine.nat_questions(NAT_PER_TICK)
            if questions:
                found = self._ask("conntrack", platform.translations, questions)
                if found is None:  # the tracker cannot be asked: the flows say so
                    self.engine.untranslatable(questions)
                elif found:
                    self.engine.translate(found)

    def _coalesce(self, first: RecordBlock, due: float) -> RecordBlock:
        """`first` and the blocks that follow it closely, as one block."""
        blocks, size = [first], len(first.data)
        until = min(self.clock.monotonic() + COALESCE_SECONDS, due)
        while size < COALESCE_BYTES:
            block = self.queue.get(until - self.clock.monotonic())
            if block is None:
                break
            blocks.append(block)
            size += len(block.data)
        return merge_blocks(blocks)

    def _tick(self) -> Snapshot:
        self.engine.note_capture_drops(self.capture.kernel_drops(), self.queue.dropped_packets)
        self._sight()  # first: the counted flows' owners are usually among them
        self._take_counts()
        if self.platform is not None:
            self.engine.note_owner_source(*self.platform.owner_source())
        if self.clock.monotonic() >= self._next_table:
            self._refresh_sockets()
        self._translate()
        now = self._read_interfaces()
        with self._errors_lock:
            self.engine.note_platform_errors(self._platform_errors)
        return self.engine.tick(now)

    def _read_interfaces(self) -> float:
        now = self.clock.now()
        platform = self.platform
        if platform is not None:
            interfaces = self._ask("interface counters", platform.interfaces)
            if interfaces is not None:
                self.engine.update_interfaces(interfaces, now)
        return now

    def run(
        self,
        duration: float | None,
        on_tick: Callable[[Snapshot], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> Snapshot:
        """Capture until `duration` seconds pass or `stop()`; return the last snapshot."""
        fast_lane = self.first_packets is not None and self.platform is not None
        # Interpreter-wide settings, for the fast lane alone (the fallback without
        # eBPF owners), and put back when the run ends: each buys the lane its
        # millisecond (figures above and below; tests/test_session.py checks both).
        switch_interval = sys.getswitchinterval()
        if fast_lane:
            sys.setswitchinterval(GIL_SWITCH_SECONDS)
            # A full garbage collection stops every thread while it walks the heap:
            # ~20 ms over start-up's objects (modules, numpy, the UI), long enough
            # for the fast lane to miss a DNS query's socket. Those objects live for
            # the whole run, so they are frozen out of every later collection.
            gc.freeze()
        try:
            return self._run(duration, on_tick, on_ready, fast_lane)
        finally:
            if fast_lane:
                sys.setswitchinterval(switch_interval)
                gc.unfreeze()

    def _run(
        self,
        duration: float | None,
        on_tick: Callable[[Snapshot], None] | None,
        on_ready: Callable[[], None] | None,
        fast_lane: bool,
    ) -> Snapshot:
        self._refresh_sockets()
        self._read_interfaces()
        self._capture_thread.start()
        if fast_lane:
            self._first_packets_thread.start()
        if on_ready:
            on_ready()
        start = self.clock.monotonic()
        deadline = start + duration if duration is not None else float("inf")
        next_tick = start + self.settings.interval
        try:
            while not self.stopping.is_set():
                now = self.clock.monotonic()
                if now >= deadline:
                    break
                block = self.queue.get(max(0.0, min(next_tick, deadline) - now))
                if block is not None:
                    self._ingest(self._coalesce(block, min(next_tick, deadline)))
                if self.clock.monotonic() >= next_tick:
                    snapshot = self._tick()
                    next_tick += self.settings.interval * max(
                        1, int((self.clock.monotonic() - next_tick) // self.settings.interval) + 1
                    )
                    if on_tick:
                        on_tick(snapshot)
        finally:
            self.stop()
            self._capture_thread.join()
            if self._first_packets_thread.is_alive():
                self._first_packets_thread.join()
        while (block := self.queue.get(0)) is not None:
            self._ingest(block)
        self._next_table = 0.0  # a last look for flows still unknown
        return self._tick()

    def stop(self) -> None:
        self.stopping.set()
        self.capture.wake()
        if self.first_packets is not None:
            self.first_packets.wake()

    def close(self) -> None:
        self.capture.close()
        if self.first_packets is not None:
            self.first_packets.close()
        if self.platform is not None:
            self.platform.close()


def replay(
    path: str,
    *,
    duration: float | None,
    settings: Settings,
    on_tick: Callable[[Snapshot], None] | None = None,
) -> tuple[Snapshot, str | None]:
    """Read a capture file through the engine; returns the snapshot and any file problem.

    Time comes from the packets: the window starts at the first packet and,
    with `duration`, ends that many seconds later. `on_tick` gets every
    interval's snapshot but the last, which is returned (as `LiveSession.run`).
    """
    from netoproc.capture.pcapfile import open_capture_file  # only replays need it

    capture = open_capture_file(path)
    engine: Engine | None = None
    end = float("inf")
    last = 0.0
    next_tick = 0.0
    for block in capture.blocks():
        if not len(block):
            continue
        if engine is None:
            first = float(block.ts[0])
            engine = Engine(
                started=first, interval=settings.interval, process_lookups=False, dns=settings.dns
            )
            end = first + duration if duration is not None else end
            next_tick = first + settings.interval
        inside = block.ts < end
        if not inside.all():
            block = block.select(inside)
        if len(block) and on_tick is None:
            _replay_ingest(engine, block, settings)
            last = max(last, float(block.ts.max()))
            if last >= next_tick:
                engine.tick(last)
                next_tick = last + settings.interval
        while len(block) and on_tick is not None:
            # a stream: every interval its own tick, as the live session ticks
            early = block.ts < next_tick
            if early.all():
                _replay_ingest(engine, block, settings)
                last = max(last, float(block.ts.max()))
                break
            if early.any():
                _replay_ingest(engine, block.select(early), settings)
            on_tick(engine.tick(next_tick))
            last = max(last, next_tick)
            block = block.select(~early)
            # silence in the file: no empty ticks, the next one after the next packet
            skipped = int((float(block.ts[0]) - next_tick) // settings.interval)
            next_tick += settings.interval * max(1, skipped + 1)
        if not inside.any():
            break
    capture.close()
    if engine is None:
        return Snapshot(time=0.0, started=0.0, interval=0.0), capture.problem
    return engine.tick(min(last, end)), capture.problem


def _replay_ingest(engine: Engine, block: RecordBlock, settings: Settings) -> None:
    batch = decode_block(block, dns_payloads=settings.dns)
    if settings.interface is not None:
        names = batch.interfaces.name
        batch = batch.select(
            np.fromiter((names(i) == settings.interface for i in batch.iface.tolist()),
                        bool, len(batch))
        )  # fmt: skip
    engine.ingest(batch)
