"""Sequential pipelines of trivial steps: what the runtime costs per step.

Scenarios:
    sequential.trivial: a pipeline of N trivial ``async def`` steps, run once per call.
    sequential.usage_limit: the same with a (never reached) cost limit, so every step's
        usage goes through the governor; shown beside the no-limit figure.
"""

from __future__ import annotations

from typing import Any

from flujo_actors import Flujo, Pipeline, Step, UsageLimits
from flujo_actors.bench import Scenario, Target, Workload, baselines, expect

__all__ = ["SCENARIOS"]

#: DESIGN.md's budget for one trivial step, end to end.
STEP_BUDGET_US = 25.0


async def increment(value: int) -> int:
    """The trivial agent: ``value + 1``."""
    return value + 1


def chain_pipeline(size: int, **step_options: Any) -> Pipeline:
    """``size`` steps of :func:`increment` (input 0 -> output ``size``)."""
    return Pipeline(
        steps=[Step.from_callable(increment, name=f"step{i}", **step_options) for i in range(size)]
    )


def runs_of(runner: Flujo, size: int) -> Workload:
    """A workload running ``runner`` once per call from input 0, checking the output."""

    async def once() -> None:
        result = await runner.run_async(0)
        expect(
            result.success,
            f"the pipeline failed: {result.step_history[-1].feedback if result.step_history else '?'}",
        )
        expect(result.output == size, f"pipeline output {result.output!r}, expected {size}")

    return Workload(once, ops=size)


def trivial(size: int) -> Workload:
    """``size`` trivial steps, no limits."""
    return runs_of(Flujo(chain_pipeline(size)), size)


def with_usage_limit(size: int) -> Workload:
    """``size`` trivial steps under a cost limit they never approach."""
    limits = UsageLimits(total_cost_usd_limit=1_000_000.0)
    return runs_of(Flujo(chain_pipeline(size), usage_limits=limits), size)


SCENARIOS = [
    Scenario(
        name="sequential.trivial",
        description="One run of a pipeline of N trivial async steps (value + 1).",
        measure=trivial,
        baseline=baselines.chain,
        baseline_label="N tasks started per run, chained by unbuffered memory channels, each awaiting value + 1",
        unit="us/step",
        sizes=(10, 100, 1000),
        # The budget is defined on a 100-step pipeline (DESIGN.md); at 10 steps the
        # per-run cost (context, governor start) is spread over few steps.
        targets=(Target(max=STEP_BUDGET_US, at_size=100),),
    ),
    Scenario(
        name="sequential.usage_limit",
        description="The same pipeline with UsageLimits(total_cost_usd_limit=1e6): usage of every step reaches the governor.",
        measure=with_usage_limit,
        baseline=baselines.chain,
        baseline_label="N tasks chained by memory channels (as sequential.trivial)",
        reference=trivial,
        reference_label="no limit",
        unit="us/step",
        sizes=(100,),
        targets=(Target(max=STEP_BUDGET_US),),
    ),
]
