"""Step.branch_on's branch_input_mapper and branch_output_mapper around the chosen branch."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest

from flujo_actors import AnyStep, Flujo, PipelineContext, PipelineDefinitionError, Step, StepResult


@attrs.define
class Ctx(PipelineContext):
    unit: str = "cm"
    total: int = 0


async def run(step: AnyStep, data: Any) -> tuple[StepResult, Ctx]:
    result = await Flujo(step, context_model=Ctx).run_async(data)
    return result.step_history[-1], result.final_pipeline_context


def double(x: int) -> int:
    return x * 2


def branches() -> dict[str, Step]:
    return {"even": Step.from_callable(double, name="double", max_retries=0)}


def even(data: Any) -> str:
    return "even"


async def test_the_input_mapper_feeds_the_branch_and_sees_the_context() -> None:
    def pick_number(data: dict[str, int], context: Ctx) -> int:
        return data["n"] + len(context.unit)

    step = Step.branch_on("c", even, branches(), branch_input_mapper=pick_number)
    r, _ctx = await run(step, {"n": 3})
    assert r.success and r.output == 10
    assert r.step_history[0].name == "double" and r.step_history[0].output == 10


async def test_the_output_mapper_shapes_the_step_output_sync_or_async() -> None:
    async def with_unit(output: int, context: Ctx) -> str:
        return f"{output} {context.unit}"

    step = Step.branch_on("c", even, branches(), branch_output_mapper=with_unit)
    r, _ctx = await run(step, 4)
    assert r.output == "8 cm"
    assert r.step_history[0].output == 8  # the branch's own result is unchanged

    one_arg = Step.branch_on(
        "c",
        even,
        branches(),
        branch_input_mapper=lambda d: d + 1,
        branch_output_mapper=lambda out: -out,
    )
    assert (await run(one_arg, 4))[0].output == -10


async def test_the_default_branch_is_mapped_too() -> None:
    step = Step.branch_on(
        "c",
        lambda d: "missing",
        branches(),
        default_branch_pipeline=Step.from_callable(str, name="as_text"),
        branch_input_mapper=lambda d: d * 3,
        branch_output_mapper=lambda out: f"<{out}>",
    )
    r, _ctx = await run(step, 2)
    assert r.output == "<6>" and r.metadata["default_branch"] is True


async def test_a_failing_input_mapper_fails_the_step_before_any_branch_runs() -> None:
    def broken(data: Any) -> Any:
        raise KeyError("n")

    step = Step.branch_on("c", even, branches(), branch_input_mapper=broken)
    r, _ctx = await run(step, {})
    assert not r.success and r.step_history == [] and r.output is None
    assert r.feedback == "Conditional step 'c': branch_input_mapper raised KeyError: 'n'"


async def test_a_failing_output_mapper_fails_the_step_and_keeps_the_branch() -> None:
    def broken(output: int) -> int:
        raise ValueError(f"cannot map {output}")

    step = Step.branch_on("c", even, branches(), branch_output_mapper=broken)
    r, _ctx = await run(step, 2)
    assert not r.success and r.output is None
    assert (
        r.feedback == "Conditional step 'c': branch_output_mapper raised ValueError: cannot map 4"
    )
    assert [(c.name, c.output) for c in r.step_history] == [("double", 4)]


async def test_the_output_mapper_is_not_called_when_the_branch_fails() -> None:
    calls: list[Any] = []

    def fail(x: int) -> int:
        raise RuntimeError("branch down")

    step = Step.branch_on(
        "c",
        even,
        {"even": Step.from_callable(fail, name="fail", max_retries=0)},
        branch_output_mapper=calls.append,
    )
    r, _ctx = await run(step, 1)
    assert not r.success and calls == []
    assert r.feedback == (
        "Conditional step 'c': branch 'even' (key 'even') failed at step 'fail': "
        "RuntimeError: branch down"
    )


async def test_mappers_with_a_branch_that_updates_the_context() -> None:
    async def totals(n: int) -> dict[str, int]:
        return {"total": n}

    step = Step.branch_on(
        "c",
        even,
        {"even": Step.from_callable(totals, name="totals", updates_context=True)},
        branch_input_mapper=lambda d, ctx: d + 100,
        # The mapper sees the context as the branch left it.
        branch_output_mapper=lambda out, ctx: (out["total"], ctx.total),
    )
    r, ctx = await run(step, 1)
    assert r.output == (101, 101)
    assert ctx.total == 101  # the branch's raw output updated the context, not the mapped one


async def test_a_mapper_that_changes_the_run_identity_fails_the_step() -> None:
    def hijack(data: Any, context: Ctx) -> Any:
        context.initial_prompt = "other"
        return data

    step = Step.branch_on("c", even, branches(), branch_input_mapper=hijack)
    r, ctx = await run(step, 1)
    assert not r.success
    assert r.feedback is not None
    assert r.feedback.startswith(
        "Conditional step 'c': branch_input_mapper changed context.initial_prompt from "
    )
    assert ctx.initial_prompt == "1"


@pytest.mark.parametrize("arg", ["branch_input_mapper", "branch_output_mapper"])
def test_mappers_are_checked_when_the_step_is_built(arg: str) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match="^" + re.escape(f"Step 'c': {arg} must be callable, got 3.") + "$",
    ):
        Step.branch_on("c", even, branches(), **{arg: 3})  # type: ignore[arg-type]

    def three(a: Any, b: Any, c: Any) -> Any:
        return a

    with pytest.raises(
        PipelineDefinitionError,
        match=rf"^Step 'c': {arg} .*three has a required parameter 'c' that its call "
        r"\(value, context\) cannot fill; give it a default or bind it first with "
        r"functools\.partial\.$",
    ):
        Step.branch_on("c", even, branches(), **{arg: three})  # type: ignore[arg-type]
