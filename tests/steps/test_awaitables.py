"""A plain ``def`` wrapper around an ``async def`` (logging or retry decorators) still runs it.

Whatever user callable hands back an awaitable (agents, validators, plugins,
loop callbacks, conditions, routers, mappers) has it awaited, or the step
fails clearly: never a coroutine as data, never a "never awaited" warning
(``filterwarnings = error`` turns one into a test failure).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
import trio

from flujo_actors import (
    Flujo,
    MergeStrategy,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    PluginOutcome,
    Step,
    StepResult,
)
from flujo_actors.executors import InlineExecutor

F = TypeVar("F", bound=Callable[..., Any])


def logged(fn: F) -> F:
    """A typical sync decorator: forwards the call and returns what the function returns."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def bare(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The same without ``functools.wraps``: only the result's type can tell."""
    return lambda *args: fn(*args)


calls: list[str] = []


async def shout(data: str) -> str:
    await trio.lowlevel.checkpoint()
    calls.append(data)
    return data.upper()


async def shout_ctx(data: str, *, context: PipelineContext) -> str:
    await trio.lowlevel.checkpoint()
    context.scratchpad["seen"] = data
    return data.upper()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


def last(result: Any) -> StepResult:
    r: StepResult = result.step_history[-1]
    return r


@pytest.mark.parametrize("wrap", [logged, bare], ids=["wraps", "bare"])
async def test_a_sync_wrapper_around_an_async_agent_runs_it(
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> None:
    result = await Flujo(Step.from_callable(wrap(shout), name="s")).run_async("hi")
    assert result.success
    assert result.output == "HI"
    assert calls == ["hi"]


async def test_the_wrapped_agent_still_gets_its_context() -> None:
    result = await Flujo(Step.from_callable(logged(shout_ctx), name="s")).run_async("hi")
    assert result.output == "HI"
    assert result.final_pipeline_context.scratchpad == {"seen": "hi"}


async def test_a_wrapped_agent_that_fails_is_retried_like_any_other() -> None:
    attempts: list[int] = []

    async def flaky(data: str) -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise RuntimeError("first try fails")
        return data

    step = Step.from_callable(bare(flaky), name="f", max_retries=1)
    result = await Flujo(step).run_async("x")
    assert result.success and result.output == "x"
    assert last(result).attempts == 2


async def test_a_wrapped_async_method_of_an_agent_object_runs() -> None:
    class Agent:
        @logged
        async def run(self, data: str) -> str:
            return data * 2

    result = await Flujo(Step.from_callable(Agent(), name="a")).run_async("ab")
    assert result.output == "abab"


async def test_an_async_agent_returning_a_coroutine_is_awaited_through() -> None:
    async def outer(data: str) -> Any:
        return shout(data)  # a coroutine as its return value

    result = await Flujo(Step.from_callable(outer)).run_async("hi")
    assert result.output == "HI"


async def test_a_sync_wrapper_around_a_streaming_agent_streams() -> None:
    async def words(data: str) -> AsyncIterator[str]:
        for w in data.split():
            yield w + " "

    runner = Flujo(Step.from_callable(bare(words), name="w"))
    items = [item async for item in runner.stream_async("a b")]
    assert items[:-1] == ["a ", "b "]
    assert items[-1].output == "a b "


async def test_a_wrapped_async_agent_placed_on_an_executor_runs() -> None:
    step = Step.from_callable(logged(shout), name="s", placement=InlineExecutor())
    result = await Flujo(step).run_async("hi")
    assert result.output == "HI"
    step = Step.from_callable(bare(shout), name="b", placement=InlineExecutor())
    result = await Flujo(step).run_async("yo")
    assert result.output == "YO"


async def test_wrapped_async_validators_reject() -> None:
    async def never(output: str, context: Any) -> bool:
        await trio.lowlevel.checkpoint()
        return False

    step = Step.from_callable(shout, name="v", max_retries=0, validators=[bare(never)])
    result = await Flujo(step).run_async("hi")
    assert not result.success
    assert last(result).feedback == (
        "Validation failed after max retries: validator bare.<locals>.<lambda> returned False"
    )


async def test_wrapped_async_plugins_are_awaited() -> None:
    async def replace(output: str, context: Any) -> PluginOutcome:
        await trio.lowlevel.checkpoint()
        return PluginOutcome(success=True, new_solution=output + "!")

    async def reject(output: str, context: Any) -> PluginOutcome:
        return PluginOutcome(success=False, feedback="too loud")

    ok = Step.from_callable(shout, name="p", plugins=[logged(replace)])
    assert (await Flujo(ok).run_async("hi")).output == "HI!"
    bad = Step.from_callable(shout, name="q", max_retries=0, plugins=[logged(reject)])
    result = await Flujo(bad).run_async("hi")
    assert last(result).feedback == "Plugin execution failed after max retries: too loud"


async def test_a_wrapped_async_exit_condition_is_awaited_every_iteration() -> None:
    async def inc(n: int) -> int:
        return n + 1

    async def reached(out: int, ctx: Any) -> bool:
        await trio.lowlevel.checkpoint()
        return out >= 3

    loop = Step.loop_until(
        "l",
        Step.from_callable(inc),
        bare(reached),
        max_loops=10,
        initial_input_to_loop_body_mapper=bare(logged(_async_identity)),
        iteration_input_mapper=logged(_async_add_zero),
        loop_output_mapper=bare(_async_identity),
    )
    result = await Flujo(loop).run_async(0)
    assert result.output == 3
    assert last(result).metadata["iterations"] == 3


async def _async_identity(value: Any, ctx: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return value


async def _async_add_zero(value: int, ctx: Any, iteration: int) -> int:
    await trio.lowlevel.checkpoint()
    return value + 0


async def test_a_wrapped_async_condition_and_router_choose() -> None:
    async def pick(data: str, ctx: Any) -> str:
        return "b"

    async def route(data: str) -> list[str]:
        return ["b"]

    branches: dict[str, Step | Pipeline] = {
        "a": Step.from_callable(shout, name="a"),
        "b": Step.from_callable(shout, name="b"),
    }
    cond = Step.branch_on("c", bare(pick), branches)
    result = await Flujo(cond).run_async("hi")
    assert last(result).metadata["executed_branch_key"] == "b"
    router = Step.dynamic_parallel_branch("r", bare(route), branches)
    result = await Flujo(router).run_async("hi")
    assert result.output == {"b": "HI"}


async def test_a_merge_callable_returning_a_coroutine_fails_the_step_clearly() -> None:
    async def merge(main: Any, branch: Any) -> None:
        main.scratchpad.update(branch.scratchpad)

    par = Step.parallel("p", {"a": Step.from_callable(shout_ctx)}, merge_strategy=bare(merge))
    result = await Flujo(par).run_async("hi")
    assert not result.success
    assert last(result).feedback == (
        "Step 'p': merge_strategy bare.<locals>.<lambda> raised TypeError: it returned an awaitable "
        "(coroutine); merging runs synchronously, so merge_strategy must be a plain function "
        "that merges before it returns; the context was left as it was before the branches ran."
    )
    assert result.final_pipeline_context.scratchpad == {}


def test_a_wrapped_async_merge_callable_is_refused_at_build_time() -> None:
    async def merge(main: Any, branch: Any) -> None:
        return None

    with pytest.raises(PipelineDefinitionError, match=r"^Step 'p': merge_strategy must be a plain"):
        Step.parallel("p", {"a": Step.from_callable(shout)}, merge_strategy=logged(merge))  # type: ignore[arg-type]
    assert Step.parallel("p", {"a": Step.from_callable(shout)}).merge_strategy is (
        MergeStrategy.CONTEXT_UPDATE
    )


async def test_a_wrapped_agent_inside_a_nested_pipeline_runs() -> None:
    inner = Pipeline.from_step(Step.from_callable(logged(shout), name="in"))
    result = await Flujo(inner.as_step("nested")).run_async("hi")
    assert result.output == "HI"


async def test_a_wrapped_async_agent_on_the_asyncio_loop_runs() -> None:
    import asyncio

    async def on_asyncio(data: str) -> str:
        await asyncio.sleep(0)
        assert asyncio.current_task() is not None
        return data.upper()

    step = Step.from_callable(logged(on_asyncio), name="a", event_loop="asyncio")
    assert (await Flujo(step).run_async("hi")).output == "HI"
    step = Step.from_callable(bare(on_asyncio), name="b", event_loop="asyncio")
    assert (await Flujo(step).run_async("yo")).output == "YO"


class Boxed:
    """A plain class instance (not in the PLAIN fast path): a value, never awaited."""

    def __init__(self, value: str) -> None:
        self.value = value


class Later:
    """A custom awaitable class: ``__await__`` on the type makes it LATE."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __await__(self) -> Any:
        return self._resolve().__await__()

    async def _resolve(self) -> Boxed:
        await trio.lowlevel.checkpoint()
        return Boxed(self.value)


async def test_value_types_are_remembered_and_awaitables_still_awaited() -> None:
    # A value type seen once takes the fast path; an awaitable type never does.
    keep = bare(lambda data: Boxed(data))
    wait = bare(lambda data: Later(data))
    for _ in range(2):
        kept = await Flujo(Step.from_callable(keep, name="keep")).run_async("a")
        assert type(kept.output) is Boxed
        assert kept.output.value == "a"
        waited = await Flujo(Step.from_callable(wait, name="wait")).run_async("b")
        assert type(waited.output) is Boxed
        assert waited.output.value == "b"


async def test_the_value_type_memo_is_bounded() -> None:
    from flujo_actors.run import invoke

    kinds = [type(f"V{i}", (), {}) for i in range(invoke._VALUES_MAX + 10)]
    for kind in kinds:
        assert not invoke._late(kind())
    assert len(invoke._VALUES) <= invoke._VALUES_MAX
    assert not invoke._late(Boxed("x"))
    assert invoke._late(Later("y"))
    assert Later not in invoke._VALUES
