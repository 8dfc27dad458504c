"""Loops: N iterations of a trivial body through ``Step.loop_until``."""

from __future__ import annotations

from flujo_actors import Flujo, PipelineContext, Step
from flujo_actors.bench import Scenario, Target, Workload, baselines, expect
from flujo_actors.bench.workloads import increment

__all__ = ["SCENARIOS"]


def loop(size: int) -> Workload:
    """A loop step whose body increments until the output reaches ``size``."""

    def done(output: int, context: PipelineContext) -> bool:
        return output >= size

    step = Step.loop_until("loop", Step.from_callable(increment, name="body"), done, max_loops=size)
    runner = Flujo(step)

    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the loop step failed")
        expect(result.output == size, f"loop output {result.output!r}, expected {size}")
        iterations = result.step_history[-1].metadata.get("iterations")
        expect(iterations == size, f"metadata['iterations'] is {iterations!r}, expected {size}")

    return Workload(once, ops=size)


SCENARIOS = [
    Scenario(
        name="loop.trivial",
        description="One run of a loop_until step: N iterations of a trivial body (value + 1).",
        measure=loop,
        baseline=baselines.request_loop,
        baseline_label="one body task answering N requests in a row over memory channels",
        unit="ms",
        sizes=(100, 1000, 10_000),
        quick_sizes=(100, 1000),
        targets=(Target(max=25.0, at_size=1000),),
    ),
]
