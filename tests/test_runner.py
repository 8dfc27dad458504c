"""The runner: running pipelines, context creation, updates_context, failures, usage sums."""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import (
    ExecutionFrame,
    Flujo,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    PipelineResult,
    Step,
    StepResult,
    step,
)
from flujo_actors.testing import StubAgent, UsageOutput


@attrs.define
class NotesContext(PipelineContext):
    notes: list[str] = attrs.Factory(list)
    topic: str = "none"
    count: int = 0


@step
async def inc(x: int) -> int:
    return x + 1


@step
async def double(x: int) -> int:
    return x * 2


def test_sync_run_returns_a_pipeline_result() -> None:
    result = Flujo(inc >> double >> inc).run(1)
    assert isinstance(result, PipelineResult)
    assert result.success is True
    assert result.output == 5
    assert [r.name for r in result.step_history] == ["inc", "double", "inc"]
    assert [r.output for r in result.step_history] == [2, 4, 5]
    assert all(r.success and r.attempts == 1 and r.latency_s >= 0 for r in result.step_history)
    assert result.total_cost_usd == Decimal(0) and result.total_tokens == 0
    assert result.run_id and result.final_pipeline_context.run_id == result.run_id


async def test_run_inside_trio_raises_with_the_fix() -> None:
    with pytest.raises(
        RuntimeError,
        match=r"^Flujo\.run\(\) cannot be called inside a running trio event loop; use `await runner\.run_async\(\.\.\.\)` instead\.$",
    ):
        Flujo(inc).run(1)


async def test_run_async_with_explicit_run_id() -> None:
    result = await Flujo(inc).run_async(41, run_id="run-7")
    assert result.output == 42
    assert result.run_id == "run-7"
    assert result.final_pipeline_context.run_id == "run-7"


async def test_single_step_runner_and_sync_agents_and_objects() -> None:
    def sync_upper(s: str) -> str:
        return s.upper()

    class Exclaim:
        async def run(self, data: str, **kwargs: Any) -> str:
            return data + "!"

    pipeline = Step.from_callable(sync_upper) >> Step(name="exclaim", agent=Exclaim())
    assert (await Flujo(pipeline).run_async("hi")).output == "HI!"
    assert (await Flujo(Step.from_callable(sync_upper)).run_async("a")).output == "A"


async def test_context_is_created_by_the_runner_with_initial_prompt() -> None:
    seen: list[Any] = []

    async def look(data: Any, *, context: NotesContext) -> Any:
        seen.append(context)
        return data

    runner = Flujo(
        Step.from_callable(look),
        context_model=NotesContext,
        initial_context_data={"topic": "trio"},
    )
    result = await runner.run_async("tell me")
    ctx = result.final_pipeline_context
    assert isinstance(ctx, NotesContext)
    assert seen == [ctx]
    assert ctx.initial_prompt == "tell me"
    assert ctx.topic == "trio"
    assert ctx.run_id == result.run_id
    # A non-string input still sets initial_prompt, as its str().
    other = await runner.run_async(12)
    assert other.final_pipeline_context.initial_prompt == "12"
    # Each run gets its own context.
    assert other.final_pipeline_context is not ctx


async def test_resources_are_passed_only_to_agents_that_accept_them() -> None:
    got: list[Any] = []

    async def uses(data: int, *, resources: dict[str, int]) -> int:
        got.append(resources)
        return data + resources["offset"]

    resources = {"offset": 10}
    result = await Flujo(inc >> Step.from_callable(uses), resources=resources).run_async(0)
    assert result.output == 11
    assert got == [resources] and got[0] is resources


