"""Dynamic router: a router agent picks 3 of N branches, which run in parallel."""

from __future__ import annotations

from flujo_actors import Flujo, Step
from flujo_actors.bench import Scenario, Workload, baselines, expect
from flujo_actors.bench.workloads import increment

__all__ = ["SCENARIOS"]


def router(size: int) -> Workload:
    """``Step.dynamic_parallel_branch`` over ``size`` branches; the router picks 3."""
    branches = {f"b{i}": Step.from_callable(increment, name=f"b{i}") for i in range(size)}
    chosen = [f"b{i}" for i in range(0, size, max(1, size // 3))][:3]

    async def route(value: int) -> list[str]:
        return chosen

    runner = Flujo(Step.dynamic_parallel_branch("route", route, branches))

    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the router step failed")
        expect(
            sorted(result.output) == sorted(chosen),
            f"router output {result.output!r}, expected keys {chosen}",
        )

    return Workload(once)


SCENARIOS = [
    Scenario(
        name="router.dynamic",
        description="One run of a dynamic_parallel_branch step whose router picks 3 of N branches.",
        measure=router,
        baseline=baselines.router,
        baseline_label="a router coroutine picks 3 of N functions, run as tasks in one nursery",
        unit="us/run",
        sizes=(10,),
    ),
]
