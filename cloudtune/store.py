"""Job history in SQLite at ``$CLOUDTUNE_HOME/jobs.db`` (default ``~/.cloudtune/jobs.db``).

Contract: safe across concurrent CLI processes. The DB is in WAL mode with a 10 s busy timeout; every write runs in
its own ``BEGIN IMMEDIATE`` transaction on a connection opened for that one operation and closed after it. The
schema version is kept in ``PRAGMA user_version``. Stdlib only: imported by the CLI.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cloudtune.errors import CloudtuneError, JobNotFound
from cloudtune.states import TERMINAL, JobState

__all__ = ["JobRecord", "JobStore", "SCHEMA_VERSION", "default_home"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    native_id   TEXT,
    model_uri   TEXT,
    console_url TEXT,
    job_dir     TEXT,
    spec_path   TEXT,
    plan        TEXT,
    extra       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_provider_created_at ON jobs (provider, created_at);
"""

_COLUMNS = ("job_id", "provider", "name", "state", "created_at", "updated_at", "native_id", "model_uri",
            "console_url", "job_dir", "spec_path", "plan", "extra")
_JSON_COLUMNS = frozenset({"plan", "extra"})


def default_home() -> Path:
    """``$CLOUDTUNE_HOME`` or ``~/.cloudtune``, read at call time."""
    return Path(os.environ.get("CLOUDTUNE_HOME") or Path.home() / ".cloudtune").expanduser()


PRIVATE_DIR = 0o700  # as the cloud CLIs keep theirs (~/.aws/cli/cache, ~/.config/gcloud, ~/.azure): the user's alone
PRIVATE_FILE = 0o600
_DB_FILES = ("", "-wal", "-shm", "-journal")  # SQLite's database and the files beside it (same mode as the database)


def make_private(home: Path, db: Path) -> None:
    """Create ``home`` 0700 and ``db`` 0600 if missing (SQLite gives its -wal and -shm the database's mode); tighten
    a wider ``home`` or database file that this user owns, and warn (stderr) about one that cannot be tightened.

    ``home``'s parents, when created, get the default mode (they may be shared, as ``~`` is)."""
    home.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    _tighten(home, PRIVATE_DIR)
    if not db.exists():
        try:
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
        except OSError:
            return  # a read-only or full file system: the store is opened read-only (see _init_schema)
    for suffix in _DB_FILES:
        path = db.with_name(db.name + suffix)
        if path.exists():
            _tighten(path, PRIVATE_FILE)


def _tighten(path: Path, mode: int) -> None:
    """Drop the group and other bits of ``path``'s mode; a warning when they are set and cannot be dropped."""
    try:
        st = path.stat()
    except OSError:
        return
    if not st.st_mode & 0o077:
        return
    try:
        if st.st_uid != os.getuid():
            raise PermissionError("owned by another user")
        os.chmod(path, mode)
    except OSError as exc:
        print(f"[cloudtune] warning: {path} is readable by other users (mode {st.st_mode & 0o777:o}) and could not "
              f"be made private ({exc}). To fix: chmod {mode:o} {path}", file=sys.stderr)


_WRITE_FIX = "free space on that disk (`cloudtune clean` removes old local jobs), or make the file writable"
# SQLite's messages for SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY and SQLITE_CANTOPEN (sqlite3.c sqlite3ErrStr)
_CANNOT_WRITE = ("database or disk is full", "disk i/o error", "attempt to write a readonly database",
                 "unable to open database file")


class StoreNotWritable(CloudtuneError):
    """The job store cannot be written (a full disk, a read-only file); it can still be read."""


def _cannot_write(exc: sqlite3.Error) -> bool:
    return any(m in str(exc).lower() for m in _CANNOT_WRITE)


