"""Persistence: per-step cost of a run checkpointed to SQLite or to memory.

Scenarios:
    persistence.memory: N trivial steps with ``InMemoryStateBackend()``.
    persistence.sqlite: the same with ``SQLiteBackend(<temporary file>)`` (the default,
        ``synchronous="FULL"``: every step's commit waits for an fsync). An fsync per step
        costs what the machine's disk costs, so the reference is that floor, measured in
        the same run: the same rows written by raw ``sqlite3`` (WAL, ``synchronous=FULL``),
        one commit per step in a worker thread, as any trio program must. Target: at most
        1.5x that floor (the in-memory comparison is persistence.sqlite_normal's).
    persistence.sqlite_normal: the same with ``SQLiteBackend(..., synchronous="NORMAL")``
        (issue #15: <= 2x the in-memory step).
    persistence.parallel: one parallel step of N trivial branches, each branch's step
        checkpointed at depth to ``SQLiteBackend(..., synchronous="NORMAL")``, against the
        same step without persistence (issue #15: <= 3x at 1,000 branches; branches
        finishing together share commits).
    persistence.depth: a loop inside a parallel step inside a nested pipeline, every step
        at every depth checkpointed (SQLite, NORMAL), against no persistence.

State size (issue #15: O(completed steps), constant per step at any depth) is counted,
not timed: ``python benchmarks/bench_persistence.py`` prints the rows and bytes a SQLite
file holds per completed step of ``flujo_actors.testing.footprint.nested_loops`` at
depth 1, 3 and 5 (``tests/test_state_size.py`` asserts the same shape).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from flujo_actors import AnyStep, Flujo, InMemoryStateBackend, Pipeline, SQLiteBackend, Step
from flujo_actors.bench import Scenario, Target, Workload, baselines, expect
from flujo_actors.bench.workloads import (
    chain_pipeline,
    increment,
    runs_of,
    sqlite_runs,
    temp_sqlite,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["SCENARIOS"]


def in_memory(size: int) -> Workload:
    """``size`` steps persisted to an in-memory state backend."""
    return runs_of(Flujo(chain_pipeline(size), state_backend=InMemoryStateBackend()), size)


#: ``size`` steps persisted to a SQLite file in a temporary directory (all runs share it).
in_sqlite = sqlite_runs
#: The same with ``synchronous="NORMAL"``.
in_sqlite_normal = partial(sqlite_runs, synchronous="NORMAL")


def _step_rows(size: int) -> tuple[str, list[str]]:
    """The context JSON and each step's row JSON of a chain run, as the backend stores them."""
    from flujo_actors import PipelineContext, StepResult
    from flujo_actors.persistence import CONTEXT_AFTER
    from flujo_actors.serialization import dump_typed, dumps_json
    from flujo_actors.step_rows import row_from_step

    context = dump_typed(PipelineContext(initial_prompt="0", run_id="f" * 32))
    rows = []
    for i in range(size):
        result = StepResult(f"step{i}", i + 1, True, 1, 1.5e-05, Decimal(0), 0, None)
        row = row_from_step(result, (result.name,))[1]
        row[CONTEXT_AFTER] = context
        rows.append(dumps_json(row))
    return dumps_json(context), rows


