"""Governor flood: N concurrent branches each reporting a cost to the run's governor."""

from __future__ import annotations

from decimal import Decimal

import attrs

from flujo_actors import Flujo, MergeStrategy, Step, UsageLimits
from flujo_actors.bench import Scenario, Target, Workload, baselines, expect

__all__ = ["SCENARIOS"]

COST = 0.001


@attrs.frozen
class Charged:
    """An agent output carrying usage (the runtime reads ``cost_usd``)."""

    value: int
    cost_usd: float


async def charge(value: int) -> Charged:
    """A branch agent that costs :data:`COST` dollars."""
    return Charged(value + 1, COST)


async def increment(value: int) -> int:
    """A branch agent without usage."""
    return value + 1


def flood(size: int) -> Workload:
    """``size`` charging branches under a cost limit far above their total."""
    branches = {f"b{i}": Step.from_callable(charge, name=f"b{i}") for i in range(size)}
    parallel = Step.parallel("flood", branches, merge_strategy=MergeStrategy.NO_MERGE)
    runner = Flujo(parallel, usage_limits=UsageLimits(total_cost_usd_limit=1_000_000.0))
    expected = Decimal(repr(COST)) * size

    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the flood failed")
        expect(
            result.total_cost_usd == expected,
            f"total cost {result.total_cost_usd}, expected {expected}",
        )

    return Workload(once, ops=size)


def unmetered(size: int) -> Workload:
    """The same fan-out without usage or limits."""
    branches = {f"b{i}": Step.from_callable(increment, name=f"b{i}") for i in range(size)}
    runner = Flujo(Step.parallel("flood", branches, merge_strategy=MergeStrategy.NO_MERGE))

    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the fan-out failed")

    return Workload(once, ops=size)


SCENARIOS = [
    Scenario(
        name="governor.flood",
        description="One run of N concurrent branches each returning an output with cost_usd=0.001, under a cost limit.",
        measure=flood,
        baseline=baselines.ledger_flood,
        baseline_label="N tasks each sending a Decimal cost over one memory channel to a ledger task",
        reference=unmetered,
        reference_label="no usage, no limit",
        unit="updates/s",
        sizes=(10_000,),
        targets=(Target(min=50_000.0),),
    ),
]
