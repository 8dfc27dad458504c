"""A runner process of the 4-process recovery test (tests/backends/test_postgres_recovery.py).

Usage: python recovery_worker.py DSN LEASE_S TASKS

It shares one PostgreSQL database with the other workers: ``jobs(id, input)``
lists the runs to start; a job is started by the worker whose ``run_async``
creates its run first (``create_run`` is atomic: the others get
RunExistsError and try another job). Each step's side effect is a row in
``effects(run_id, step, pid)``, committed before the step returns. Between
jobs the worker recovers the runs of dead workers (``recover_async``). It
exits when every job's run completed.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys

import psycopg_pool
import trio

from flujo_actors import Flujo, Pipeline, PipelineContext, RunExistsError, Step
from flujo_actors.backends.postgres import PostgresBackend
from flujo_actors.errors import LeaseLostError

N_STEPS = 5


def build(pool: psycopg_pool.ConnectionPool) -> Pipeline:
    pid = os.getpid()

    def effect(run_id: str, step: int) -> None:
        with pool.connection() as conn:
            conn.execute(
                "INSERT INTO effects (run_id, step, pid) VALUES (%s, %s, %s)", (run_id, step, pid)
            )

    def make(i: int) -> Step:
        async def work(x: int, *, context: PipelineContext) -> int:
            await trio.to_thread.run_sync(effect, context.run_id, i)
            await trio.sleep(0.004)  # some work after the side effect: kills land mid-step
            return x * 7 + i

        return Step.from_callable(work, name=f"s{i}", max_retries=0)

    return Pipeline(steps=[make(i) for i in range(N_STEPS)], name="recovery")


def pending_jobs(pool: psycopg_pool.ConnectionPool) -> tuple[list[tuple[str, int]], int]:
    with pool.connection() as conn:
        jobs = conn.execute(
            "SELECT id, input FROM jobs j WHERE NOT EXISTS"
            " (SELECT 1 FROM flujo_runs r WHERE r.run_id = j.id) ORDER BY id LIMIT 16"
        ).fetchall()
        row = conn.execute(
            "SELECT (SELECT count(*) FROM jobs) - (SELECT count(*) FROM flujo_runs"
            " WHERE status = 'completed')"
        ).fetchone()
    assert row is not None
    return [(str(job_id), int(data)) for job_id, data in jobs], int(row[0])


async def main() -> None:
    dsn, lease_s, tasks = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    pool = psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=tasks + 1, open=True)
    rng = random.Random(os.getpid())
    async with PostgresBackend(dsn, lease_s=lease_s, max_size=tasks + 2) as backend:
        runner = Flujo(build(pool), state_backend=backend)

        async def loop() -> None:
            while True:
                with contextlib.suppress(LeaseLostError):
                    await runner.recover_async()
                jobs, unfinished = await trio.to_thread.run_sync(pending_jobs, pool)
                if unfinished == 0:
                    return
                if not jobs:
                    await trio.sleep(0.05)  # the rest is running, or waits for recovery
                    continue
                run_id, data = rng.choice(jobs)
                # RunExistsError: another worker started it first. LeaseLostError: this
                # worker stalled past its lease and another took the run over.
                with contextlib.suppress(RunExistsError, LeaseLostError):
                    await runner.run_async(data, run_id=run_id)

        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(loop)
    pool.close()


if __name__ == "__main__":
    trio.run(main)