def test_bad_runner_arguments() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Flujo: context_model must be an attrs class \(subclass PipelineContext with @attrs\.define\) or a pydantic model \(subclass flujo_actors\.pydantic\.PipelineContext\), got <class 'dict'>\.$",
    ):
        Flujo(inc, context_model=dict)

    @attrs.define
    class Bare:
        x: int = 0

    with pytest.raises(
        PipelineDefinitionError, match=r"lacks the field\(s\) \['initial_prompt', 'run_id'\]"
    ):
        Flujo(inc, context_model=Bare)
    with pytest.raises(
        PipelineDefinitionError, match=r"^Flujo: expected a Step or a Pipeline, got 3\.$"
    ):
        Flujo(3)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match=r"usage_limits must be a UsageLimits"):
        Flujo(inc, usage_limits={"total_cost_usd_limit": 1})  # type: ignore[arg-type]


async def test_unknown_initial_context_field_is_a_clear_error() -> None:
    # Reported when the runner is built, not when a run starts.
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Flujo: initial_context_data has field\(s\) \['nope'\] that the context model "
        r"NotesContext does not define; its fields are \[",
    ):
        Flujo(inc, context_model=NotesContext, initial_context_data={"nope": 1})


async def test_updates_context_with_mapping_and_attrs_output() -> None:
    @attrs.define
    class Patch:
        topic: str
        count: int

    async def as_dict(data: str) -> dict[str, Any]:
        return {"topic": data, "count": 3}

    async def as_attrs(data: dict[str, Any]) -> Patch:
        return Patch(topic="attrs", count=data["count"] + 1)

    runner = Flujo(
        Step.from_callable(as_dict, updates_context=True)
        >> Step.from_callable(as_attrs, updates_context=True),
        context_model=NotesContext,
    )
    result = await runner.run_async("first")
    ctx = result.final_pipeline_context
    assert (ctx.topic, ctx.count) == ("attrs", 4)
    assert result.output == Patch(topic="attrs", count=4)


async def test_updates_context_unknown_field_fails_the_step_clearly() -> None:
    async def bad(data: Any) -> dict[str, Any]:
        return {"topic": "kept?", "mood": "happy"}

    after = StubAgent(["never"])
    runner = Flujo(
        Step.from_callable(bad, updates_context=True) >> Step(name="after", agent=after),
        context_model=NotesContext,
    )
    result = await runner.run_async("x")
    assert result.success is False
    last = result.step_history[-1]
    assert last.name == "bad" and last.success is False
    assert last.feedback == (
        "Step 'bad' has updates_context=True but its output has ['mood'], which is not a "
        "field of NotesContext (fields: ['count', 'executed_branches', 'initial_prompt', "
        "'notes', 'run_id', 'scratchpad', 'topic']). Add the field to the context model "
        "or drop the key."
    )
    # Nothing was half-applied, and the next step never ran.
    assert result.final_pipeline_context.topic == "none"
    assert after.calls == 0
    assert len(result.step_history) == 1


async def test_updates_context_needs_mapping_or_attrs() -> None:
    runner = Flujo(Step.from_callable(inc.agent, name="n", updates_context=True))
    result = await runner.run_async(1)
    assert result.success is False
    assert result.step_history[-1].feedback == (
        "Step 'n' has updates_context=True but returned int 2; return a dict, an attrs "
        "instance or a pydantic model whose keys are context fields."
    )


async def test_failing_step_ends_the_run_with_the_failed_step_last() -> None:
    async def boom(data: int) -> int:
        raise ValueError(f"cannot handle {data}")

    never = StubAgent([0])
    pipeline = inc >> Step.from_callable(boom, max_retries=0) >> Step(name="never", agent=never)
    result = await Flujo(pipeline).run_async(1)
    assert result.success is False
    assert result.output is None
    assert [r.name for r in result.step_history] == ["inc", "boom"]
    failed = result.step_history[-1]
    assert failed.success is False
    assert failed.feedback == "ValueError: cannot handle 2"
    assert failed.metadata["error_type"] == "ValueError"
    assert never.calls == 0


