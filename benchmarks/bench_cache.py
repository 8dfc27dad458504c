"""Caching: the per-step cost of cache hits and misses (``cache=True`` + ``InMemoryLRUBackend``)."""

from __future__ import annotations

from functools import partial

from flujo_actors import Flujo, InMemoryLRUBackend
from flujo_actors.bench import Scenario, Workload, baselines, expect
from flujo_actors.bench.workloads import chain_pipeline, runs_of

__all__ = ["SCENARIOS"]


def cached(size: int, *, hit: bool) -> Workload:
    """``size`` cached steps; ``hit`` repeats one input (all hits after the warm-up
    call), otherwise every call starts from a new input (all misses)."""
    runner = Flujo(chain_pipeline(size, cache=True), cache_backend=InMemoryLRUBackend())
    calls = [0]

    async def once() -> None:
        start = 0 if hit else calls[0] * (size + 1)
        calls[0] += 1
        result = await runner.run_async(start)
        expect(result.success, "the cached pipeline failed")
        expect(
            result.output == start + size,
            f"pipeline output {result.output!r}, expected {start + size}",
        )

    return Workload(once, ops=size)


def uncached(size: int) -> Workload:
    """The same steps without caching."""
    return runs_of(Flujo(chain_pipeline(size)), size)


SCENARIOS = [
    Scenario(
        name="cache.hit",
        description="One run of N cached steps whose (step, input) keys are all in the cache.",
        measure=partial(cached, hit=True),
        baseline=partial(baselines.cached_chain, hit=True),
        baseline_label="N chained tasks, each finding its (step, input) in a 1,024-entry LRU dict",
        reference=uncached,
        reference_label="no cache",
        unit="us/step",
        sizes=(100,),
    ),
    Scenario(
        name="cache.miss",
        description="One run of N cached steps on a new input each run (every lookup misses, then stores).",
        measure=partial(cached, hit=False),
        baseline=partial(baselines.cached_chain, hit=False),
        baseline_label="N chained tasks, each missing its LRU dict lookup, computing and storing",
        reference=uncached,
        reference_label="no cache",
        unit="us/step",
        sizes=(100,),
    ),
]
