"""Parallel fan-out: N branches on the same input, with and without context merging.

Scenarios:
    parallel.context_update: N branches, each writing one scratchpad key on its own
        context copy, merged back with MergeStrategy.CONTEXT_UPDATE.
    parallel.no_merge: N trivial branches with MergeStrategy.NO_MERGE.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from flujo_actors import Flujo, MergeStrategy, PipelineContext, Step
from flujo_actors.bench import Scenario, Target, Workload, baselines, expect
from flujo_actors.bench.workloads import increment

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["SCENARIOS"]

#: The 100,000-branch case must fit in this much memory (issue target).
RSS_BUDGET_MIB = 2048.0


def writer(key: str) -> Callable[[int, PipelineContext], Awaitable[int]]:
    """A branch agent that records its output under ``key`` in the context's scratchpad."""

    async def write(value: int, context: PipelineContext) -> int:
        context.scratchpad[key] = value + 1
        return value + 1

    return write


def context_update(size: int) -> Workload:
    """``size`` writing branches merged with CONTEXT_UPDATE."""
    branches = {f"b{i}": Step.from_callable(writer(f"b{i}"), name=f"b{i}") for i in range(size)}
    runner = Flujo(Step.parallel("fanout", branches, merge_strategy=MergeStrategy.CONTEXT_UPDATE))

    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the parallel step failed")
        expect(len(result.output) == size, f"{len(result.output)} branch outputs, expected {size}")
        merged = result.final_pipeline_context.scratchpad
        expect(len(merged) == size, f"{len(merged)} scratchpad keys merged, expected {size}")

    return Workload(once, ops=size)


def no_merge(size: int) -> Workload:
    """``size`` trivial branches with NO_MERGE."""
    branches = {f"b{i}": Step.from_callable(increment, name=f"b{i}") for i in range(size)}
    runner = Flujo(Step.parallel("fanout", branches, merge_strategy=MergeStrategy.NO_MERGE))

    async def once() -> None:
        result = await runner.run_async(0)
        expect(result.success, "the parallel step failed")
        expect(len(result.output) == size, f"{len(result.output)} branch outputs, expected {size}")

    return Workload(once, ops=size)


SCENARIOS = [
    Scenario(
        name="parallel.context_update",
        description="One run of a parallel step of N branches; each writes one scratchpad key; CONTEXT_UPDATE merge.",
        measure=context_update,
        baseline=partial(baselines.fanout, merge=True),
        baseline_label="N tasks in one nursery, each copying a context dict, writing one key; changed keys merged back",
        unit="ms",
        sizes=(10, 1000, 100_000),
        quick_sizes=(10, 1000, 10_000),
        targets=(
            Target(max=25.0, at_size=1000),
            Target(max=RSS_BUDGET_MIB, metric="peak_rss_mib", at_size=100_000),
        ),
    ),
    Scenario(
        name="parallel.no_merge",
        description="One run of a parallel step of N trivial branches; NO_MERGE.",
        measure=no_merge,
        baseline=partial(baselines.fanout, merge=False),
        baseline_label="N tasks in one nursery, each awaiting value + 1 into a dict",
        unit="ms",
        sizes=(10, 1000, 100_000),
        quick_sizes=(10, 1000, 10_000),
        targets=(Target(max=RSS_BUDGET_MIB, metric="peak_rss_mib", at_size=100_000),),
    ),
]
