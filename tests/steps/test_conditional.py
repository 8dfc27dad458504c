"""Conditional steps: branch selection, default branch, failures, context propagation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest

from flujo_actors import (
    ConditionalStep,
    Flujo,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    PipelineResult,
    Step,
)

if TYPE_CHECKING:
    from flujo_actors.steps.kinds import AnyStep


@attrs.define
class Ctx(PipelineContext):
    route: str = "a"
    trail: list[str] = attrs.Factory(list)


async def run(step: AnyStep | Pipeline, data: Any = 1, **kwargs: Any) -> PipelineResult:
    return await Flujo(step, context_model=Ctx, **kwargs).run_async(data)


def tagger(tag: str) -> Step:
    async def tag_it(data: Any, context: Ctx) -> str:
        context.trail.append(tag)
        context.scratchpad[tag] = data
        return f"{tag}({data})"

    return Step.from_callable(tag_it, name=tag, max_retries=0)


async def explode(data: Any) -> None:
    raise RuntimeError("branch broke")


async def add_one(x: int) -> int:
    return x + 1


def by_parity(data: int, context: Ctx) -> str:
    return "even" if data % 2 == 0 else "odd"


async def test_the_selected_branch_runs_on_the_data_and_gives_the_output() -> None:
    cond = Step.branch_on(
        "parity", by_parity, {"even": tagger("E"), "odd": tagger("O") >> tagger("O2")}
    )
    even = await run(cond, 4)
    odd = await run(cond, 3)
    assert even.output == "E(4)"
    assert odd.output == "O2(O(3))"
    r = odd.step_history[0]
    assert (r.name, r.success, r.attempts, r.feedback) == ("parity", True, 1, None)
    assert r.metadata == {"executed_branch_key": "odd", "default_branch": False}
    assert [c.name for c in r.step_history] == ["O", "O2"]
    assert odd.final_pipeline_context.trail == ["O", "O2"]


async def test_the_condition_can_read_the_context() -> None:
    async def set_route(data: Any, context: Ctx) -> Any:
        context.route = "b"
        return data

    cond = Step.branch_on(
        "route", lambda data, ctx: ctx.route, {"a": tagger("A"), "b": tagger("B")}
    )
    result = await run(Step.from_callable(set_route, name="set") >> cond)
    assert result.output == "B(1)"


async def test_non_string_keys_match_by_equality() -> None:
    cond = Step.branch_on("k", lambda d, c: d > 0, {True: tagger("pos"), False: tagger("neg")})
    assert (await run(cond, 5)).output == "pos(5)"
    assert (await run(cond, -5)).output == "neg(-5)"


async def test_the_default_branch_runs_when_no_key_matches() -> None:
    cond = Step.branch_on(
        "pick",
        lambda d, c: d,
        {"known": tagger("K")},
        default_branch_pipeline=tagger("D"),
    )
    result = await run(cond, "other")
    assert result.output == "D(other)"
    assert result.step_history[0].metadata == {
        "executed_branch_key": "other",
        "default_branch": True,
    }
    assert (await run(cond, ["unhashable"])).output == "D(['unhashable'])"


async def test_no_match_and_no_default_fails_naming_the_key() -> None:
    cond = Step.branch_on("pick", lambda d, c: d, {"x": tagger("X"), "y": tagger("Y")})
    result = await run(cond >> Step.from_callable(add_one), "zzz")
    assert not result.success
    assert [r.name for r in result.step_history] == ["pick"]
    r = result.step_history[0]
    assert r.feedback == (
        "Conditional step 'pick': no branch matches key 'zzz' (branches: ['x', 'y']) and "
        "there is no default_branch_pipeline; add the key or a default_branch_pipeline."
    )
    assert (r.output, r.step_history) == (None, [])


async def test_a_raising_condition_fails_the_step() -> None:
    def broken(data: Any, context: Ctx) -> str:
        raise KeyError("route")

    result = await run(Step.branch_on("pick", broken, {"x": tagger("X")}))
    assert result.step_history[0].feedback == (
        "Conditional step 'pick': condition_callable raised KeyError: 'route'"
    )


async def test_a_failing_branch_fails_the_step_naming_the_key_and_the_child() -> None:
    cond = Step.branch_on(
        "pick",
        lambda d, c: "bad",
        {"bad": tagger("T") >> Step.from_callable(explode, name="explode", max_retries=0)},
    )
    result = await run(cond)
    r = result.step_history[0]
    assert not r.success
    assert r.feedback == (
        "Conditional step 'pick': branch 'bad' (key 'bad') failed at step 'explode': "
        "RuntimeError: branch broke"
    )
    assert [(c.name, c.success) for c in r.step_history] == [("T", True), ("explode", False)]
    assert r.output is None


async def test_a_failing_default_branch_says_so() -> None:
    cond = Step.branch_on(
        "pick",
        lambda d, c: 7,
        {"x": tagger("X")},
        default_branch_pipeline=Step.from_callable(explode, name="explode", max_retries=0),
    )
    r = (await run(cond)).step_history[0]
    assert r.feedback == (
        "Conditional step 'pick': default branch (key 7) failed at step 'explode': "
        "RuntimeError: branch broke"
    )


async def test_branch_context_updates_reach_the_next_steps_and_the_result() -> None:
    """Seed regression: context updates made inside a conditional branch were lost."""
    seen: list[Any] = []

    async def after(data: Any, context: Ctx) -> Any:
        seen.append((list(context.trail), dict(context.scratchpad)))
        return data

    async def update(data: Any) -> dict[str, Any]:
        return {"route": "updated"}

    cond = Step.branch_on(
        "pick",
        by_parity,
        {"odd": tagger("O") >> Step.from_callable(update, name="u", updates_context=True)},
    )
    result = await run(cond >> Step.from_callable(after, name="after"), 1)
    assert seen == [(["O"], {"O": 1})]
    ctx = result.final_pipeline_context
    assert (ctx.trail, ctx.route) == (["O"], "updated")


# -- build-time validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            (None, {"a": "STEP"}),
            {},
            "Conditional step 'c': condition_callable is required (a function (data, "
            "context) -> branch key).",
        ),
        ((5, {"a": "STEP"}), {}, "Step 'c': condition_callable must be callable, got 5."),
        (
            (by_parity, {}),
            {},
            "Step 'c': branches must not be empty; give at least one branch.",
        ),
        (
            (by_parity, {"a": "nope"}),
            {},
            "Step 'c': branch 'a' must be a Step or a Pipeline, got 'nope'.",
        ),
        (
            (by_parity, {"a": "STEP"}),
            {"default_branch_pipeline": 1},
            "Step 'c': default_branch_pipeline must be a Step or a Pipeline, got 1.",
        ),
        (
            (by_parity, [("a", 1)]),
            {},
            "Step 'c': branches must be a mapping of name -> Step | Pipeline, got [('a', 1)].",
        ),
    ],
)
def test_bad_definitions_fail_at_build(
    args: tuple[Any, Any], kwargs: dict[str, Any], message: str
) -> None:
    s = tagger("s")
    condition, branches = args
    if isinstance(branches, dict):
        branches = {k: s if v == "STEP" else v for k, v in branches.items()}
    with pytest.raises(PipelineDefinitionError) as info:
        Step.branch_on("c", condition, branches, **kwargs)
    assert str(info.value) == message


def test_only_a_default_branch_is_allowed() -> None:
    cond = Step.branch_on("c", by_parity, {}, default_branch_pipeline=tagger("d"))
    assert isinstance(cond, ConditionalStep)
    assert cond.branches == {}
    assert isinstance(cond.default_branch, Pipeline)
