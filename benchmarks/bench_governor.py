"""Governor throughput: alone (governor.isolated), and end to end behind a parallel fan-out (governor.flood)."""

from __future__ import annotations

from decimal import Decimal

import attrs
import trio

from flujo_actors import Flujo, MergeStrategy, Step, UsageLimits
from flujo_actors.bench import Scenario, Target, Workload, baselines, expect
from flujo_actors.bench.workloads import increment
from flujo_actors.governor import Flush, Governor
from flujo_actors.policy.ledger import UsageLedger
from flujo_actors.results import StepResult
from flujo_actors.run.core import RunState

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


def flood(size: int) -> Workload:
    """``size`` concurrent branches each charging :data:`COST` under a cost limit far above
    their total (issue #13): every branch must have run and charged, the total be exact."""
    branches = {f"b{i}": Step.from_callable(charge, name=f"b{i}") for i in range(size)}
    parallel = Step.parallel("flood", branches, merge_strategy=MergeStrategy.NO_MERGE)
    runner = Flujo(parallel, usage_limits=UsageLimits(total_cost_usd_limit=1_000_000.0))
    cost = Decimal(repr(COST))
    expected = cost * size

    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the flood failed")
        expect(
            result.total_cost_usd == expected,
            f"total cost {result.total_cost_usd}, expected {expected}",
        )
        # Checked after the total: a wrong total fails above, a missing or free branch here.
        ran = result.step_history[0].step_history
        expect(len(ran) == size, f"{len(ran)} branch results, expected {size}")
        expect(all(r.cost_usd == cost for r in ran), "a branch did not charge its cost")

    return Workload(once, ops=size)


def unmetered(size: int) -> Workload:
    """The same fan-out without usage or limits."""
    branches = {f"b{i}": Step.from_callable(increment, name=f"b{i}") for i in range(size)}
    runner = Flujo(Step.parallel("flood", branches, merge_strategy=MergeStrategy.NO_MERGE))

    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the fan-out failed")

    return Workload(once, ops=size)


def isolated(size: int) -> Workload:
    """``size`` concurrent tasks each reporting one update through the run's charge path
    (``RunState.charge`` under a limit) straight to a Governor: the governor's own
    throughput, without the cost of the parallel fan-out around it."""
    cost = Decimal(repr(COST))

    async def once() -> None:
        ledger = UsageLedger(Decimal(10**9), None)
        run = RunState("bench", limited=True)
        result = StepResult("charge")
        async with trio.open_nursery() as nursery:
            governor = Governor(ledger, run.breach_event, nursery.cancel_scope.cancel)
            run.governor = await nursery.start(governor.serve)
            async with trio.open_nursery() as branches:
                for _ in range(size):
                    branches.start_soon(run.charge, result, cost, 1)
            await governor.ask(Flush())
            governor.close()
        expect(ledger.cost == cost * size, f"governor total {ledger.cost}, expected {cost * size}")

    return Workload(once, ops=size)


SCENARIOS = [
    Scenario(
        name="governor.isolated",
        description="N concurrent tasks each charging one usage update (under a limit) to a Governor.",
        measure=isolated,
        baseline=baselines.ledger_flood,
        baseline_label="N tasks each sending a Decimal cost over one memory channel to a ledger task",
        unit="updates/s",
        sizes=(10_000,),
        targets=(Target(min=50_000.0),),
    ),
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
        targets=(Target(min=50_000.0),),  # issue #13: >= 50,000 updates/s end to end
    ),
]
