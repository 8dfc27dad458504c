"""A durable :class:`~flujo_actors.backends.state.StateBackend` on stdlib ``sqlite3``.

(Over 500 lines on purpose: one backend class whose schema, migrations and file
checks must be read together.)

File layout (schema version 3)::

    PRAGMA application_id = 0x464A4143      -- "FJAC": recognises our files
    meta  (key TEXT PRIMARY KEY, value TEXT)  -- app = flujo_actors, schema_version = 2
    runs  (run_id TEXT PRIMARY KEY, pipeline_name, status, next_step_index,
           context, initial_input, output,   -- JSON text
           total_cost_usd, total_tokens, updated_at, step_count)
    steps (run_id, idx, json, PRIMARY KEY (run_id, idx))  -- one row per step
    fingerprints (run_id TEXT PRIMARY KEY, fingerprint)   -- the pipeline's (v2)
    positions (run_id, position, json, PRIMARY KEY (run_id, position))  -- (v3)

The pipeline fingerprint has a table of its own: it is written when a run is
created (not with every step), and keeping it out of the run row keeps the
row, rewritten at every step, small. Completed steps below the top level
(inside loops, branches, nested pipelines) are rows of ``positions``, one
insert each. A file of an older schema is migrated when it is opened, in one
transaction: version 1 (before fingerprints) gains ``fingerprints`` (its runs
have no fingerprint) and ``positions``, version 2 gains ``positions``.

A checkpoint inserts its new step rows and upserts the run row: the work per
step does not grow with the history. Values are JSON text; nothing is pickled.
All SQL is parameterised (the only literals are our own integer constants in
``PRAGMA`` statements, which SQLite does not let us bind).

Durability: the database runs in WAL mode with ``synchronous=FULL`` by
default, so a ``save_state`` that returned survives a process crash *and* a
power loss or OS crash (the WAL is fsynced at every commit). The persistence
actor group-commits checkpoints with :meth:`SQLiteBackend.save_states`, so the
fsync is paid per batch, not per step. ``synchronous="NORMAL"`` skips that
fsync: still safe against process crashes and never corrupt, but the last
commits before a power loss may be lost, and resume would then re-run those
steps.

Where the work runs: a commit with ``synchronous="FULL"`` waits for an fsync
(milliseconds), so it always runs in a worker thread. A ``"NORMAL"`` commit
(and any commit of a ``":memory:"`` database) is a ``write()`` into the WAL,
tens of microseconds: less than the thread hop itself (~60 us quiet, several
hundred under load), so a write runs on the trio thread when the connection
and SQLite's write lock are both free at once (busy timeout 0). Otherwise (the
first open, another thread of ours using the connection, another process
holding the write lock) it takes the worker thread, which waits for the lock
as long as ``timeout_s`` allows. The part of NORMAL mode that does fsync, the
WAL checkpoint (10-20 ms here), runs neither on the trio thread nor in a
write's path: SQLite's automatic checkpoint is off on the backend's
connection, and when the WAL has grown by about 1,000 pages (SQLite's own
default) since the last one, a short-lived thread checkpoints it
(``PASSIVE``) on a connection of its own, while writes go on. Reads always run
in the worker thread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

import trio

from ..errors import StateBackendError
from ..serialization import loads_json
from .state import (
    PositionRecord,
    RunCheckpoint,
    RunSnapshot,
    _check_run_id,
    _check_status,
    _EncodedCheckpoint,
    check_prune,
    decode_run,
    encode_positions,
    prune_matches,
    run_exists_error,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteBackend"]

R = TypeVar("R")

APPLICATION_ID: Final = 0x464A4143
"""``PRAGMA application_id`` of flujo_actors state files ("FJAC")."""

SCHEMA_VERSION: Final = 3
"""The schema version this module reads and writes."""

_APP_NAME: Final = "flujo_actors"
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"

_CREATE_FINGERPRINTS: Final = (
    "CREATE TABLE fingerprints (run_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL)"
)
_CREATE_POSITIONS: Final = (
    "CREATE TABLE positions ("
    " run_id TEXT NOT NULL, position TEXT NOT NULL, json TEXT NOT NULL,"
    " PRIMARY KEY (run_id, position)) WITHOUT ROWID"
)
#: What each older schema version lacks, created by its migration.
_MIGRATIONS: Final = {"1": (_CREATE_FINGERPRINTS, _CREATE_POSITIONS), "2": (_CREATE_POSITIONS,)}
_SCHEMA: Final = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    # runs keeps its rowid: list_runs orders by it (first-save order), and an
    # upsert keeps a row's rowid.
    "CREATE TABLE runs ("
    " run_id TEXT PRIMARY KEY, pipeline_name TEXT NOT NULL, status TEXT NOT NULL,"
    " next_step_index INTEGER NOT NULL, context TEXT NOT NULL,"
    " initial_input TEXT NOT NULL, output TEXT NOT NULL, total_cost_usd TEXT NOT NULL,"
    " total_tokens INTEGER NOT NULL, updated_at REAL NOT NULL, step_count INTEGER NOT NULL)",
    "CREATE INDEX runs_by_status ON runs (status)",
    "CREATE TABLE steps ("
    " run_id TEXT NOT NULL, idx INTEGER NOT NULL, json TEXT NOT NULL,"
    " PRIMARY KEY (run_id, idx)) WITHOUT ROWID",
    _CREATE_FINGERPRINTS,
    _CREATE_POSITIONS,
)
_TABLES: Final = frozenset({"meta", "runs", "steps", "fingerprints", "positions"})

_UPSERT_RUN: Final = (
    "INSERT INTO runs (run_id, pipeline_name, status, next_step_index, context,"
    " initial_input, output, total_cost_usd, total_tokens, updated_at, step_count)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id) DO UPDATE SET"
    " pipeline_name = excluded.pipeline_name, status = excluded.status,"
    " next_step_index = excluded.next_step_index, context = excluded.context,"
    " initial_input = excluded.initial_input, output = excluded.output,"
    " total_cost_usd = excluded.total_cost_usd, total_tokens = excluded.total_tokens,"
    " updated_at = excluded.updated_at, step_count = excluded.step_count"
)
_SELECT_RUN: Final = (
    "SELECT pipeline_name, status, next_step_index, context, initial_input, output,"
    " total_cost_usd, total_tokens, updated_at FROM runs WHERE run_id = ?"
)

_RunRow = tuple[str, str, int, str, str, str, str, int, float]

#: SQLite's default auto-checkpoint threshold, in WAL pages: when the pages our
#: writes added (estimated) reach it, a background thread checkpoints the WAL.
_CHECKPOINT_PAGES: Final = 1000
#: Pages a small commit adds to the WAL (a leaf of each table it touches, and the
#: commit frame), and the page size the estimate assumes for the payload.
_PAGES_PER_COMMIT: Final = 4
_PAGE_BYTES: Final = 4096
#: SQLite's primary result codes for "another connection holds the lock".
_BUSY_CODES: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED


def _wal_pages(size: int) -> int:
    """Estimated WAL pages a commit of ``size`` characters of payload adds."""
    return _PAGES_PER_COMMIT + size // _PAGE_BYTES


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _BUSY_CODES


class SQLiteBackend(trio.abc.AsyncResource):
    """A :class:`~flujo_actors.backends.state.StateBackend` stored in one SQLite file.

    The file is opened (and created, if missing or empty) on first use. Every
    blocking call runs in a worker thread through ``trio.to_thread.run_sync``
    on the backend's single connection, guarded by a lock, so trio is never
    blocked and calls from several trio runs or threads are serialized. Use
    ``async with SQLiteBackend(path) as backend:`` or call :meth:`aclose`.

    A file that is not a flujo_actors state store (not SQLite, another
    application's SQLite database, a damaged or newer-schema store) raises
    :class:`~flujo_actors.errors.StateBackendError` naming the file and the
    problem; such a file is never written to.

    With ``synchronous="NORMAL"`` (or ``":memory:"``) a write whose connection
    and lock are free runs on the trio thread instead, without waiting (see
    the module docstring: no fsync is ever done there).

    Cancellation: a write (:meth:`save_state`, :meth:`save_states`,
    :meth:`delete_state`) cancelled before it started (its checkpoint, then
    its worker thread) raises ``Cancelled`` and did nothing; one run on the
    trio thread does not yield once started. Once the thread started, the write is never
    abandoned: the call waits for the transaction to commit or roll back and
    reports that outcome (it returns, or raises its error), and the
    cancellation is delivered at the caller's next checkpoint. So a caller
    always knows whether a write it saw complete is durable. Cancelled reads
    (:meth:`load_state`, :meth:`list_runs`) raise ``Cancelled`` at once; their
    thread finishes in the background and its result is dropped.
    :meth:`aclose` always closes, even when cancelled.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        timeout_s: float = 5.0,
    ) -> None:
        """Prepare a backend for the file at ``path`` (opened on first use).

        Args:
            path: The database file; ``":memory:"`` for a private in-memory
                database (no WAL, gone at :meth:`aclose`).
            synchronous: ``"FULL"`` (default: durable across power loss) or
                ``"NORMAL"`` (durable across process crashes only); see the
                module documentation.
            timeout_s: How long to wait for another process's lock on the file.

        Raises:
            TypeError: ``path`` is not a ``str`` or ``os.PathLike`` of ``str``.
            ValueError: ``path`` is empty or holds a NUL character, or
                ``synchronous``/``timeout_s`` is invalid.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"SQLiteBackend: path must be a str or os.PathLike, got "
                f"{type(path).__name__} {path!r}."
            )
        fspath = os.fspath(path)
        if not isinstance(fspath, str):
            raise TypeError(
                f"SQLiteBackend: path must be a text path, got bytes {fspath!r}. "
                "Decode it with os.fsdecode()."
            )
        if not fspath or "\x00" in fspath:
            raise ValueError(
                f"SQLiteBackend: path must be a file name (or ':memory:'), got {fspath!r}."
            )
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(
                f"SQLiteBackend: synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}."
            )
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s < 0:
            raise ValueError(f"SQLiteBackend: timeout_s must be a number >= 0, got {timeout_s!r}.")
        self._path = fspath
        self._synchronous = synchronous
        self._timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        # Writes may run on the trio thread: no fsync at commit (module docstring).
        self._inline = synchronous == "NORMAL" or fspath == ":memory:"
        # Estimated WAL pages written since the backend last checkpointed (inline mode),
        # and the thread checkpointing now (see _wrote).
        self._pages = 0
        self._checkpoint_again = False  # set by a checkpoint that found the WAL busy
        self._checkpointer: threading.Thread | None = None
        # Whether the connection's busy timeout is 0 now (inline writes never wait).
        self._busy_zero = False

    @property
    def path(self) -> str:
        """The database file's path."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteBackend({self._path!r})"

    # -- the worker-thread side ------------------------------------------------------

    async def _call(
        self, what: str, op: Callable[[sqlite3.Connection], R], *, write: bool, size: int = 0
    ) -> R:
        """Run ``op`` on the connection; ``size``: a write's payload, in characters."""
        if write and self._inline and self._conn is not None:
            await trio.lowlevel.checkpoint()  # a cancel lands here, before anything is done
            done, value = self._try_inline(what, op, size)
            if done:
                return cast("R", value)
        # Writes are never abandoned: the caller must learn how the transaction
        # ended. Reads may be: nothing depends on their result once cancelled.
        return await trio.to_thread.run_sync(
            self._locked, what, op, write, size, abandon_on_cancel=not write
        )

    def _try_inline(
        self, what: str, op: Callable[[sqlite3.Connection], R], size: int
    ) -> tuple[bool, R | None]:
        """Write on the calling (trio) thread if nothing would make it wait; ``(done, value)``.

        Not done (the caller takes the worker thread): the lock is held by
        another thread of ours, the backend is closed (the thread reports it),
        or SQLite's write lock is taken (the transaction rolled back, nothing
        written).
        """
        if not self._lock.acquire(blocking=False):
            return False, None
        try:
            conn = self._conn
            if conn is None or self._closed:
                return False, None
            if not self._busy_zero:
                conn.execute("PRAGMA busy_timeout = 0")
                self._busy_zero = True
            try:
                value = op(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.rollback()
                if _is_busy(exc):
                    return False, None
                raise StateBackendError(
                    f"SQLite state store {self._path!r}: {what} failed: {exc}."
                ) from exc
            self._wrote(size)
            return True, value
        finally:
            self._lock.release()

    def _locked(
        self, what: str, op: Callable[[sqlite3.Connection], R], write: bool = False, size: int = 0
    ) -> R:
        with self._lock:
            if self._closed:
                raise StateBackendError(f"{self!r} is closed; create a new backend to reopen it.")
            conn = self._conn
            if conn is None:
                conn = self._conn = self._open()
            try:
                if self._busy_zero:
                    # The thread waits for another process's lock, as long as timeout_s says.
                    conn.execute(f"PRAGMA busy_timeout = {int(self._timeout_s * 1000):d}")
                    self._busy_zero = False
                value = op(conn)
                if write and self._inline:
                    self._wrote(size)
                return value
            except sqlite3.Error as exc:
                raise StateBackendError(
                    f"SQLite state store {self._path!r}: {what} failed: {exc}."
                ) from exc

    def _wrote(self, size: int) -> None:
        """Count a committed write's WAL pages; start a checkpoint when due (under the lock)."""
        self._pages += _wal_pages(size)
        if (
            self._pages < _CHECKPOINT_PAGES and not self._checkpoint_again
        ) or self._path == ":memory:":
            return
        running = self._checkpointer
        if running is not None and running.is_alive():
            return  # still at it: the next write after it ends starts another
        self._pages = 0
        self._checkpoint_again = False
        thread = threading.Thread(
            target=self._checkpoint, name=f"flujo-sqlite-checkpoint {self._path}", daemon=True
        )
        self._checkpointer = thread
        thread.start()

    def _checkpoint(self) -> None:
        """Checkpoint the WAL on a connection of its own (a PASSIVE one never blocks writers)."""
        try:
            conn = sqlite3.connect(self._path, timeout=self._timeout_s, isolation_level=None)
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0]
                if busy:
                    # Another checkpoint (or a recovery) held the WAL: copy nothing now,
                    # and let the next commit start this one again instead of waiting
                    # for ~1,000 more pages.
                    self._checkpoint_again = True
            finally:
                conn.close()
        except sqlite3.Error:
            # Nothing is lost: the commits are in the WAL, which the next checkpoint
            # (due after the next ~1,000 pages) copies; an I/O fault also fails writes.
            return

    def _open(self) -> sqlite3.Connection:
        app_id = None if self._path == ":memory:" else self._read_header()
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._timeout_s,
                isolation_level=None,  # we issue BEGIN / COMMIT ourselves
                check_same_thread=False,  # worker threads vary; our lock serializes them
            )
        except sqlite3.Error as exc:
            raise StateBackendError(
                f"Cannot open the SQLite state store {self._path!r}: {exc}."
            ) from exc
        try:
            self._prepare(conn, app_id)
        except sqlite3.OperationalError as exc:  # locked, I/O error, read-only, ...
            conn.close()
            raise StateBackendError(
                f"Cannot open the SQLite state store {self._path!r}: {exc}."
            ) from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StateBackendError(
                f"{self._path!r} is corrupt or not a SQLite database ({exc}); refusing to use it."
            ) from exc
        except Exception:
            conn.close()
            raise
        return conn

    def _read_header(self) -> int | None:
        """Check the file's header before SQLite touches it.

        Returns:
            ``None`` for a missing or empty file (a new store), else the
            header's application id (ours or 0).
        """
        try:
            with open(self._path, "rb") as file:
                header = file.read(100)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StateBackendError(
                f"{self._path!r} is a directory, not a SQLite state store file."
            ) from None
        except OSError as exc:
            raise StateBackendError(f"Cannot read the state store {self._path!r}: {exc}.") from exc
        if not header:
            return None
        if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
            raise StateBackendError(
                f"{self._path!r} is not a SQLite database (no SQLite header); refusing to "
                "use or modify it. Pass the path of a new file or of a flujo_actors state store."
            )
        app_id = int.from_bytes(header[68:72], "big", signed=True)
        if app_id not in (0, APPLICATION_ID):
            raise StateBackendError(
                f"{self._path!r} is a SQLite database of another application "
                f"(application_id {app_id:#010x}); refusing to use or modify it."
            )
        return app_id

    def _prepare(self, conn: sqlite3.Connection, header_app_id: int | None) -> None:
        if header_app_id != APPLICATION_ID:
            self._create_if_empty(conn)
        self._verify(conn)
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        if self._inline:
            # The backend checkpoints in its worker thread (see _locked), never inline.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        # After the schema exists: the header (with our application id) is then
        # in the main file itself, not only in the WAL.
        self._enable_wal(conn)

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # WAL is a property of the file: once set, every later open finds it.
        # Switching needs the file to itself; while other backends open the same
        # new file, SQLite may answer "database is locked" or leave the old mode
        # (seen under load). Retry for up to timeout_s, as every other lock wait
        # here does. This runs in a worker thread: sleeping blocks no event loop.
        deadline = time.monotonic() + self._timeout_s
        pause = 0.001
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            else:
                if str(mode).lower() == "wal" or self._path == ":memory:":
                    return
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError(
                        f"could not switch to WAL mode (still {mode!r}): database is locked"
                    )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _tables(self, conn: sqlite3.Connection) -> set[str]:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {row[0] for row in rows}

    def _create_if_empty(self, conn: sqlite3.Connection) -> None:
        # One read transaction, so both answers come from the same snapshot:
        # read apart, another backend creating the store between them looks
        # like a foreign database (no application id yet, but tables).
        conn.execute("BEGIN")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = self._tables(conn)
        finally:
            conn.execute("COMMIT")
        if app_id == APPLICATION_ID:
            return
        if tables:
            # Decided by reading only: a foreign database is never locked for writing.
            raise StateBackendError(
                f"{self._path!r} is a SQLite database that is not a flujo_actors state store "
                f"(tables: {', '.join(sorted(tables))}); refusing to use or modify it."
            )
        conn.execute("BEGIN IMMEDIATE")
        with conn:  # commits, or rolls back if anything fails
            # Re-check under the write lock: another process may have created it.
            if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                return
            if self._tables(conn):
                raise StateBackendError(
                    f"{self._path!r} gained foreign tables while being opened; refusing to use it."
                )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("app", _APP_NAME), ("schema_version", str(SCHEMA_VERSION))],
            )

    def _migrate(self, conn: sqlite3.Connection, version: str) -> None:
        """Upgrade an older file in place (one transaction: all or nothing)."""
        conn.execute("BEGIN IMMEDIATE")
        with conn:
            # Re-check under the write lock: another process may have migrated it.
            found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if found is not None and found[0] == version:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION),),
                )

    def _verify(self, conn: sqlite3.Connection) -> None:
        tables = self._tables(conn)
        if "meta" in tables:
            # An older file lacks only the tables added since: migrate first.
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            version = meta.get("schema_version")
            if meta.get("app") == _APP_NAME and version in _MIGRATIONS:
                self._migrate(conn, version)
        missing = _TABLES - self._tables(conn)
        if missing:
            raise StateBackendError(
                f"{self._path!r} is marked as a flujo_actors state store but lacks the tables "
                f"{', '.join(sorted(missing))}; the file is damaged."
            )
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("app") != _APP_NAME:
            raise StateBackendError(
                f"{self._path!r} is marked as a flujo_actors state store but its meta table "
                f"says app={meta.get('app')!r}; the file is damaged."
            )
        version = meta.get("schema_version")
        if version != str(SCHEMA_VERSION):
            newer = version is not None and version.isdigit() and int(version) > SCHEMA_VERSION
            raise StateBackendError(
                f"{self._path!r} has state schema version {version!r}; this flujo_actors "
                f"reads version {SCHEMA_VERSION}."
                + (" Upgrade flujo_actors to read it." if newer else " The file is damaged.")
            )

    # -- the protocol ----------------------------------------------------------------

    async def create_run(self, checkpoint: RunCheckpoint) -> None:
        """Insert a new run from its first checkpoint, in one transaction.

        Atomic across every backend and process sharing the file: the
        existence check and the insert happen under SQLite's write lock, and
        the run id is the table's primary key.

        Raises:
            RunExistsError: The run id is stored already (nothing is written).
            SerializationError: A value is not JSON data (nothing is written).
            StateBackendError: As :meth:`save_state`.
        """
        encoded = _EncodedCheckpoint.encode(checkpoint)
        await self._call(
            "create_run",
            lambda conn: _create(conn, encoded, self),
            write=True,
            size=_payload([encoded]),
        )

    async def save_state(self, run_id: str, checkpoint: RunCheckpoint) -> None:
        """Append ``checkpoint.new_steps`` to the run and upsert its run row, in one transaction.

        Raises:
            ValueError: ``run_id`` differs from ``checkpoint.run_id``.
            SerializationError: A value is not JSON data (nothing is written).
            StateBackendError: The file cannot be used, or SQLite failed (the
                transaction was rolled back).
        """
        _check_run_id(run_id, checkpoint)
        encoded = [_EncodedCheckpoint.encode(checkpoint)]
        await self._call(
            "save_state", lambda conn: _write(conn, encoded), write=True, size=_payload(encoded)
        )

    async def save_states(self, batch: Sequence[RunCheckpoint]) -> None:
        """Save ``batch`` in order as one transaction (group commit: one fsync).

        Raises:
            SerializationError: A value is not JSON data (nothing is written).
            StateBackendError: As :meth:`save_state`; nothing of the batch is kept.
        """
        encoded = [_EncodedCheckpoint.encode(checkpoint) for checkpoint in batch]
        if not encoded:
            await trio.lowlevel.checkpoint()
            return
        await self._call(
            "save_states", lambda conn: _write(conn, encoded), write=True, size=_payload(encoded)
        )

    async def load_state(self, run_id: str) -> RunSnapshot | None:
        """Return the run with its full history (one consistent read), or ``None``.

        Raises:
            StateBackendError: The file cannot be used, or stored JSON is damaged.
        """
        found = await self._call("load_state", lambda conn: _read(conn, run_id), write=False)
        if found is None:
            return None
        row, steps, fingerprint = found
        try:
            return decode_run(run_id, row, steps, fingerprint)
        except ValueError as exc:
            raise StateBackendError(
                f"SQLite state store {self._path!r}: the stored JSON of run {run_id!r} is "
                f"damaged: {exc}."
            ) from exc

    async def save_positions(self, batch: Sequence[PositionRecord]) -> None:
        """Insert (or replace) completed positions in one transaction (group commit).

        Raises:
            SerializationError: A record is not JSON data (nothing is written).
            StateBackendError: As :meth:`save_state`; nothing of the batch is kept.
        """
        rows = encode_positions(batch)
        if not rows:
            await trio.lowlevel.checkpoint()
            return
        await self._call(
            "save_positions",
            lambda conn: _write_positions(conn, rows),
            write=True,
            size=sum(len(row[2]) for row in rows),
        )

    async def load_positions(self, run_id: str) -> dict[str, Any]:
        """Return ``{position: record}`` of the run's completed positions (empty if none).

        Raises:
            StateBackendError: The file cannot be used, or stored JSON is damaged.
        """
        rows = await self._call(
            "load_positions", lambda conn: _read_positions(conn, run_id), write=False
        )
        try:
            return {position: loads_json(text) for position, text in rows}
        except ValueError as exc:
            raise StateBackendError(
                f"SQLite state store {self._path!r}: the stored JSON of a position of run "
                f"{run_id!r} is damaged: {exc}."
            ) from exc

    async def delete_state(self, run_id: str) -> None:
        """Delete the run and its steps in one transaction (no-op when unknown)."""
        await self._call("delete_state", lambda conn: _delete(conn, run_id), write=True)

    async def list_runs(self, status: str | None = None) -> list[str]:
        """Return run ids in the order the runs were first saved.

        Raises:
            ValueError: ``status`` is not ``None`` or a known run status.
        """
        _check_status(status)
        return await self._call("list_runs", lambda conn: _list(conn, status), write=False)

    async def prune(
        self, *, older_than_s: float | None = None, status: str | None = None
    ) -> list[str]:
        """Delete the matching runs with their history in one transaction; return their ids.

        Raises:
            ValueError: bad filters (see :func:`~.state.check_prune`); nothing is deleted.
            StateBackendError: As :meth:`save_state` (the transaction was rolled back).
        """
        check_prune(older_than_s, status)
        now = time.time()
        return await self._call(
            "prune", lambda conn: _prune(conn, older_than_s, status, now), write=True
        )

    async def aclose(self) -> None:
        """Close the connection (idempotent). Later calls raise StateBackendError.

        Shielded from cancellation: it waits for an operation in flight to end,
        then closes, so the file is always released.
        """
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        with self._lock:
            self._closed = True  # no write starts another checkpointer now
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
        checkpointer = self._checkpointer
        if checkpointer is not None:
            checkpointer.join()  # the file is released only when it is done with it


