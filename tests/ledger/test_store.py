"""The ledger file: schema, roll-ups, retention, the size bound, safe creation, reading."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from netoproc.ledger.store import (
    HOUR,
    SCHEMA_VERSION,
    LedgerError,
    Limits,
    Store,
    local_midnight,
    reading,
)
from netoproc.ledger.tally import Tally
from tests.ledger.synth import Desktop

T0 = 1_800_000_000 - 1_800_000_000 % 86400  # a midnight (UTC)


def _sums(path: Path, table: str) -> tuple[int, int]:
    db = sqlite3.connect(path)
    try:
        rx, tx = db.execute(f"SELECT sum(rx_bytes), sum(tx_bytes) FROM {table}").fetchone()
        return int(rx or 0), int(tx or 0)
    finally:
        db.close()


def _integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def test_minutes_roll_up_into_hours_and_days(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = Store(str(path))
    key = ("curl", "alice", "eth0", "example.com")
    for m in range(0, 180):  # three hours
        store.write(T0 + 60 * m, {key: (100, 10, 2, 1)})
    store.close()
    assert _sums(path, "minutes") == _sums(path, "hours") == _sums(path, "days") == (18000, 1800)
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM hours").fetchone()[0] == 3
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {r[0] for r in db.execute("SELECT t FROM days")} == {local_midnight(T0)}
    db.close()


def test_the_file_and_its_side_files_are_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = Store(str(path))
    store.write(T0, {("a", "", "lo", "x"): (1, 1, 1, 1)})
    for name in ("l.db", "l.db-wal", "l.db-shm"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    store.close()


def test_retention_keeps_minutes_48_hours_then_hours(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = Store(str(path), Limits(keep_minutes=48 * HOUR, keep_hours=72 * HOUR))
    key = ("curl", "alice", "eth0", "example.com")
    for m in range(0, 4 * 24 * 60, 10):  # four days, a minute every ten
        store.write(T0 + 60 * m, {key: (1, 0, 1, 0)})
    store.close()
    db = sqlite3.connect(path)
    last = T0 + 60 * (4 * 24 * 60 - 10)
    oldest_minute = db.execute("SELECT min(t) FROM minutes").fetchone()[0]
    oldest_hour = db.execute("SELECT min(t) FROM hours").fetchone()[0]
    assert last - 48 * HOUR - HOUR < oldest_minute and oldest_minute >= last - 49 * HOUR
    assert oldest_hour >= last - 73 * HOUR
    assert _sums(path, "days") == (4 * 24 * 6, 0)  # days keep everything
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    assert meta["minutes_from"] <= oldest_minute and meta["hours_from"] <= oldest_hour
    db.close()


def test_the_size_bound_drops_oldest_minutes_first(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    limit = 400 << 10
    store = Store(str(path), Limits(limit_bytes=limit))
    desktop = Desktop(flows=200, names=100, remotes=200, churn=10)
    tally = Tally()
    fed = 0
    for m in range(300):
        rows = tally.advance(desktop.tick(T0 + 60 * m))
        fed += sum(c[0] for c in rows.values())
        store.write(T0 + 60 * m, rows)
        assert store.used_bytes() <= limit
    store.close()
    assert os.path.getsize(path) <= limit + (64 << 10)
    db = sqlite3.connect(path)
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    assert meta["minutes_from"] > T0  # minutes were dropped...
    assert "days_from" not in meta  # ...and days were not: every byte is still there
    db.close()
    assert _sums(path, "days")[0] == fed
    assert _integrity(path) == "ok"


def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "l.db").symlink_to(target)
    with pytest.raises(LedgerError, match="symbolic link") as caught:
        Store(str(tmp_path / "l.db"))
    assert caught.value.lasting
    assert target.read_text() == "keep me"


def test_a_planted_side_file_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "l.db-wal").symlink_to(target)
    with pytest.raises(LedgerError, match="symbolic link"):
        Store(str(tmp_path / "l.db"))
    assert target.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    path.touch()
    os.chown(path, 65534, 65534)
    with pytest.raises(LedgerError, match="another user"):
        Store(str(path))


def test_a_hard_linked_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    path.touch()
    os.link(path, tmp_path / "other")
    with pytest.raises(LedgerError, match="hard links"):
        Store(str(path))


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="newer netoproc") as caught:
        Store(str(path))
    assert caught.value.lasting
    assert path.read_bytes() == before
    with pytest.raises(LedgerError, match="newer"), reading(str(path)):
        pass


def _recorded(path: Path) -> None:
    store = Store(str(path))
    for m in range(300):
        store.write(T0 + 60 * m, {(f"p{m}", "u", "eth0", f"r{m}.example"): (m, m, 1, 1)})
    store.close()


@pytest.mark.parametrize("damage", ["truncated", "scribbled", "noise"])
def test_a_damaged_file_is_refused_in_one_line(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "l.db"
    _recorded(path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2 + 100]
    elif damage == "scribbled":
        data[4096 * 2 : 4096 * 2 + 3000] = os.urandom(3000)
    else:
        data = bytearray(os.urandom(20000))
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerError) as caught:
        Store(str(path))
    assert caught.value.lasting
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == bytes(data)  # never written to


def test_reading_sees_whole_minutes_while_a_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    store = Store(str(path))
    key = ("curl", "alice", "eth0", "example.com")
    store.write(T0, {key: (1, 1, 1, 1)})

    def write() -> None:
        for m in range(1, 300):
            store.write(T0 + 60 * m, {key: (1, 1, 1, 1), ("b", "", "lo", str(m)): (2, 0, 1, 0)})

    writer = threading.Thread(target=write)
    writer.start()
    checks = 0
    while writer.is_alive() or checks == 0:
        with reading(str(path)) as db:
            minutes = db.execute("SELECT sum(rx_bytes), count(*) FROM minutes").fetchone()
            hours = db.execute("SELECT sum(rx_bytes) FROM hours").fetchone()
            days = db.execute("SELECT sum(rx_bytes) FROM days").fetchone()
        assert minutes[0] == hours[0] == days[0]
        checks += 1
    writer.join()
    store.close()
    assert checks > 0


def test_reading_a_missing_or_foreign_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="No such file"), reading(str(tmp_path / "none")):
        pass
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.close()
    with pytest.raises(LedgerError, match="not a netoproc ledger"), reading(str(other)):
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_recording_in_a_users_directory_makes_the_files_that_users(tmp_path: Path) -> None:
    """`sudo netoproc --ledger ~/usage.db`: the user reads it without root."""
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    store = Store(str(home / "l.db"))
    store.write(T0, {("a", "", "lo", "x"): (1, 1, 1, 1)})
    for name in ("l.db", "l.db-wal", "l.db-shm"):
        info = os.stat(home / name)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (65534, 0o600), name
    store.close()
    again = Store(str(home / "l.db"))  # the user's own file, in the user's directory: accepted
    again.close()
