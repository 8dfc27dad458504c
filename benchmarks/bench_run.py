"""What a run costs on its own: many runs of a 3-step pipeline of trivial steps.

Scenarios:
    run.per_run: N runs (one after the other, in one trio.run) of a pipeline of
        3 trivial ``async def`` steps; the figure is microseconds per run: the
        context, the run's actors, the chain of step actors and the result.
"""

from __future__ import annotations

import trio

from flujo_actors import Flujo, Pipeline, Step
from flujo_actors.bench import Scenario, Target, Workload, expect
from flujo_actors.bench.workloads import increment

__all__ = ["SCENARIOS"]

#: The issue's per-run budget on the 2-core dev box (3 trivial steps).
RUN_BUDGET_US = 60.0
STEPS = 3


def per_run(size: int) -> Workload:
    """``size`` runs in a row of a 3-step pipeline of :func:`increment`."""
    runner = Flujo(
        Pipeline(steps=[Step.from_callable(increment, name=f"s{i}") for i in range(STEPS)])
    )

    async def once() -> None:
        for _ in range(size):
            result = await runner.run_async(0)
            expect(result.output == STEPS, f"run output {result.output!r}, expected {STEPS}")

    return Workload(once, ops=size)


async def _stage(
    receive: trio.MemoryReceiveChannel[int], send: trio.MemorySendChannel[int]
) -> None:
    value = await receive.receive()
    await send.send(await increment(value))


def raw_runs(size: int) -> Workload:
    """``size`` raw-trio "runs": a nursery of 3 tasks chained by unbuffered channels."""

    async def run_once() -> int:
        async with trio.open_nursery() as nursery:
            first, receive = trio.open_memory_channel[int](0)
            for _ in range(STEPS):
                send, next_receive = trio.open_memory_channel[int](0)
                nursery.start_soon(_stage, receive, send)
                receive = next_receive
            await first.send(0)
            return await receive.receive()

    async def once() -> None:
        for _ in range(size):
            out = await run_once()
            expect(out == STEPS, f"raw run returned {out}, expected {STEPS}")

    return Workload(once, ops=size)


SCENARIOS = [
    Scenario(
        name="run.per_run",
        description="N runs in a row of a pipeline of 3 trivial async steps (value + 1); us per run.",
        measure=per_run,
        baseline=raw_runs,
        baseline_label="per run: a nursery of 3 tasks chained by unbuffered memory channels",
        unit="us/run",
        sizes=(1000,),
        quick_sizes=(200,),
        targets=(Target(max=RUN_BUDGET_US),),
    ),
]
