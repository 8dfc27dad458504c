"""Nested pipelines, nesting at depth, and cancellation of everything beneath a run."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from flujo_actors import (
    Flujo,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    PipelineResult,
    PipelineStep,
    Step,
    StepResult,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flujo_actors.steps.kinds import AnyStep
    from tests.task_tree import all_tasks  # mypy names test modules by path
else:
    from task_tree import all_tasks  # pytest puts tests/ on sys.path


@attrs.define
class Ctx(PipelineContext):
    trail: list[str] = attrs.Factory(list)
    level: int = 0


@attrs.define
class Inner(PipelineContext):
    topic: str = attrs.field(kw_only=True)  # required: no default
    seen: list[str] = attrs.Factory(list)


def tracer(tag: str) -> Step:
    async def trace(data: Any, context: Any) -> str:
        context.trail.append(tag)
        return f"{data}>{tag}"

    return Step.from_callable(trace, name=tag, max_retries=0)


async def run(step: AnyStep | Pipeline, data: Any = "in", **kwargs: Any) -> PipelineResult:
    return await Flujo(step, context_model=Ctx, **kwargs).run_async(data)


async def test_an_inheriting_nested_pipeline_reads_and_writes_the_parent_context() -> None:
    sub = (tracer("s1") >> tracer("s2")).as_step("sub")
    assert isinstance(sub, PipelineStep)
    assert sub.inherit_context is True
    result = await run(tracer("before") >> sub >> tracer("after"))
    assert result.output == "in>before>s1>s2>after"
    assert result.final_pipeline_context.trail == ["before", "s1", "s2", "after"]
    r = result.step_history[1]
    assert (r.name, r.success, r.output, r.branch_context) == ("sub", True, "in>before>s1>s2", None)
    assert [c.name for c in r.step_history] == ["s1", "s2"]


async def test_a_non_inheriting_nested_pipeline_gets_a_fresh_context_like_the_runner_builds() -> (
    None
):
    seen: list[Any] = []

    async def look(data: Any, context: Ctx) -> str:
        seen.append(context)
        context.trail.append("inside")
        context.level = 9
        return "done"

    async def prepare(data: Any, context: Ctx) -> int:
        context.trail.append("outer")
        return 42

    sub = Pipeline.from_step(Step.from_callable(look, name="look")).as_step(
        "sub", inherit_context=False
    )
    result = await run(Step.from_callable(prepare, name="prepare") >> sub)
    assert result.success
    (inner,) = seen
    assert type(inner) is Ctx
    assert inner.initial_prompt == "42"  # from the nested step's input, like the runner
    assert inner.run_id == result.run_id
    assert (inner.trail, inner.level, inner.scratchpad) == (["inside"], 9, {})
    outer = result.final_pipeline_context
    assert (outer.trail, outer.level) == (["outer"], 0)
    assert result.step_history[1].branch_context is inner


async def test_flujo_as_step_uses_the_inner_runner_context_model_and_data() -> None:
    seen: list[Inner] = []

    async def look(data: Any, context: Inner) -> str:
        seen.append(context)
        context.seen.append(data)
        return f"{context.topic}:{data}"

    inner_runner = Flujo(
        Step.from_callable(look, name="look"),
        context_model=Inner,
        initial_context_data={"topic": "billing"},
    )
    sub = inner_runner.as_step("billing")
    assert (sub.inherit_context, sub.context_model) == (False, Inner)
    result = await run(tracer("outer") >> sub)
    assert result.output == "billing:in>outer"
    (ctx,) = seen
    assert (ctx.topic, ctx.seen, ctx.initial_prompt) == ("billing", ["in>outer"], "in>outer")
    assert ctx.run_id == result.run_id
    assert type(result.final_pipeline_context) is Ctx
    assert result.final_pipeline_context.trail == ["outer"]
    assert result.step_history[1].branch_context is ctx


def test_a_fresh_context_that_cannot_be_built_is_refused_when_the_runner_is_built() -> None:
    # It used to fail the step mid-run; the same construction is now tried by Flujo(...).
    sub = Pipeline.from_step(tracer("x")).as_step("sub", inherit_context=False)
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Nested pipeline step 'sub': initial_context_data cannot build context Inner: "
        r"TypeError: .*'topic'.*\. Pass values the model accepts \(and every field it "
        r"requires\)\.$",
    ):
        Flujo(sub, context_model=Inner, initial_context_data={"topic": "t"})


async def test_a_failing_nested_step_fails_the_nested_pipeline_and_the_run() -> None:
    async def broken(data: Any) -> None:
        raise LookupError("no such record")

    sub = (tracer("ok") >> Step.from_callable(broken, name="broken", max_retries=0)).as_step("sub")
    result = await run(sub >> tracer("never"))
    assert not result.success
    assert [r.name for r in result.step_history] == ["sub"]
    r = result.step_history[0]
    assert r.feedback == (
        "Nested pipeline step 'sub' failed at step 'broken': LookupError: no such record"
    )
    assert r.output is None
    assert [(c.name, c.success) for c in r.step_history] == [("ok", True), ("broken", False)]


async def test_streaming_reaches_the_caller_through_nested_and_conditional_steps() -> None:
    async def words(data: str) -> AsyncIterator[str]:
        for w in data.split():
            yield w + " "

    talk = Step.from_callable(words, name="talk")
    nested = Pipeline.from_step(Step.branch_on("pick", lambda d, c: "t", {"t": talk})).as_step(
        "sub"
    )
    items = [item async for item in Flujo(nested).stream_async("a b c")]
    assert items[:-1] == ["a ", "b ", "c "]
    final = items[-1]
    assert isinstance(final, PipelineResult)
    assert final.output == "a b c "


# -- nesting at depth -----------------------------------------------------------------------


def deep_pipeline() -> AnyStep:
    """A parallel inside a loop inside a conditional inside a nested pipeline."""

    def branch(tag: str, factor: int) -> Step:
        async def work(x: int, context: Ctx) -> int:
            context.scratchpad[f"{tag}{x}"] = x * factor
            return x * factor

        return Step.from_callable(work, name=tag, max_retries=0)

    async def total(outputs: dict[str, int], context: Ctx) -> int:
        context.level += 1
        return sum(outputs.values())

    fan = Step.parallel("fan", {"a": branch("a", 2), "b": branch("b", 3)})
    loop = Step.loop_until(
        "loop",
        fan >> Step.from_callable(total, name="total"),
        lambda out, ctx: ctx.level >= 3,
    )
    cond = Step.branch_on(
        "cond",
        lambda d, c: "odd" if d % 2 else "even",
        {"odd": loop},
        default_branch_pipeline=tracer("even"),
    )
    return Pipeline.from_step(cond).as_step("sub")


async def test_parallel_in_loop_in_conditional_in_nested_pipeline() -> None:
    result = await run(deep_pipeline(), 1)
    assert result.success
    # 1 -> 2+3=5 -> 10+15=25 -> 50+75=125
    assert result.output == 125
    ctx = result.final_pipeline_context
    assert ctx.level == 3
    assert ctx.scratchpad == {"a1": 2, "b1": 3, "a5": 10, "b5": 15, "a25": 50, "b25": 75}
    sub = result.step_history[0]
    (cond,) = sub.step_history
    assert cond.name == "cond"
    assert cond.metadata == {"executed_branch_key": "odd", "default_branch": False}
    (loop,) = cond.step_history
    assert loop.metadata == {"iterations": 3, "exit_reason": "condition"}
    assert [c.name for c in loop.step_history] == ["fan", "total"] * 3
    fan = loop.step_history[2]
    assert fan.output == {"a": 10, "b": 15}
    assert [(b.name, b.output) for b in fan.step_history] == [("a", 10), ("b", 15)]
    assert fan.step_history[0].branch_context.scratchpad == {"a1": 2, "b1": 3, "a5": 10}
    even = await run(deep_pipeline(), 2)
    assert even.output == "2>even"


async def test_usage_at_depth_reaches_the_one_governor_exactly() -> None:
    async def paid(x: Any) -> UsageOutput:
        return UsageOutput(1, cost_usd=0.1, token_counts=1)

    fan = Step.parallel("fan", {f"b{i}": Step.from_callable(paid, name=f"b{i}") for i in range(5)})
    loop = Step.loop_until("loop", fan, lambda out, ctx: True)
    cond = Step.branch_on("cond", lambda d, c: 1, {1: loop})
    result = await run(Pipeline.from_step(cond).as_step("sub"))
    assert result.total_cost_usd == Decimal("0.5")
    assert result.step_history[0].cost_usd == Decimal("0.5")


# -- cancellation -----------------------------------------------------------------------------


def sleeper(tag: str, effects: list[str]) -> Step:
    async def sleep_then_record(x: Any) -> Any:
        await trio.sleep(10)
        effects.append(tag)
        return x

    return Step.from_callable(sleep_then_record, name=tag)


async def test_cancelling_a_run_cancels_every_branch_beneath_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    effects: list[str] = []
    fan = Step.parallel("fan", {f"b{i}": sleeper(f"b{i}", effects) for i in range(5)})
    loop = Step.loop_until("loop", fan, lambda out, ctx: True)
    cond = Step.branch_on("cond", lambda d, c: "go", {"go": loop})
    inner_router = Step.dynamic_parallel_branch(
        "route", lambda d: ["x", "y"], {"x": sleeper("x", effects), "y": cond}
    )
    runner = Flujo(Pipeline.from_step(inner_router).as_step("sub"))
    before = len(all_tasks())
    started = trio.Event()

    async def watch() -> None:
        await trio.testing.wait_all_tasks_blocked()
        started.set()

    with trio.move_on_after(2.5) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await runner.run_async("go")
    assert scope.cancelled_caught
    assert started.is_set()
    assert trio.current_time() == 2.5
    assert len(all_tasks()) == before  # nothing of the run is left
    await trio.sleep(100)  # virtual time: no cancelled leaf wakes up later
    assert effects == []


async def test_a_usage_breach_in_a_deep_branch_cancels_its_siblings(
    autojump_clock: trio.abc.Clock,
) -> None:
    effects: list[str] = []

    async def expensive(x: Any) -> UsageOutput:
        await trio.sleep(1)
        return UsageOutput("spent", cost_usd=5)

    fan = Step.parallel(
        "fan",
        {"pay": Step.from_callable(expensive, name="pay"), "slow": sleeper("slow", effects)},
    )
    runner = Flujo(
        Pipeline.from_step(Step.branch_on("c", lambda d, c: 0, {0: fan})).as_step("sub"),
        usage_limits=UsageLimits(total_cost_usd_limit=1),
    )
    with pytest.raises(UsageLimitExceededError) as info:
        await runner.run_async("x")
    assert trio.current_time() == 1.0
    assert info.value.result is not None
    assert info.value.result.total_cost_usd == Decimal(5)
    await trio.sleep(100)
    assert effects == []


# -- build-time validation ------------------------------------------------------------------


def test_bad_nested_definitions_fail_at_build() -> None:
    p = Pipeline.from_step(tracer("x"))
    with pytest.raises(PipelineDefinitionError) as info:
        p.as_step("")
    assert str(info.value) == (
        "Step name must be a non-empty string, got ''. Pass name='...' (e.g. the agent's purpose)."
    )
    with pytest.raises(PipelineDefinitionError) as info:
        p.as_step("sub", inherit_context="yes")  # type: ignore[arg-type]
    assert str(info.value) == "Step 'sub': inherit_context must be True or False, got 'yes'."
    with pytest.raises(PipelineDefinitionError) as info:
        PipelineStep(name="sub", pipeline=3)  # type: ignore[arg-type]
    assert str(info.value) == "Step 'sub': pipeline must be a Step or a Pipeline, got 3."
    with pytest.raises(PipelineDefinitionError) as info:
        PipelineStep(name="sub", pipeline=p, initial_context_data=[1])  # type: ignore[arg-type]
    assert str(info.value) == (
        "Step 'sub': initial_context_data must be a mapping of field -> value, got [1]."
    )


def test_a_step_is_accepted_where_a_pipeline_is_expected() -> None:
    sub = PipelineStep(name="sub", pipeline=tracer("x"))  # type: ignore[arg-type]
    assert isinstance(sub.pipeline, Pipeline)
    assert [s.name for s in sub.pipeline.steps] == ["x"]


async def test_nested_results_are_step_results_all_the_way_down() -> None:
    result = await run(deep_pipeline(), 1)

    def walk(r: StepResult) -> int:
        assert isinstance(r, StepResult)
        return 1 + sum(walk(c) for c in r.step_history)

    assert walk(result.step_history[0]) == 3 + 3 * (
        1 + 2 * 2 + 1
    )  # sub, cond, loop; 3 x (fan, 2 x (branch, agent), total)
