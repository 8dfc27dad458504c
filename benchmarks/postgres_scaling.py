"""PostgreSQL figures: the I/O path, runs/s with 1 and 4 runner processes, recovery latency.

Usage: .venv/bin/python benchmarks/postgres_scaling.py [--runs 200]

Starts a throwaway server (flujo_actors/testing/pg_server.py) and measures, on this machine:

1. The I/O path: one trivial query round trip through the backend's path
   (a worker thread from trio, ``trio.to_thread.run_sync`` + a sync psycopg
   connection) against psycopg's ``AsyncConnection`` on asyncio (what a
   pure-asyncio program would use) and on trio through trio-asyncio (what a
   trio run would need for the async API), and a ``save_state`` of one step.
2. Runs per second of the 5-step pipeline of the recovery test
   (tests/recovery_worker.py), every step a side-effect row, with 1 and with 4
   runner processes (4 concurrent runs each) sharing the database.
3. Recovery latency: 4 processes, one SIGKILLed at 30 % of the work; the time
   from the kill until the last of the runs it held completed elsewhere
   (lease_s = 1.0: the floor is the lease).

Real clock; not run by the test suite (the harness, ``make bench``, does not
need a PostgreSQL server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ has no __init__: a namespace package

from flujo_actors.backends import RunCheckpoint  # noqa: E402
from flujo_actors.backends.postgres import PostgresBackend  # noqa: E402
from flujo_actors.testing.pg_server import PgServer  # noqa: E402

LEASE_S = 1.0
N = 2000


def per_call_us(elapsed: float, n: int) -> float:
    return elapsed / n * 1e6


def io_paths(dsn: str) -> dict[str, float]:
    out: dict[str, float] = {}
    conn = psycopg.connect(dsn, autocommit=True)

    async def threads() -> None:
        t = time.perf_counter()
        for _ in range(N):
            await trio.to_thread.run_sync(lambda: conn.execute("SELECT 1").fetchone())
        out["trio + worker thread + sync psycopg"] = per_call_us(time.perf_counter() - t, N)

    trio.run(threads)
    t = time.perf_counter()
    for _ in range(N):
        conn.execute("SELECT 1").fetchone()
    out["sync psycopg, no thread (floor)"] = per_call_us(time.perf_counter() - t, N)
    conn.close()

    async def on_asyncio() -> None:
        aconn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        t = time.perf_counter()
        for _ in range(N):
            await (await aconn.execute("SELECT 1")).fetchone()
        out["asyncio + AsyncConnection"] = per_call_us(time.perf_counter() - t, N)
        await aconn.close()

    asyncio.run(on_asyncio())

    async def trio_asyncio_path() -> None:
        import trio_asyncio

        async with trio_asyncio.open_loop():
            aconn = await trio_asyncio.aio_as_trio(psycopg.AsyncConnection.connect)(
                dsn, autocommit=True
            )

            async def one() -> None:
                await (await aconn.execute("SELECT 1")).fetchone()

            t = time.perf_counter()
            for _ in range(N):
                await trio_asyncio.aio_as_trio(one)()
            out["trio + trio-asyncio + AsyncConnection"] = per_call_us(time.perf_counter() - t, N)
            await trio_asyncio.aio_as_trio(aconn.close)()

    try:
        trio.run(trio_asyncio_path)
    except BaseException as exc:  # reported as the figure: this path does not work
        out[f"trio + trio-asyncio + AsyncConnection: fails ({exc!r:.60})"] = float("nan")

    async def checkpoints() -> None:
        async with PostgresBackend(dsn) as backend:
            await backend.create_run(
                RunCheckpoint(
                    run_id="b",
                    pipeline_name="p",
                    status="running",
                    next_step_index=0,
                    context={},
                    initial_input=0,
                )
            )
            t = time.perf_counter()
            for i in range(N // 4):
                await backend.save_state(
                    "b",
                    RunCheckpoint(
                        run_id="b",
                        pipeline_name="p",
                        status="running",
                        next_step_index=i + 1,
                        context={"n": i},
                        initial_input=0,
                        output=i,
                        new_steps=({"i": i},),
                    ),
                )
            out["PostgresBackend.save_state (one step)"] = per_call_us(
                time.perf_counter() - t, N // 4
            )

    trio.run(checkpoints)
    return out


def prepare(server: PgServer, name: str, runs: int) -> str:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn: str = server.dsn(name)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, input INTEGER NOT NULL)")
        conn.execute(
            "CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL,"
            " step INTEGER NOT NULL, pid INTEGER NOT NULL, at DOUBLE PRECISION"
            " DEFAULT extract(epoch FROM clock_timestamp()))"
        )
        conn.execute(
            "INSERT INTO jobs SELECT 'run-' || lpad(i::text, 4, '0'), i"
            " FROM generate_series(1, %s) i",
            (runs,),
        )
    return dsn


def start(dsn: str, n: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "recovery_worker.py"), dsn, str(LEASE_S), "4"],
            env=env,
        )
        for _ in range(n)
    ]


def first_effect_at(dsn: str) -> float:
    while True:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT min(at) FROM effects").fetchone()
        if row is not None and row[0] is not None:
            return float(row[0])
        time.sleep(0.01)


def throughput(server: PgServer, processes: int, runs: int) -> float:
    dsn = prepare(server, f"tp{processes}", runs)
    workers = start(dsn, processes)
    for worker in workers:
        assert worker.wait(timeout=600) == 0
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT min(at), (SELECT max(updated_at) FROM flujo_runs) FROM effects"
        ).fetchone()
    assert row is not None
    return runs / (float(row[1]) - float(row[0]))


def recovery_latency(server: PgServer, runs: int) -> tuple[float, int]:
    dsn = prepare(server, "recovery", runs)
    workers = start(dsn, 4)
    victim = workers[0]
    while True:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM effects").fetchone()
        if row is not None and row[0] >= runs * 5 * 3 // 10:
            break
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    for worker in workers[1:]:
        assert worker.wait(timeout=600) == 0
    victim.wait()
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT max(r.updated_at), count(*) FROM flujo_runs r WHERE r.run_id IN ("
            " SELECT run_id FROM effects WHERE pid = %s) AND r.updated_at > %s",
            (victim.pid, killed_at),
        ).fetchone()
    assert row is not None
    return float(row[0]) - killed_at, int(row[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    server = PgServer()
    server.start()
    try:
        dsn = prepare(server, "io", 0)
        for name, us in io_paths(dsn).items():
            print(f"{name:45s} {us:8.1f} us/call")
        for processes in (1, 4):
            rate = throughput(server, processes, args.runs)
            print(
                f"{processes} process(es) x 4 concurrent runs: {rate:7.1f} runs/s "
                f"({args.runs} runs of 5 steps)"
            )
        latency, held = recovery_latency(server, args.runs)
        print(
            f"recovery: {held} runs of the killed process completed elsewhere "
            f"{latency:.2f} s after the kill (lease_s={LEASE_S})"
        )
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