@asynccontextmanager
async def raw_fsync_chain(size: int) -> AsyncIterator[Workload]:
    """The fsync floor of a FULL-sync run: the same rows, one raw sqlite3 commit per step.

    Each step's commit (its row inserted, the run row updated) runs in a worker
    thread on a WAL database with ``synchronous=FULL``, like the backend's.
    """
    context, rows = _step_rows(size)
    with tempfile.TemporaryDirectory(prefix="flujo-bench-") as tmp:
        db = sqlite3.connect(Path(tmp) / "raw.sqlite", check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute(
                "CREATE TABLE runs (run INTEGER PRIMARY KEY, next INTEGER, context TEXT,"
                " output TEXT, updated REAL)"
            )
            db.execute(
                "CREATE TABLE steps (run INTEGER, idx INTEGER, json TEXT,"
                " PRIMARY KEY (run, idx)) WITHOUT ROWID"
            )
            runs = [0]

            def commit(run: int, index: int) -> None:
                with db:
                    db.execute("INSERT INTO steps VALUES (?, ?, ?)", (run, index, rows[index]))
                    db.execute(
                        "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?)",
                        (run, index + 1, context, str(index + 1), time.time()),
                    )

            async def once() -> None:
                run = runs[0]
                runs[0] += 1
                for index in range(size):
                    await trio.to_thread.run_sync(commit, run, index)
                (stored,) = db.execute(
                    "SELECT count(*) FROM steps WHERE run = ?", (run,)
                ).fetchone()
                expect(stored == size, f"raw fsync chain stored {stored} rows, not {size}")

            yield Workload(once, ops=size)
        finally:
            db.close()


def _fan(size: int) -> Pipeline:
    branches = {f"b{i}": Step.from_callable(increment, name="inc") for i in range(size)}
    return Pipeline.from_step(Step.parallel("fan", branches))


def _fan_runs(runner: Flujo, size: int) -> Workload:
    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the parallel step failed")
        expect(len(result.output) == size, f"{len(result.output)} branch outputs, not {size}")

    return Workload(once, ops=1)


def fan_unpersisted(size: int) -> Workload:
    """One parallel step of ``size`` trivial branches, no state backend."""
    return _fan_runs(Flujo(_fan(size)), size)


@asynccontextmanager
async def fan_sqlite(size: int) -> AsyncIterator[Workload]:
    """The same, every branch's step checkpointed to SQLite (NORMAL)."""
    with temp_sqlite(synchronous="NORMAL") as backend:
        yield _fan_runs(Flujo(_fan(size), state_backend=backend), size)


def _deep(size: int) -> Pipeline:
    """nested( parallel of 4 branches, each a loop of ``size`` iterations of one step )."""

    def loop(i: int) -> AnyStep:
        return Step.loop_until(
            f"loop{i}",
            Step.from_callable(increment, name="inc"),
            lambda out, ctx: out >= size,
            max_loops=size,
        )

    fan = Step.parallel("fan", {f"b{i}": loop(i) for i in range(4)})
    return Pipeline.from_step(Pipeline.from_step(fan).as_step("nested"))


def _deep_runs(runner: Flujo, size: int) -> Workload:
    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the nested pipeline failed")
        expect(result.output == {f"b{i}": size for i in range(4)}, f"output {result.output!r}")

    return Workload(once, ops=4 * size)


def deep_unpersisted(size: int) -> Workload:
    """A loop inside a parallel step inside a nested pipeline, no state backend."""
    return _deep_runs(Flujo(_deep(size)), size)


@asynccontextmanager
async def deep_sqlite(size: int) -> AsyncIterator[Workload]:
    """The same, every step at every depth checkpointed to SQLite (NORMAL)."""
    with temp_sqlite(synchronous="NORMAL") as backend:
        yield _deep_runs(Flujo(_deep(size), state_backend=backend), size)


SCENARIOS = [
    Scenario(
        name="persistence.memory",
        description="One run of N trivial steps with state_backend=InMemoryStateBackend().",
        measure=in_memory,
        baseline=baselines.chain,
        baseline_label="N tasks chained by memory channels, no persistence",
        unit="us/step",
        sizes=(10, 100, 1000),
    ),
    Scenario(
        name="persistence.sqlite",
        description=(
            "One run of N trivial steps with state_backend=SQLiteBackend(tmpfile) (synchronous"
            " FULL: an fsync per step), against the fsync floor: the same rows committed by raw"
            " sqlite3, one FULL-sync commit per step."
        ),
        measure=in_sqlite,
        baseline=baselines.sqlite_chain,
        baseline_label="N chained tasks appending rows, committed to SQLite once per run in a worker thread",
        reference=raw_fsync_chain,
        reference_label="raw sqlite3, the same rows, one FULL-sync commit per step in a worker thread",
        unit="us/step",
        sizes=(10, 100, 1000),
        targets=(Target(max=1.5, metric="vs_reference"),),
    ),
    Scenario(
        name="persistence.sqlite_normal",
        description='One run of N trivial steps with SQLiteBackend(tmpfile, synchronous="NORMAL").',
        measure=in_sqlite_normal,
        baseline=baselines.sqlite_chain,
        baseline_label="N chained tasks appending rows, committed to SQLite once per run in a worker thread",
        reference=in_memory,
        reference_label="InMemoryStateBackend",
        unit="us/step",
        sizes=(10, 100, 1000),
        targets=(Target(max=2.0, metric="vs_reference"),),
    ),
    Scenario(
        name="persistence.parallel",
        description="One parallel step of N trivial branches, each checkpointed to SQLite (NORMAL).",
        measure=fan_sqlite,
        baseline=partial(baselines.fanout, merge=False),
        baseline_label="N tasks in one nursery, each awaiting value + 1 into a dict",
        reference=fan_unpersisted,
        reference_label="the same parallel step without a state backend",
        unit="ms",
        sizes=(10, 1000),
        targets=(Target(max=3.0, metric="vs_reference", at_size=1000),),
    ),
    Scenario(
        name="persistence.depth",
        description="nested(parallel(4 x loop of N iterations)), every step checkpointed (SQLite NORMAL).",
        measure=deep_sqlite,
        baseline=baselines.chain,
        baseline_label="N tasks chained by memory channels, no persistence",
        reference=deep_unpersisted,
        reference_label="the same tree without a state backend",
        unit="us/step",
        sizes=(10, 100),
    ),
]


async def _footprint_per_step(depth: int, sizes: tuple[int, int]) -> tuple[float, float]:
    """(rows, bytes) one more completed step adds to the SQLite file at ``depth``."""
    from flujo_actors.testing.footprint import nested_loops, sqlite_footprint

    prints = []
    with tempfile.TemporaryDirectory(prefix="flujo-bench-") as tmp:
        for n in sizes:
            path = Path(tmp) / f"{n}.sqlite"
            async with SQLiteBackend(path, synchronous="NORMAL") as backend:
                result = await Flujo(nested_loops(depth, n), state_backend=backend).run_async(0)
                expect(result.success, "the nested loops failed")
            prints.append(sqlite_footprint(path))
    steps = sizes[1] - sizes[0]
    return (
        (prints[1].rows - prints[0].rows) / steps,
        (prints[1].bytes - prints[0].bytes) / steps,
    )


async def _print_state_size() -> None:
    print("state stored per completed step (SQLite file; nested_loops(depth, N), N 100 -> 200)")
    print("depth  rows/step  bytes/step")
    for depth in (1, 3, 5):
        rows, size = await _footprint_per_step(depth, (100, 200))
        print(f"{depth:>5}  {rows:>9.2f}  {size:>10.1f}")


if __name__ == "__main__":
    import trio

    trio.run(_print_state_size)
