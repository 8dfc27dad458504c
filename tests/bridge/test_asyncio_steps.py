"""Agents on asyncio inside a run: event_loop="asyncio", trio-asyncio, pydantic-ai."""

from __future__ import annotations

import asyncio
import contextlib
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from flujo_actors import (
    AsyncioInTrioError,
    Flujo,
    InMemoryStateBackend,
    PipelineContext,
    PipelineDefinitionError,
    PipelineResult,
    PluginOutcome,
    Step,
    UsageLimitExceededError,
    UsageLimits,
    step,
)
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def _on_asyncio() -> bool:
    """True inside an asyncio task (what asyncio-only libraries need)."""
    try:
        return asyncio.current_task() is not None
    except RuntimeError:
        return False


# -- asyncio-only code in a step ---------------------------------------------------


async def test_asyncio_only_code_runs_in_an_asyncio_step(autojump_clock: trio.abc.Clock) -> None:
    async def fetch(x: str) -> str:
        assert _on_asyncio()
        await asyncio.sleep(1.0)  # on trio's clock: trio-asyncio timers are trio timers
        task = asyncio.create_task(asyncio.sleep(0.5, result="slow"))
        done = await asyncio.wait_for(task, timeout=2.0)
        try:
            await asyncio.wait_for(asyncio.sleep(10), timeout=0.25)
        except TimeoutError:
            done += "+timeout"
        return f"{x}:{done}"

    result = await Flujo(Step.from_callable(fetch, event_loop="asyncio")).run_async("go")
    assert result.success, result.step_history[-1].feedback
    assert result.output == "go:slow+timeout"
    assert trio.current_time() == pytest.approx(1.75)


async def test_decorator_and_sync_agents_on_asyncio() -> None:
    @step(event_loop="asyncio")
    async def first(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    def second(x: int) -> int:  # a sync agent on asyncio: called inside an asyncio task
        assert asyncio.get_running_loop() is not None and _on_asyncio()
        return x * 10

    assert first.event_loop == "asyncio"
    runner = Flujo(first >> Step.from_callable(second, event_loop="asyncio"))
    result = await runner.run_async(1)
    assert result.output == 20


def test_runner_run_opens_the_loop_too() -> None:
    async def nap(x: str) -> str:
        await asyncio.sleep(0)
        return x.upper()

    assert Flujo(Step.from_callable(nap, event_loop="asyncio")).run("sync").output == "SYNC"


async def test_pure_trio_pipelines_open_no_asyncio_loop() -> None:
    import trio_asyncio

    seen: list[object] = []

    async def look(x: str) -> str:
        seen.append(trio_asyncio.current_loop.get())
        return x

    async def aio(x: str) -> str:
        return x

    await Flujo(Step.from_callable(look)).run_async("a")
    # One asyncio step anywhere in the tree (here: nested) opens the run's loop.
    nested = Step.from_callable(aio, event_loop="asyncio") >> Step.from_callable(aio)
    await Flujo(Step.from_callable(look) >> nested.as_step("inner")).run_async("b")
    assert seen[0] is None
    assert seen[1] is not None


# -- build-time checks -------------------------------------------------------------


def test_event_loop_is_validated_when_the_step_is_built() -> None:
    async def f(x: str) -> str:
        return x

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'f': event_loop must be 'trio' or 'asyncio', got 'uvloop'\. "
        r"Use event_loop='asyncio' for agents built on asyncio libraries\.$",
    ):
        Step.from_callable(f, event_loop="uvloop")  # type: ignore[arg-type]
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'f': event_loop='asyncio' runs the agent on the run's asyncio loop, in "
        r"this process; it cannot be combined with placement='process'\. Drop the placement "
        r"\(or use placement='inline'\)\.$",
    ):
        Step.from_callable(f, event_loop="asyncio", placement="process")
    assert Step.from_callable(f).event_loop == "trio"
    assert Step.from_callable(f, event_loop="asyncio", placement="inline").event_loop == "asyncio"


