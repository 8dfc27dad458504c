"""Runs from asyncio applications: run_asyncio / stream_asyncio (trio guest mode)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.lowlevel
from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel

from flujo_actors import (
    Flujo,
    PipelineResult,
    Step,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.bridge import host as host_module
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def shout(x: str) -> str:
    await trio.lowlevel.checkpoint()  # a trio step
    return x.upper()


def _host_state() -> str:
    """The guest run's state for the running loop ("idle": nothing of trio left)."""
    host = host_module._HOSTS.get(asyncio.get_running_loop())
    return "idle" if host is None else host.state


def test_run_asyncio_runs_on_the_host_loop_and_many_runs_share_it() -> None:
    runner = Flujo(Step.from_callable(shout))

    async def main() -> list[PipelineResult]:
        results = await asyncio.gather(
            *(runner.run_asyncio(f"r{i}", run_id=f"id{i}") for i in range(20))
        )
        assert _host_state() in ("stopping", "idle")
        await asyncio.sleep(0)  # let the guest run's last ticks finish
        return list(results)

    results = asyncio.run(main())
    assert [r.output for r in results] == [f"R{i}" for i in range(20)]
    assert [r.run_id for r in results] == [f"id{i}" for i in range(20)]


def test_runs_after_the_guest_run_ended_start_a_new_one() -> None:
    runner = Flujo(Step.from_callable(shout))

    async def main() -> list[str]:
        outputs = []
        for i in range(3):
            result = await runner.run_asyncio(f"n{i}")
            outputs.append(result.output)
            while _host_state() != "idle":
                await asyncio.sleep(0)
        return outputs

    assert asyncio.run(main()) == ["N0", "N1", "N2"]


def test_trio_entry_points_called_from_asyncio_name_the_asyncio_ones() -> None:
    runner = Flujo(Step.from_callable(shout))
    message = (
        r"^Flujo\.{method}\(\) must be awaited inside trio, but was called from asyncio code\. "
        r"From asyncio \(FastAPI and friends\) use `await runner\.run_asyncio\(\.\.\.\)` or "
        r"`runner\.stream_asyncio\(\.\.\.\)`; from synchronous code use `runner\.run\(\.\.\.\)`\.$"
    )

    async def main() -> None:
        with pytest.raises(RuntimeError, match=message.format(method="run_async")):
            await runner.run_async("x")
        with pytest.raises(RuntimeError, match=message.format(method="stream_async")):
            async for _ in runner.stream_async("x"):
                pass
        with pytest.raises(
            RuntimeError,
            match=r"^Flujo\.run\(\) cannot be called inside a running asyncio event loop \(it "
            r"would block the loop until the run ends\); use `await runner\.run_asyncio\(\.\.\.\)` "
            r"or `runner\.stream_asyncio\(\.\.\.\)` instead\.$",
        ):
            runner.run("x")

    asyncio.run(main())


def test_errors_of_the_run_reach_the_asyncio_caller() -> None:
    async def spend(x: str) -> UsageOutput:
        return UsageOutput(x, cost_usd=2)

    runner = Flujo(Step.from_callable(spend), usage_limits=UsageLimits(total_cost_usd_limit=1))

    async def main() -> None:
        with pytest.raises(UsageLimitExceededError) as info:
            await runner.run_asyncio("x")
        assert info.value.result is not None
        assert [r.name for r in info.value.result.step_history] == ["spend"]

    asyncio.run(main())


class _Blocker:
    """A trio step that blocks until cancelled; the asyncio side can wait for its start."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.unwound = False

    async def block(self, x: Any) -> str:
        self.started.set()  # same thread: guest ticks run as callbacks of the host loop
        try:
            await trio.sleep_forever()
        finally:
            self.unwound = True
        return "never"


def test_cancelling_the_asyncio_task_cancels_the_run() -> None:
    blocker = _Blocker()
    runner = Flujo(Step.from_callable(blocker.block, name="block"))
    other = Flujo(Step.from_callable(shout))

    async def main() -> None:
        task = asyncio.create_task(runner.run_asyncio("x"))
        neighbour = asyncio.create_task(other.run_asyncio("still here"))
        await blocker.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The run had unwound before CancelledError reached us.
        assert blocker.unwound
        assert (await neighbour).output == "STILL HERE"

    asyncio.run(main())


async def tokens(prompt: str) -> AsyncIterator[str]:
    for word in prompt.split():
        await trio.lowlevel.checkpoint()
        yield word + " "


def test_stream_asyncio_yields_chunks_then_the_result() -> None:
    runner = Flujo(Step.from_callable(tokens))

    async def main() -> list[Any]:
        return [item async for item in runner.stream_asyncio("chunks cross loops")]

    items = asyncio.run(main())
    assert items[:-1] == ["chunks ", "cross ", "loops "]
    assert isinstance(items[-1], PipelineResult) and items[-1].output == "chunks cross loops "


def test_leaving_stream_asyncio_early_cancels_the_run() -> None:
    closed: list[str] = []

    async def endless(x: str) -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                await trio.lowlevel.checkpoint()
                yield i
                i += 1
        finally:
            closed.append("closed")

    runner = Flujo(Step.from_callable(endless))

    async def main() -> list[Any]:
        got = []
        async with contextlib.aclosing(runner.stream_asyncio("x")) as items:
            async for item in items:
                got.append(item)
                if len(got) == 3:
                    break
        assert closed == ["closed"]  # the run unwound before aclose returned
        return got

    assert asyncio.run(main()) == [0, 1, 2]


def test_asyncio_steps_and_pydantic_ai_under_run_asyncio() -> None:
    async def aio(x: str) -> str:
        await asyncio.sleep(0)
        return x + "!"

    agent = Agent(TestModel(custom_output_text="done"))
    runner = Flujo(
        Step.from_callable(aio, event_loop="asyncio") >> Step.from_callable(agent, name="agent")
    )

    async def main() -> list[PipelineResult]:
        return list(await asyncio.gather(*(runner.run_asyncio(f"q{i}") for i in range(5))))

    results = asyncio.run(main())
    assert all(r.success for r in results), [r.step_history[-1].feedback for r in results]
    assert [r.output.output for r in results] == ["done"] * 5


def test_stream_errors_reach_the_consumer() -> None:
    async def spend(x: str) -> UsageOutput:
        return UsageOutput(x, cost_usd=1.25)

    runner = Flujo(
        Step.from_callable(spend) >> Step.from_callable(tokens),
        usage_limits=UsageLimits(total_cost_usd_limit=1),
    )

    async def main() -> None:
        seen: list[Any] = []

        async def consume() -> None:
            async for item in runner.stream_asyncio("x"):
                seen.append(item)

        with pytest.raises(UsageLimitExceededError, match=re.escape("total cost $1.25")):
            await consume()
        assert seen == []
        assert _host_state() == "idle"

    asyncio.run(main())


def test_asyncio_programs_keep_real_asyncio_loops_after_asyncio_steps_ran() -> None:
    async def aio(x: str) -> str:
        await asyncio.sleep(0)
        return x

    assert Flujo(Step.from_callable(aio, event_loop="asyncio")).run("x").output == "x"

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    # trio-asyncio is imported now; asyncio.run still builds asyncio's own loop.
    assert asyncio.run(which()).startswith("asyncio.")
    loop = asyncio.new_event_loop()
    try:
        assert type(loop).__module__.startswith("asyncio.")
    finally:
        loop.close()
