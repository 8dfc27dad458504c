"""Connections and group commit of :class:`~flujo_actors.backends.postgres.PostgresBackend`.

Worker-thread side only: everything here blocks. :class:`Connections` opens
the database once (a direct connection first, so a wrong DSN or a missing
database is reported with the server's own words, then the migrations), then
serves connections from a ``psycopg_pool.ConnectionPool``.

:class:`GroupCommit` merges the writes of concurrent callers (the persistence
actors of concurrent runs, each already batching its own run's checkpoints)
into one transaction: a caller that finds a commit in flight queues its
write; when that commit ends, one of the queued callers commits everything
queued in one transaction, a savepoint per caller, so one caller's refused
write (a fenced lease, bad data) is rolled back alone while the others
commit. A single caller pays exactly one transaction per write.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
import psycopg_pool

from ..errors import StateBackendError
from .postgres_schema import migrate

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Connections", "GroupCommit", "Ticket"]

R = TypeVar("R")
Conn = psycopg.Connection[tuple[Any, ...]]


class Connections:
    """The backend's pool, opened on first use; ``call`` runs one transaction on it."""

    def __init__(
        self,
        dsn: str,
        name: str,
        *,
        min_size: int,
        max_size: int,
        timeout_s: float,
        create_tables: bool = True,
    ) -> None:
        self._dsn = dsn
        self._name = name
        self._create_tables = create_tables
        self._min_size = min_size
        self._max_size = max_size
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[Conn] | None = None
        self._opened = False  # a pool opened once: a later connect failure is an outage
        self._closed = False

    def _connect_error(self, exc: psycopg.Error) -> StateBackendError:
        text = _one_line(exc)
        if not text.endswith((".", "?", "!")):
            text += "."
        hint = "Check the DSN and that the server is running and reachable."
        if "does not exist" in text and "database" in text:
            hint = (
                "Create the database first (`createdb NAME`, or CREATE DATABASE); the backend "
                "creates its tables, not the database."
            )
        elif "authentication" in text or "password" in text:
            hint = "Check the user and password in the DSN."
        return StateBackendError(f"{self._name}: cannot connect to PostgreSQL: {text} {hint}")

    def pool(self) -> psycopg_pool.ConnectionPool[Conn]:
        """The open pool; opened (connect, migrate, fill) when there is none.

        Raises:
            StateBackendError: The backend is closed.
            psycopg.Error: The server cannot be reached.
        """
        with self._lock:
            if self._closed:
                raise StateBackendError(
                    f"{self._name} is closed; create a new backend to reconnect."
                )
            if self._pool is not None:
                return self._pool
            # A direct connection first: its error names the cause (a pool's does not).
            with psycopg.connect(self._dsn, connect_timeout=max(1, int(self._timeout_s))) as conn:
                migrate(conn, self._name, create=self._create_tables)
            pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._timeout_s,
                open=False,
                name=self._name,
            )
            try:
                pool.open(wait=True, timeout=self._timeout_s)
            except psycopg_pool.PoolTimeout as exc:
                pool.close(timeout=0)
                raise psycopg.OperationalError(
                    f"the pool could not open {self._min_size} connection(s) within "
                    f"{self._timeout_s} s"
                ) from exc
            self._pool = pool
            self._opened = True
            return pool

    def _reset(self, pool: psycopg_pool.ConnectionPool[Conn]) -> None:
        """Drop ``pool`` (its connections died): the next call opens a new one at once.

        A new pool connects immediately, where the old one would retry with
        growing back-off after an outage; connections still out close when
        returned.
        """
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.close(timeout=0)

    def call(self, what: str, op: Callable[[Conn], R], *, write: bool) -> R:
        """Run ``op`` in one transaction on a pooled connection and commit.

        A connection that turns out broken before the commit was sent (a
        server restart leaves the idle ones dead), or no connection within
        ``timeout_s``, drops the pool and tries once more on a new one:
        nothing of ``op`` can have been committed. A failure during the commit
        itself is reported, never retried (its outcome is unknown).

        Raises:
            StateBackendError: The server cannot be reached, or a query failed
                (the transaction was rolled back).
        """
        for attempt in (1, 2):
            try:
                pool = self.pool()
            except psycopg.Error as exc:
                if not self._opened:
                    raise self._connect_error(exc) from exc
                raise self.failed(what, exc, "nothing of it was written") from exc
            try:
                conn = pool.getconn()
            except psycopg_pool.PoolTimeout as exc:
                self._reset(pool)
                if attempt == 1:
                    continue
                raise StateBackendError(
                    f"{self._name}: {what} failed: no connection to the server within "
                    f"{self._timeout_s} s (is the server down?); nothing of it was written."
                ) from exc
            try:
                try:
                    result = op(conn)
                except psycopg.OperationalError as exc:
                    if conn.broken:
                        self._reset(pool)
                        if attempt == 1:
                            continue
                    raise self.failed(what, exc, "nothing of it was written") from exc
                except psycopg.Error as exc:
                    conn.rollback()
                    raise self.failed(what, exc, "nothing of it was written") from exc
                except BaseException:
                    if not conn.broken:
                        conn.rollback()
                    raise
                try:
                    conn.commit()
                except psycopg.Error as exc:
                    if conn.broken:
                        self._reset(pool)
                    outcome = "its commit may or may not have happened" if write else "none"
                    raise self.failed(what, exc, outcome) from exc
                return result
            finally:
                pool.putconn(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def failed(self, what: str, exc: psycopg.Error, outcome: str) -> StateBackendError:
        """The StateBackendError of ``what`` failing with ``exc``."""
        text = _one_line(exc)
        if isinstance(exc, psycopg.OperationalError):
            return StateBackendError(
                f"{self._name}: {what} failed: the connection to the server was lost "
                f"({text}); {outcome}. What was committed before is kept: once the server "
                "is back, continue with `await runner.resume_async(run_id)`."
            )
        return StateBackendError(f"{self._name}: {what} failed: {text}; {outcome}.")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _one_line(exc: psycopg.Error) -> str:
    """The server's or libpq's words on one line.

    libpq puts its hints on lines of their own ("...failed: No such file or
    directory\n\tIs the server running locally...?"): one line reads better
    in a log line and a command-line error.
    """
    return " ".join(str(exc).split())


class Ticket(Generic[R]):
    """One caller's write waiting in a :class:`GroupCommit`."""

    __slots__ = ("done", "error", "op", "result")

    def __init__(self, op: Callable[[Conn], R]) -> None:
        self.op = op
        self.done = False
        self.error: BaseException | None = None
        self.result: R | None = None


class GroupCommit:
    """Leader/follower group commit over :meth:`Connections.call` (see the module docs)."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        self._cond = threading.Condition()
        self._queue: list[Ticket[Any]] = []
        self._leading = False
        self.commits = 0
        self.grouped = 0

    @property
    def queued(self) -> int:
        """Writes waiting for the commit in flight to end."""
        with self._cond:
            return len(self._queue)

    def write(self, what: str, op: Callable[[Conn], R]) -> R:
        """Run ``op`` in a transaction shared with the writes queued beside it; its result.

        Raises:
            Exception: what ``op`` raised (its savepoint was rolled back), or
                the StateBackendError of the shared transaction.
        """
        ticket: Ticket[R] = Ticket(op)
        with self._cond:
            self._queue.append(ticket)
            while not ticket.done and self._leading:
                self._cond.wait()
            if not ticket.done:
                self._leading = True
                batch, self._queue = self._queue, []
        if not ticket.done:
            try:
                self._commit(what, batch)
            finally:
                with self._cond:
                    self._leading = False
                    for item in batch:
                        item.done = True
                    self._cond.notify_all()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]

    def _commit(self, what: str, batch: list[Ticket[Any]]) -> None:
        if len(batch) == 1:
            only = batch[0]
            try:
                only.result = self._connections.call(what, only.op, write=True)
            except Exception as exc:
                only.error = exc
            else:
                self.commits += 1
            return

        def run_all(conn: Conn) -> None:
            # Explicit savepoints: the first statement opens the shared transaction.
            for ticket in batch:
                ticket.error = None
                conn.execute("SAVEPOINT flujo_ticket")
                try:
                    ticket.result = ticket.op(conn)
                except psycopg.OperationalError:
                    raise  # the connection is gone: the whole batch fails
                except Exception as exc:
                    conn.execute("ROLLBACK TO SAVEPOINT flujo_ticket")
                    ticket.error = (
                        self._connections.failed(what, exc, "nothing of it was written")
                        if isinstance(exc, psycopg.Error)
                        else exc
                    )
                conn.execute("RELEASE SAVEPOINT flujo_ticket")

        try:
            self._connections.call(what, run_all, write=True)
        except Exception as exc:
            for ticket in batch:
                ticket.error = exc
        else:
            self.commits += 1
            self.grouped += 1
