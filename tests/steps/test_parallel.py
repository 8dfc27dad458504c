"""Parallel steps: outputs, real concurrency, context copies and merges, failure strategies."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.lowlevel

from flujo_actors import (
    BranchFailureStrategy,
    Flujo,
    MergeStrategy,
    ParallelStep,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    PipelineResult,
    Step,
    StepResult,
)
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from flujo_actors.steps.kinds import AnyStep


@attrs.define
class Ctx(PipelineContext):
    score: int = 0
    note: str = ""
    tags: list[str] = attrs.Factory(list)


IGNORE = BranchFailureStrategy.IGNORE


async def run(step: AnyStep | Pipeline, data: Any = 1, **kwargs: Any) -> PipelineResult:
    return await Flujo(step, context_model=Ctx, **kwargs).run_async(data)


def agent(fn: Callable[..., Awaitable[Any]], name: str, **kwargs: Any) -> Step:
    return Step.from_callable(fn, name=name, max_retries=0, **kwargs)


def writer(name: str, **fields: Any) -> Step:
    """A branch that records ``name`` in the scratchpad and sets ``fields`` on the context."""

    async def write(data: Any, context: Ctx) -> str:
        context.scratchpad[name] = data
        for k, v in fields.items():
            setattr(context, k, v)
        return f"{name}:{data}"

    return agent(write, name)


def failer(name: str, **fields: Any) -> Step:
    """A branch that writes ``fields`` on its context, then raises."""

    async def fail(data: Any, context: Ctx) -> None:
        for k, v in fields.items():
            setattr(context, k, v)
        context.scratchpad[name] = "written before failing"
        raise RuntimeError(f"{name} broke")

    return agent(fail, name)


async def add_one(x: int) -> int:
    return x + 1


async def double(x: int) -> int:
    return x * 2


# -- outputs and structure ------------------------------------------------------------


async def test_every_branch_gets_the_same_input_and_the_output_maps_names_to_outputs() -> None:
    fan = Step.parallel(
        "fan",
        {
            "inc": agent(add_one, "inc"),
            "twice": agent(double, "d1") >> agent(double, "d2"),
        },
    )
    result = await run(fan >> agent(lambda d: sum(d.values()), "total"), 5)
    assert result.success
    assert result.step_history[0].output == {"inc": 6, "twice": 20}
    assert result.output == 26


async def test_step_history_holds_each_branch_with_its_children_and_context() -> None:
    fan = Step.parallel(
        "fan",
        {"a": writer("a"), "b": writer("b") >> agent(str.upper, "b2")},  # type: ignore[arg-type]
    )
    result = await run(fan, 1)
    par = result.step_history[0]
    assert isinstance(par, StepResult)
    assert [r.name for r in par.step_history] == ["a", "b"]
    a, b = par.step_history
    assert [c.name for c in a.step_history] == ["a"]
    assert [c.name for c in b.step_history] == ["b", "b2"]
    assert a.output == "a:1"
    assert b.output == "B:1"  # the branch pipeline's last output
    assert a.branch_context.scratchpad == {"a": 1}
    assert b.branch_context.scratchpad == {"b": 1}
    assert par.branch_context is None
    assert par.attempts == 1


async def test_branches_really_run_concurrently(autojump_clock: trio.abc.Clock) -> None:
    async def nap(x: int) -> int:
        await trio.sleep(0.2)
        return x

    fan = Step.parallel("fan", {f"b{i}": agent(nap, f"b{i}") for i in range(10)})
    t0 = trio.current_time()
    result = await run(fan, 7)
    assert trio.current_time() - t0 == 0.2
    assert result.output == {f"b{i}": 7 for i in range(10)}


async def test_each_branch_works_on_its_own_copy_of_context_and_input() -> None:
    seen: dict[str, Any] = {}

    async def mutate(data: dict[str, list[int]], context: Ctx) -> int:
        data["items"].append(1)
        context.tags.append("mutated")
        return len(data["items"])

    async def look(data: dict[str, list[int]], context: Ctx) -> int:
        await trio.lowlevel.checkpoint()  # let the sibling mutate first
        seen["tags"] = list(context.tags)
        return len(data["items"])

    fan = Step.parallel(
        "fan",
        {"mutate": agent(mutate, "mutate"), "look": agent(look, "look")},
        merge_strategy=MergeStrategy.NO_MERGE,
    )
    payload = {"items": [0]}
    result = await run(fan, payload)
    assert result.output == {"mutate": 2, "look": 1}
    assert seen["tags"] == []
    assert payload == {"items": [0]}
    assert result.final_pipeline_context.tags == []


async def test_branch_frames_carry_the_run_resources() -> None:
    async def use(data: int, resources: dict[str, int]) -> int:
        return data + resources["offset"]

    fan = Step.parallel("fan", {"a": agent(use, "a"), "b": agent(use, "b")})
    result = await Flujo(fan, resources={"offset": 10}).run_async(1)
    assert result.output == {"a": 11, "b": 11}


async def test_usage_of_every_branch_counts_exactly() -> None:
    async def paid(x: int) -> UsageOutput:
        return UsageOutput(x, cost_usd=0.1, token_counts=3)

    fan = Step.parallel("fan", {f"b{i}": agent(paid, f"b{i}") for i in range(10)})
    result = await run(fan)
    assert result.total_cost_usd == Decimal("1.0")
    assert result.total_tokens == 30
    assert result.step_history[0].cost_usd == Decimal("1.0")
    assert result.step_history[0].token_counts == 30


# -- context propagation and merge strategies ---------------------------------------------


async def test_context_update_merges_every_branch_scratchpad_and_fields() -> None:
    """Seed regression: branch updates were lost after a parallel step."""
    fan = Step.parallel(
        "fan", {"a": writer("a", score=3), "b": writer("b", note="from b"), "c": writer("c")}
    )
    seen: list[Any] = []

    async def after(data: Any, context: Ctx) -> None:
        seen.append((dict(context.scratchpad), context.score, context.note))

    result = await run(fan >> agent(after, "after"), 4)
    assert seen == [({"a": 4, "b": 4, "c": 4}, 3, "from b")]
    assert result.final_pipeline_context.scratchpad == {"a": 4, "b": 4, "c": 4}


async def test_context_update_later_declared_branch_wins_a_conflict() -> None:
    fan = Step.parallel("fan", {"first": writer("k", score=1), "second": writer("k2", score=2)})
    ctx = (await run(fan)).final_pipeline_context
    assert ctx.score == 2


async def test_context_update_later_declared_wins_even_when_it_finishes_first(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def slow(data: Any, context: Ctx) -> None:
        await trio.sleep(1)
        context.scratchpad["k"] = "slow, declared first"

    async def fast(data: Any, context: Ctx) -> None:
        context.scratchpad["k"] = "fast, declared last"

    fan = Step.parallel("fan", {"slow": agent(slow, "slow"), "fast": agent(fast, "fast")})
    ctx = (await run(fan)).final_pipeline_context
    assert ctx.scratchpad == {"k": "fast, declared last"}


async def test_error_on_conflict_fails_naming_the_field_and_both_branches() -> None:
    fan = Step.parallel(
        "fan",
        {"a": writer("a", score=1), "b": writer("b"), "c": writer("c", score=2)},
        merge_strategy=MergeStrategy.ERROR_ON_CONFLICT,
    )
    result = await run(fan)
    assert not result.success
    par = result.step_history[-1]
    assert par.feedback == (
        "Step 'fan': merge conflict on field 'score': branches 'a' and 'c' set it to "
        "different values (1 and 2) (merge_strategy=ERROR_ON_CONFLICT). Choose another "
        "MergeStrategy or let only one branch write it."
    )
    assert par.output == {"a": "a:1", "b": "b:1", "c": "c:1"}  # the work is kept
    assert [r.success for r in par.step_history] == [True, True, True]
    # Nothing was merged.
    assert result.final_pipeline_context.scratchpad == {}
    assert result.final_pipeline_context.score == 0


async def test_error_on_conflict_on_a_scratchpad_key() -> None:
    def setter(value: str) -> Step:
        async def set_key(data: Any, context: Ctx) -> None:
            context.scratchpad["shared"] = value

        return agent(set_key, value)

    fan = Step.parallel(
        "fan",
        {"x": setter("one"), "y": setter("two")},
        merge_strategy=MergeStrategy.ERROR_ON_CONFLICT,
    )
    result = await run(fan)
    assert result.step_history[-1].feedback == (
        "Step 'fan': merge conflict on field 'scratchpad' key 'shared': branches 'x' and "
        "'y' set it to different values ('one' and 'two') (merge_strategy=ERROR_ON_CONFLICT). "
        "Choose another MergeStrategy or let only one branch write it."
    )


async def test_error_on_conflict_allows_disjoint_and_equal_writes() -> None:
    fan = Step.parallel(
        "fan",
        {"a": writer("a", score=5), "b": writer("b", score=5, note="b")},
        merge_strategy=MergeStrategy.ERROR_ON_CONFLICT,
    )
    result = await run(fan, 0)
    assert result.success
    ctx = result.final_pipeline_context
    assert (ctx.score, ctx.note, ctx.scratchpad) == (5, "b", {"a": 0, "b": 0})


async def test_keep_first_keeps_the_first_declared_value() -> None:
    fan = Step.parallel(
        "fan",
        {"a": writer("a", score=1), "b": writer("b", score=2, note="b")},
        merge_strategy=MergeStrategy.KEEP_FIRST,
    )
    ctx = (await run(fan, 0)).final_pipeline_context
    assert (ctx.score, ctx.note, ctx.scratchpad) == (1, "b", {"a": 0, "b": 0})


async def test_overwrite_takes_the_last_declared_successful_branch_context() -> None:
    fan = Step.parallel(
        "fan",
        {"a": writer("a", score=1), "b": writer("b", note="b"), "c": failer("c", score=9)},
        merge_strategy=MergeStrategy.OVERWRITE,
        on_branch_failure=IGNORE,
    )
    result = await run(fan, 0)
    ctx = result.final_pipeline_context
    assert (ctx.score, ctx.note, ctx.scratchpad) == (0, "b", {"b": 0})
    assert ctx.initial_prompt == "0"
    assert ctx.run_id == result.run_id


async def test_no_merge_leaves_the_context_alone() -> None:
    fan = Step.parallel("fan", {"a": writer("a", score=1)}, merge_strategy=MergeStrategy.NO_MERGE)
    ctx = (await run(fan)).final_pipeline_context
    assert (ctx.score, ctx.scratchpad) == (0, {})


async def test_a_callable_merge_is_called_per_successful_branch_in_order() -> None:
    calls: list[tuple[str, int]] = []

    def add_scores(main: Ctx, branch: Ctx) -> None:
        calls.append((branch.note, branch.score))
        main.score += branch.score

    fan = Step.parallel(
        "fan",
        {
            "a": writer("a", score=1, note="a"),
            "bad": failer("bad", score=100, note="bad"),
            "c": writer("c", score=10, note="c"),
        },
        merge_strategy=add_scores,
        on_branch_failure=IGNORE,
    )
    ctx = (await run(fan)).final_pipeline_context
    assert calls == [("a", 1), ("c", 10)]
    assert ctx.score == 11


async def test_a_failing_callable_merge_fails_the_step_and_restores_the_context() -> None:
    def half(main: Ctx, branch: Ctx) -> None:
        main.score += branch.score
        if branch.note == "b":
            raise ValueError("cannot merge b")

    fan = Step.parallel(
        "fan", {"a": writer("a", score=1), "b": writer("b", score=2, note="b")}, merge_strategy=half
    )
    result = await run(fan)
    assert result.step_history[-1].feedback == (
        "Step 'fan': merge_strategy test_a_failing_callable_merge_fails_the_step_and_restores"
        "_the_context.<locals>.half raised ValueError: cannot merge b; the context was left "
        "as it was before the branches ran."
    )
    assert result.final_pipeline_context.score == 0


async def test_only_successful_branches_merge() -> None:
    fan = Step.parallel(
        "fan",
        {"ok": writer("ok"), "bad": failer("bad", score=7, note="bad")},
        on_branch_failure=IGNORE,
    )
    ctx = (await run(fan, 2)).final_pipeline_context
    assert ctx.scratchpad == {"ok": 2}
    assert (ctx.score, ctx.note) == (0, "")


async def test_strategies_may_be_given_by_value() -> None:
    fan = Step.parallel(
        "fan",
        {"a": writer("a", score=1), "b": writer("b", score=2)},
        merge_strategy="keep_first",  # type: ignore[arg-type]
        on_branch_failure="IGNORE",  # type: ignore[arg-type]
    )
    assert fan.merge_strategy is MergeStrategy.KEEP_FIRST
    assert fan.on_branch_failure is BranchFailureStrategy.IGNORE
    assert (await run(fan)).final_pipeline_context.score == 1


# -- failure strategies -------------------------------------------------------------------


async def test_propagate_fails_the_step_and_cancels_the_siblings_still_running(
    autojump_clock: trio.abc.Clock,
) -> None:
    side_effects: list[str] = []

    async def fail_later(x: int) -> int:
        await trio.sleep(1)
        raise RuntimeError("boom")

    async def sleepy(x: int) -> int:
        await trio.sleep(10)
        side_effects.append("after the sleep")
        return x

    fan = Step.parallel(
        "fan",
        {
            "done": agent(add_one, "done"),
            "bad": agent(fail_later, "bad"),
            "slow": agent(sleepy, "slow"),
        },
    )
    t0 = trio.current_time()
    result = await run(fan >> agent(add_one, "never"))
    assert trio.current_time() - t0 == 1.0
    assert not result.success
    assert [r.name for r in result.step_history] == ["fan"]
    par = result.step_history[0]
    assert par.feedback == "Branch 'bad' of step 'fan' failed at step 'bad': RuntimeError: boom"
    done, bad, slow = par.step_history
    # The failed step's output maps each branch to its output or its StepResult.
    assert par.output == {"done": 2, "bad": bad, "slow": slow}
    assert par.output["bad"] is bad and par.output["slow"] is slow
    assert (done.success, done.output) == (True, 2)
    assert (bad.success, bad.feedback) == (False, "RuntimeError: boom")
    assert (slow.success, slow.output, slow.step_history) == (False, None, [])
    assert slow.feedback == (
        "Cancelled: sibling branch 'bad' of step 'fan' failed first (on_branch_failure=PROPAGATE)."
    )
    assert slow.metadata == {"cancelled": True}
    await trio.sleep(20)  # virtual time: nothing of the cancelled sibling is left to run
    assert side_effects == []


async def test_propagate_does_not_merge_anything() -> None:
    fan = Step.parallel("fan", {"ok": writer("ok", score=1), "bad": failer("bad")})
    ctx = (await run(fan)).final_pipeline_context
    assert (ctx.score, ctx.scratchpad) == (0, {})


async def test_ignore_reports_failed_branches_as_their_step_result() -> None:
    fan = Step.parallel(
        "fan", {"ok": agent(add_one, "ok"), "bad": failer("bad")}, on_branch_failure=IGNORE
    )
    result = await run(fan >> agent(lambda d: sorted(d), "keys"), 1)  # type: ignore[arg-type,return-value]
    assert result.success
    out = result.step_history[0].output
    assert out["ok"] == 2
    bad = out["bad"]
    assert isinstance(bad, StepResult)
    assert (bad.name, bad.success, bad.feedback) == ("bad", False, "RuntimeError: bad broke")
    assert bad is result.step_history[0].step_history[1]
    assert result.output == ["bad", "ok"]


async def test_ignore_with_every_branch_failing_fails_the_step() -> None:
    fan = Step.parallel("fan", {"x": failer("x"), "y": failer("y")}, on_branch_failure=IGNORE)
    result = await run(fan)
    assert not result.success
    par = result.step_history[-1]
    assert par.feedback == (
        "Every branch of step 'fan' failed (on_branch_failure=IGNORE needs one success); "
        "the first, 'x', failed at step 'x': RuntimeError: x broke"
    )
    assert [r.feedback for r in par.step_history] == [
        "RuntimeError: x broke",
        "RuntimeError: y broke",
    ]
    x, y = par.step_history
    assert par.output == {"x": x, "y": y}  # each failed branch as its StepResult
    assert result.output is None  # the run failed: it has no output


# -- context_include_keys -----------------------------------------------------------------


async def test_include_keys_limit_what_a_branch_sees_and_what_merges_back() -> None:
    seen: list[tuple[Any, ...]] = []

    async def look(data: Any, context: Ctx) -> None:
        seen.append((context.score, context.note, dict(context.scratchpad), context.run_id))
        context.score += 1
        context.note = "changed"
        context.scratchpad["x"] = 1

    async def setup(data: Any, context: Ctx) -> None:
        context.score, context.note, context.scratchpad["old"] = 10, "kept", True

    fan = Step.parallel("fan", {"a": agent(look, "a")}, context_include_keys=["score"])
    assert fan.context_include_keys == frozenset({"score"})
    result = await run(agent(setup, "setup") >> fan)
    # The branch saw the included field; the others had their defaults (run_id is always kept).
    assert seen == [(10, "", {}, result.run_id)]
    ctx = result.final_pipeline_context
    assert (ctx.score, ctx.note, ctx.scratchpad) == (11, "kept", {"old": True})


async def test_unknown_include_keys_fail_the_step_naming_them() -> None:
    fan = Step.parallel("fan", {"a": writer("a")}, context_include_keys=["score", "scrachpad"])
    result = await run(fan)
    assert result.step_history[-1].feedback == (
        "Step 'fan': context_include_keys names ['scrachpad'], which is not a field of Ctx "
        "(fields: ['executed_branches', 'initial_prompt', 'note', 'run_id', 'score', "
        "'scratchpad', 'tags']). Fix the names or add the fields to the context model."
    )
    assert result.step_history[-1].step_history == []


# -- build-time validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"branches": {}},
            "Step 'p': branches must not be empty; give at least one branch.",
        ),
        (
            {"branches": ["a"]},
            "Step 'p': branches must be a mapping of name -> Step | Pipeline, got ['a'].",
        ),
        (
            {"branches": {"": "STEP"}},
            "Step 'p': branch names must be non-empty strings, got ''.",
        ),
        (
            {"branches": {"a": 3}},
            "Step 'p': branch 'a' must be a Step or a Pipeline, got 3.",
        ),
        (
            {"branches": {1: "STEP"}},
            "Step 'p': branch names must be non-empty strings, got 1.",
        ),
        (
            {"merge_strategy": "wat"},
            "Step 'p': merge_strategy must be a MergeStrategy (MergeStrategy.NO_MERGE, "
            "MergeStrategy.OVERWRITE, MergeStrategy.CONTEXT_UPDATE, "
            "MergeStrategy.ERROR_ON_CONFLICT, MergeStrategy.KEEP_FIRST) or a callable "
            "(main_ctx, branch_ctx) -> None, got 'wat'.",
        ),
        (
            {"merge_strategy": 3},
            "Step 'p': merge_strategy must be a MergeStrategy (MergeStrategy.NO_MERGE, "
            "MergeStrategy.OVERWRITE, MergeStrategy.CONTEXT_UPDATE, "
            "MergeStrategy.ERROR_ON_CONFLICT, MergeStrategy.KEEP_FIRST) or a callable "
            "(main_ctx, branch_ctx) -> None, got 3.",
        ),
        (
            {"on_branch_failure": "explode"},
            "Step 'p': on_branch_failure must be a BranchFailureStrategy "
            "(BranchFailureStrategy.PROPAGATE, BranchFailureStrategy.IGNORE), got 'explode'.",
        ),
        (
            {"context_include_keys": "score"},
            "Step 'p': context_include_keys must be a list of field names, got the string "
            "'score'; write ['score'].",
        ),
        (
            {"context_include_keys": 5},
            "Step 'p': context_include_keys must be a list of context field names or None, got 5.",
        ),
        (
            {"context_include_keys": ["score", 1, ""]},
            "Step 'p': context_include_keys must hold context field names (non-empty "
            "strings), got '', 1.",
        ),
    ],
)
def test_bad_definitions_fail_at_build(kwargs: dict[str, Any], message: str) -> None:
    s = Step.from_callable(add_one, name="s")
    if "branches" in kwargs and isinstance(kwargs["branches"], dict):
        kwargs["branches"] = {k: s if v == "STEP" else v for k, v in kwargs["branches"].items()}
    args: dict[str, Any] = {"branches": {"a": s}, **kwargs}
    with pytest.raises(PipelineDefinitionError) as info:
        Step.parallel("p", **args)
    assert str(info.value) == message


def test_an_async_merge_callable_is_refused_at_build() -> None:
    async def merge(main: Ctx, branch: Ctx) -> None:
        pass  # pragma: no cover

    with pytest.raises(PipelineDefinitionError) as info:
        Step.parallel(
            "p",
            {"a": Step.from_callable(add_one)},
            merge_strategy=merge,  # type: ignore[arg-type]
        )
    assert str(info.value).startswith(
        "Step 'p': merge_strategy must be a plain function (main_ctx, branch_ctx) -> None, "
        "got the async function "
    )
    assert str(info.value).endswith("merging runs synchronously, so drop `async`.")


def test_parallel_returns_a_parallel_step_with_the_defaults() -> None:
    s = Step.from_callable(add_one)
    p = Step.parallel("p", {"a": s, "b": Pipeline(steps=[s])})
    assert isinstance(p, ParallelStep)
    assert p.merge_strategy is MergeStrategy.CONTEXT_UPDATE
    assert p.on_branch_failure is BranchFailureStrategy.PROPAGATE
    assert p.context_include_keys is None
    assert all(isinstance(b, Pipeline) for b in p.branches.values())


async def test_a_branch_reports_the_time_its_steps_took() -> None:
    async def work(x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x

    two = Step.from_callable(work, name="one") >> Step.from_callable(work, name="two")
    fan = Step.parallel("fan", {"solo": Step.from_callable(work, name="solo"), "pair": two})
    result = await Flujo(fan).run_async(1)
    branches = result.step_history[0].step_history
    assert [b.name for b in branches] == ["solo", "pair"]
    for branch in branches:
        # It was reported as 0.0 s: a branch's latency is its steps' (run in sequence).
        assert branch.latency_s == sum(r.latency_s for r in branch.step_history)
        assert branch.latency_s > 0.0


async def test_propagate_reports_branches_a_failure_stopped_from_being_spawned(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    # The fan-out spawns SPAWN_BATCH branches between checkpoints: a sibling failing in
    # the first batch cancels the step before the later ones are spawned. Every branch
    # is still reported, the unspawned ones cancelled like the started ones.
    from flujo_actors.run import parallel

    monkeypatch.setattr(parallel, "SPAWN_BATCH", 2)
    started: list[int] = []

    async def bad(x: int) -> int:
        raise RuntimeError("boom")

    async def sleepy(x: int) -> int:
        started.append(x)
        await trio.sleep(10)
        return x

    names = ["bad", *(f"s{i}" for i in range(7))]
    fan = Step.parallel("fan", {n: agent(bad if n == "bad" else sleepy, n) for n in names})
    result = await run(fan)
    par = result.step_history[0]
    assert not result.success
    assert par.feedback == "Branch 'bad' of step 'fan' failed at step 'bad': RuntimeError: boom"
    assert [r.name for r in par.step_history] == names
    assert list(par.output) == names
    for r in par.step_history[1:]:
        assert (r.success, r.output, r.step_history) == (False, None, [])
        assert r.feedback == (
            "Cancelled: sibling branch 'bad' of step 'fan' failed first "
            "(on_branch_failure=PROPAGATE)."
        )
        assert r.metadata == {"cancelled": True}
    assert len(started) < 7  # some branches were never spawned
    assert trio.current_time() == 0.0  # nothing waited for the sleepers