def test_a_missing_asyncio_extra_is_named_at_build_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import flujo_actors.steps.event_loop as event_loop

    monkeypatch.setattr(event_loop, "asyncio_extra_missing", lambda: True)

    async def f(x: str) -> str:
        return x

    message = (
        r"^Step 'f' runs on asyncio \(event_loop='asyncio'\), which needs the 'asyncio' "
        r"extra, and trio-asyncio is not installed\. Install it with: "
        r"pip install 'flujo-actors\[asyncio\]'$"
    )
    with pytest.raises(PipelineDefinitionError, match=message):
        Step.from_callable(f, event_loop="asyncio")
    with pytest.raises(PipelineDefinitionError, match=message.replace("'f'", "'agent'")):
        Step.from_callable(Agent(TestModel()), name="agent")  # detected: same rule
    assert Step.from_callable(f).event_loop == "trio"  # trio steps need nothing


# -- asyncio code in a trio step ------------------------------------------------------

_HINT = (
    r"Run it on asyncio: Step\.from_callable\(agent, event_loop='asyncio'\) or "
    r"@step\(event_loop='asyncio'\) \(needs pip install 'flujo-actors\[asyncio\]'\)\."
)


async def test_asyncio_code_in_a_trio_step_fails_at_once_with_the_fix() -> None:
    calls: list[str] = []

    async def legacy(x: str) -> str:
        calls.append("async")
        await asyncio.sleep(0.1)
        return x

    def sync_legacy(x: str) -> str:
        calls.append("sync")
        asyncio.get_running_loop()  # what asyncio SDK clients do when they are built
        return x

    for agent in (legacy, sync_legacy):
        calls.clear()
        result = await Flujo(Step.from_callable(agent, name="legacy", max_retries=3)).run_async("x")
        failed = result.step_history[-1]
        assert not result.success and failed.attempts == 1 and len(calls) == 1  # not retried
        assert failed.metadata["error_type"] == "AsyncioInTrioError"
        assert failed.feedback is not None
        assert re.fullmatch(
            r"AsyncioInTrioError: Step 'legacy' runs on trio, but its agent used asyncio "
            r"\(RuntimeError: no running event loop\)\. " + _HINT,
            failed.feedback,
        )


async def test_asyncio_code_in_a_trio_step_of_a_run_with_a_loop_fails_the_same_way() -> None:
    async def aio(x: str) -> str:
        return x

    async def legacy(x: str) -> str:
        await asyncio.sleep(0)  # the run has a loop, but this task is a trio task
        return x

    runner = Flujo(
        Step.from_callable(aio, event_loop="asyncio")
        >> Step.from_callable(legacy, name="legacy", max_retries=2)
    )
    result = await runner.run_async("x")
    failed = result.step_history[-1]
    assert failed.attempts == 1 and failed.metadata["error_type"] == "AsyncioInTrioError"
    assert failed.feedback is not None
    assert re.fullmatch(
        r"AsyncioInTrioError: Step 'legacy' runs on trio, but its agent used asyncio "
        r"\(an asyncio future was awaited in a trio task\)\. " + _HINT,
        failed.feedback,
    )


def test_asyncio_in_trio_error_is_a_flujo_error() -> None:
    from flujo_actors import FlujoError

    assert issubclass(AsyncioInTrioError, FlujoError)
    assert issubclass(AsyncioInTrioError, RuntimeError)


# -- supervision behaves as on trio ------------------------------------------------------


