"""Map over data: ``Step.map`` of a trivial body, bounded and unbounded.

Scenarios:
    map.limit_100: one run mapping N trivial items with ``max_concurrency=100``.
    map.unbounded: the same with no limit (every body at once).
    map.lazy_100k: 100,000 items from an async iterator under ``max_concurrency=1000``:
        wall time and peak RSS growth (the bodies, contexts and items alive at once
        stay bounded; only the results accumulate).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import trio

from flujo_actors import Flujo, Step
from flujo_actors.bench import Scenario, Target, Workload, baselines, expect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["SCENARIOS"]

#: The issue's targets: at most 3x a raw trio nursery; under 300 MiB of growth for 100,000.
RATIO_TARGET = 3.0
RSS_GROWTH_MIB = 300.0


async def numbers(size: int) -> AsyncIterator[int]:
    """The items of the lazy case: ``0 .. size-1``, drawn one at a time."""
    for i in range(size):
        yield i


def mapped(size: int, *, limit: int | None, lazy: bool = False) -> Workload:
    """One run of ``Step.map`` over ``size`` items with ``baselines.trivial`` as the body."""
    body = Step.from_callable(baselines.trivial, name="inc")
    runner = Flujo(
        Step.map(
            "map",
            body,
            max_concurrency=limit,
            items=(lambda n: numbers(n)) if lazy else None,
        )
    )

    async def once() -> None:
        result = await runner.run_async(size if lazy else range(size))
        expect(result.success, "the map step failed")
        out = result.output
        expect(len(out) == size, f"{len(out)} outputs, expected {size}")
        expect(out[-1] == size, f"last output {out[-1]!r}, expected {size}")

    return Workload(once, ops=size)


def raw(size: int, *, limit: int | None, lazy: bool = False) -> Workload:
    """``size`` tasks in one nursery, each awaiting the trivial body into its slot of a list;
    with a limit, a ``trio.CapacityLimiter`` token is taken before each task starts (and
    released when it ends), so at most ``limit`` run at once."""

    async def once() -> None:
        outputs: list[int | None] = []
        limiter = trio.CapacityLimiter(limit) if limit is not None else None

        async def item(index: int, value: int) -> None:
            try:
                outputs[index] = await baselines.trivial(value)
            finally:
                if limiter is not None:
                    limiter.release_on_behalf_of(index)

        async with trio.open_nursery() as nursery:
            source = numbers(size) if lazy else None
            index = 0
            while True:
                if source is not None:
                    try:
                        value = await source.__anext__()
                    except StopAsyncIteration:
                        break
                elif index < size:
                    value = index
                else:
                    break
                if limiter is not None:
                    await limiter.acquire_on_behalf_of(index)
                outputs.append(None)
                nursery.start_soon(item, index, value)
                index += 1
        expect(len(outputs) == size and outputs[-1] == size, "raw map lost outputs")

    return Workload(once, ops=size)


SCENARIOS = [
    Scenario(
        name="map.limit_100",
        description="One run of Step.map over N trivial items, max_concurrency=100.",
        measure=partial(mapped, limit=100),
        baseline=partial(raw, limit=100),
        baseline_label="N tasks in one nursery behind a CapacityLimiter(100), outputs into a list",
        unit="us/item",
        sizes=(1000, 10_000),
        quick_sizes=(10_000,),
        targets=(Target(max=RATIO_TARGET, metric="ratio"),),
    ),
    Scenario(
        name="map.unbounded",
        description="One run of Step.map over N trivial items, no concurrency limit.",
        measure=partial(mapped, limit=None),
        baseline=partial(raw, limit=None),
        baseline_label="N tasks in one nursery, outputs into a list",
        unit="us/item",
        sizes=(1000, 10_000),
        quick_sizes=(10_000,),
        targets=(Target(max=RATIO_TARGET, metric="ratio"),),
    ),
    Scenario(
        name="map.lazy_100k",
        description="One run of Step.map over 100,000 items of an async iterator, "
        "max_concurrency=1000: wall time and peak RSS growth.",
        measure=partial(mapped, limit=1000, lazy=True),
        baseline=partial(raw, limit=1000, lazy=True),
        baseline_label="the async iterator feeding tasks behind a CapacityLimiter(1000)",
        unit="s",
        sizes=(100_000,),
        warmup=False,
        targets=(Target(max=RSS_GROWTH_MIB, metric="rss_delta_mib"),),
    ),
]
