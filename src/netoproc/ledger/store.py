"""The ledger file: SQLite (standard library), WAL mode, one transaction a minute.

Schema (PRAGMA user_version = SCHEMA_VERSION):

    names(id INTEGER PRIMARY KEY, text TEXT UNIQUE)    every string once
    minutes / hours / days(t, process, user, iface, remote,
                           rx_bytes, tx_bytes, rx_packets, tx_packets)
        primary key (t, process, user, iface, remote), WITHOUT ROWID;
        t is the bucket's start in epoch seconds (days: local midnight);
        process, user, iface and remote are ids in `names`
    meta(key, value)    'minutes_from', 'hours_from', 'days_from': where each
                        table was pruned (retention or size): it holds every
                        bucket from there on (absent: never pruned)

Each minute is one transaction: its rows, added into its hour and its day.
Retention: minutes 48 hours, hours 60 days, days 5 years. Size bound: when
the pages in use pass the limit, the oldest minutes go first, then the
oldest hours, then the oldest days (each table's `_from` moves on).

Safety: the file is created with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, and
so are its -wal and -shm files before SQLite opens them; an existing file that
is a symlink, not a regular file, hard-linked, or owned by another user
(root may use a file owned by the owner of its directory) is refused. After
SQLite first opens them (before the capture starts), every descriptor it opened
is checked to be one of those files. Reopening after an error skips that last
check (other threads open files then); the rest still applies.
Every string is a bound parameter.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from netoproc.ledger.tally import Counts, Key

SCHEMA_VERSION = 1
MINUTE = 60
HOUR = 3600
KEEP_MINUTES = 48 * HOUR
KEEP_HOURS = 60 * 24 * HOUR
KEEP_DAYS = 5 * 366 * 24 * HOUR
DEFAULT_LIMIT_BYTES = 256 << 20
BUSY_TIMEOUT = 2.0  # seconds to wait for a lock held by another connection (a report)
SIDE_FILES = ("-wal", "-shm")
TABLES = ("minutes", "hours", "days")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names(id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
""" + "".join(
    f"""
CREATE TABLE IF NOT EXISTS {table}(
  t INTEGER NOT NULL, process INTEGER NOT NULL, user INTEGER NOT NULL,
  iface INTEGER NOT NULL, remote INTEGER NOT NULL,
  rx_bytes INTEGER NOT NULL, tx_bytes INTEGER NOT NULL,
  rx_packets INTEGER NOT NULL, tx_packets INTEGER NOT NULL,
  PRIMARY KEY(t, process, user, iface, remote)) WITHOUT ROWID;
"""
    for table in TABLES
)


class LedgerError(Exception):
    """A problem with the ledger file, in one line. `lasting`: retrying will not help
    (a newer schema, not a database, damaged, refused for safety)."""

    def __init__(self, message: str, *, lasting: bool) -> None:
        super().__init__(message)
        self.lasting = lasting


def explain(path: str, exc: BaseException) -> LedgerError:
    """An exception from SQLite or the OS as one line, and whether it can pass."""
    if isinstance(exc, LedgerError):
        return exc
    text = str(exc)
    if isinstance(exc, OSError):
        text = os.strerror(exc.errno) if exc.errno else text
        lasting = exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR)
        return LedgerError(f"{path}: {text}", lasting=lasting)
    lowered = text.lower()
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return LedgerError(f"{path}: damaged or not a ledger ({text})", lasting=True)
    return LedgerError(f"{path}: {text}", lasting=False)


def local_midnight(t: float) -> int:
    """The start of `t`'s day in local time (days are the recording machine's days)."""
    lt = time.localtime(t)
    return int(time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1)))


def _check_existing(path: str, fd: int) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise LedgerError(f"{path}: not a regular file", lasting=True)
    if info.st_nlink != 1:
        raise LedgerError(f"{path}: has other hard links; refused", lasting=True)
    me = os.geteuid()
    allowed = {me}
    if me == 0:
        with contextlib.suppress(OSError):
            allowed.add(os.stat(os.path.dirname(os.path.abspath(path))).st_uid)
    if info.st_uid not in allowed:
        raise LedgerError(
            f"{path}: owned by another user (uid {info.st_uid}); refused", lasting=True
        )