async def test_retries_validators_plugins_fallback_and_usage_on_asyncio() -> None:
    attempts: list[int] = []

    async def flaky(x: str, *, context: PipelineContext) -> UsageOutput:
        await asyncio.sleep(0)
        attempts.append(len(attempts) + 1)
        context.scratchpad[f"try{len(attempts)}"] = True  # rolled back when the attempt fails
        if len(attempts) == 1:
            raise ConnectionError("reset")
        return UsageOutput(f"{x}#{len(attempts)}", cost_usd=0.25, token_counts=7)

    def no_two(out: UsageOutput) -> bool:
        return not str(out.value).endswith("#2")

    async def polish(out: UsageOutput, ctx: Any) -> PluginOutcome:
        await trio.lowlevel.checkpoint()  # validators and plugins run on trio
        return PluginOutcome(True, new_solution=UsageOutput(f"{out.value}!", cost_usd=0.25))

    s = Step.from_callable(
        flaky, event_loop="asyncio", max_retries=3, validators=[no_two], plugins=[polish]
    )
    result = await Flujo(s).run_async("in")
    r = result.step_history[-1]
    assert r.success and r.attempts == 3 and attempts == [1, 2, 3]
    assert result.output == UsageOutput("in#3!", cost_usd=0.25)
    assert result.final_pipeline_context.scratchpad == {"try3": True}
    # Usage of every attempt that returned an output counts (attempts 2 and 3).
    assert result.total_cost_usd == Decimal("0.50") and result.total_tokens == 14

    async def broken(x: str) -> str:
        await asyncio.sleep(0)
        raise ValueError("down")

    async def backup(x: str) -> str:
        await asyncio.sleep(0)
        return "backup:" + x

    fb = Step.from_callable(backup, event_loop="asyncio")
    result = await Flujo(
        Step.from_callable(broken, event_loop="asyncio", max_retries=1, fallback=fb)
    ).run_async("in")
    r = result.step_history[-1]
    assert result.output == "backup:in" and r.attempts == 2
    assert r.metadata["fallback_triggered"] is True
    assert r.metadata["original_error"] == "ValueError: down"


# -- pydantic-ai agents ---------------------------------------------------------------


async def test_pydantic_ai_agent_runs_on_asyncio_without_being_told() -> None:
    agent = Agent(TestModel(), name="adder")
    calls: list[tuple[int, int]] = []

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        calls.append((a, b))
        return a + b

    s = Step.from_callable(agent, name="adder")
    assert s.event_loop == "asyncio"
    result = await Flujo(s).run_async("add two numbers")
    assert result.success, result.step_history[-1].feedback
    run_result = result.output
    assert type(run_result).__name__ == "AgentRunResult"
    assert run_result.output == '{"add":0}'  # TestModel called the tool, then answered
    assert calls == [(0, 0)]
    assert run_result.usage.requests == 2  # what the usage extractors read


async def test_function_model_agents_chain_and_see_the_previous_output() -> None:
    prompts: list[str] = []

    async def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        assert _on_asyncio()
        await asyncio.sleep(0)
        prompt = messages[-1].parts[-1].content  # type: ignore[union-attr]
        prompts.append(str(prompt))
        return ModelResponse(parts=[TextPart(f"<{prompt}>")])

    a = Agent(FunctionModel(reply))
    b = Agent(FunctionModel(reply))
    result = await Flujo(
        Step.from_callable(a, name="a") >> Step.from_callable(b, name="b")
    ).run_async("hi")
    # The second agent's prompt is the first run result's output.
    assert prompts == ["hi", "<hi>"]
    assert result.output.output == "<<hi>>"


async def _stream_reply(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for word in ("streams ", "arrive ", "live"):
        await asyncio.sleep(0)
        yield word


async def test_run_stream_inside_an_asyncio_generator_streams_live() -> None:
    agent = Agent(FunctionModel(stream_function=_stream_reply))
    seen_by_agent: list[str] = []

    async def answer(prompt: str) -> AsyncIterator[str]:
        async with agent.run_stream(prompt) as streamed:
            async for delta in streamed.stream_text(delta=True, debounce_by=None):
                seen_by_agent.append(delta)
                yield delta

    runner = Flujo(Step.from_callable(answer, event_loop="asyncio"))
    items: list[Any] = []
    async with contextlib.aclosing(runner.stream_async("go")) as stream:
        async for item in stream:
            if not isinstance(item, PipelineResult):
                # Live: the agent has produced exactly this chunk so far (no buffering).
                assert len(seen_by_agent) == len(items) + 1
            items.append(item)
    assert items[:-1] == ["streams ", "arrive ", "live"]
    assert items[-1].output == "streams arrive live"


async def test_a_detected_agent_streams_with_run_stream_as_the_last_step() -> None:
    def whole(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("streams arrive live")])

    agent = Agent(FunctionModel(whole, stream_function=_stream_reply))
    # Under a limit: the streamed run's usage is counted (yielded as a Usage, not a chunk).
    runner = Flujo(
        Step.from_callable(agent, name="a"), usage_limits=UsageLimits(total_tokens_limit=1000)
    )
    items = [item async for item in runner.stream_async("go")]
    assert items[:-1] == ["streams ", "arrive ", "live"]
    assert items[-1].output == "streams arrive live"
    assert items[-1].total_tokens > 0
    # Not streaming: the run result is the output.
    result = await Flujo(Step.from_callable(agent, name="a")).run_async("go")
    assert result.output.output == "streams arrive live"