def _payload(batch: Sequence[_EncodedCheckpoint]) -> int:
    """Characters of JSON text a batch of checkpoints writes (for the WAL estimate)."""
    return sum(
        len(item.context)
        + len(item.initial_input)
        + len(item.output)
        + sum(map(len, item.new_steps))
        for item in batch
    )


# Operations on the connection (called under the backend's lock, in a worker
# thread or, for NORMAL-mode writes, inline: see SQLiteBackend._call).


def _create(conn: sqlite3.Connection, item: _EncodedCheckpoint, backend: object) -> None:
    conn.execute("BEGIN IMMEDIATE")
    with conn:  # commits, or rolls back if anything fails
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (item.run_id,)).fetchone():
            raise run_exists_error(item.run_id, backend)
        _apply(conn, item)


def _write(conn: sqlite3.Connection, batch: Sequence[_EncodedCheckpoint]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    with conn:  # commits, or rolls back if anything fails
        for item in batch:
            _apply(conn, item)


def _apply(conn: sqlite3.Connection, item: _EncodedCheckpoint) -> None:
    """Apply one checkpoint inside the caller's transaction."""
    found = conn.execute("SELECT step_count FROM runs WHERE run_id = ?", (item.run_id,)).fetchone()
    base: int = found[0] if found is not None else 0
    if item.new_steps:
        conn.executemany(
            "INSERT INTO steps (run_id, idx, json) VALUES (?, ?, ?)",
            [(item.run_id, base + i, text) for i, text in enumerate(item.new_steps)],
        )
    conn.execute(
        _UPSERT_RUN,
        (
            item.run_id,
            item.pipeline_name,
            item.status,
            item.next_step_index,
            item.context,
            item.initial_input,
            item.output,
            item.total_cost_usd,
            item.total_tokens,
            item.updated_at,
            base + len(item.new_steps),
        ),
    )
    if item.pipeline_fingerprint is not None:
        conn.execute(
            "INSERT INTO fingerprints (run_id, fingerprint) VALUES (?, ?)"
            " ON CONFLICT (run_id) DO UPDATE SET fingerprint = excluded.fingerprint",
            (item.run_id, item.pipeline_fingerprint),
        )


def _read(conn: sqlite3.Connection, run_id: str) -> tuple[_RunRow, list[str], str | None] | None:
    conn.execute("BEGIN")  # one snapshot for both queries
    with conn:
        row: _RunRow | None = conn.execute(_SELECT_RUN, (run_id,)).fetchone()
        if row is None:
            return None
        steps = conn.execute(
            "SELECT json FROM steps WHERE run_id = ? ORDER BY idx", (run_id,)
        ).fetchall()
        found = conn.execute(
            "SELECT fingerprint FROM fingerprints WHERE run_id = ?", (run_id,)
        ).fetchone()
    return row, [step[0] for step in steps], found[0] if found is not None else None


def _delete(conn: sqlite3.Connection, run_id: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    with conn:
        conn.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM fingerprints WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM positions WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))


