"""Counting in the kernel (Linux, eBPF): the capture socket's filter sums most
packets per flow where they arrive (ebpf/counts.bpf.c); this reads the sums.

`KernelCounts` loads the filter, attaches it to the capture's packet socket in
place of the classic one, and on `take` switches the filter to its other
counter map, waits for packets already inside the filter to finish, and
empties the map it switched from with batched lookup-and-delete calls. The
packets the filter still passes up (DNS, TCP SYN/FIN/RST, what it cannot
classify) reach the ring as before; the two never count the same packet.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import time

import numpy as np
import numpy.typing as npt

from netoproc.capture.records import (
    CounterBatch,
    FlowColumns,
    InterfaceTable,
    RttSamples,
    distinct,
)
from netoproc.ebpf import BpfObject, BpfUnavailable, RingBuffer, libbpf

SO_ATTACH_BPF = 50
# the packets inside the filter when it is switched finish in microseconds:
# the filter runs with preemption off (softirq, or transmit with bottom halves off)
SETTLE_SECONDS = 0.002
BATCH = 4096  # flows per lookup-and-delete call

# struct flow_key, struct flow_counts, struct rtt_sample (ebpf/counts.h)
KEY = np.dtype([("laddr", "V16"), ("raddr", "V16"), ("ifindex", "<u4"), ("lport", "<u2"),
                ("rport", "<u2"), ("proto", "u1"), ("pad", "V3")])  # fmt: skip
COUNTS = np.dtype([
    ("rx_bytes", "<u8"), ("tx_bytes", "<u8"), ("rx_packets", "<u8"), ("tx_packets", "<u8"),
    ("first_ns", "<u8"), ("last_ns", "<u8"), ("retransmits", "<u4"), ("segments_sent", "<u4"),
    ("peer_retransmits", "<u4"), ("dup_acks", "<u4"), ("rtt_samples", "<u4"), ("pad", "<u4"),
    ("pad2", "<u8"),
])  # fmt: skip
SAMPLE = np.dtype([("key", KEY), ("pad", "<u4"), ("rtt_ns", "<u8"), ("at_ns", "<u8")])
ACTIVE = struct.Struct("=I")


def _halves(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """16-byte network-order addresses as (high, low) unsigned 64-bit halves."""
    words = raw.view(">u8").reshape(-1, 2)
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def _key_columns(keys: np.ndarray) -> FlowColumns:
    l_hi, l_lo = _halves(keys["laddr"].copy())
    r_hi, r_lo = _halves(keys["raddr"].copy())

    def number(name: str) -> npt.NDArray[np.int64]:
        return keys[name].astype(np.int64)

    return FlowColumns(number("ifindex"), number("proto"), l_hi, l_lo, number("lport"), r_hi, r_lo,
                       number("rport"))  # fmt: skip


class KernelCounts:
    """The counting filter of one capture socket; `take` from one thread."""

    def __init__(self, interfaces: InterfaceTable, max_flows: int | None = None) -> None:
        """`max_flows`: room in each counter map, if not the object's 65,536."""
        self.interfaces = interfaces
        sizes = {"counts0": max_flows, "counts1": max_flows} if max_flows else None
        self._object = BpfObject("counts", sizes=sizes, core=False)  # reads only the packet
        try:
            self._prog = self._object.program_fd("count_flows")
            self._maps = (self._object.map_fd("counts0"), self._object.map_fd("counts1"))
            self._samples: list[bytes] = []
            self._rtt = RingBuffer(self._object.map_fd("rtt"), self._samples.append)
        except BpfUnavailable:
            self._object.close()
            raise
        self._active = 0
        self._lookup_and_delete = libbpf().bpf_map_lookup_and_delete_batch
        self._keys = np.zeros(BATCH, KEY)
        self._values = np.zeros(BATCH, COUNTS)

    def attach(self, sock: socket.socket) -> None:
        """Make the filter `sock`'s, in place of any classic one."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, ACTIVE.pack(self._prog))
        except OSError as exc:
            raise BpfUnavailable(f"cannot attach the counting filter ({exc.strerror})") from None

    def take(self, wall_offset: float) -> tuple[CounterBatch, RttSamples]:
        """What the filter counted since the last call; `wall_offset` turns the
        kernel's monotonic nanoseconds into wall-clock seconds."""
        taken = self._active
        self._active ^= 1
        self._object.write("config", 0, ACTIVE.pack(self._active))
        time.sleep(SETTLE_SECONDS)
        keys, values = self._drain(self._maps[taken])
        return self._counter_batch(keys, values, wall_offset), self._rtt_samples(wall_offset)

    def _drain(self, fd: int) -> tuple[np.ndarray, np.ndarray]:
        keys, values = [], []
        token = ctypes.create_string_buffer(8)
        next_token = ctypes.create_string_buffer(8)
        first = True
        while True:
            count = ctypes.c_uint32(BATCH)
            code = self._lookup_and_delete(
                fd, None if first else token, next_token, self._keys.ctypes.data,
                self._values.ctypes.data, ctypes.byref(count), None,
            )  # fmt: skip
            if count.value:
                keys.append(self._keys[: count.value].copy())
                values.append(self._values[: count.value].copy())
            if code < 0:
                if -code == errno.ENOENT:  # every flow taken
                    break
                raise OSError(-code, f"reading the kernel's counters: {os.strerror(-code)}")
            ctypes.memmove(token, next_token, 8)
            first = False
        if not keys:
            return np.zeros(0, KEY), np.zeros(0, COUNTS)
        return np.concatenate(keys), np.concatenate(values)

    def _counter_batch(self, keys: np.ndarray, values: np.ndarray, offset: float) -> CounterBatch:
        for index in distinct(keys["ifindex"]).tolist():
            if not self.interfaces.known(index):
                try:
                    self.interfaces.set(index, socket.if_indextoname(index))
                except OSError:
                    self.interfaces.set(index, f"if{index}")  # gone already

        def column(name: str) -> npt.NDArray[np.int64]:
            return values[name].astype(np.int64)

        return CounterBatch(
            _key_columns(keys),
            rx_bytes=column("rx_bytes"),
            tx_bytes=column("tx_bytes"),
            rx_packets=column("rx_packets"),
            tx_packets=column("tx_packets"),
            retransmits=column("retransmits"),
            segments_sent=column("segments_sent"),
            peer_retransmits=column("peer_retransmits"),
            dup_acks=column("dup_acks"),
            first_ts=values["first_ns"] / 1e9 + offset,
            last_ts=values["last_ns"] / 1e9 + offset,
            interfaces=self.interfaces,
        )

    def _rtt_samples(self, offset: float) -> RttSamples:
        self._rtt.consume()
        raw, self._samples[:] = b"".join(self._samples), []
        samples = np.frombuffer(raw, SAMPLE)
        return RttSamples(
            _key_columns(samples["key"]),
            rtt=samples["rtt_ns"] / 1e9,
            at=samples["at_ns"] / 1e9 + offset,
        )

    def overflow(self) -> tuple[int, int]:
        """(packets passed up because the counter map was full, RTT samples lost)."""
        return self._object.read_u64("overflow", 0), self._object.read_u64("overflow", 1)

    def close(self) -> None:
        self._rtt.close()
        self._object.close()
