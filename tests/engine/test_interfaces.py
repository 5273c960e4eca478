"""Interface traffic from cumulative OS counters: wraps, restarts, rates, minutes."""

from __future__ import annotations

from netoproc.engine.interfaces import HISTORY_MINUTES, InterfaceStats, counter_delta
from netoproc.model import InterfaceInfo
from netoproc.snapshot import Traffic

T0 = 1_800_000_000.0  # a minute boundary: 1_800_000_000 / 60 = 30_000_000


def info(rx: int, tx: int, *, name: str = "eth0", packets: int = 0) -> InterfaceInfo:
    return InterfaceInfo(name, "Ethernet", True, ("192.0.2.1",), (), rx, tx, packets, packets)


def test_counter_delta_handles_growth_wrap_and_restart() -> None:
    assert counter_delta(100, 250) == 150
    assert counter_delta((1 << 32) - 10, 5) == 15  # a 32-bit counter went round
    assert counter_delta(5_000, 40) == 40  # restarted (interface re-created)
    assert counter_delta(1 << 40, 7) == 7  # 64-bit counters do not wrap in practice


def test_totals_count_from_start_not_from_boot() -> None:
    stats = InterfaceStats()
    stats.update([info(10_000, 20_000, packets=50)], T0)
    stats.update([info(13_000, 20_500, packets=60)], T0 + 1)
    stats.update([info(15_000, 21_000, packets=65)], T0 + 3)
    (row,) = stats.rows({"eth0": ("192.0.2.53",)})
    assert row.total == Traffic(5_000, 1_000, 15, 15)
    assert (row.rx_rate, row.tx_rate) == (1_000.0, 250.0)  # last interval: 2 s
    assert row.dns_servers == ("192.0.2.53",)
    assert row.ipv4 == ("192.0.2.1",)


def test_minute_history_is_bounded_and_zero_filled() -> None:
    stats = InterfaceStats()
    stats.update([info(0, 0)], T0)
    stats.update([info(600, 60)], T0 + 30)  # minute 0
    stats.update([info(900, 90)], T0 + 150)  # minute 2: minute 1 saw nothing
    (row,) = stats.rows({})
    assert row.rx_history == (600.0, 0.0, 300.0)
    assert row.tx_history == (60.0, 0.0, 30.0)
    for minute in range(3, 200):
        stats.update([info(900 + minute, 90)], T0 + 60 * minute)
    (row,) = stats.rows({})
    assert len(row.rx_history) == HISTORY_MINUTES
    assert row.rx_history[-1] == 1.0


def test_interfaces_come_and_go() -> None:
    stats = InterfaceStats()
    stats.update([info(1, 1), info(5, 5, name="veth1")], T0)
    stats.update([info(2, 2)], T0 + 1)
    assert [row.name for row in stats.rows({})] == ["eth0"]
    stats.update([info(3, 3), info(9_999, 9_999, name="veth1")], T0 + 2)
    veth = {row.name: row for row in stats.rows({})}["veth1"]
    assert veth.total == Traffic()  # a new interface starts counting when it appears
