"""Per-minute deltas from consecutive Snapshots.

A Snapshot's totals are cumulative since the session started: per flow in
its connection rows, per process in its process rows. `Tally.advance` turns
the difference between the snapshot it was last given and this one into
bytes and packets per ledger key: (process name, user, interface, remote
name). Direction is kept as the rx and tx columns.

How every byte is counted once, and per-process sums stay exact:

- A process's bytes are its ProcessRow total (pid, name and user as the row's
  ProcessRef). Its delta is split by flow: each connection row's own delta
  goes to (interface, remote name), the remote name being the domain from
  observed DNS answers, else the address.
- A flow that retires (idle five minutes), is ended by a port reused or a
  socket passed on, moves its bytes from the connection rows into its
  process's total. Whatever a process gained that its flows do not explain
  (bytes of a flow that ended between two snapshots) is recorded with the
  interface `-` and the remote `(retired)`.
- A flow whose owner changes (the unattributed row's flow named later, a
  guessed owner corrected by the kernel) moves the bytes already recorded:
  minus under the old owner, plus under the new one, in the minute it
  changes. Over any period that holds both minutes, the old owner's share
  nets to zero.
- Exited processes folded into one row per name (pid `-`) only move bytes
  already counted: folded rows are never counted again. A process row that
  shrinks without a flow to explain it (folded and then back within one
  snapshot) counts only its new traffic.

Sum over the ledger for a process name and user == that name's total in the
last snapshot (the unattributed row is `unknown`), and the sum of all rows ==
all bytes captured.
"""

from __future__ import annotations

from typing import TypeVar

from netoproc.model import ProcessRef
from netoproc.snapshot import Snapshot, Traffic

RETIRED = "(retired)"
NO_IFACE = "-"
UNKNOWN = "unknown"

# (process name, user, interface, remote name)
Key = tuple[str, str, str, str]
# rx bytes, tx bytes, rx packets, tx packets
Counts = tuple[int, int, int, int]
FlowId = tuple[str, int, int, int, int, int, float]

_ZERO = Traffic()
K = TypeVar("K")


def _group(ref: ProcessRef | None) -> tuple[str, str]:
    return (ref.name, ref.user) if ref is not None else (UNKNOWN, "")


def _add(into: dict[K, list[int]], key: K, t: Traffic, sign: int = 1) -> None:
    counts = into.get(key)
    if counts is None:
        into[key] = counts = [0, 0, 0, 0]
    counts[0] += sign * t.rx_bytes
    counts[1] += sign * t.tx_bytes
    counts[2] += sign * t.rx_packets
    counts[3] += sign * t.tx_packets


def _minus(a: Traffic, b: Traffic) -> Traffic:
    return Traffic(
        a.rx_bytes - b.rx_bytes,
        a.tx_bytes - b.tx_bytes,
        a.rx_packets - b.rx_packets,
        a.tx_packets - b.tx_packets,
    )


class Tally:
    """The deltas between snapshots; starts from an empty session (all zero)."""

    def __init__(self) -> None:
        self._refs: dict[ProcessRef | None, Traffic] = {}
        self._flows: dict[FlowId, tuple[ProcessRef | None, str, str, Traffic]] = {}

    def advance(self, snapshot: Snapshot) -> dict[Key, Counts]:
        """What happened since the last snapshot given, per key (zero rows left out)."""
        out: dict[Key, list[int]] = {}
        explained: dict[ProcessRef | None, list[int]] = {}
        flows: dict[FlowId, tuple[ProcessRef | None, str, str, Traffic]] = {}
        old_flows = self._flows
        for conn in snapshot.connections:
            fid = (conn.iface, conn.proto, conn.laddr, conn.lport, conn.raddr, conn.rport,
                   conn.first_seen)  # fmt: skip
            remote = conn.domain or conn.remote_text
            ref, total = conn.process, conn.total
            flows[fid] = (ref, conn.iface, remote, total)
            before = old_flows.get(fid)
            if before is not None and before[0] == ref:
                delta = _minus(total, before[3])
            else:
                delta = total
                if before is not None:  # the flow changed hands: its bytes move
                    old_ref, old_iface, old_remote, old_total = before
                    _add(out, (*_group(old_ref), old_iface, old_remote), old_total, -1)
                    _add(explained, old_ref, old_total, -1)
            if delta != _ZERO:
                _add(out, (*_group(ref), conn.iface, remote), delta)
                _add(explained, ref, delta)
        refs: dict[ProcessRef | None, Traffic] = {}
        old_refs = self._refs
        for row in snapshot.processes:
            if row.exited:  # folded rows only hold bytes already counted
                continue
            ref = row.process
            refs[ref] = row.total
            delta = _minus(row.total, old_refs.get(ref, _ZERO))
            seen = explained.get(ref, [0, 0, 0, 0])
            rest = (
                delta.rx_bytes - seen[0],
                delta.tx_bytes - seen[1],
                delta.rx_packets - seen[2],
                delta.tx_packets - seen[3],
            )
            if any(rest):
                # positive: flows that ended between the two snapshots; negative only
                # for a row folded away and back, whose old bytes were counted already
                rest_t = Traffic(*(max(0, v) for v in rest))
                if rest_t != _ZERO:
                    _add(out, (*_group(ref), NO_IFACE, RETIRED), rest_t)
        self._refs, self._flows = refs, flows
        return {key: (c[0], c[1], c[2], c[3]) for key, c in out.items() if any(c)}