@dataclass
class JobRecord:
    """One submitted job. ``state`` is a JobState (its value is stored; a value given as text is converted, and one
    that is no state is a ValueError). Times are epoch seconds."""

    job_id: str
    provider: str
    name: str
    state: JobState
    created_at: float
    updated_at: float
    native_id: str | None = None
    model_uri: str | None = None
    console_url: str | None = None
    job_dir: str | None = None
    spec_path: str | None = None
    plan: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = JobState(self.state)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (deep copy) of every field; the state as its value."""
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @property
    def terminal(self) -> bool:
        """Whether the job has reached a final state."""
        return self.state.terminal


_UPDATABLE = frozenset(f.name for f in fields(JobRecord)) - {"job_id", "created_at"}


def _to_row(record: JobRecord) -> tuple[Any, ...]:
    values = []
    for col in _COLUMNS:
        v = getattr(record, col)
        if col == "extra":
            v = json.dumps(v or {})
        elif col == "plan":
            v = None if v is None else json.dumps(v)
        elif col == "state":
            v = JobState(v).value
        values.append(v)
    return tuple(values)


def _from_row(row: sqlite3.Row | tuple[Any, ...]) -> JobRecord:
    data = dict(zip(_COLUMNS, row))
    data["plan"] = None if data["plan"] is None else json.loads(data["plan"])
    data["extra"] = json.loads(data["extra"]) if data["extra"] else {}
    return JobRecord(**data)


class JobStore:
    """Job history at ``<home>/jobs.db``; ``home`` None -> ``$CLOUDTUNE_HOME`` or ``~/.cloudtune`` (read now).

    Creating a store creates ``home`` and the schema. Errors: ``add`` raises ``sqlite3.IntegrityError`` for a
    duplicate job_id; ``get``/``update`` raise ``JobNotFound`` for an unknown or ambiguous id.
    """

    def __init__(self, home: Path | None = None) -> None:
        self.home: Path = Path(home).expanduser() if home is not None else default_home()
        self.path: Path = self.home / "jobs.db"
        self.read_only: str | None = None  # why the store cannot be written, once found; reads go on read-only
        make_private(self.home, self.path)
        try:
            self._init_schema()
        except StoreNotWritable:
            if not self.path.is_file() or self.path.stat().st_size == 0:
                raise  # no store to read
        except sqlite3.OperationalError as exc:
            if not self.path.is_file() or not _cannot_write(exc):
                raise
            self._go_read_only(exc)

    # -- connections ------------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.read_only is not None:
            return self._connect_read_only()
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """A read-only connection. In WAL mode even a reader must create the -shm file, which a full disk refuses
        ("disk I/O error"); then the file is opened `immutable` (sqlite.org/uri.html): exact when no -wal file is
        left, which is how SQLite leaves a database once its last connection has closed."""
        conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        return sqlite3.connect(f"{self.path.as_uri()}?immutable=1", uri=True, isolation_level=None)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``; committed on success, rolled back on error, then closed.

        Raises ``StoreNotWritable`` (a CloudtuneError) when the disk is full or the store is read-only."""
        if self.read_only is not None:
            raise StoreNotWritable(self.read_only, fix=_WRITE_FIX)
        conn = self._connect()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if not _cannot_write(exc):
                    raise
                self._go_read_only(exc)
                raise StoreNotWritable(self.read_only or str(exc), fix=_WRITE_FIX) from None
        finally:
            conn.close()

    def _go_read_only(self, exc: sqlite3.Error) -> None:
        """From now on, read the store read-only; say once (stderr) why it cannot be written."""
        import shutil

        try:
            free = f"{shutil.disk_usage(self.home).free} bytes free"
        except OSError:
            free = "free space unknown"
        self.read_only = f"the job store {self.path} cannot be written ({exc}; {free} on its disk)"
        print(f"[cloudtune] warning: {self.read_only}; reading it read-only, nothing new is recorded. "
              f"To fix: {_WRITE_FIX}", file=sys.stderr)

    def _init_schema(self) -> None:
        conn = self._connect()
        try:
            deadline = time.monotonic() + BUSY_TIMEOUT_S
            while True:  # switching to WAL needs a lock the busy handler may not wait for
                try:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                    if mode and str(mode[0]).lower() == "wal":
                        break
                except sqlite3.OperationalError:
                    pass
                if time.monotonic() > deadline:
                    break  # still usable in rollback-journal mode
                time.sleep(0.05)
        finally:
            conn.close()
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CloudtuneError(
                    f"job store {self.path} has schema version {version}, newer than this cloudtune ({SCHEMA_VERSION})",
                    fix="upgrade cloudtune, or point CLOUDTUNE_HOME elsewhere",
                )
            if version < 1:
                for stmt in filter(None, (s.strip() for s in _SCHEMA_V1.split(";"))):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- operations -------------------------------------------------------------------------------------------

    def add(self, record: JobRecord) -> None:
        """Insert ``record``. A duplicate ``job_id`` raises ``sqlite3.IntegrityError`` (nothing is changed)."""
        placeholders = ", ".join("?" for _ in _COLUMNS)
        row = _to_row(record)
        with self._write() as conn:
            conn.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({placeholders})", row)

    def _resolve(self, conn: sqlite3.Connection, job_id: str) -> tuple[Any, ...]:
        cols = ", ".join(_COLUMNS)
        row = conn.execute(f"SELECT {cols} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is not None:
            return row
        if job_id:
            rows = conn.execute(
                f"SELECT {cols} FROM jobs WHERE substr(job_id, 1, ?) = ? ORDER BY created_at DESC LIMIT 11",
                (len(job_id), job_id),
            ).fetchall()
            if len(rows) == 1:
                return rows[0]
            if len(rows) > 1:
                shown = ", ".join(r[0] for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
                raise JobNotFound(f"job id prefix {job_id!r} is ambiguous: matches {shown}",
                                  fix="give more of the job id (run `cloudtune list` to see job ids)")
        raise JobNotFound(f"no job {job_id!r} in {self.path}", fix="run `cloudtune list` to see job ids")

    def get(self, job_id: str) -> JobRecord:
        """The job with exactly ``job_id``, else the only one whose id starts with it.

        Raises ``JobNotFound`` when none matches, or when the prefix matches several (the message lists them).
        """
        with self._read() as conn:
            return _from_row(self._resolve(conn, job_id))

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        """Set ``changes`` on the job (exact id or unique prefix) and return the updated record.

        Only JobRecord fields other than ``job_id``/``created_at`` are accepted (else ``TypeError``, nothing written).
        ``updated_at`` is bumped to now (never backwards) unless given explicitly. Raises ``JobNotFound`` like get.
        A terminal state (succeeded, failed, cancelled) is never replaced by a non-terminal one: a writer holding a
        stale view (a ``list`` that read "running" before the job ended) leaves the final state as it is; its other
        changes are still applied.
        """
        return self._apply(job_id, changes, {})

    def record_status(self, job_id: str, state: JobState | str, **extra: Any) -> JobRecord:
        """Record a state seen from the provider, with ``extra`` merged key by key into the job's ``extra`` (other
        keys written meanwhile by another process are kept), in one transaction. A terminal state is never
        replaced by a non-terminal one (see ``update``)."""
        try:
            return self._apply(job_id, {"state": state}, extra)
        except StoreNotWritable:  # what the provider says is still shown; the store catches up on a later call
            current = self.get(job_id)
            if not (current.terminal and state not in TERMINAL):
                current.state = JobState(state)
            current.extra = {**current.extra, **extra}
            return current

    def merge(self, job_id: str, extra: dict[str, Any], drop: tuple[str, ...] = (), **changes: Any) -> JobRecord:
        """``update`` with ``extra`` merged key by key into the job's ``extra`` and the keys in ``drop`` removed, in one
        transaction: keys another process wrote since this one read the record are kept (a handle's stale copy of
        ``extra`` never overwrites them)."""
        return self._apply(job_id, changes, extra, drop)

    def _apply(self, job_id: str, changes: dict[str, Any], extra_merge: dict[str, Any],
               drop: tuple[str, ...] = ()) -> JobRecord:
        unknown = sorted(set(changes) - _UPDATABLE)
        if unknown:
            raise TypeError(f"JobStore.update() got unknown field(s): {', '.join(unknown)}; "
                            f"allowed: {', '.join(sorted(_UPDATABLE))}")
        with self._write() as conn:
            current = _from_row(self._resolve(conn, job_id))
            data = asdict(current)
            data.update(changes)
            if current.terminal and data["state"] not in TERMINAL:
                data["state"] = current.state
            if extra_merge or drop:
                merged = {**(data.get("extra") or {}), **extra_merge}
                data["extra"] = {k: v for k, v in merged.items() if k not in drop}
            if "updated_at" not in changes:
                data["updated_at"] = max(time.time(), current.updated_at)
            new = JobRecord(**data)
            sets = [c for c in _COLUMNS if c != "job_id"]
            row = dict(zip(_COLUMNS, _to_row(new)))
            conn.execute(f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in sets)} WHERE job_id = ?",
                         [row[c] for c in sets] + [new.job_id])
        return new

    def reopen(self, job_id: str, **extra: Any) -> JobRecord:
        """Set an ended job back to ``pending`` (the one write that may: a sweep resumed on its own record, which
        ``cloudtune launch --resume SWEEP`` runs on), with ``extra`` merged and its failure reason dropped."""
        with self._write() as conn:
            current = _from_row(self._resolve(conn, job_id))
            merged = {k: v for k, v in {**current.extra, **extra}.items() if k != "failure_reason"}
            conn.execute("UPDATE jobs SET state = ?, updated_at = ?, extra = ? WHERE job_id = ?",
                         (JobState.PENDING.value, max(time.time(), current.updated_at), json.dumps(merged), current.job_id))
        return self.get(current.job_id)

    def children(self, key: str, value: str) -> list[JobRecord]:
        """The jobs whose ``extra[key]`` is ``value`` (a sweep's trials: ``children("sweep", SWEEP_ID)``), oldest first."""
        sql = (f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE json_extract(extra, '$.' || ?) = ? "
               "ORDER BY created_at, rowid")
        with self._read() as conn:
            return [_from_row(r) for r in conn.execute(sql, (key, value)).fetchall()]

    @staticmethod
    def lookup(job_id: str, home: Path | None = None) -> JobRecord:
        """``get`` without creating anything: the store is opened read-only and never made or migrated (a plan
        resolving ``train.model: job:<id>`` writes nothing). Raises ``JobNotFound`` as ``get`` does, also when
        there is no store yet."""
        path = (Path(home).expanduser() if home is not None else default_home()) / "jobs.db"
        if not path.is_file():
            raise JobNotFound(f"no job {job_id!r}: there is no job store at {path} yet",
                              fix="run `cloudtune list` to see job ids (CLOUDTUNE_HOME chooses the store)")
        reader = JobStore.__new__(JobStore)  # no __init__: nothing is created
        reader.home, reader.path = path.parent, path
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            return _from_row(reader._resolve(conn, job_id))
        except sqlite3.DatabaseError as exc:
            raise CloudtuneError(f"cannot read the job store {path}: {exc}", fix="check the file, or point "
                                 "CLOUDTUNE_HOME elsewhere") from None
        finally:
            conn.close()

    def discard_launch(self, job_id: str) -> bool:
        """Remove the record of a launch that made no job: only a record marked ``extra["launch"]`` "unconfirmed"
        (written by ``cloudtune.api.submit`` before the cloud's create call) or "never created" (such a launch found
        missing on the provider once its process had ended: ``cloudtune.api.Job``) is removed; any other job is kept.
        Returns whether a row was removed."""
        with self._write() as conn:
            cur = conn.execute("DELETE FROM jobs WHERE job_id = ? AND json_extract(extra, '$.launch') IN "
                               "('unconfirmed', 'never created')", (job_id,))
            return cur.rowcount > 0

    def unconfirmed(self, provider: str) -> list[JobRecord]:
        """The launches of ``provider`` recorded before their create call and not yet seen on the provider
        (``extra["launch"] == "unconfirmed"``), newest first."""
        sql = (f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE provider = ? AND json_extract(extra, '$.launch') = "
               "'unconfirmed' ORDER BY created_at DESC, rowid DESC")
        with self._read() as conn:
            return [_from_row(r) for r in conn.execute(sql, (provider,)).fetchall()]

    def list(self, limit: int = 50, provider: str | None = None) -> list[JobRecord]:
        """Up to ``limit`` jobs (``limit`` <= 0: all), newest ``created_at`` first, optionally of one provider."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        params: list[Any] = []
        if provider is not None:
            sql += " WHERE provider = ?"
            params.append(provider)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        params.append(limit if limit > 0 else -1)
        with self._read() as conn:
            return [_from_row(r) for r in conn.execute(sql, params).fetchall()]

