"""Dynamic parallel router: branch choice, usage, executed_branches, golden transcripts."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from flujo_actors import (
    BranchFailureStrategy,
    DynamicParallelRouterStep,
    Flujo,
    MergeStrategy,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    PipelineResult,
    Step,
    StepResult,
)
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from flujo_actors.steps.kinds import AnyStep


@attrs.define
class Ctx(PipelineContext):
    handled: list[str] = attrs.Factory(list)


class Choice(list[str]):
    """A router output that reports usage the Flujo way."""

    cost_usd = 0.25
    token_counts = 7


def handler(name: str, *, fails: bool = False, sleeps: float = 0.0, cost: float = 0.0) -> Step:
    async def handle(data: Any, context: Ctx) -> Any:
        if sleeps:
            await trio.sleep(sleeps)
        context.scratchpad[name] = data
        context.handled.append(name)
        if fails:
            raise RuntimeError(f"{name} is down")
        if cost:
            return UsageOutput(f"{name}:{data}", cost_usd=cost, token_counts=1)
        return f"{name}:{data}"

    return Step.from_callable(handle, name=name, max_retries=0)


BRANCHES: dict[str, Step | Pipeline] = {
    "billing": handler("billing"),
    "support": handler("support") >> Step.from_callable(str.upper, name="shout"),
    "sales": handler("sales", sleeps=5.0),
}


def router(picks: Any) -> Any:
    async def route(data: Any, context: Ctx) -> Any:
        return picks

    return route


async def run(step: AnyStep | Pipeline, data: Any = "q") -> PipelineResult:
    return await Flujo(step, context_model=Ctx).run_async(data)


def transcript(result: PipelineResult) -> dict[str, Any]:
    """Everything a user observes of a router run, in plain values."""
    step = result.step_history[-1]
    ctx = result.final_pipeline_context
    output = step.output
    return {
        "success": result.success,
        "output": None
        if output is None
        else {
            k: ("FAILED", v.feedback) if isinstance(v, StepResult) else v for k, v in output.items()
        },
        "feedback": step.feedback,
        "history": [(r.name, r.success) for r in step.step_history],
        "selected": step.metadata.get("selected_branches"),
        "executed_branches": ctx.executed_branches,
        "scratchpad": ctx.scratchpad,
    }


# -- golden transcripts ---------------------------------------------------------------------


async def test_golden_router_picks_every_branch(autojump_clock: trio.abc.Clock) -> None:
    step = Step.dynamic_parallel_branch("route", router(["billing", "support", "sales"]), BRANCHES)
    result = await run(step, "refund")
    assert trio.current_time() == 5.0
    assert transcript(result) == {
        "success": True,
        "output": {
            "billing": "billing:refund",
            "support": "SUPPORT:REFUND",
            "sales": "sales:refund",
        },
        "feedback": None,
        "history": [("route", True), ("billing", True), ("support", True), ("sales", True)],
        "selected": ["billing", "support", "sales"],
        "executed_branches": ["billing", "support", "sales"],
        "scratchpad": {"billing": "refund", "support": "refund", "sales": "refund"},
    }


async def test_golden_router_picks_a_subset_in_its_own_order() -> None:
    step = Step.dynamic_parallel_branch("route", router(["support", "billing"]), BRANCHES)
    result = await run(step, "login")
    assert transcript(result) == {
        "success": True,
        "output": {"support": "SUPPORT:LOGIN", "billing": "billing:login"},
        "feedback": None,
        "history": [("route", True), ("support", True), ("billing", True)],
        "selected": ["support", "billing"],
        "executed_branches": ["support", "billing"],
        "scratchpad": {"support": "login", "billing": "login"},
    }


async def test_golden_router_with_a_failing_branch_propagating(
    autojump_clock: trio.abc.Clock,
) -> None:
    branches = {**BRANCHES, "broken": handler("broken", fails=True, sleeps=1.0)}
    step = Step.dynamic_parallel_branch("route", router(["billing", "broken", "sales"]), branches)
    result = await run(step, "x")
    assert trio.current_time() == 1.0  # 'sales' (5 s) was cancelled when 'broken' failed
    assert transcript(result) == {
        "success": False,
        "output": {
            "billing": "billing:x",
            "broken": ("FAILED", "RuntimeError: broken is down"),
            "sales": (
                "FAILED",
                "Cancelled: sibling branch 'broken' of step 'route' failed first "
                "(on_branch_failure=PROPAGATE).",
            ),
        },
        "feedback": "Branch 'broken' of step 'route' failed at step 'broken': "
        "RuntimeError: broken is down",
        "history": [("route", True), ("billing", True), ("broken", False), ("sales", False)],
        "selected": ["billing", "broken", "sales"],
        "executed_branches": ["billing", "broken", "sales"],
        "scratchpad": {},  # a failed step merges nothing
    }
    assert result.step_history[-1].step_history[3].metadata == {"cancelled": True}


async def test_golden_router_with_a_failing_branch_ignored() -> None:
    branches = {**BRANCHES, "broken": handler("broken", fails=True)}
    step = Step.dynamic_parallel_branch(
        "route",
        router(["broken", "billing"]),
        branches,
        on_branch_failure=BranchFailureStrategy.IGNORE,
    )
    result = await run(step, "x")
    assert transcript(result) == {
        "success": True,
        "output": {"broken": ("FAILED", "RuntimeError: broken is down"), "billing": "billing:x"},
        "feedback": None,
        "history": [("route", True), ("broken", False), ("billing", True)],
        "selected": ["broken", "billing"],
        "executed_branches": ["broken", "billing"],
        "scratchpad": {"billing": "x"},  # only the successful branch merged
    }
    assert result.final_pipeline_context.handled == ["billing"]


async def test_router_with_every_chosen_branch_failing_ignored_maps_them_to_results() -> None:
    branches = {"one": handler("one", fails=True), "two": handler("two", fails=True)}
    step = Step.dynamic_parallel_branch(
        "route", router(["one", "two"]), branches, on_branch_failure=BranchFailureStrategy.IGNORE
    )
    result = await run(step, "x")
    assert not result.success
    _routed, one, two = result.step_history[-1].step_history
    assert result.step_history[-1].output == {"one": one, "two": two}
    assert (one.feedback, two.feedback) == (
        "RuntimeError: one is down",
        "RuntimeError: two is down",
    )


async def test_a_failed_router_agent_has_no_output() -> None:
    async def broken(data: Any) -> list[str]:
        raise RuntimeError("router down")

    step = Step.dynamic_parallel_branch("route", broken, BRANCHES)
    result = await run(step, "x")
    assert result.step_history[-1].output is None  # no branch ran
    assert result.step_history[-1].feedback == (
        "Router of step 'route' failed: RuntimeError: router down"
    )


# -- the router's choice --------------------------------------------------------------------


async def test_a_single_name_is_accepted() -> None:
    result = await run(Step.dynamic_parallel_branch("route", router("billing"), BRANCHES), "s")
    assert result.output == {"billing": "billing:s"}
    assert result.final_pipeline_context.executed_branches == ["billing"]


async def test_duplicate_names_run_once_and_an_empty_choice_runs_nothing() -> None:
    dup = await run(
        Step.dynamic_parallel_branch("route", router(("billing", "billing")), BRANCHES), "d"
    )
    assert dup.output == {"billing": "billing:d"}
    assert dup.final_pipeline_context.executed_branches == ["billing"]
    assert dup.step_history[0].metadata["selected_branches"] == ["billing"]
    empty = await run(Step.dynamic_parallel_branch("route", router([]), BRANCHES))
    assert empty.success
    assert empty.output == {}
    assert empty.final_pipeline_context.executed_branches == []
    assert [r.name for r in empty.step_history[0].step_history] == ["route"]


async def test_unknown_names_fail_clearly_and_run_nothing() -> None:
    result = await run(
        Step.dynamic_parallel_branch("route", router(["billing", "refunds", "hr"]), BRANCHES)
    )
    r = result.step_history[0]
    assert not result.success
    assert r.feedback == (
        "Router of step 'route' chose unknown branch(es) ['refunds', 'hr']; available: "
        "['billing', 'support', 'sales']."
    )
    assert [c.name for c in r.step_history] == ["route"]
    assert result.final_pipeline_context.executed_branches == []
    assert result.final_pipeline_context.scratchpad == {}


@pytest.mark.parametrize("bad", [None, 3, ["billing", 2], {"billing": True}])
async def test_a_router_output_that_is_not_names_fails_clearly(bad: Any) -> None:
    result = await run(Step.dynamic_parallel_branch("route", router(bad), BRANCHES))
    assert result.step_history[0].feedback == (
        f"Router of step 'route' must return a branch name or a list of branch names, got "
        f"{bad!r}; available: ['billing', 'support', 'sales']."
    )


async def test_a_failing_router_fails_the_step() -> None:
    async def route(data: Any) -> list[str]:
        raise ConnectionError("llm unavailable")

    step = Step.dynamic_parallel_branch("route", route, BRANCHES)
    r = (await run(step)).step_history[0]
    assert not r.success
    assert r.feedback == ("Router of step 'route' failed: ConnectionError: llm unavailable")
    assert r.attempts == 2  # the router is supervised like an agent step (max_retries=1)


async def test_the_router_usage_counts_with_the_branches() -> None:
    branches = {
        "a": handler("a", cost=0.5),
        "b": handler("b", cost=0.125),
    }
    step = Step.dynamic_parallel_branch("route", router(Choice(["a", "b"])), branches)
    result = await run(step)
    assert result.total_cost_usd == Decimal("0.875")
    assert result.total_tokens == 9
    r = result.step_history[0]
    assert (r.cost_usd, r.token_counts) == (Decimal("0.875"), 9)
    assert (r.step_history[0].cost_usd, r.step_history[0].token_counts) == (Decimal("0.25"), 7)
    assert r.step_history[0].output == ["a", "b"]


async def test_the_router_sees_the_input_and_context() -> None:
    async def route(data: str, context: Ctx) -> list[str]:
        return [w for w in data.split() if w in ("billing", "support")] + context.handled

    result = await run(Step.dynamic_parallel_branch("route", route, BRANCHES), "support please")
    assert list(result.output) == ["support"]


async def test_executed_branches_survive_a_nested_router_and_a_branch_rewrite() -> None:
    inner = Step.dynamic_parallel_branch("inner", router(["billing"]), BRANCHES)

    async def rewrite(data: Any, context: Ctx) -> str:
        context.executed_branches = ["bogus"]  # a branch rewriting the log
        return "rewritten"

    outer = Step.dynamic_parallel_branch(
        "outer",
        router(["nested", "rewrite"]),
        {"nested": inner, "rewrite": Step.from_callable(rewrite, name="rewrite")},
        merge_strategy=MergeStrategy.CONTEXT_UPDATE,
    )
    first = Step.dynamic_parallel_branch("first", router(["billing"]), BRANCHES)
    result = await run(first >> outer, "n")
    # The rewrite is a whole-field change applied by the merge; every name that ran is
    # appended after the merge, the nested router's entries included.
    assert result.final_pipeline_context.executed_branches == [
        "bogus",
        "billing",
        "nested",
        "rewrite",
    ]


async def test_executed_branches_accumulate_across_router_runs_in_a_loop() -> None:
    picks = iter([["billing"], ["support", "billing"]])

    async def route(data: Any) -> list[str]:
        return next(picks)

    loop = Step.loop_until(
        "again",
        Step.dynamic_parallel_branch("route", route, BRANCHES),
        lambda out, ctx: len(ctx.executed_branches) >= 3,
        iteration_input_mapper=lambda out, ctx, i: "again",
    )
    result = await run(loop, "first")
    assert result.final_pipeline_context.executed_branches == ["billing", "support", "billing"]
    # `handled` is a plain list field: both branches of the second run changed it, and the
    # later-declared one ('billing') wins; executed_branches is a log and keeps both.
    assert result.final_pipeline_context.handled == ["billing", "billing"]


# -- build-time validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("router_agent", "branches", "kwargs", "message"),
    [
        (
            None,
            BRANCHES,
            {},
            "Router step 'r': router_agent is required; pass a function or agent returning "
            "the name (or list of names) of the branches to run.",
        ),
        (
            router("a"),
            {},
            {},
            "Step 'r': branches must not be empty; give at least one branch.",
        ),
        (
            router("a"),
            {3: BRANCHES["billing"]},
            {},
            "Step 'r': branch names must be non-empty strings, got 3.",
        ),
        (
            router("a"),
            BRANCHES,
            {"on_branch_failure": None},
            "Step 'r': on_branch_failure must be a BranchFailureStrategy "
            "(BranchFailureStrategy.PROPAGATE, BranchFailureStrategy.IGNORE), got None.",
        ),
        (
            "not an agent",
            BRANCHES,
            {},
            "Step 'r': agent must be an async function, a function, or an object with an "
            "async run(data, **kwargs) method; got 'not an agent'.",
        ),
    ],
)
def test_bad_definitions_fail_at_build(
    router_agent: Any, branches: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(PipelineDefinitionError) as info:
        Step.dynamic_parallel_branch("r", router_agent, branches, **kwargs)
    assert str(info.value) == message


def test_dynamic_parallel_branch_returns_a_router_step() -> None:
    step = Step.dynamic_parallel_branch("r", router("a"), BRANCHES)
    assert isinstance(step, DynamicParallelRouterStep)
    assert step.merge_strategy is MergeStrategy.CONTEXT_UPDATE
    assert step.on_branch_failure is BranchFailureStrategy.PROPAGATE
    assert list(step.branches) == ["billing", "support", "sales"]
