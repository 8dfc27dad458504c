"""Persistence on PostgreSQL: per-step cost and concurrent-run throughput, on a throwaway server.

Scenarios:
    persistence.postgres: one run of N trivial steps with ``PostgresBackend`` (every step
        checkpointed: one commit per step), against the same run on
        ``SQLiteBackend(<tmpfile>, synchronous="NORMAL")``; the raw floor is a trio
        program committing one row per step to the same server from a worker thread.
    persistence.postgres_concurrent: N concurrent runs of 3 trivial steps in one process
        sharing one ``PostgresBackend`` (concurrent checkpoints share commits: group
        commit), in runs/s, against the same on SQLite (NORMAL); the raw floor is N tasks
        each committing its 3 rows one at a time through a pool of 8 connections.

The server is started the way the tests start theirs
(:class:`flujo_actors.testing.pg_server.PgServer`: initdb into /tmp, a Unix socket,
fsync off), once per case process, and removed when the process exits; each workload
gets its own schema. Without PostgreSQL binaries (or without the ``postgres`` extra) the
scenarios are reported "unavailable" with the reason.
"""

from __future__ import annotations

import atexit
import itertools
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from flujo_actors import Flujo
from flujo_actors.bench import Scenario, Unavailable, Workload, expect
from flujo_actors.bench.workloads import (
    chain_pipeline,
    increment,
    runs_of,
    sqlite_runs,
    temp_sqlite,
)
from flujo_actors.testing.pg_server import PgServer, PostgresNotInstalled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["SCENARIOS", "fresh_dsn"]

_server: PgServer | None = None
_schemas = itertools.count()


def _start() -> PgServer:
    global _server
    if _server is None:
        try:
            import psycopg  # noqa: F401  (the extra this scenario measures)
        except ImportError as exc:
            raise Unavailable(
                f"the postgres extra is not installed ({exc}): pip install 'flujo-actors[postgres]'"
            ) from None
        try:
            server = PgServer()
        except PostgresNotInstalled as exc:
            raise Unavailable(f"no PostgreSQL server binaries on this machine: {exc}") from None
        atexit.register(server.destroy)
        server.start()
        _server = server
    return _server


def fresh_dsn() -> str:
    """A new, empty schema on the case's throwaway server (started on first use); its DSN.

    Raises:
        Unavailable: No PostgreSQL binaries, or no ``postgres`` extra (the reason says which).
    """
    server = _start()  # first: it reports a missing extra as "unavailable"
    import psycopg

    name = f"bench{next(_schemas)}"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{server.dsn()} options='-csearch_path={name}'"


@asynccontextmanager
async def in_postgres(size: int) -> AsyncIterator[Workload]:
    """``size`` steps persisted to PostgreSQL (all runs share one backend)."""
    dsn = fresh_dsn()  # first: it reports a missing extra as "unavailable"
    from flujo_actors.backends.postgres import PostgresBackend

    async with PostgresBackend(dsn) as backend:
        yield runs_of(Flujo(chain_pipeline(size), state_backend=backend), size)


#: ``size`` steps persisted to a SQLite file with ``synchronous="NORMAL"``.
in_sqlite_normal = partial(sqlite_runs, synchronous="NORMAL")


@asynccontextmanager
async def raw_commits(size: int) -> AsyncIterator[Workload]:
    """A trio loop of ``size`` trivial awaits, each committing one row from a worker thread."""
    import psycopg

    conn = psycopg.connect(fresh_dsn())
    conn.execute("CREATE TABLE steps (run INTEGER, step INTEGER, output TEXT)")
    conn.commit()
    runs = itertools.count()

    def commit(row: tuple[int, int, str]) -> None:
        with conn.transaction():
            conn.execute("INSERT INTO steps VALUES (%s, %s, %s)", row)

    async def once() -> None:
        run, value = next(runs), 0
        for index in range(size):
            value = await increment(value)
            await trio.to_thread.run_sync(commit, (run, index, str(value)))
        expect(value == size, f"raw loop returned {value}, expected {size}")

    try:
        yield Workload(once, ops=size)
    finally:
        conn.close()


def _concurrent(runner: Flujo, size: int) -> Workload:
    async def once() -> None:
        results: list[Any] = []

        async def one() -> None:
            results.append(await runner.run_async(0))

        async with trio.open_nursery() as nursery:
            for _ in range(size):
                nursery.start_soon(one)
        expect(len(results) == size, f"{len(results)} runs finished, not {size}")
        expect(all(r.success and r.output == 3 for r in results), "a concurrent run failed")

    return Workload(once, ops=size)


@asynccontextmanager
async def concurrent_postgres(size: int) -> AsyncIterator[Workload]:
    """``size`` concurrent 3-step runs sharing one PostgresBackend."""
    dsn = fresh_dsn()  # first: it reports a missing extra as "unavailable"
    from flujo_actors.backends.postgres import PostgresBackend

    async with PostgresBackend(dsn) as backend:
        yield _concurrent(Flujo(chain_pipeline(3), state_backend=backend), size)


@asynccontextmanager
async def concurrent_sqlite(size: int) -> AsyncIterator[Workload]:
    """The same on one SQLite file (NORMAL)."""
    with temp_sqlite(synchronous="NORMAL") as backend:
        yield _concurrent(Flujo(chain_pipeline(3), state_backend=backend), size)


@asynccontextmanager
async def raw_concurrent(size: int) -> AsyncIterator[Workload]:
    """``size`` tasks, each committing its 3 rows one at a time through a pool of 8."""
    import psycopg
    import psycopg_pool

    dsn = fresh_dsn()
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE steps (run INTEGER, step INTEGER, output TEXT)")
    pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
        dsn, min_size=8, max_size=8, open=True
    )
    limiter = trio.CapacityLimiter(8)
    runs = itertools.count()

    def commit(row: tuple[int, int, str]) -> None:
        with pool.connection() as conn:
            conn.execute("INSERT INTO steps VALUES (%s, %s, %s)", row)

    async def once() -> None:
        outputs: list[int] = []

        async def one() -> None:
            run, value = next(runs), 0
            for index in range(3):
                value = await increment(value)
                await trio.to_thread.run_sync(commit, (run, index, str(value)), limiter=limiter)
            outputs.append(value)

        async with trio.open_nursery() as nursery:
            for _ in range(size):
                nursery.start_soon(one)
        expect(outputs == [3] * size, "a raw concurrent run lost a row")

    try:
        yield Workload(once, ops=size)
    finally:
        pool.close()


SCENARIOS = [
    Scenario(
        name="persistence.postgres",
        description="One run of N trivial steps with state_backend=PostgresBackend(throwaway server).",
        measure=in_postgres,
        baseline=raw_commits,
        baseline_label="a trio loop of N trivial awaits, each committing its row to the same server from a worker thread",
        reference=in_sqlite_normal,
        reference_label='SQLiteBackend(tmpfile, synchronous="NORMAL")',
        unit="us/step",
        sizes=(10, 100),
    ),
    Scenario(
        name="persistence.postgres_concurrent",
        description="N concurrent 3-step runs sharing one PostgresBackend (group commit).",
        measure=concurrent_postgres,
        baseline=raw_concurrent,
        baseline_label="N tasks each committing 3 rows one at a time through a pool of 8 connections",
        reference=concurrent_sqlite,
        reference_label='the same on one SQLiteBackend(tmpfile, synchronous="NORMAL")',
        unit="runs/s",
        sizes=(10, 100),
    ),
]
