"""Run traces: the span tree mirrors execution, with exact times on trio's MockClock."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from flujo_actors import (
    BranchFailureStrategy,
    Flujo,
    Pipeline,
    Step,
    StepConfig,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.testing.agents import FlakyAgent, UsageOutput

if TYPE_CHECKING:
    from flujo_actors.tracing import Span, SpanRecord


def sleeper(name: str, seconds: float, cost: float = 0.0) -> Step:
    async def agent(data: Any) -> Any:
        await trio.sleep(seconds)
        return UsageOutput(data, cost_usd=cost, token_counts=1) if cost else data

    return Step.from_callable(agent, name=name)


def _shape(span: Span) -> Any:
    """(name, kind, outcome, start, end, children), recursively.

    Parallel branches start in any order (trio schedules them so), so they
    are compared sorted by name.
    """
    children = [_shape(c) for c in span.children]
    if span.kind in ("parallel", "router"):
        children.sort()
    return (span.name, span.kind, span.outcome, span.start, span.end, children)


async def test_no_trace_unless_asked() -> None:
    result = await Flujo(sleeper("a", 0)).run_async(0)
    assert result.trace is None


async def test_the_trace_mirrors_branches_and_loop_iterations_with_exact_times(
    autojump_clock: trio.abc.Clock,
) -> None:
    fan = Step.parallel("fan", {"a": sleeper("a1", 2), "b": sleeper("b1", 1) >> sleeper("b2", 3)})
    loop = Step.loop_until("loop", sleeper("body", 0.5), lambda out, ctx: False, max_loops=2)
    cond = Step.branch_on("cond", lambda d, ctx: "yes", {"yes": sleeper("y1", 1)})
    nested = Pipeline(steps=[sleeper("n1", 1)], name="inner").as_step("nested")
    pipeline = sleeper("first", 1) >> fan >> cond >> nested >> loop
    result = await Flujo(pipeline, trace=True).run_async(0)
    trace = result.trace
    assert trace is not None
    loop_span = trace.children[-1]
    # The loop hits max_loops: a failed step (and run); the spans say so.
    assert trace.outcome == "failure"
    assert loop_span.outcome == "failure"
    assert loop_span.attributes["exit_reason"] == "max_loops"
    expected = (
        "pipeline",
        "run",
        "failure",
        0.0,
        8.0,
        [
            ("first", "agent", "success", 0.0, 1.0, []),
            (
                "fan",
                "parallel",
                "success",
                1.0,
                5.0,
                [
                    (
                        "a",
                        "branch",
                        "success",
                        1.0,
                        3.0,
                        [("a1", "agent", "success", 1.0, 3.0, [])],
                    ),
                    (
                        "b",
                        "branch",
                        "success",
                        1.0,
                        5.0,
                        [
                            ("b1", "agent", "success", 1.0, 2.0, []),
                            ("b2", "agent", "success", 2.0, 5.0, []),
                        ],
                    ),
                ],
            ),
            (
                "cond",
                "conditional",
                "success",
                5.0,
                6.0,
                [("y1", "agent", "success", 5.0, 6.0, [])],
            ),
            ("nested", "pipeline", "success", 6.0, 7.0, [("n1", "agent", "success", 6.0, 7.0, [])]),
            (
                "loop",
                "loop",
                "failure",
                7.0,
                8.0,
                [
                    (
                        "iteration 1",
                        "iteration",
                        "success",
                        7.0,
                        7.5,
                        [("body", "agent", "success", 7.0, 7.5, [])],
                    ),
                    (
                        "iteration 2",
                        "iteration",
                        "success",
                        7.5,
                        8.0,
                        [("body", "agent", "success", 7.5, 8.0, [])],
                    ),
                ],
            ),
        ],
    )
    assert _shape(trace) == expected
    assert loop_span.attributes["iterations"] == 2
    assert [s.path for s in loop_span.walk()] == [
        ("loop",),
        ("loop",),
        ("loop", "body"),
        ("loop",),
        ("loop", "body"),
    ]


async def test_retries_become_attempt_spans_with_their_backoff(
    autojump_clock: trio.abc.Clock,
) -> None:
    flaky = FlakyAgent(2, error=TimeoutError("slow upstream"), result="ok")

    async def agent(data: Any) -> Any:
        await trio.sleep(1)
        return await flaky.run(data)

    step = Step(
        name="flaky",
        agent=agent,
        config=StepConfig(max_retries=2, backoff_s=2.0, backoff_factor=2.0),
    )
    result = await Flujo(step, trace=True).run_async(0)
    assert result.success
    assert result.trace is not None
    span = result.trace.children[0]
    assert (span.attempts, span.start, span.end) == (3, 0.0, 9.0)
    assert [(a.name, a.kind, a.outcome, a.start, a.end, a.feedback) for a in span.children] == [
        ("attempt 1", "attempt", "failure", 0.0, 1.0, "TimeoutError: slow upstream"),
        ("attempt 2", "attempt", "failure", 3.0, 4.0, "TimeoutError: slow upstream"),
        ("attempt 3", "attempt", "success", 8.0, 9.0, None),
    ]
    assert [a.attributes["attempt"] for a in span.children] == [1, 2, 3]


async def test_a_fallback_is_a_child_of_the_step_it_replaced(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def broken(data: Any) -> Any:
        await trio.sleep(1)
        raise ValueError("model down")

    fb = sleeper("backup", 2, cost=0.5)
    step = Step.from_callable(broken, name="primary", max_retries=1, fallback=fb)
    result = await Flujo(step, trace=True).run_async(0)
    assert result.success
    assert result.trace is not None
    span = result.trace.children[0]
    assert (span.name, span.outcome, span.start, span.end, span.attempts) == (
        "primary",
        "success",
        0.0,
        4.0,
        2,
    )
    assert span.attributes["fallback_triggered"] is True
    assert [(c.name, c.kind, c.outcome, c.start, c.end) for c in span.children] == [
        ("attempt 1", "attempt", "failure", 0.0, 1.0),
        ("attempt 2", "attempt", "failure", 1.0, 2.0),
        ("backup", "agent", "success", 2.0, 4.0),
    ]
    backup = span.children[2]
    assert backup.attributes["fallback_for"] == "primary"
    assert backup.cost_usd == Decimal("0.5")
    assert span.cost_usd == Decimal("0.5")


async def test_siblings_cancelled_by_a_failing_branch_are_cancelled_spans(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def fails(data: Any) -> Any:
        await trio.sleep(1)
        raise RuntimeError("boom")

    fan = Step.parallel(
        "fan",
        {"bad": Step.from_callable(fails, name="bad1", max_retries=0), "slow": sleeper("slow1", 5)},
        on_branch_failure=BranchFailureStrategy.PROPAGATE,
    )
    result = await Flujo(fan, trace=True).run_async(0)
    assert not result.success
    assert result.trace is not None
    fan_span = result.trace.children[0]
    assert (fan_span.outcome, fan_span.end) == ("failure", 1.0)
    branches = {b.name: b for b in fan_span.children}
    assert (branches["bad"].outcome, branches["bad"].end) == ("failure", 1.0)
    slow = branches["slow"].children[0]
    assert (slow.name, slow.outcome, slow.start, slow.end) == ("slow1", "cancelled", 0.0, 1.0)
    assert branches["slow"].outcome == "cancelled"


async def test_a_breached_run_has_its_trace_on_the_error(autojump_clock: trio.abc.Clock) -> None:
    fan = Step.parallel("fan", {"big": sleeper("big", 1, cost=2.0), "slow": sleeper("slow", 5)})
    runner = Flujo(fan, trace=True, usage_limits=UsageLimits(total_cost_usd_limit=1.0))
    with pytest.raises(UsageLimitExceededError) as info:
        await runner.run_async(0)
    assert info.value.result is not None
    trace = info.value.result.trace
    assert trace is not None
    assert (trace.outcome, trace.end, trace.cost_usd) == ("breached", 1.0, Decimal("2.0"))
    assert trace.feedback == str(info.value)
    big = trace.find("big", kind="agent")
    slow = trace.find("slow", kind="agent")
    fan_span = trace.find("fan")
    assert big is not None and slow is not None and fan_span is not None
    # The breaching step is marked (its usage is known); the rest was cancelled.
    assert (big.outcome, big.end, big.cost_usd) == ("breached", 1.0, Decimal("2.0"))
    assert (slow.outcome, slow.end) == ("cancelled", 1.0)
    assert fan_span.outcome == "cancelled"


async def test_router_branches_are_branch_spans() -> None:
    async def route(data: Any) -> list[str]:
        return ["x", "y"]

    router = Step.dynamic_parallel_branch(
        "router", route, {"x": sleeper("x1", 0), "y": sleeper("y1", 0), "z": sleeper("z1", 0)}
    )
    result = await Flujo(router, trace=True).run_async(0)
    assert result.trace is not None
    span = result.trace.children[0]
    assert (span.kind, span.attempts) == ("router", 1)
    assert sorted((b.name, b.kind, [c.name for c in b.children]) for b in span.children) == [
        ("x", "branch", ["x1"]),
        ("y", "branch", ["y1"]),
    ]
    assert span.attributes["selected_branches"] == ["x", "y"]


async def test_usage_adds_up_along_the_tree() -> None:
    fan = Step.parallel("fan", {"a": sleeper("a", 0, cost=0.1), "b": sleeper("b", 0, cost=0.2)})
    result = await Flujo(sleeper("s", 0, cost=0.3) >> fan, trace=True).run_async(0)
    trace = result.trace
    assert trace is not None
    assert (trace.cost_usd, trace.tokens) == (Decimal("0.6"), 3)
    fan_span = trace.find("fan")
    assert fan_span is not None
    assert (fan_span.cost_usd, fan_span.tokens) == (Decimal("0.3"), 2)
    branch = trace.find("b", kind="branch")
    assert branch is not None
    assert branch.cost_usd == Decimal("0.2")
    assert trace.find("nope") is None


async def test_spans_are_frozen_and_format_as_text(autojump_clock: trio.abc.Clock) -> None:
    result = await Flujo(sleeper("a", 1) >> sleeper("b", 2, cost=0.5), trace=True).run_async(0)
    trace = result.trace
    assert trace is not None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        trace.name = "x"  # type: ignore[misc]
    assert trace.duration_s == 3.0
    assert trace.attributes["run_id"] == result.run_id
    assert trace.format() == (
        "pipeline [run] success 0.000000..3.000000 cost=$0.5 tokens=1\n"
        "  a [agent] success 0.000000..1.000000\n"
        "  b [agent] success 1.000000..3.000000 cost=$0.5 tokens=1"
    )


class _Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, str | None]] = []

    def span_started(self, span: SpanRecord) -> None:
        assert span.end is None
        parent = span.parent.name if span.parent is not None else None
        self.log.append(("start", span.name, parent))

    def span_ended(self, span: SpanRecord) -> None:
        assert span.end is not None and span.outcome != "running"
        self.log.append(("end", span.name, span.outcome))


async def test_a_span_listener_sees_parents_open_first_and_close_last() -> None:
    rec = _Recorder()
    fan = Step.parallel("fan", {"a": sleeper("a1", 0)})
    result = await Flujo(sleeper("s", 0) >> fan, hooks=[rec]).run_async(0)
    # A listener alone turns tracing on.
    assert result.trace is not None
    assert rec.log == [
        ("start", "pipeline", None),
        ("start", "s", "pipeline"),
        ("end", "s", "success"),
        ("start", "fan", "pipeline"),
        ("start", "a", "fan"),
        ("start", "a1", "a"),
        ("end", "a1", "success"),
        ("end", "a", "success"),
        ("end", "fan", "success"),
        ("end", "pipeline", "success"),
    ]
