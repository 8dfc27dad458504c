"""Sequential pipelines of trivial steps: what the runtime costs per step.

Scenarios:
    sequential.trivial: a pipeline of N trivial ``async def`` steps, run once per call.
    sequential.usage_limit: the same with a (never reached) cost limit, so every step's
        usage goes through the governor; shown beside the no-limit figure.
"""

from __future__ import annotations

from flujo_actors import Flujo, UsageLimits
from flujo_actors.bench import Scenario, Target, Workload, baselines
from flujo_actors.bench.workloads import chain_pipeline, runs_of

__all__ = ["SCENARIOS"]

#: DESIGN.md's budget for one trivial step, end to end.
STEP_BUDGET_US = 25.0


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