def _open_safely(path: str, *, create: bool) -> tuple[int, int]:
    """(dev, inode) of `path`, created 0600 if absent; never through a symlink."""
    flags = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600) if create else -1
    except FileExistsError:
        fd = -1
    if fd < 0:
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LedgerError(f"{path}: is a symbolic link; refused", lasting=True) from None
            raise
        try:
            _check_existing(path, fd)
        except BaseException:
            os.close(fd)
            raise
    else:
        # root recording into a user's directory: the file is that user's, so they
        # can read it without root (SQLite gives -wal and -shm the same owner)
        with contextlib.suppress(OSError):
            owner = os.stat(os.path.dirname(os.path.abspath(path)))
            if os.geteuid() == 0 and owner.st_uid != 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)
    try:
        info = os.fstat(fd)
        return info.st_dev, info.st_ino
    finally:
        os.close(fd)


def _descriptors() -> set[int]:
    for where in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return {int(n) for n in os.listdir(where)}
    return set()


def _check_opened(path: str, before: set[int], expected: set[tuple[int, int]]) -> None:
    """Every descriptor opened since `before` is one of the files we made or checked."""
    for fd in _descriptors() - before:
        try:
            info = os.fstat(fd)
        except OSError:
            continue  # the listing's own descriptor, closed again
        if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in expected:
            raise LedgerError(f"{path}: changed while being opened; refused", lasting=True)


@dataclass(frozen=True, slots=True)
class Limits:
    limit_bytes: int = DEFAULT_LIMIT_BYTES
    keep_minutes: int = KEEP_MINUTES
    keep_hours: int = KEEP_HOURS
    keep_days: int = KEEP_DAYS


