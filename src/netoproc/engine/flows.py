"""Per-flow state and the table of IP fragments waiting for their ports."""

from __future__ import annotations

from collections import OrderedDict, deque

from netoproc.model import FlowKey, ProcessRef, SocketInfo, UnknownReason


class Flow:
    """Counters and attribution of one flow since it was first seen."""

    __slots__ = (
        "closed",
        "first_seen",
        "key",
        "last_seen",
        "outbound",
        "owner",
        "reason",
        "retransmit_marks",
        "rx_bytes",
        "rx_history",
        "rx_packets",
        "socket",
        "tcp_slot",
        "tick_rx",
        "tick_tx",
        "tx_bytes",
        "tx_history",
        "tx_packets",
    )

    def __init__(self, key: FlowKey, first_seen: float, history: int) -> None:
        self.key = key
        self.owner: ProcessRef | None = None
        self.reason: UnknownReason | None = UnknownReason.PENDING
        self.socket: SocketInfo | None = None
        self.rx_bytes = self.tx_bytes = self.rx_packets = self.tx_packets = 0
        self.tick_rx = self.tick_tx = 0
        self.first_seen = self.last_seen = first_seen
        self.outbound: bool | None = None  # from the SYN, when it was seen
        self.closed = False
        self.rx_history: deque[float] = deque(maxlen=history)
        self.tx_history: deque[float] = deque(maxlen=history)
        self.tcp_slot = -1  # its row in the engine's TCP analysis arrays
        # (time, retransmits, segments sent) at recent ticks, for rates over 10 s
        self.retransmit_marks: deque[tuple[float, int, int]] = deque()

    def attribute(self, owner: ProcessRef | None, reason: UnknownReason | None) -> None:
        self.owner, self.reason = owner, (None if owner else reason)


class FragmentPorts:
    """Ports of fragmented datagrams, learnt from the first fragment.

    Keyed by (source, destination, protocol, fragment id); bounded, oldest
    entries forgotten first.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._ports: OrderedDict[tuple[int, int, int, int], tuple[int, int]] = OrderedDict()
        self._capacity = capacity

    def learn(self, key: tuple[int, int, int, int], ports: tuple[int, int]) -> None:
        self._ports[key] = ports
        self._ports.move_to_end(key)
        if len(self._ports) > self._capacity:
            self._ports.popitem(last=False)

    def ports(self, key: tuple[int, int, int, int]) -> tuple[int, int] | None:
        return self._ports.get(key)
