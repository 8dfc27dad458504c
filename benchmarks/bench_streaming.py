"""Streaming: chunks of an async-generator agent delivered through ``runner.stream_async``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flujo_actors import Flujo, PipelineResult, Step
from flujo_actors.bench import Scenario, Workload, baselines, expect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["SCENARIOS"]


def stream(size: int) -> Workload:
    """A one-step pipeline whose agent yields ``size`` one-character chunks."""

    async def produce(value: int) -> AsyncIterator[str]:
        for _ in range(size):
            yield "x"

    runner = Flujo(Step.from_callable(produce, name="stream"))

    async def once() -> None:
        chunks = 0
        final: PipelineResult | None = None
        async for item in runner.stream_async(0):
            if isinstance(item, PipelineResult):
                final = item
            else:
                chunks += 1
        expect(chunks == size, f"{chunks} chunks streamed, expected {size}")
        expect(final is not None and final.success, "the streaming run failed")
        expect(
            final is not None and final.output == "x" * size,
            "the streamed output is not the chunks joined",
        )

    return Workload(once, ops=size)


SCENARIOS = [
    Scenario(
        name="streaming.chunks",
        description="One run of an async-generator agent yielding N str chunks, consumed with runner.stream_async.",
        measure=stream,
        baseline=baselines.stream,
        baseline_label="a producer task sending N chunks over an unbuffered memory channel to the consumer",
        unit="chunks/s",
        sizes=(10_000,),
    ),
]