class Store:
    """The ledger opened for recording (one writer: the recorder's thread)."""

    def __init__(self, path: str, limits: Limits | None = None, *, check_fds: bool = True) -> None:
        self.path = path
        self.limits = limits or Limits()
        self._names: dict[str, int] = {}
        self._days: dict[int, int] = {}  # hour -> its local midnight
        self._last_prune = -1
        expected = {_open_safely(path, create=True)}
        for suffix in SIDE_FILES:
            expected.add(_open_safely(path + suffix, create=True))
        before = _descriptors()
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                             check_same_thread=False)  # fmt: skip
        self.db = db
        try:
            if check_fds:
                _check_opened(path, before, expected)
            self._prepare()
            if check_fds:
                _check_opened(path, before, expected)
        except sqlite3.Error as exc:
            db.close()
            raise explain(path, exc) from None
        except BaseException:
            db.close()
            raise

    def _prepare(self) -> None:
        db = self.db
        version = db.execute("PRAGMA user_version").fetchall()[0][0]
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path}: written by a newer netoproc (schema {version}, this one "
                f"reads {SCHEMA_VERSION}); not touched",
                lasting=True,
            )
        check = db.execute("PRAGMA quick_check").fetchall()[0][0]
        if check != "ok":
            raise LedgerError(f"{self.path}: damaged ({check})", lasting=True)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
        if str(mode).lower() != "wal":
            raise LedgerError(f"{self.path}: cannot use WAL mode ({mode})", lasting=False)
        db.execute(
            "PRAGMA synchronous=NORMAL"
        ).fetchall()  # WAL: a crash never corrupts, loses no commit
        db.execute("PRAGMA journal_size_limit=4194304").fetchall()
        if version < SCHEMA_VERSION:
            try:  # one transaction: the schema and its version together, or neither
                db.executescript(
                    f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
                )
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.db.close()

    def _name(self, text: str) -> int:
        found = self._names.get(text)
        if found is None:
            db = self.db
            db.execute("INSERT OR IGNORE INTO names(text) VALUES (?)", (text,))
            found = int(db.execute("SELECT id FROM names WHERE text = ?", (text,)).fetchone()[0])
            self._names[text] = found
        return found

    def _day(self, hour: int) -> int:
        day = self._days.get(hour)
        if day is None:
            if len(self._days) > 1000:
                self._days.clear()
            day = self._days[hour] = local_midnight(hour)
        return day

    def write(self, minute: int, rows: Mapping[Key, Counts]) -> None:
        """One minute's rows (minute: its start, epoch seconds), in one transaction,
        added into its hour and its day; then retention and the size bound."""
        db = self.db
        hour = minute - minute % HOUR
        day = self._day(hour)
        try:
            db.execute("BEGIN IMMEDIATE")
            values = [
                (self._name(k[0]), self._name(k[1]), self._name(k[2]), self._name(k[3]), *c)
                for k, c in rows.items()
            ]
            for table, t in (("minutes", minute), ("hours", hour), ("days", day)):
                db.executemany(
                    f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO UPDATE SET rx_bytes = rx_bytes + excluded.rx_bytes, "
                    "tx_bytes = tx_bytes + excluded.tx_bytes, "
                    "rx_packets = rx_packets + excluded.rx_packets, "
                    "tx_packets = tx_packets + excluded.tx_packets",
                    [(t, *v) for v in values],
                )
            if hour != self._last_prune:
                self._retain(minute)
            self._bound()
            db.execute("COMMIT")
        except BaseException:
            self._names.clear()  # ids made in the rolled-back transaction are gone
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self._last_prune = hour

    def _retain(self, now: int) -> None:
        limits = self.limits
        for table, keep in (("minutes", limits.keep_minutes), ("hours", limits.keep_hours),
                            ("days", limits.keep_days)):  # fmt: skip
            cutoff = now - keep
            if self.db.execute(f"DELETE FROM {table} WHERE t < ?", (cutoff,)).rowcount:
                self._moved_from(table, cutoff)
        self.db.execute(
            "DELETE FROM names WHERE id NOT IN (SELECT process FROM days UNION "
            "SELECT user FROM days UNION SELECT iface FROM days UNION SELECT remote FROM days)"
        )
        self._names.clear()

    def _moved_from(self, table: str, t: int) -> None:
        self.db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT DO UPDATE SET "
            "value = max(value, excluded.value)",
            (f"{table}_from", t),
        )

    def used_bytes(self) -> int:
        db = self.db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _bound(self) -> None:
        """Oldest buckets go first, finest table first, until the pages in use fit."""
        for table in TABLES:
            step = {"minutes": MINUTE, "hours": HOUR, "days": 24 * HOUR}[table]
            while self.used_bytes() > self.limits.limit_bytes:
                oldest = self.db.execute(f"SELECT min(t) FROM {table}").fetchone()[0]
                if oldest is None:
                    break
                # a sixth of what the table holds at a time, at least the oldest bucket
                newest = self.db.execute(f"SELECT max(t) FROM {table}").fetchone()[0]
                cut = max(oldest + step, oldest + (newest - oldest) // 6)
                self.db.execute(f"DELETE FROM {table} WHERE t < ?", (cut,))
                self._moved_from(table, cut)
            else:
                return


@contextlib.contextmanager
def reading(path: str) -> Iterator[sqlite3.Connection]:
    """The ledger opened read-only, in one read transaction (a consistent view while
    a recorder writes: WAL readers see whole minutes)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise explain(path, exc) from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        raise LedgerError(f"{path}: not a regular file", lasting=True)
    try:
        db = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT,
                             isolation_level=None)  # fmt: skip
    except sqlite3.Error as exc:
        raise explain(path, exc) from None
    try:
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise explain(path, exc) from None
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{path}: written by a newer netoproc (schema {version}, this one reads "
                f"{SCHEMA_VERSION})",
                lasting=True,
            )
        if version < 1:
            raise LedgerError(f"{path}: not a netoproc ledger (empty or another database)",
                              lasting=True)  # fmt: skip
        try:
            db.execute("BEGIN")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise explain(path, exc) from None
    finally:
        db.close()


def _uri_path(path: str) -> str:
    from urllib.parse import quote

    return quote(os.path.abspath(path))
