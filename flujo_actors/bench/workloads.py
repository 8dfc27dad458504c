"""What the scenario modules share: the trivial agent, a chain of it, runs of a pipeline.

Plain functions over the public API, imported by the scenario modules that use
them (``flujo_actors.bench`` itself does not import this module).
"""

from __future__ import annotations

import tempfile
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from ..actors import Actor, ChildSpec, Supervisor
from ..backends.sqlite import SQLiteBackend
from ..runner import Flujo
from ..steps.dsl import Pipeline, Step
from .baselines import trivial
from .harness import Workload, expect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

__all__ = [
    "Sink",
    "Tally",
    "chain_pipeline",
    "increment",
    "runs_of",
    "sqlite_runs",
    "tell_flood",
    "temp_sqlite",
]


#: The trivial agent (``value + 1``): the one the raw-trio baselines await too.
increment: Final = trivial


def chain_pipeline(size: int, **step_options: Any) -> Pipeline:
    """``size`` steps of :func:`increment` (input 0 -> output ``size``)."""
    return Pipeline(
        steps=[Step.from_callable(increment, name=f"step{i}", **step_options) for i in range(size)]
    )


def runs_of(runner: Flujo, size: int, *, attempts: int | None = None) -> Workload:
    """A workload running ``runner`` once per call from input 0.

    Each call checks the run succeeded with output ``size`` and, given
    ``attempts``, that every step took exactly that many attempts.
    """

    async def once() -> None:
        result = await runner.run_async(0)
        history = result.step_history
        expect(
            result.success,
            f"the pipeline failed: {history[-1].feedback if history else '?'}",
        )
        expect(result.output == size, f"pipeline output {result.output!r}, expected {size}")
        if attempts is not None:
            expect(
                all(s.attempts == attempts for s in history),
                f"expected {attempts} attempt(s) per step, got {[s.attempts for s in history][:5]}",
            )

    return Workload(once, ops=size)


@contextmanager
def temp_sqlite(**options: Any) -> Iterator[SQLiteBackend]:
    """A :class:`SQLiteBackend` on a file in a new temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="flujo-bench-") as tmp:
        yield SQLiteBackend(Path(tmp) / "state.sqlite", **options)


@asynccontextmanager
async def sqlite_runs(size: int, **options: Any) -> AsyncIterator[Workload]:
    """Runs of :func:`chain_pipeline` persisted to one :func:`temp_sqlite` (all runs share it)."""
    with temp_sqlite(**options) as backend:
        yield runs_of(Flujo(chain_pipeline(size), state_backend=backend), size)


class Tally:
    """Counts handled messages and signals when ``target`` were handled."""

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.done = trio.Event()


class Sink(Actor):
    """Counts every message."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally

    async def handle(self, message: object) -> None:
        """Count it."""
        tally = self._tally
        tally.count += 1
        if tally.count >= tally.target:
            tally.done.set()


def tell_flood(size: int, *, mailbox_size: int) -> Workload:
    """``size`` tells to one supervised :class:`Sink` with a ``mailbox_size``-slot mailbox.

    Self-timed: from the first tell until the sink has handled them all.
    """

    async def once() -> float:
        tally = Tally(size)
        supervisor = Supervisor([ChildSpec("sink", Sink, tally, mailbox_size=mailbox_size)])
        async with trio.open_nursery() as nursery:
            running = await nursery.start(supervisor.run)
            ref = running.ref("sink")
            began = time.perf_counter()
            for index in range(size):
                await ref.tell(index)
            await tally.done.wait()
            elapsed = time.perf_counter() - began
            await running.stop()
        expect(tally.count == size, f"{tally.count} messages handled, expected {size}")
        return elapsed

    return Workload(once, ops=size)