async def test_agent_context_mutations_are_visible_to_later_steps() -> None:
    async def note(data: str, *, context: NotesContext) -> str:
        context.notes.append(data)
        context.scratchpad["last"] = data
        return data + "+"

    s1 = Step.from_callable(note, name="n1")
    s2 = Step.from_callable(note, name="n2")
    result = await Flujo(s1 >> s2, context_model=NotesContext).run_async("a")
    ctx = result.final_pipeline_context
    assert ctx.notes == ["a", "a+"]
    assert ctx.scratchpad == {"last": "a+"}


async def test_usage_is_recorded_per_step_and_summed_exactly() -> None:
    async def spend(data: int) -> UsageOutput:
        return UsageOutput(data, cost_usd=0.1, token_counts=7)

    async def unwrap(data: UsageOutput) -> int:
        return int(data.value)

    pipeline = Pipeline(steps=[Step.from_callable(spend, name=f"s{i}") for i in range(3)])
    # Outputs flow on unchanged: the output object itself is the step's output.
    runner = Flujo(Step.from_callable(spend) >> Step.from_callable(unwrap))
    r1 = await runner.run_async(5)
    assert r1.output == 5
    assert r1.step_history[0].output == UsageOutput(5, 0.1, 7)
    assert r1.step_history[0].cost_usd == Decimal("0.1")
    assert r1.step_history[0].token_counts == 7
    r3 = await Flujo(pipeline).run_async(1)
    assert r3.total_cost_usd == Decimal("0.3")  # not 0.30000000000000004
    assert r3.total_tokens == 21


@given(
    costs=st.lists(
        st.one_of(
            st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
            st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False),
            st.integers(min_value=0, max_value=10**6),
        ),
        min_size=1,
        max_size=12,
    ),
    tokens=st.integers(min_value=0, max_value=10**6),
)
def test_usage_sum_is_exact(costs: list[Any], tokens: int) -> None:
    async def main() -> PipelineResult:
        steps = []
        for i, c in enumerate(costs):

            async def spend(data: Any, c: Any = c, i: int = i) -> UsageOutput:
                return UsageOutput(i, cost_usd=c, token_counts=tokens)

            steps.append(Step.from_callable(spend, name=f"s{i}"))
        return await Flujo(Pipeline(steps=steps)).run_async(0)

    result = trio.run(main)
    # The expected sums in exact arithmetic (the ambient 28 digits would round them).
    with decimal.localcontext(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN):
        expected = sum(
            (Decimal(repr(c)) if isinstance(c, float) else Decimal(c) for c in costs), Decimal(0)
        )
        assert sum((r.cost_usd for r in result.step_history), Decimal(0)) == expected
    assert result.total_cost_usd == expected
    assert result.total_tokens == tokens * len(costs)


async def test_cancelling_a_run_leaves_no_task_behind(autojump_clock: trio.abc.Clock) -> None:
    started = trio.Event()

    async def slow(data: int) -> int:
        started.set()
        await trio.sleep(100)
        return data

    runner = Flujo(inc >> Step.from_callable(slow))
    before = _task_count()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run_async, 1)
        await started.wait()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
        # The run's task: its step actors take their turns on it, and the governor
        # starts only at the first usage report (none here).
        assert _task_count() == before + 1
    # Nothing of the run survived its nursery.
    assert trio.current_time() < 100
    assert _task_count() == before


def _task_count() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())  # type: ignore[arg-type]


def test_execution_frame_is_frozen_and_generic() -> None:
    s = inc
    ctx = PipelineContext(initial_prompt="p", run_id="r")
    frame: ExecutionFrame[PipelineContext] = ExecutionFrame(step=s, data=1, context=ctx)
    assert frame.context is ctx and frame.stream is False and frame.breach_event is None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        frame.data = 2  # type: ignore[misc]
    assert ExecutionFrame[PipelineContext] is not None


def test_step_result_defaults() -> None:
    r = StepResult("x")
    assert (r.success, r.attempts, r.cost_usd, r.token_counts, r.metadata, r.step_history) == (
        True,
        1,
        Decimal(0),
        0,
        {},
        [],
    )
