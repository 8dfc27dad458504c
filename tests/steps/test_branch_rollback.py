"""A failed attempt in a branch or map item rolls its context back to where the step started.

The branches of a fan-out share one rollback snapshot for their first step
(taken once, from the context they were copied from): these tests pin that
every rollback still lands on the right values, for every branch, for later
steps and fallbacks, and that branches never share what a rollback restores.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from flujo_actors import BranchFailureStrategy, Flujo, MergeStrategy, PipelineContext, Step


@attrs.define
class Ctx(PipelineContext):
    notes: list[str] = attrs.Factory(list)


def flaky_writer(tag: str, seen: list[tuple[str, list[str], dict[str, Any]]]) -> Any:
    """An agent that records the context it sees, writes it, and fails its first attempt."""
    calls = {"n": 0}

    async def write(value: int, context: Ctx) -> int:
        calls["n"] += 1
        seen.append((tag, list(context.notes), dict(context.scratchpad)))
        context.notes.append(f"{tag}-{calls['n']}")
        context.scratchpad[tag] = calls["n"]
        if calls["n"] == 1:
            raise ValueError(f"{tag} fails once")
        return value + 1

    return write


@pytest.mark.trio
async def test_each_branch_retries_on_the_context_as_the_branches_forked() -> None:
    seen: list[tuple[str, list[str], dict[str, Any]]] = []
    branches = {
        name: Step.from_callable(flaky_writer(name, seen), name=name, max_retries=1)
        for name in ("a", "b", "c")
    }
    runner = Flujo(
        Step.parallel("fan", branches, merge_strategy=MergeStrategy.CONTEXT_UPDATE),
        context_model=Ctx,
        initial_context_data={"notes": ["base"], "scratchpad": {"k": [1]}},
    )
    result = await runner.run_async(0)
    assert result.success
    # Both attempts of every branch saw the fork's values: the first one's writes were undone.
    assert sorted(seen) == sorted(
        (tag, ["base"], {"k": [1]}) for tag in ("a", "b", "c") for _ in range(2)
    )
    ctx = result.final_pipeline_context
    assert ctx.scratchpad == {"k": [1], "a": 2, "b": 2, "c": 2}
    # Each branch's context holds only its own second attempt's note.
    by_branch = {r.name: r.branch_context for r in result.step_history[0].step_history}
    assert {name: bctx.notes for name, bctx in by_branch.items()} == {
        "a": ["base", "a-2"],
        "b": ["base", "b-2"],
        "c": ["base", "c-2"],
    }
    assert len({id(bctx.notes) for bctx in by_branch.values()}) == 3


@pytest.mark.trio
async def test_a_later_step_of_a_branch_rolls_back_to_where_it_started_not_to_the_fork() -> None:
    seen: list[tuple[str, list[str], dict[str, Any]]] = []

    async def first(value: int, context: Ctx) -> int:
        context.notes.append("first")
        return value

    branch = Step.from_callable(first, name="first") >> Step.from_callable(
        flaky_writer("second", seen), name="second", max_retries=1
    )
    runner = Flujo(
        Step.parallel("fan", {"a": branch, "b": Step.from_callable(first, name="other")}),
        context_model=Ctx,
    )
    result = await runner.run_async(0)
    assert result.success
    assert seen == [("second", ["first"], {}), ("second", ["first"], {})]


@pytest.mark.trio
async def test_a_branch_fallback_starts_from_the_rolled_back_context_and_is_rolled_back_itself() -> (
    None
):
    seen: list[tuple[str, list[str]]] = []

    async def primary(value: int, context: Ctx) -> int:
        context.notes.append("primary")
        raise ValueError("primary fails")

    async def fallback(value: int, context: Ctx) -> int:
        seen.append(("fallback", list(context.notes)))
        context.notes.append("fallback")
        raise ValueError("fallback fails")

    step = Step.from_callable(
        primary,
        name="p",
        max_retries=0,
        fallback=Step.from_callable(fallback, name="fb", max_retries=0),
    )

    async def ok(value: int) -> int:
        return value

    runner = Flujo(
        Step.parallel(
            "fan",
            {"a": step, "b": Step.from_callable(ok, name="ok")},
            on_branch_failure=BranchFailureStrategy.IGNORE,
        ),
        context_model=Ctx,
        initial_context_data={"notes": ["base"]},
    )
    result = await runner.run_async(0)
    assert seen == [("fallback", ["base"])]
    failed = result.step_history[0].step_history[0]
    assert failed.name == "a" and not failed.success
    # What the failed branch ended with: the fork's values, nothing either agent wrote.
    assert failed.branch_context.notes == ["base"]


@pytest.mark.trio
async def test_each_map_item_retries_on_the_context_as_the_step_started() -> None:
    seen: list[tuple[int, list[str]]] = []
    attempts: dict[int, int] = {}

    async def body(item: int, context: Ctx) -> int:
        attempts[item] = attempts.get(item, 0) + 1
        seen.append((item, list(context.notes)))
        context.notes.append(f"{item}-{attempts[item]}")
        if attempts[item] == 1:
            raise ValueError("fails once")
        return item

    runner = Flujo(
        Step.map(
            "m",
            Step.from_callable(body, name="body", max_retries=1),
            merge_strategy=MergeStrategy.CONTEXT_UPDATE,
        ),
        context_model=Ctx,
        initial_context_data={"notes": ["base"]},
    )
    result = await runner.run_async([0, 1, 2])
    assert result.success
    assert result.output == [0, 1, 2]
    assert sorted(seen) == sorted((i, ["base"]) for i in range(3) for _ in range(2))
