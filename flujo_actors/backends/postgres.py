"""A shared :class:`~flujo_actors.backends.state.StateBackend` on PostgreSQL, with run leases.

Install the extra: ``pip install 'flujo-actors[postgres]'`` (psycopg 3 and
psycopg_pool). ``import flujo_actors`` never imports psycopg; this module
does.

Threads, not psycopg's async API: psycopg's ``AsyncConnection`` waits on
asyncio's event loop, which a pure-trio run does not have (it would need
trio-asyncio and an asyncio loop in every run). The blocking calls run in
worker threads through ``trio.to_thread.run_sync``, as in the SQLite backend,
on connections from a ``psycopg_pool.ConnectionPool``; a thread hop costs
tens of microseconds, small beside a commit (``benchmarks/bench_postgres.py``
measures both paths).

The schema (:mod:`.postgres_schema`) is created or migrated when the backend
first connects. Payloads are ``json`` columns holding exactly the text of
:func:`~flujo_actors.serialization.dumps_json` (nothing is pickled); see
:mod:`.postgres_schema` for why not ``jsonb``.

Group commit: concurrent writes of one backend object (many runs' persistence
actors in one process) share transactions (:mod:`.postgres_pool`).

A server that goes away mid-run: the write in flight fails with
:class:`~flujo_actors.errors.StateBackendError` naming the backend and
saying what happened to the write, and the run fails with it (it does not
wait and retry: a commit whose outcome is unknown cannot be retried blindly).
Everything committed before stays; once the server is back the same backend
object reconnects (dead pooled connections are replaced) and
``resume_async`` continues the run after its last committed step.

(Just over 500 lines: the backend's methods are the protocol's, each a thin
transaction over ``postgres_sql``; the pool, schema and lease code already
live in their own modules, and splitting the methods would scatter one
class.)
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import trio

from ..errors import LeaseLostError, RunLeasedError, RunNotFoundError, StateBackendError
from ..serialization import loads_json
from . import postgres_leases as leases
from . import postgres_sql as sql
from .postgres_pool import Connections, GroupCommit
from .state import (
    RunCheckpoint,
    RunSnapshot,
    _check_run_id,
    _check_status,
    _EncodedCheckpoint,
    check_prune,
    decode_run,
    encode_positions,
    run_exists_error,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import psycopg

    from .state import PositionRecord


__all__ = ["PostgresBackend", "PostgresStatistics"]

R = TypeVar("R")

_RECOVER_LIMIT: Final = 1000


@attrs.frozen
class PostgresStatistics:
    """Counters of one :class:`PostgresBackend` (see :meth:`PostgresBackend.statistics`).

    Attributes:
        commits: Write transactions committed.
        grouped_commits: Those that carried the writes of several callers.
        queued_writes: Writes waiting now for the commit in flight.
        held_leases: Runs this backend is running now (holds the lease of).
    """

    commits: int
    grouped_commits: int
    queued_writes: int
    held_leases: int


def _safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable DSN>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


class PostgresBackend(trio.abc.AsyncResource):
    """A :class:`~flujo_actors.backends.state.StateBackend` in a PostgreSQL database.

    Many runner processes, on many machines, may share one database: run ids
    are unique across all of them (:meth:`create_run` is atomic), and every
    running run is leased by the backend object running it, which renews the
    lease while the run runs. ``await runner.recover_async()`` takes over the
    runs whose owner stopped renewing (a crashed process).

    The database must exist; the backend creates or migrates its tables
    (``flujo_*``) on first use. Use ``async with PostgresBackend(dsn) as
    backend:`` or call :meth:`aclose`.

    Cancellation: as :class:`~flujo_actors.backends.sqlite.SQLiteBackend`: a
    write cancelled before its worker thread started did nothing; once
    started it is never abandoned (the call waits for the commit or rollback
    and reports it; the cancellation is delivered at the next checkpoint). A
    cancelled read raises ``Cancelled`` at once. :meth:`aclose` always closes.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        lease_s: float = 30.0,
        timeout_s: float = 10.0,
        owner_id: str | None = None,
        create_tables: bool = True,
    ) -> None:
        """Prepare a backend for the database at ``dsn`` (connected on first use).

        Args:
            dsn: A libpq connection string or URI (``"postgresql://user@host/db"``,
                ``"host=/run/postgresql dbname=flows"``).
            min_size: Connections the pool keeps open.
            max_size: Most connections the pool opens (concurrent operations).
            lease_s: How long a run's lease lasts without renewal: a crashed
                process's runs are recoverable this long after its last
                renewal. Running runs renew every ``lease_s / 3``.
            timeout_s: How long to wait for a connection (connect, or a free
                pooled one) before failing.
            owner_id: This backend's name in the leases (default: host, pid
                and a random part, unique per backend object).
            create_tables: Create the tables in a database that has none (an
                older schema is migrated either way). ``False`` makes such a
                database an error (``StateBackendError`` at first use): what
                the runs CLI uses, so that a mistyped DSN is not silently
                given an empty store.

        Raises:
            ImportError: The ``postgres`` extra is not installed.
            ValueError: ``dsn`` is not a valid connection string, or another
                argument is out of range.
        """
        try:
            from psycopg.conninfo import conninfo_to_dict
        except ImportError as exc:  # pragma: no cover - the extra is installed in tests
            raise ImportError(
                "PostgresBackend needs psycopg 3 and psycopg_pool: "
                "pip install 'flujo-actors[postgres]'."
            ) from exc
        if not isinstance(dsn, str) or not dsn.strip():
            raise ValueError(
                f"PostgresBackend: dsn must be a non-empty libpq connection string such as "
                f"'postgresql://user@localhost/flows', got {dsn!r}."
            )
        try:
            conninfo_to_dict(dsn)
        except Exception as exc:
            # libpq quotes a bad URI whole, password included: never repeat it.
            detail = str(exc).strip().replace(dsn, "<the DSN>")
            raise ValueError(
                f"PostgresBackend: dsn is not a valid libpq connection string ({detail}). "
                "Use 'postgresql://user:password@host:5432/dbname' or "
                "'host=... dbname=...'."
            ) from None
        for name, value in (("min_size", min_size), ("max_size", max_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PostgresBackend: {name} must be an int >= 1, got {value!r}.")
        if max_size < min_size:
            raise ValueError(
                f"PostgresBackend: max_size ({max_size!r}) must be >= min_size ({min_size!r})."
            )
        for name, number in (("lease_s", lease_s), ("timeout_s", timeout_s)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not number > 0:
                raise ValueError(f"PostgresBackend: {name} must be a number > 0, got {number!r}.")
        if not isinstance(create_tables, bool):
            raise ValueError(
                f"PostgresBackend: create_tables must be True or False, got {create_tables!r}."
            )
        if owner_id is not None and (not isinstance(owner_id, str) or not owner_id):
            raise ValueError(
                f"PostgresBackend: owner_id must be a non-empty str or None, got {owner_id!r}."
            )
        self._dsn = dsn
        self._shown = _safe_dsn(dsn)
        self.lease_s = float(lease_s)
        self.owner_id = owner_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._connections = Connections(
            dsn,
            repr(self),
            min_size=min_size,
            max_size=max_size,
            timeout_s=float(timeout_s),
            create_tables=create_tables,
        )
        self._writes = GroupCommit(self._connections)
        # run_id -> lease epoch of the runs this backend runs now.
        self._held: dict[str, int] = {}
        # Runs claim_expired leased here that recovery is about to resume.
        self._pending: set[str] = set()
        self._held_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresBackend({self._shown!r})"

    def statistics(self) -> PostgresStatistics:
        """The backend's counters now (a frozen value; does not block)."""
        with self._held_lock:
            held = len(self._held)
        return PostgresStatistics(
            commits=self._writes.commits,
            grouped_commits=self._writes.grouped,
            queued_writes=self._writes.queued,
            held_leases=held,
        )

    # -- thread plumbing ---------------------------------------------------------------

    async def _read(self, what: str, op: Callable[[psycopg.Connection[tuple[Any, ...]]], R]) -> R:
        def call() -> R:
            return self._connections.call(what, op, write=False)

        return await trio.to_thread.run_sync(call, abandon_on_cancel=True)

    async def _write(self, what: str, op: Callable[[psycopg.Connection[tuple[Any, ...]]], R]) -> R:
        # Never abandoned: the caller must learn how the transaction ended.
        return await trio.to_thread.run_sync(self._writes.write, what, op)

    def _epochs(self, run_ids: Sequence[str]) -> dict[str, int]:
        with self._held_lock:
            return {run_id: self._held[run_id] for run_id in run_ids if run_id in self._held}

    def _write_op(
        self, batch: list[_EncodedCheckpoint]
    ) -> Callable[[psycopg.Connection[tuple[Any, ...]]], None]:
        epochs = self._epochs([item.run_id for item in batch])

        def op(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            fenced = sql.write_batch(conn, batch, self.owner_id, self.lease_s, epochs)
            if fenced:
                raise self._fenced(conn, "save_states", fenced[0], epochs)

        return op

    def _fenced(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        what: str,
        run_id: str,
        epochs: dict[str, int],
    ) -> LeaseLostError:
        """The error of ``what`` refused by the lease check of ``run_id``."""
        return leases.fenced_error(
            conn, repr(self), self.owner_id, self.lease_s, what, run_id, held=run_id in epochs
        )

    def _after_write(self, batch: Sequence[_EncodedCheckpoint]) -> None:
        ended = [item.run_id for item in batch if item.status != "running"]
        if ended:
            with self._held_lock:
                for run_id in ended:
                    self._held.pop(run_id, None)

    # -- the protocol ------------------------------------------------------------------

    async def create_run(self, checkpoint: RunCheckpoint) -> None:
        """Insert a new run from its first checkpoint, in one transaction.

        Atomic across every backend and process sharing the database (the run
        id is the primary key; ``INSERT ... ON CONFLICT DO NOTHING``). A new
        running run is leased by this backend.

        Raises:
            RunExistsError: The run id is stored already (nothing is written).
            SerializationError: A value is not JSON data (nothing is written).
            StateBackendError: The server cannot be used (nothing is written).
        """
        item = _EncodedCheckpoint.encode(checkpoint)

        def op(conn: psycopg.Connection[tuple[Any, ...]]) -> int | None:
            return sql.insert_new_run(conn, item, self.owner_id, self.lease_s)

        epoch = await self._write("create_run", op)
        if epoch is None:
            raise run_exists_error(item.run_id, self)
        if item.status == "running":
            with self._held_lock:
                self._held[item.run_id] = epoch

    async def save_state(self, run_id: str, checkpoint: RunCheckpoint) -> None:
        """Append ``checkpoint.new_steps`` and upsert the run row, in one transaction.

        Raises:
            ValueError: ``run_id`` differs from ``checkpoint.run_id``.
            SerializationError: A value is not JSON data (nothing is written).
            LeaseLostError: Another process took the run over (nothing is written).
            StateBackendError: The server cannot be used, or the write failed.
        """
        _check_run_id(run_id, checkpoint)
        await self.save_states([checkpoint])

    async def save_states(self, batch: Sequence[RunCheckpoint]) -> None:
        """Save ``batch`` in order, atomically, in a transaction shared with concurrent writes.

        Raises:
            As :meth:`save_state`; nothing of the batch is kept on an error.
        """
        encoded = [_EncodedCheckpoint.encode(checkpoint) for checkpoint in batch]
        if not encoded:
            await trio.lowlevel.checkpoint()
            return
        await self._write("save_states", self._write_op(encoded))
        self._after_write(encoded)

    async def load_state(self, run_id: str) -> RunSnapshot | None:
        """Return the run with its full history (one snapshot), or ``None``.

        Raises:
            StateBackendError: The server cannot be used, or stored JSON is damaged.
        """
        row = await self._read("load_state", lambda conn: sql.read_run(conn, run_id))
        if row is None:
            return None
        try:
            return decode_run(run_id, row, row[10], row[9])
        except ValueError as exc:
            raise StateBackendError(
                f"{self!r}: the stored JSON of run {run_id!r} is damaged: {exc}."
            ) from exc

    async def delete_state(self, run_id: str) -> None:
        """Delete the run and its steps in one transaction (no-op when unknown)."""
        await self._write("delete_state", lambda conn: sql.delete_run(conn, run_id))
        with self._held_lock:
            self._held.pop(run_id, None)

    async def list_runs(self, status: str | None = None) -> list[str]:
        """Return run ids in the order the runs were first saved.

        Raises:
            ValueError: ``status`` is not ``None`` or a known run status.
        """
        _check_status(status)
        return await self._read("list_runs", lambda conn: sql.list_run_ids(conn, status))

    async def prune(
        self, *, older_than_s: float | None = None, status: str | None = None
    ) -> list[str]:
        """Delete the matching runs with their history in one transaction; their ids, oldest first.

        Raises:
            ValueError: bad filters (see :func:`~.state.check_prune`); nothing is deleted.
            StateBackendError: The server cannot be used (nothing is deleted).
        """
        check_prune(older_than_s, status)
        now = time.time()
        gone = await self._write(
            "prune", lambda conn: sql.prune_runs(conn, older_than_s, status, now)
        )
        with self._held_lock:
            for run_id in gone:
                self._held.pop(run_id, None)
        return gone

    async def save_positions(self, batch: Sequence[PositionRecord]) -> None:
        """Insert (or replace) completed positions, atomically (shares group commits).

        Fenced like :meth:`save_states`: the positions of a run this backend
        holds the lease of are written only while the lease is still its own,
        checked in the same transaction.

        Raises:
            SerializationError: A record is not JSON data (nothing is written).
            LeaseLostError: Another process took one of the runs over (nothing
                of the batch is written).
            StateBackendError: The server cannot be used (nothing is written).
        """
        rows = encode_positions(batch)
        if not rows:
            await trio.lowlevel.checkpoint()
            return
        epochs = self._epochs([row[0] for row in rows])

        def op(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            fenced = sql.write_positions(conn, rows, self.owner_id, epochs)
            if fenced:
                raise self._fenced(conn, "save_positions", fenced[0], epochs)

        await self._write("save_positions", op)

    async def load_positions(self, run_id: str) -> dict[str, Any]:
        """Return ``{position: record}`` of the run's completed positions (empty if none).

        Raises:
            StateBackendError: The server cannot be used, or stored JSON is damaged.
        """
        rows = await self._read("load_positions", lambda conn: sql.read_positions(conn, run_id))
        try:
            return {position: loads_json(text) for position, text in rows}
        except ValueError as exc:
            raise StateBackendError(
                f"{self!r}: the stored JSON of a position of run {run_id!r} is damaged: {exc}."
            ) from exc

    async def aclose(self) -> None:
        """Close the pool (idempotent). Later calls raise StateBackendError.

        Shielded from cancellation: operations in flight end first.
        """
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._connections.close)

    # -- leases ------------------------------------------------------------------------

    async def claim_run(self, run_id: str) -> None:
        """Lease ``run_id`` to this backend before resuming it.

        Raises:
            RunLeasedError: Another live owner holds its lease, or this backend
                runs it already.
            RunNotFoundError: The run is unknown.
        """
        with self._held_lock:
            # Claimed by claim_expired for this very resume (recover_async).
            pending = run_id in self._pending
            self._pending.discard(run_id)
            running_here = not pending and run_id in self._held
        if pending:
            await trio.lowlevel.checkpoint()
            return
        if running_here:
            raise RunLeasedError(
                f"{self!r}: run {run_id!r} is running in this process already; wait for it "
                "to finish."
            )
        epoch, holder = await self._write(
            "claim_run", lambda conn: leases.claim_run(conn, run_id, self.owner_id, self.lease_s)
        )
        if epoch is None:
            if holder is None:
                raise RunNotFoundError(f"Run {run_id!r} is not in the state backend {self!r}.")
            raise RunLeasedError(
                f"{self!r}: run {run_id!r} is running in another process (its lease is held "
                f"by {holder[0]!r} for another {max(0.0, holder[1]):.1f} s). If that process "
                "died, `await runner.recover_async()` takes the run over once the lease "
                "expires."
            )
        with self._held_lock:
            self._held[run_id] = epoch

    async def claim_expired(self, fingerprint: str) -> list[str]:
        """Lease every recoverable run of the pipeline ``fingerprint``; their ids.

        Recoverable: ``running``, owned, and the owner's lease expired. Two
        backends claiming at once never get the same run.
        """

        def op(conn: psycopg.Connection[tuple[Any, ...]]) -> list[tuple[str, int]]:
            return leases.claim_expired(
                conn, fingerprint, self.owner_id, self.lease_s, _RECOVER_LIMIT
            )

        claimed = await self._write("claim_expired", op)
        with self._held_lock:
            self._held.update(claimed)
            self._pending.update(run_id for run_id, _ in claimed)
        return [run_id for run_id, _ in claimed]

    async def renew_lease(self, run_id: str) -> None:
        """Extend the lease of a run this backend runs.

        Raises:
            LeaseLostError: The lease is no longer ours (another process took
                the run over after it expired).
            StateBackendError: The server cannot be used.
        """
        with self._held_lock:
            epoch = self._held.get(run_id)
        if epoch is None:
            await trio.lowlevel.checkpoint()
            return  # the run ended: nothing to renew
        kept = await self._write(
            "renew_lease",
            lambda conn: leases.renew_lease(conn, run_id, epoch, self.owner_id, self.lease_s),
        )
        with self._held_lock:
            still_held = self._held.get(run_id) == epoch
            # Kept while lost: the run's later writes stay fenced by the old epoch
            # (the runner's release at the run's end forgets it).
        if not kept and still_held:
            raise LeaseLostError(
                f"{self!r}: lost the lease of run {run_id!r}: it was not renewed within "
                f"lease_s={self.lease_s} s and another process recovered it; the run stops "
                "here (the other process continues it)."
            )

    async def release_run(self, run_id: str) -> None:
        """Give up the lease of a run that stopped here without finishing (no-op if not held).

        The run is then nobody's: not recovered automatically, resumable with
        ``resume_async``. Shielded from cancellation.
        """
        with self._held_lock:
            epoch = self._held.pop(run_id, None)
            self._pending.discard(run_id)
        if epoch is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            await self._write(
                "release_run",
                lambda conn: leases.release_run(conn, run_id, epoch, self.owner_id),
            )
