"""Streaming agents: live chunks, ``stream_async`` ordering, backpressure, cancellation."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from flujo_actors import Flujo, PipelineResult, Step, UsageLimitExceededError, UsageLimits
from flujo_actors.testing.agents import UsageOutput

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def _count_tasks() -> int:
    """Every task of the trio run (system tasks included)."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(c) for n in task.child_nurseries for c in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


async def _collect(runner: Flujo, data: Any) -> list[Any]:
    return [item async for item in runner.stream_async(data)]


async def test_a_chunk_reaches_the_consumer_before_the_agent_produces_the_next() -> None:
    seq = trio.testing.Sequencer()

    async def agent(data: str) -> AsyncIterator[str]:
        yield "a"
        # Only reachable once the consumer has handled "a": chunks are live.
        async with seq(1):
            pass
        yield "b"

    seen: list[Any] = []
    with trio.fail_after(5):
        async for item in Flujo(Step.from_callable(agent, name="talk")).stream_async("x"):
            seen.append(item)
            if item == "a":
                async with seq(0):
                    pass
    assert seen[:2] == ["a", "b"]
    assert isinstance(seen[2], PipelineResult)


async def test_stream_async_yields_the_chunks_in_order_then_the_result() -> None:
    async def agent(data: str) -> AsyncIterator[str]:
        for ch in data:
            yield ch

    items = await _collect(Flujo(Step.from_callable(agent, name="spell")), "abc")
    assert items[:3] == ["a", "b", "c"]
    assert len(items) == 4
    result = items[3]
    assert isinstance(result, PipelineResult)
    assert result.success
    assert result.output == "abc"
    assert [r.name for r in result.step_history] == ["spell"]


async def test_run_async_of_a_streaming_agent_returns_the_joined_output() -> None:
    async def text(data: str) -> AsyncIterator[str]:
        yield "ab"
        yield "cd"

    async def raw(data: str) -> AsyncIterator[bytes]:
        yield b"\x00"
        yield b"\x01"

    async def numbers(data: str) -> AsyncIterator[int]:
        yield 1
        yield 2

    assert (await Flujo(Step.from_callable(text, name="t")).run_async("x")).output == "abcd"
    assert (await Flujo(Step.from_callable(raw, name="r")).run_async("x")).output == b"\x00\x01"
    assert (await Flujo(Step.from_callable(numbers, name="n")).run_async("x")).output == [1, 2]


class _Talker:
    """An agent object that can answer at once (run) or stream (stream)."""

    async def run(self, data: str) -> str:
        return f"run:{data}"

    async def stream(self, data: str) -> AsyncIterator[str]:
        yield "s1:"
        yield data


async def test_an_object_streams_only_when_the_run_streams() -> None:
    runner = Flujo(Step(name="talker", agent=_Talker()))
    assert (await runner.run_async("q")).output == "run:q"
    items = await _collect(runner, "q")
    assert items[:2] == ["s1:", "q"]
    assert items[2].output == "s1:q"


async def test_only_the_last_step_streams_to_the_consumer() -> None:
    async def agent(data: str) -> AsyncIterator[str]:
        yield "x"
        yield "y"

    async def upper(data: str) -> str:
        return data.upper()

    runner = Flujo(Step.from_callable(agent, name="gen") >> Step.from_callable(upper, name="up"))
    items = await _collect(runner, "q")
    assert len(items) == 1
    assert items[0].output == "XY"


async def test_a_slow_consumer_holds_the_producer_one_chunk_ahead_at_most() -> None:
    produced: list[int] = []

    async def agent(data: int) -> AsyncIterator[int]:
        for i in range(data):
            produced.append(i)
            yield i

    consumed = 0
    async with contextlib.aclosing(
        Flujo(Step.from_callable(agent, name="firehose")).stream_async(50)
    ) as items:
        async for item in items:
            if isinstance(item, PipelineResult):
                break
            consumed += 1
            # The consumer is slow: let everything else run until it blocks.
            await trio.testing.wait_all_tasks_blocked()
            # The chunk just taken plus at most one produced and waiting in send().
            assert len(produced) - consumed <= 1
            assert len(produced) >= consumed
    assert consumed == 50


async def test_closing_the_consumer_cancels_the_run_and_closes_the_agent() -> None:
    closed = trio.Event()
    produced: list[int] = []

    async def agent(data: int) -> AsyncIterator[int]:
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    runner = Flujo(Step.from_callable(agent, name="endless"))
    before = _count_tasks()
    async with contextlib.aclosing(runner.stream_async(0)) as items:
        async for item in items:
            if item == 2:
                break
    # aclose() returned: the run has unwound completely.
    assert closed.is_set()
    # The producer was blocked handing over chunk 3 when the consumer left.
    assert produced == [0, 1, 2, 3]
    assert runner.snapshot() == ()
    assert _count_tasks() == before


async def test_cancelling_the_consumer_cancels_the_run(autojump_clock: trio.abc.Clock) -> None:
    closed: list[float] = []

    async def agent(data: int) -> AsyncIterator[str]:
        try:
            yield "first"
            await trio.sleep(100)
            yield "never"
        finally:
            closed.append(trio.current_time())

    runner = Flujo(Step.from_callable(agent, name="slow"))
    before = _count_tasks()
    seen: list[Any] = []
    with trio.move_on_after(5):
        async for item in runner.stream_async(0):
            seen.append(item)
    assert seen == ["first"]
    assert trio.current_time() == 5
    # The agent was closed when the consumer was cancelled, not at its next chunk.
    assert closed == [5]
    assert _count_tasks() == before


async def test_an_error_of_the_run_is_raised_to_the_consumer_after_the_chunks() -> None:
    async def costly(data: int) -> UsageOutput:
        return UsageOutput(data, cost_usd=2.0)

    async def agent(data: Any) -> AsyncIterator[str]:
        yield "never"

    runner = Flujo(
        Step.from_callable(costly, name="costly") >> Step.from_callable(agent, name="talk"),
        usage_limits=UsageLimits(total_cost_usd_limit=1.0),
    )
    seen: list[Any] = []

    async def consume() -> None:
        async for item in runner.stream_async(0):
            seen.append(item)

    with pytest.raises(UsageLimitExceededError) as info:
        await consume()
    assert seen == []
    assert info.value.result is not None
    assert [r.name for r in info.value.result.step_history] == ["costly"]


async def test_an_agent_failing_mid_stream_fails_the_step_after_its_chunks() -> None:
    async def agent(data: int) -> AsyncIterator[str]:
        yield "partial"
        raise RuntimeError("connection reset")

    runner = Flujo(Step.from_callable(agent, name="talk", max_retries=0))
    items = await _collect(runner, 0)
    assert items[0] == "partial"
    result = items[1]
    assert isinstance(result, PipelineResult)
    assert not result.success
    assert result.step_history[-1].feedback == "RuntimeError: connection reset"