async def test_pydantic_ai_in_parallel_loop_and_nested_pipelines() -> None:
    def agent(tag: str) -> Agent[None, str]:
        def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            return ModelResponse(parts=[TextPart(tag)])

        return Agent(FunctionModel(reply))

    def text(x: Any) -> str:
        return str(x.output)

    fan = Step.parallel("fan", {k: Step.from_callable(agent(k), name=k) for k in ("a", "b", "c")})
    loop = Step.loop_until(
        "again",
        Step.from_callable(agent("loop"), name="body") >> Step.from_callable(text),
        lambda out, ctx: True,
        max_loops=2,
    )
    nested = (Step.from_callable(agent("deep"), name="deep") >> Step.from_callable(text)).as_step(
        "nested"
    )

    def collect(out: dict[str, Any]) -> str:
        return "".join(out[k].output for k in sorted(out))

    result = await Flujo(fan >> Step.from_callable(collect) >> loop >> nested).run_async("x")
    assert result.success, [r.feedback for r in result.step_history]
    assert result.output == "deep"
    assert result.step_history[1].output == "abc"
    assert result.step_history[2].output == "loop"


# -- cancellation -------------------------------------------------------------------------


class _Probe:
    """Records what the asyncio side of an agent saw."""

    def __init__(self) -> None:
        self.started = False
        self.cancelled = False
        self.finished = False

    async def block(self, x: Any = None) -> str:
        self.started = True
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            await asyncio.sleep(0)  # cleanup that itself awaits still runs
            raise
        finally:
            self.finished = True
        return "never"


async def test_timeout_cancels_the_asyncio_task(autojump_clock: trio.abc.Clock) -> None:
    probe = _Probe()
    s = Step.from_callable(
        probe.block, name="slow", event_loop="asyncio", timeout_s=5, max_retries=0
    )
    result = await Flujo(s).run_async("x")
    assert not result.success
    assert result.step_history[-1].feedback == "TimeoutError: step 'slow' timed out after 5 s"
    assert probe.cancelled and probe.finished
    assert trio.current_time() == pytest.approx(5)


async def test_a_failing_sibling_cancels_the_asyncio_branch() -> None:
    probe = _Probe()

    async def fail(x: Any) -> str:
        await trio.testing.wait_all_tasks_blocked()  # the asyncio branch is waiting
        raise RuntimeError("sibling broke")

    fan = Step.parallel(
        "fan",
        {
            "aio": Step.from_callable(probe.block, name="aio", event_loop="asyncio"),
            "bad": Step.from_callable(fail, max_retries=0),
        },
    )
    result = await Flujo(fan).run_async("x")
    assert not result.success
    assert probe.started and probe.cancelled and probe.finished
    assert result.step_history[-1].step_history[0].metadata["cancelled"] is True


async def test_a_usage_breach_cancels_the_asyncio_branch() -> None:
    probe = _Probe()

    async def spend(x: Any) -> UsageOutput:
        await trio.testing.wait_all_tasks_blocked()
        return UsageOutput("spent", cost_usd=2.0)

    fan = Step.parallel(
        "fan",
        {
            "aio": Step.from_callable(probe.block, name="aio", event_loop="asyncio"),
            "spend": Step.from_callable(spend),
        },
    )
    runner = Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=1.0))
    with pytest.raises(UsageLimitExceededError):
        await runner.run_async("x")
    assert probe.started and probe.cancelled and probe.finished