def _prune(
    conn: sqlite3.Connection, older_than_s: float | None, status: str | None, now: float
) -> list[str]:
    conn.execute("BEGIN IMMEDIATE")
    with conn:
        rows = conn.execute("SELECT run_id, status, updated_at FROM runs ORDER BY rowid")
        gone = [
            run_id
            for run_id, run_status, updated_at in rows.fetchall()
            if prune_matches(run_status, updated_at, older_than_s, status, now)
        ]
        for table in ("steps", "fingerprints", "positions", "runs"):
            conn.executemany(f"DELETE FROM {table} WHERE run_id = ?", [(r,) for r in gone])
    return gone


def _write_positions(conn: sqlite3.Connection, rows: list[tuple[str, str, str]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    with conn:
        conn.executemany(
            "INSERT INTO positions (run_id, position, json) VALUES (?, ?, ?)"
            " ON CONFLICT (run_id, position) DO UPDATE SET json = excluded.json",
            rows,
        )


def _read_positions(conn: sqlite3.Connection, run_id: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = conn.execute(
        "SELECT position, json FROM positions WHERE run_id = ?", (run_id,)
    ).fetchall()
    return rows


def _list(conn: sqlite3.Connection, status: str | None) -> list[str]:
    if status is None:
        rows = conn.execute("SELECT run_id FROM runs ORDER BY rowid").fetchall()
    else:
        rows = conn.execute(
            "SELECT run_id FROM runs WHERE status = ? ORDER BY rowid", (status,)
        ).fetchall()
    return [row[0] for row in rows]
