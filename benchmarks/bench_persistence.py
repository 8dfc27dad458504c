"""Persistence: per-step cost of a run checkpointed to SQLite or to memory.

Scenarios:
    persistence.memory: N trivial steps with ``InMemoryStateBackend()``.
    persistence.sqlite: the same with ``SQLiteBackend(<temporary file>)``; the target is
        at most twice the in-memory cost, flat across sizes (see the scaling table).
"""

from __future__ import annotations

import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from flujo_actors import Flujo, InMemoryStateBackend, Pipeline, SQLiteBackend, Step
from flujo_actors.bench import Scenario, Target, Workload, baselines, expect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["SCENARIOS"]


async def increment(value: int) -> int:
    """The trivial agent: ``value + 1``."""
    return value + 1


def _runs(runner: Flujo, size: int) -> Workload:
    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the persisted pipeline failed")
        expect(result.output == size, f"pipeline output {result.output!r}, expected {size}")

    return Workload(once, ops=size)


def _pipeline(size: int) -> Pipeline:
    return Pipeline(steps=[Step.from_callable(increment, name=f"step{i}") for i in range(size)])


def in_memory(size: int) -> Workload:
    """``size`` steps persisted to an in-memory state backend."""
    return _runs(Flujo(_pipeline(size), state_backend=InMemoryStateBackend()), size)


@asynccontextmanager
async def in_sqlite(size: int) -> AsyncIterator[Workload]:
    """``size`` steps persisted to a SQLite file in a temporary directory (all runs share it)."""
    with tempfile.TemporaryDirectory(prefix="flujo-bench-") as tmp:
        backend = SQLiteBackend(Path(tmp) / "state.sqlite")
        yield _runs(Flujo(_pipeline(size), state_backend=backend), size)


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
        description="One run of N trivial steps with state_backend=SQLiteBackend(tmpfile).",
        measure=in_sqlite,
        baseline=baselines.sqlite_chain,
        baseline_label="N chained tasks appending rows, committed to SQLite once per run in a worker thread",
        reference=in_memory,
        reference_label="InMemoryStateBackend",
        unit="us/step",
        sizes=(10, 100, 1000),
        targets=(Target(max=2.0, metric="vs_reference"),),
    ),
]
