"""A breach inside control flow keeps the completed work, in the normal tree shape (#6).

The partial result of a breached run has the enclosing control-flow step last at the top
level, its children inside it (completed siblings and iterations included) and the
breaching step as the last leaf of that subtree; every container's usage is the sum of
its children's, and the top level adds up to the run's totals.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
import trio

from flujo_actors import (
    Flujo,
    Pipeline,
    PipelineResult,
    Step,
    StepResult,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.testing import UsageOutput


def costing(name: str, cost: float, *, sleep: float = 0.0, **kwargs: Any) -> Step:
    async def agent(data: Any) -> UsageOutput:
        await trio.sleep(sleep)
        return UsageOutput(name, cost)

    return Step.from_callable(agent, name=name, max_retries=0, **kwargs)


async def breached(pipeline: Any, limit: float = 1.0) -> tuple[str, PipelineResult]:
    runner = Flujo(pipeline, usage_limits=UsageLimits(total_cost_usd_limit=limit))
    with pytest.raises(UsageLimitExceededError) as info:
        await runner.run_async("in")
    assert info.value.result is not None
    return str(info.value), info.value.result


def last_leaf(history: list[StepResult]) -> StepResult:
    r = history[-1]
    while r.step_history:
        r = r.step_history[-1]
    return r


def shape(r: StepResult) -> Any:
    """(name, cost) of a leaf, (name, cost, [children]) of a container."""
    if not r.step_history:
        return (r.name, str(r.cost_usd))
    return (r.name, str(r.cost_usd), [shape(c) for c in r.step_history])


def assert_adds_up(result: PipelineResult) -> None:
    def check(r: StepResult) -> None:
        if r.step_history and not r.metadata.get("fallback_triggered"):
            assert r.cost_usd == sum((c.cost_usd for c in r.step_history), Decimal(0)), r.name
        for c in r.step_history:
            check(c)

    for r in result.step_history:
        check(r)
    assert result.total_cost_usd == sum((r.cost_usd for r in result.step_history), Decimal(0))


async def test_a_breach_inside_a_parallel_keeps_the_completed_branches(
    autojump_clock: trio.abc.Clock,
) -> None:
    fan = Step.parallel(
        "fan",
        {
            "slow": costing("slow", 0.40, sleep=3),  # breaches: 0.05 + 0.80 + 0.40 > 1
            "a": costing("a", 0.40, sleep=1),
            "b": costing("b", 0.40, sleep=2),
            "never": costing("never", 0.40, sleep=10),
        },
    )
    message, result = await breached(costing("pre", 0.05) >> fan)
    assert result.total_cost_usd == Decimal("1.25")
    assert shape(result.step_history[0]) == ("pre", "0.05")
    assert shape(result.step_history[1]) == (
        "fan",
        "1.2",
        [
            ("a", "0.4", [("a", "0.4")]),
            ("b", "0.4", [("b", "0.4")]),
            ("never", "0"),  # cancelled in flight: nothing completed
            ("slow", "0.4", [("slow", "0.4")]),  # the breaching branch last
        ],
    )
    fan_result = result.step_history[1]
    assert (fan_result.success, fan_result.metadata) == (False, {"cancelled": True})
    assert fan_result.feedback == f"Cancelled: {message}"
    a, b, never, slow = fan_result.step_history
    assert (a.success, b.success) == (True, True)  # completed branches, as they ended
    assert never.metadata == slow.metadata == {"cancelled": True}
    assert last_leaf(result.step_history).name == "slow"
    assert message.startswith("Usage limit exceeded after step 'slow': total cost $1.25 > ")
    assert_adds_up(result)


async def test_a_breach_inside_a_loop_keeps_the_earlier_iterations() -> None:
    body = costing("think", 0.3) >> costing("act", 0.1)
    loop = Step.loop_until("loop", body, lambda out, ctx: False, max_loops=10)
    message, result = await breached(loop)
    (cut,) = result.step_history
    assert [r.name for r in cut.step_history] == ["think", "act"] * 2 + ["think"]
    assert cut.metadata == {"cancelled": True, "iterations": 2, "exit_reason": "usage_limit"}
    assert result.total_cost_usd == cut.cost_usd == Decimal("1.1")
    assert last_leaf(result.step_history).name == "think"
    assert message.startswith("Usage limit exceeded after step 'think': total cost $1.1 > ")
    assert_adds_up(result)


async def test_a_breach_inside_a_conditional_branch_keeps_its_earlier_steps() -> None:
    cond = Step.branch_on(
        "route",
        lambda data, ctx: "big",
        {"big": costing("first", 0.6) >> costing("second", 0.6) >> costing("third", 0.1)},
    )
    _message, result = await breached(costing("pre", 0.1) >> cond)
    assert [shape(r) for r in result.step_history] == [
        ("pre", "0.1"),
        ("route", "1.2", [("first", "0.6"), ("second", "0.6")]),
    ]
    assert result.step_history[-1].metadata == {"cancelled": True}
    assert_adds_up(result)


async def test_a_breach_inside_nested_pipelines_keeps_simple_step_1() -> None:
    inner = Pipeline(steps=[costing("simple_step_1", 0.5), costing("simple_step_2", 0.7)])
    outer = Pipeline(steps=[costing("outer_1", 0.1), inner.as_step("inner")])
    for inherit in (True, False):
        nested = outer.as_step("outer", inherit_context=inherit)
        _message, result = await breached(nested)
        assert [shape(r) for r in result.step_history] == [
            (
                "outer",
                "1.3",
                [
                    ("outer_1", "0.1"),
                    ("inner", "1.2", [("simple_step_1", "0.5"), ("simple_step_2", "0.7")]),
                ],
            )
        ]
        assert_adds_up(result)


async def test_a_breach_in_a_fallback_keeps_the_primarys_usage() -> None:
    async def primary(data: Any) -> str:
        raise RuntimeError("down")

    step = Step.from_callable(
        primary, name="primary", max_retries=0, fallback=costing("backup", 2.0)
    )
    _message, result = await breached(costing("pre", 0.25) >> step)
    pre, cut = result.step_history
    assert (pre.name, pre.cost_usd) == ("pre", Decimal("0.25"))
    assert (cut.name, cut.cost_usd, cut.success) == ("primary", Decimal("2.0"), False)
    assert cut.metadata == {
        "cancelled": True,
        "fallback_triggered": True,
        "original_error": "RuntimeError: down",
    }
    assert [r.name for r in cut.step_history] == ["backup"]
    assert result.total_cost_usd == Decimal("2.25")
    assert_adds_up(result)


async def test_a_breach_inside_a_router_keeps_the_router_and_its_branches(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Routes(list[str]):
        cost_usd = 0.25  # the router's own usage counts

    async def route(data: Any) -> Routes:
        return Routes(["late", "early"])

    router = Step.dynamic_parallel_branch(
        "router",
        route,
        {"early": costing("early", 0.5, sleep=1), "late": costing("late", 0.5, sleep=2)},
    )
    _message, result = await breached(router)
    assert [shape(r) for r in result.step_history] == [
        (
            "router",
            "1.25",
            [
                ("router", "0.25"),
                ("early", "0.5", [("early", "0.5")]),
                ("late", "0.5", [("late", "0.5")]),
            ],
        )
    ]
    assert last_leaf(result.step_history).name == "late"
    assert_adds_up(result)


async def test_a_retrying_step_cancelled_by_a_breach_shows_the_usage_it_charged(
    autojump_clock: trio.abc.Clock,
) -> None:
    calls: list[float] = []

    async def charged_failure(data: Any) -> UsageOutput:
        calls.append(trio.current_time())
        return UsageOutput("attempt", 0.3)

    def reject(output: UsageOutput) -> bool:
        return False  # every attempt's output is rejected: its usage still counts

    retrying = Step.from_callable(
        charged_failure, name="retrying", max_retries=3, backoff_s=2.0, validators=[reject]
    )
    fan = Step.parallel("fan", {"retrying": retrying, "pricey": costing("pricey", 0.6, sleep=1)})
    message, result = await breached(fan)
    assert calls == [0.0, 2.0]  # the breach at t=2 (0.3 + 0.6 + 0.3) stopped the retries
    (cut,) = result.step_history
    assert [shape(r) for r in cut.step_history] == [
        ("pricey", "0.6", [("pricey", "0.6")]),
        ("retrying", "0.6", [("retrying", "0.6")]),  # both charged attempts, the breach last
    ]
    assert last_leaf(result.step_history).name == "retrying"
    assert result.total_cost_usd == Decimal("1.2")
    assert_adds_up(result)
    assert re.match(r"^Usage limit exceeded after step 'retrying': ", message)


async def test_a_sibling_failure_keeps_what_a_cancelled_branch_completed_inside_a_loop(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def bad(data: Any) -> str:
        await trio.sleep(2.5)
        raise RuntimeError("bad broke")

    loop = Step.loop_until(
        "loop", costing("tick", 0.0, sleep=1), lambda out, ctx: False, max_loops=5
    )
    fan = Step.parallel("fan", {"loop": loop, "bad": Step.from_callable(bad, max_retries=0)})
    result = await Flujo(fan).run_async("in")
    assert not result.success
    looping = result.step_history[-1].step_history[0]
    assert looping.metadata == {"cancelled": True}  # the sibling cancelled it at t=2.5
    (cut,) = looping.step_history
    # The two iterations that completed before the cancel are kept.
    assert [r.name for r in cut.step_history] == ["tick", "tick"]
    assert cut.metadata == {"cancelled": True, "iterations": 2, "exit_reason": "cancelled"}
    assert cut.feedback == "Cancelled before it finished."


async def test_the_tree_is_the_same_with_hooks_and_tracing_on(
    autojump_clock: trio.abc.Clock,
) -> None:
    events: list[str] = []
    fan = Step.parallel(
        "fan", {"late": costing("late", 0.6, sleep=2), "early": costing("early", 0.6, sleep=1)}
    )
    runner = Flujo(
        costing("pre", 0.1) >> fan,
        usage_limits=UsageLimits(total_cost_usd_limit=1.0),
        hooks=[lambda event: events.append(type(event).__name__)],
        trace=True,
    )
    with pytest.raises(UsageLimitExceededError) as info:
        await runner.run_async("in")
    result = info.value.result
    assert result is not None
    assert [shape(r) for r in result.step_history] == [
        ("pre", "0.1"),
        ("fan", "1.2", [("early", "0.6", [("early", "0.6")]), ("late", "0.6", [("late", "0.6")])]),
    ]
    assert "UsageLimitBreached" in events
    assert_adds_up(result)
