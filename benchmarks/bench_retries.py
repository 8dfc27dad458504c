"""Retries: the cost of a retry policy that is configured but unused, and of real retries.

Scenarios:
    retries.configured_unused: N trivial steps with ``max_retries=3`` that never fail.
    retries.fail_twice: N steps whose agent fails twice, then succeeds (3 attempts each).
"""

from __future__ import annotations

from flujo_actors import Flujo, Pipeline, Step
from flujo_actors.bench import Scenario, Target, Workload, baselines
from flujo_actors.bench.workloads import chain_pipeline, runs_of

__all__ = ["SCENARIOS"]


def configured_unused(size: int) -> Workload:
    """``size`` trivial steps with ``max_retries=3``; none fails."""
    return runs_of(Flujo(chain_pipeline(size, max_retries=3)), size, attempts=1)


def default_retries(size: int) -> Workload:
    """``size`` trivial steps with the default ``max_retries``."""
    return runs_of(Flujo(chain_pipeline(size)), size, attempts=1)


def fail_twice(size: int) -> Workload:
    """``size`` steps, ``max_retries=3``, whose agent raises on two calls out of three.

    Steps run one after another, so every step sees fail, fail, succeed.
    """
    calls = [0]

    async def flaky(value: int) -> int:
        calls[0] += 1
        if calls[0] % 3:
            raise RuntimeError("transient failure")
        return value + 1

    steps = [Step.from_callable(flaky, name=f"step{i}", max_retries=3) for i in range(size)]
    return runs_of(Flujo(Pipeline(steps=steps)), size, attempts=3)


SCENARIOS = [
    Scenario(
        name="retries.configured_unused",
        description="One run of N trivial steps built with max_retries=3 (no attempt fails).",
        measure=configured_unused,
        baseline=baselines.chain,
        baseline_label="N tasks chained by memory channels, each awaiting value + 1",
        reference=default_retries,
        reference_label="default max_retries",
        unit="us/step",
        sizes=(100,),
        targets=(Target(max=25.0),),
    ),
    Scenario(
        name="retries.fail_twice",
        description="One run of N steps whose agent raises twice, then succeeds (3 attempts per step, max_retries=3).",
        measure=fail_twice,
        baseline=baselines.retry_chain,
        baseline_label="N chained tasks, each calling the agent in a try/except loop (2 failures, then success)",
        unit="us/step",
        sizes=(10,),
    ),
]