async def test_cancelling_the_caller_cancels_the_asyncio_task() -> None:
    probe = _Probe()
    runner = Flujo(Step.from_callable(probe.block, name="aio", event_loop="asyncio"))
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run_async, "x")
            await trio.testing.wait_all_tasks_blocked()
            assert probe.started
            scope.cancel()
    assert scope.cancelled_caught
    assert probe.cancelled and probe.finished


async def test_leaving_a_stream_closes_the_asyncio_generator() -> None:
    state: list[str] = []

    async def tokens(x: str) -> AsyncIterator[str]:
        try:
            for i in range(1000):
                await asyncio.sleep(0)
                yield f"t{i}"
        except (GeneratorExit, asyncio.CancelledError) as exc:
            state.append(type(exc).__name__)
            raise
        finally:
            state.append("closed")

    runner = Flujo(Step.from_callable(tokens, event_loop="asyncio"))
    got: list[Any] = []
    async with contextlib.aclosing(runner.stream_async("x")) as stream:
        async for item in stream:
            got.append(item)
            if len(got) == 2:
                break
    assert got == ["t0", "t1"]
    assert state[-1] == "closed" and state[0] in ("GeneratorExit", "CancelledError")


# -- resume -------------------------------------------------------------------------------


class _Crash(BaseException):
    """Stands in for the process dying mid-step."""


async def test_resume_runs_the_remaining_asyncio_steps() -> None:
    crash = [True]
    ran: list[str] = []

    async def aio(x: int) -> int:
        await asyncio.sleep(0)
        ran.append(f"aio{x}")
        return x + 1

    async def maybe_crash(x: int) -> int:
        if crash[0]:
            crash[0] = False
            raise _Crash
        return x + 1

    pipeline = (
        Step.from_callable(aio, name="a1", event_loop="asyncio")
        >> Step.from_callable(maybe_crash)
        >> Step.from_callable(aio, name="a2", event_loop="asyncio")
    )
    runner = Flujo(pipeline, state_backend=InMemoryStateBackend())
    with pytest.raises(_Crash):
        await runner.run_async(0, run_id="r1")
    result = await runner.resume_async("r1")
    assert result.success and result.output == 3
    assert ran == ["aio0", "aio2"]


async def test_function_model_tool_calls_run_on_asyncio() -> None:
    calls: list[str] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        from pydantic_ai.messages import ToolCallPart, ToolReturnPart

        last = messages[-1].parts[-1]
        if isinstance(last, ToolReturnPart):
            return ModelResponse(parts=[TextPart(f"weather: {last.content}")])
        return ModelResponse(parts=[ToolCallPart("weather", {"city": "Lima"})])

    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def weather(city: str) -> str:
        await asyncio.sleep(0)  # an asyncio tool (an HTTP client would be here)
        calls.append(city)
        return "sunny"

    result = await Flujo(Step.from_callable(agent, name="w")).run_async("weather?")
    assert result.output.output == "weather: sunny"
    assert calls == ["Lima"]


def test_pure_trio_runs_import_neither_asyncio_nor_pydantic() -> None:
    import subprocess
    import sys

    code = (
        "import sys, flujo_actors\n"
        "from flujo_actors import Flujo, Step\n"
        "async def f(x): return x\n"
        "assert Flujo(Step.from_callable(f)).run(1).output == 1\n"
        "print([m for m in ('asyncio', 'trio_asyncio', 'pydantic', 'pydantic_ai', "
        "'flujo_actors.bridge.steps') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_runner_executor_cannot_place_an_asyncio_step() -> None:
    async def aio(x: str) -> str:
        return x

    nested = Step.parallel("fan", {"a": Step.from_callable(aio, event_loop="asyncio")})
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Flujo\(executor='process'\): step 'aio' runs on asyncio \(event_loop='asyncio'\), "
        r"in this process, and cannot run on an executor\. Give it placement='inline'\.$",
    ):
        Flujo(nested, executor="process")
    inline = Step.from_callable(aio, event_loop="asyncio", placement="inline")
    assert Flujo(inline, executor="process").run("kept here").output == "kept here"
