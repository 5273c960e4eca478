"""TCP connection health from the packets: RTT samples, jitter, retransmissions.

Everything here is measured from the local host's side: an RTT sample is the
time from a segment we sent to the peer's acknowledgement of it (the
handshake's SYN or SYN-ACK, a data segment under Karn's rule, or a TCP
timestamp the peer echoes exactly); a retransmission is a segment whose
sequence range was already sent, except keep-alives (zero or one byte just
below the high-water mark) and repeated zero-window probes. Segments the peer
sends twice and duplicate ACKs are counted too.

State lives in slots of numpy arrays, one slot per TCP flow, so a batch is
analysed with array operations over its TCP rows; Python never walks packets.
Within a batch, each flow resolves at most its outstanding probe and one new
one, which is plenty: batches arrive every few milliseconds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from netoproc.model import Direction

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
SAMPLES = 32  # RTT samples kept per flow, for jitter
JITTER_SECONDS = 10.0
# Sample and mark times are float32 seconds from an epoch moved forward once it
# is this far behind: within a day, float32 keeps a time to 8 ms
EPOCH_SECONDS = 86_400.0
_U32 = 0xFFFFFFFF
# (time, retransmits, segments sent) marks kept per flow for rates over the last
# JITTER_SECONDS: one a tick, at most one per MARK_SPACING, so the oldest kept
# is always at least JITTER_SECONDS old once the flow is that old
MARKS = 12
MARK_SPACING = JITTER_SECONDS / (MARKS - 1)
PROBE_ROUNDS = 1  # RTT samples per flow per batch: at most this, plus one
_M32 = 0xFFFFFFFF

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]


def _s32(x: I64) -> I64:
    """Sequence-space differences as signed 32-bit numbers (RFC 1982 arithmetic)."""
    return ((x + 0x80000000) & _M32) - 0x80000000


def _starts(sorted_values: I64) -> Bool:
    """Where each run of equal values begins."""
    starts = np.empty(len(sorted_values), np.bool_)
    if len(starts):
        starts[0] = True
        np.not_equal(sorted_values[1:], sorted_values[:-1], out=starts[1:])
    return starts


def _shifted(values: I64, first: int) -> I64:
    """`values` one place later, `first` in front."""
    out = np.empty_like(values)
    if len(out):
        out[0] = first
        out[1:] = values[:-1]
    return out


def _first_per_slot(slot: I64, mask: Bool) -> tuple[I64, I64]:
    """(slots, their first row) among rows where `mask` holds; rows are sorted by slot."""
    rows = np.flatnonzero(mask)
    first = _starts(slot[rows])
    return slot[rows][first], rows[first]


# name -> (dtype, value of an empty slot, extra dimensions)
_STATE: dict[str, tuple[type[np.generic], object, tuple[int, ...]]] = {
    "tx_hw": (np.int64, 0, ()), "tx_known": (np.bool_, False, ()),
    "rx_hw": (np.int64, 0, ()), "rx_known": (np.bool_, False, ()),
    "probe_ack": (np.int64, 0, ()), "probe_tsval": (np.int64, -1, ()),
    "probe_ts": (np.float64, 0.0, ()), "probe_on": (np.bool_, False, ()),
    "probe_dirty": (np.bool_, False, ()),
    "last_ack": (np.int64, -1, ()), "last_window": (np.int64, -1, ()),
    "peer_window_zero": (np.bool_, False, ()),
    "srtt": (np.float64, np.nan, ()),
    # ms, and seconds since the tracker's epoch: 32 bits halve the biggest share
    # of a slot (5,000 connections closing at once are 5,000 slots)
    "samples": (np.float32, np.nan, (SAMPLES,)),
    "sample_ts": (np.float32, -np.inf, (SAMPLES,)),
    "sample_pos": (np.int64, 0, ()),
    "retransmits": (np.int64, 0, ()), "segments_sent": (np.int64, 0, ()),
    "peer_retransmits": (np.int64, 0, ()), "dup_acks": (np.int64, 0, ()),
    # oldest first; an empty mark's time is -inf. Times from the epoch as samples';
    # counts modulo 2**32, as a mark is only ever subtracted from a count 10 s later
    "mark_at": (np.float32, -np.inf, (MARKS,)), "mark_resent": (np.uint32, 0, (MARKS,)),
    "mark_sent": (np.uint32, 0, (MARKS,)),
}  # fmt: skip


class TcpTracker:
    """Per-flow TCP analysis state, in the flow table's slots."""

    def __init__(self, capacity: int = 256) -> None:
        self._arrays: dict[str, npt.NDArray[Any]] = {}
        self._epoch: float | None = None  # of sample_ts and mark_at: the first one's, then moved
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        for name, (dtype, empty, extra) in _STATE.items():
            grown = np.full((capacity, *extra), empty, dtype)
            old = self._arrays.get(name)
            if old is not None:
                grown[: len(old)] = old
            self._arrays[name] = grown
        self._capacity = capacity

    def ensure(self, capacity: int) -> None:
        """Room for slots below `capacity` (the flow table's)."""
        if capacity > self._capacity:
            self._grow(capacity)

    def reset(self, slot: int | I64) -> None:
        """Forget what slots held: their new flows start afresh."""
        for name, (_dtype, empty, _extra) in _STATE.items():
            self._arrays[name][slot] = empty

    # the batch analysis --------------------------------------------------------

    def analyse(
        self,
        slot: I64,
        direction: npt.NDArray[np.int8],
        ts: F64,
        seq: I64,
        ack: I64,
        flags: I64,
        payload: I64,
        window: I64,
        tsval: I64,
        tsecr: I64,
    ) -> None:
        """Take a batch's TCP rows (any order of slots, arrival order within a slot)."""
        if not len(slot):
            return
        # a stable sort keeps arrival order within a flow; on 16-bit keys it is a radix sort
        small = self._capacity <= 0xFFFF
        order = np.argsort(slot.astype(np.uint16) if small else slot, kind="stable")
        slot, direction, ts = slot[order], direction[order], ts[order]
        seq, ack, flags, payload = seq[order], ack[order], flags[order], payload[order]
        window, tsval, tsecr = window[order], tsval[order], tsecr[order]
        a = self._arrays
        tx = direction == Direction.TX
        rx = ~tx
        seg_len = payload + ((flags & TCP_SYN) != 0) + ((flags & TCP_FIN) != 0)
        end = (seq + seg_len) & _M32
        control = (flags & (TCP_SYN | TCP_FIN | TCP_RST)) != 0

        tx_retx = self._resent(slot, tx & (seg_len > 0), seq, end, payload, control, "tx")
        rx_retx = self._resent(slot, rx & (seg_len > 0), seq, end, payload, control, "rx")
        np.add.at(a["retransmits"], slot[tx_retx], 1)
        np.add.at(a["peer_retransmits"], slot[rx_retx], 1)
        np.add.at(a["segments_sent"], slot[tx & (seg_len > 0)], 1)

        self._dup_acks(slot, rx, ack, flags, payload, window, control)

        # RTT: resolve the outstanding probe, start a new one, resolve that... a few
        # rounds, then a last resolve so no probe stays open past its own ACK
        position = np.arange(len(slot))
        after = np.full(self._capacity, -1, np.int64)  # per slot: rows up to here are used
        for _ in range(PROBE_ROUNDS):
            after = self._resolve(slot, rx, ts, ack, flags, tsecr, tx_retx, seq, position, after)
            after = self._start_probe(
                slot, tx, ts, seq, end, seg_len, tsval, tx_retx, position, after
            )
        after = self._resolve(slot, rx, ts, ack, flags, tsecr, tx_retx, seq, position, after)
        # a probe still open is spoilt (Karn) if its range was sent again since it started
        a = self._arrays
        spoilt = a["probe_on"][slot] & tx_retx & (_s32(seq - a["probe_ack"][slot]) < 0)
        a["probe_dirty"][slot[spoilt & (position > after[slot])]] = True

    def _resent(
        self, slot: I64, mask: Bool, seq: I64, end: I64, payload: I64, control: Bool, side: str
    ) -> Bool:
        """Rows sending sequence space that direction already sent; moves its high-water mark."""
        a = self._arrays
        hw, known = a[f"{side}_hw"], a[f"{side}_known"]
        rows = np.flatnonzero(mask)
        resent = np.zeros(len(slot), np.bool_)
        if not len(rows):
            return resent
        s = slot[rows]
        base = hw[s].astype(np.int64)
        # a flow seen for the first time starts at its first segment
        first = np.flatnonzero(_starts(s))
        new_slots = s[first]
        unknown = ~known[new_slots]
        first_base = np.zeros(self._capacity, np.int64)
        first_base[new_slots[unknown]] = seq[rows[first[unknown]]]
        base = np.where(known[s], base, first_base[s])
        rel_end = _s32(end[rows] - base)
        # the highest end sent before each row, per flow: one running maximum, with
        # each flow lifted above the previous one so the maximum never crosses flows
        rank = np.cumsum(_starts(s)) - 1
        lifted = rel_end + (rank << 34)
        running = np.maximum.accumulate(lifted)
        before = np.empty_like(running)
        before[1:] = running[:-1]
        before[0] = -(1 << 62)
        before = np.maximum(before - (rank << 34), 0)
        before[first] = 0
        keep_alive = (payload[rows] <= 1) & (rel_end == before) & ~control[rows]
        zero_window_probe = (payload[rows] == 1) & a["peer_window_zero"][s] & (side == "tx")
        resent[rows] = (rel_end <= before) & ~keep_alive & ~zero_window_probe
        top = np.maximum.reduceat(np.maximum(rel_end, 0), first)
        hw[new_slots] = (base[first] + top) & _M32
        known[new_slots] = True
        return resent

    def _dup_acks(
        self, slot: I64, rx: Bool, ack: I64, flags: I64, payload: I64, window: I64, control: Bool
    ) -> None:
        a = self._arrays
        rows = np.flatnonzero(rx & ((flags & TCP_ACK) != 0))
        if not len(rows):
            return
        s, acks, windows = slot[rows], ack[rows], window[rows]
        first_in_slot = _starts(s)
        previous_ack = np.where(first_in_slot, a["last_ack"][s], _shifted(acks, -1))
        previous_window = np.where(first_in_slot, a["last_window"][s], _shifted(windows, -1))
        dup = (
            (payload[rows] == 0)
            & ~control[rows]
            & (acks == previous_ack)
            & (windows == previous_window)
        )
        np.add.at(a["dup_acks"], s[dup], 1)
        last = np.roll(first_in_slot, -1)  # a run ends where the next begins
        a["last_ack"][s[last]] = acks[last]
        a["last_window"][s[last]] = windows[last]
        a["peer_window_zero"][s[last]] = windows[last] == 0

    def _resolve(
        self, slot: I64, rx: Bool, ts: F64, ack: I64, flags: I64, tsecr: I64,
        retx: Bool, seq: I64, position: I64, after: I64,
    ) -> I64:  # fmt: skip
        """Samples for outstanding probes acknowledged by rows after `after`."""
        a = self._arrays
        on = a["probe_on"][slot] & (position > after[slot])
        target = a["probe_ack"][slot]
        stamp = a["probe_tsval"][slot]
        by_ack = ((flags & TCP_ACK) != 0) & (_s32(ack - target) >= 0)
        by_echo = (stamp >= 0) & (tsecr == stamp)
        slots, rows = _first_per_slot(slot, on & rx & (by_ack | by_echo))
        if not len(slots):
            return after
        # Karn: a probe whose range was sent again is ambiguous, unless the peer echoed its stamp
        resent = on & retx & (_s32(seq - target) < 0)
        dirty_slots, dirty_rows = _first_per_slot(slot, resent)
        dirty_at = np.full(self._capacity, len(slot), np.int64)
        dirty_at[dirty_slots] = dirty_rows
        dirty = a["probe_dirty"][slots] | (dirty_at[slots] < rows)
        valid = ~dirty | by_echo[rows]
        self._sample(slots[valid], ts[rows[valid]] - a["probe_ts"][slots[valid]])
        a["probe_on"][slots] = False
        after = after.copy()
        after[slots] = rows
        return after

    def _start_probe(
        self, slot: I64, tx: Bool, ts: F64, seq: I64, end: I64, seg_len: I64, tsval: I64,
        retx: Bool, position: I64, after: I64,
    ) -> I64:  # fmt: skip
        a = self._arrays
        idle = ~a["probe_on"][slot] & (position > after[slot])
        slots, rows = _first_per_slot(slot, idle & tx & (seg_len > 0) & ~retx)
        if len(slots):
            a["probe_on"][slots] = True
            a["probe_dirty"][slots] = False
            a["probe_ack"][slots] = end[rows]
            a["probe_tsval"][slots] = tsval[rows]
            a["probe_ts"][slots] = ts[rows]
            after = after.copy()
            after[slots] = rows
        return after

    def _sample(self, slots: I64, seconds: F64, at: F64 | None = None) -> None:
        """Take RTT samples; `at`: when each was taken, if not its probe's end."""
        a = self._arrays
        ms = seconds * 1000.0
        srtt = a["srtt"][slots]
        a["srtt"][slots] = np.where(np.isnan(srtt), ms, srtt + (ms - srtt) / 8)
        pos = a["sample_pos"][slots]
        a["samples"][slots, pos] = ms
        taken = a["probe_ts"][slots] + seconds if at is None else at
        if len(taken):
            a["sample_ts"][slots, pos] = taken - self._epoch_for(float(taken.max()))
        a["sample_pos"][slots] = (pos + 1) % SAMPLES

    def _epoch_for(self, latest: float) -> float:
        """The epoch of sample and mark times, moved forward if `latest` is a day past it."""
        if self._epoch is None:
            self._epoch = latest
        elif latest - self._epoch > EPOCH_SECONDS:
            for name in ("sample_ts", "mark_at"):
                self._arrays[name] -= np.float32(latest - self._epoch)
            self._epoch = latest
        return self._epoch

    # what the kernel measured (counting in the kernel: capture/counts.py) ---------

    def add_counts(self, slot: I64, retransmits: I64, segments_sent: I64,
                   peer_retransmits: I64, dup_acks: I64) -> None:  # fmt: skip
        """Per flow (one row each), what the kernel counted of the segments it kept."""
        a = self._arrays
        a["retransmits"][slot] += retransmits
        a["segments_sent"][slot] += segments_sent
        a["peer_retransmits"][slot] += peer_retransmits
        a["dup_acks"][slot] += dup_acks

    def add_samples(self, slot: I64, seconds: F64, at: F64) -> None:
        """RTT samples the kernel took (Karn's rule applied there), in order."""
        for i in range(len(slot)):  # a flow may have several; few per tick each
            self._sample(slot[i : i + 1], seconds[i : i + 1], at[i : i + 1])

    # reading -------------------------------------------------------------------

    def figures_of(self, slots: I64, now: float) -> TcpFigures:
        """Many flows' figures at once, in the order of `slots`."""
        a = self._arrays
        since = now - JITTER_SECONDS - (self._epoch or 0.0)
        recent = a["sample_ts"][slots] >= since
        n = recent.sum(axis=1)
        jitter = np.full(len(slots), np.nan)
        some = np.flatnonzero(n >= 2)  # the rest have no jitter: spare them the arithmetic
        if len(some):
            samples = a["samples"][slots[some]].astype(np.float64)
            recent, k = recent[some], n[some]
            mean = np.where(recent, samples, 0.0).sum(axis=1) / k
            variance = np.where(recent, (samples - mean[:, None]) ** 2, 0.0).sum(axis=1) / k
            jitter[some] = np.sqrt(variance)
        return TcpFigures(
            rtt_ms=a["srtt"][slots],
            jitter_ms=jitter,
            retransmits=a["retransmits"][slots],
            segments_sent=a["segments_sent"][slots],
            peer_retransmits=a["peer_retransmits"][slots],
            dup_acks=a["dup_acks"][slots],
        )

    def recent(self, slots: I64, now: float, resent: I64, sent: I64) -> tuple[F64, F64, I64]:
        """Mark each flow's retransmits (`resent`, whichever source counts them) and
        segments sent at `now`; returns the seconds, retransmits and segments since
        the newest mark at least JITTER_SECONDS old (else the oldest kept)."""
        a = self._arrays
        epoch = self._epoch_for(now)
        fresh = a["mark_at"][slots, -1] <= now - MARK_SPACING - epoch
        due = slots[fresh]
        if len(due):
            for name, value in (("mark_at", now - epoch), ("mark_resent", resent[fresh] & _U32),
                                ("mark_sent", sent[fresh] & _U32)):  # fmt: skip
                marks = a[name]
                marks[due, :-1] = marks[due, 1:]
                marks[due, -1] = value
        at = a["mark_at"][slots].astype(np.float64) + epoch
        kept = np.isfinite(at)
        oldest = MARKS - kept.sum(axis=1)
        old_enough = (kept & (at <= now - JITTER_SECONDS)).sum(axis=1)
        base = np.where(old_enough > 0, oldest + old_enough - 1, np.minimum(oldest, MARKS - 1))
        rows = np.arange(len(slots))
        return (
            now - at[rows, base],
            (resent - a["mark_resent"][slots, base]) & _U32,
            (sent - a["mark_sent"][slots, base]) & _U32,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class TcpFigures:
    """TCP flows' figures from their packets (or the kernel filter), one array
    entry per flow; NaN where there is no RTT or jitter yet."""

    rtt_ms: F64
    jitter_ms: F64
    retransmits: I64
    segments_sent: I64
    peer_retransmits: I64
    dup_acks: I64
