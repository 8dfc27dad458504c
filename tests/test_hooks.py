"""Run hooks: the event sequence, sync/async hooks, failing hooks, logging."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Any

import attrs
import pytest
import trio

from flujo_actors import (
    Flujo,
    Pipeline,
    PipelineDefinitionError,
    Step,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.hooks import (
    FallbackTriggered,
    HookError,
    HookEvent,
    HookSet,
    RunFinished,
    RunObserver,
    RunStarted,
    StepErrored,
    StepFinished,
    StepRetried,
    StepStarted,
    UsageLimitBreached,
)
from flujo_actors.policy.attempt import EmitRetried
from flujo_actors.testing.agents import FlakyAgent, UsageOutput


async def inc(x: int) -> int:
    return x + 1


def _label(e: HookEvent) -> tuple[str, str]:
    return type(e).__name__, "/".join(getattr(e, "path", ()))


def _sequence_pipeline() -> Pipeline:
    """A retry, a fallback, a parallel step and a breach, in that order."""
    flaky = Step.from_callable(FlakyAgent(1, result=1).run, name="flaky", max_retries=1)
    fallback = Step.from_callable(inc, name="fb")
    broken = Step.from_callable(
        FlakyAgent(9, error=ValueError("down")).run, name="broken", max_retries=0, fallback=fallback
    )
    fan = Step.parallel(
        "fan",
        {
            "a": Step.from_callable(inc, name="a1") >> Step.from_callable(inc, name="a2"),
            "b": Step.from_callable(inc, name="b1"),
        },
    )

    async def costly(data: Any) -> UsageOutput:
        return UsageOutput(data, cost_usd=Decimal("2.5"), token_counts=7)

    return Pipeline(steps=[flaky, broken, fan, Step.from_callable(costly, name="costly")])


async def test_the_event_sequence_of_a_run_with_retry_fallback_parallel_and_breach() -> None:
    events: list[HookEvent] = []
    runner = Flujo(
        _sequence_pipeline(),
        hooks=[events.append],
        usage_limits=UsageLimits(total_cost_usd_limit=1.0),
    )
    with pytest.raises(UsageLimitExceededError) as info:
        await runner.run_async(0)
    result = info.value.result
    assert result is not None
    labels = [_label(e) for e in events]
    head = [
        ("RunStarted", ""),
        ("StepStarted", "flaky"),
        ("StepRetried", "flaky"),
        ("StepFinished", "flaky"),
        ("StepStarted", "broken"),
        ("FallbackTriggered", "broken"),
        ("StepFinished", "broken"),
        ("StepStarted", "fan"),
    ]
    tail = [
        ("StepFinished", "fan"),
        ("StepStarted", "costly"),
        ("UsageLimitBreached", ""),
        ("RunFinished", ""),
    ]
    assert labels[: len(head)] == head
    assert labels[-len(tail) :] == tail
    # Branches interleave (trio schedules them in any order); each keeps its own order.
    middle = labels[len(head) : -len(tail)]
    assert sorted(middle) == sorted(
        [
            ("StepStarted", "fan/a/a1"),
            ("StepFinished", "fan/a/a1"),
            ("StepStarted", "fan/a/a2"),
            ("StepFinished", "fan/a/a2"),
            ("StepStarted", "fan/b/b1"),
            ("StepFinished", "fan/b/b1"),
        ]
    )
    branch_a = [x for x in middle if x[1].startswith("fan/a/")]
    assert [p for _, p in branch_a] == ["fan/a/a1", "fan/a/a1", "fan/a/a2", "fan/a/a2"]

    by_type = {type(e): e for e in events}
    run_id = result.run_id
    assert by_type[RunStarted] == RunStarted(
        run_id=run_id, pipeline="pipeline", initial_input=0, time=by_type[RunStarted].time
    )
    retried = by_type[StepRetried]
    assert isinstance(retried, StepRetried)
    assert (retried.step, retried.attempt, retried.feedback, retried.delay_s) == (
        "flaky",
        1,
        "RuntimeError: flaky failure",
        0.0,
    )
    fell_back = by_type[FallbackTriggered]
    assert isinstance(fell_back, FallbackTriggered)
    assert (fell_back.step, fell_back.fallback, fell_back.feedback) == (
        "broken",
        "fb",
        "ValueError: down",
    )
    finished = [e for e in events if isinstance(e, StepFinished) and e.path == ("broken",)]
    assert finished[0].result is result.step_history[1]
    assert finished[0].result.metadata["fallback_triggered"] is True
    breached = by_type[UsageLimitBreached]
    assert isinstance(breached, UsageLimitBreached)
    assert breached.step == "costly"
    assert breached.message == str(info.value)
    assert (breached.total_cost_usd, breached.total_tokens) == (Decimal("2.5"), 7)
    done = by_type[RunFinished]
    assert isinstance(done, RunFinished)
    assert done.result is result
    assert done.success is False


async def test_sync_and_async_hooks_see_the_same_events_in_order() -> None:
    seen_sync: list[str] = []
    seen_async: list[str] = []
    order: list[str] = []

    def sync_hook(e: HookEvent) -> None:
        seen_sync.append(type(e).__name__)
        order.append("sync")

    async def async_hook(e: HookEvent) -> None:
        await trio.lowlevel.checkpoint()
        seen_async.append(type(e).__name__)
        order.append("async")

    class CallableHook:
        def __init__(self) -> None:
            self.n = 0

        async def __call__(self, e: HookEvent) -> None:
            self.n += 1

    obj = CallableHook()
    pipeline = Step.from_callable(inc, name="one") >> Step.from_callable(inc, name="two")
    result = await Flujo(pipeline, hooks=[sync_hook, async_hook, obj]).run_async(1)
    assert result.output == 3
    expected = [
        "RunStarted",
        "StepStarted",
        "StepFinished",
        "StepStarted",
        "StepFinished",
        "RunFinished",
    ]
    assert seen_sync == expected
    assert seen_async == expected
    assert obj.n == len(expected)
    assert order == ["sync", "async"] * len(expected)


async def test_a_failed_step_emits_step_errored_with_its_result() -> None:
    events: list[HookEvent] = []
    bad = Step.from_callable(FlakyAgent(9, error=KeyError("k")).run, name="bad", max_retries=0)
    result = await Flujo(bad, hooks=[events.append]).run_async(0)
    assert not result.success
    failed = [e for e in events if isinstance(e, StepErrored)]
    assert len(failed) == 1
    assert failed[0].result is result.step_history[0]
    assert failed[0].kind == "agent"
    assert not any(isinstance(e, StepFinished) for e in events)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].success is False


async def test_nested_steps_emit_events_with_their_paths() -> None:
    events: list[HookEvent] = []
    body = Step.from_callable(inc, name="body")
    loop = Step.loop_until("loop", body, lambda out, ctx: out >= 2, max_loops=5)
    cond = Step.branch_on("cond", lambda d, ctx: "x", {"x": Step.from_callable(inc, name="in_x")})
    await Flujo(loop >> cond, hooks=[events.append]).run_async(0)
    started = [e.path for e in events if isinstance(e, StepStarted)]
    assert started == [
        ("loop",),
        ("loop", "body"),
        ("loop", "body"),
        ("cond",),
        ("cond", "in_x"),
    ]
    kinds = {e.path: e.kind for e in events if isinstance(e, StepStarted)}
    assert kinds[("loop",)] == "loop"
    assert kinds[("cond",)] == "conditional"


# -- failing hooks ---------------------------------------------------------------------------


def _failing_on(event_type: type, path: tuple[str, ...] | None = None) -> Any:
    def hook(e: HookEvent) -> None:
        if type(e) is event_type and (path is None or getattr(e, "path", None) == path):
            raise RuntimeError("hook bug")

    return hook


async def test_a_raising_hook_fails_the_run_with_a_clear_error() -> None:
    ran: list[str] = []

    async def record(x: int) -> int:
        ran.append("record")
        return x

    hook = _failing_on(StepFinished, ("one",))
    pipeline = Step.from_callable(inc, name="one") >> Step.from_callable(record, name="two")
    runner = Flujo(pipeline, hooks=[hook])
    with pytest.raises(HookError) as info:
        await runner.run_async(0)
    err = info.value
    assert str(err) == (
        "Hook _failing_on.<locals>.hook raised RuntimeError: hook bug while handling "
        f"StepFinished (step 'one') in run {err.result.run_id if err.result else ''!r}; "
        "the run was cancelled. Fix the hook or remove it from Flujo(hooks=...)."
    )
    assert isinstance(err.__cause__, RuntimeError)
    assert err.hook is hook
    assert isinstance(err.event, StepFinished)
    assert ran == []  # the run stopped at the failing hook
    assert err.result is not None
    assert err.result.success is False
    # Cancelled while reporting its StepFinished: the step was not recorded.
    assert err.result.step_history == []
    assert runner.snapshot() == ()


async def test_a_raising_hook_in_a_parallel_branch_cancels_the_siblings(
    autojump_clock: trio.abc.Clock,
) -> None:
    finished: list[str] = []

    async def slow(x: int) -> int:
        await trio.sleep(10)
        finished.append("slow")
        return x

    fan = Step.parallel(
        "fan",
        {"a": Step.from_callable(inc, name="quick"), "b": Step.from_callable(slow, name="slow")},
    )
    with pytest.raises(
        HookError, match=r"^Hook .* while handling StepStarted \(step 'fan/a/quick'\)"
    ):
        await Flujo(fan, hooks=[_failing_on(StepStarted, ("fan", "a", "quick"))]).run_async(0)
    assert finished == []
    assert trio.current_time() == 0


async def test_a_hook_raising_on_run_started_runs_nothing() -> None:
    ran: list[int] = []

    async def agent(x: int) -> int:
        ran.append(x)
        return x

    with pytest.raises(HookError, match=r"^Hook .* while handling RunStarted in run '[0-9a-f]+';"):
        await Flujo(Step.from_callable(agent, name="a"), hooks=[_failing_on(RunStarted)]).run_async(
            0
        )
    assert ran == []


async def test_a_hook_raising_on_run_finished_keeps_the_complete_result() -> None:
    with pytest.raises(HookError) as info:
        await Flujo(Step.from_callable(inc, name="a"), hooks=[_failing_on(RunFinished)]).run_async(
            1
        )
    assert info.value.result is not None
    assert info.value.result.success is True
    assert info.value.result.output == 2


@pytest.mark.parametrize("event_type", [UsageLimitBreached, RunFinished])
async def test_a_raising_hook_never_masks_a_usage_limit_breach(event_type: type) -> None:
    async def costly(data: Any) -> UsageOutput:
        return UsageOutput(data, cost_usd=2.0)

    runner = Flujo(
        Step.from_callable(costly, name="costly"),
        hooks=[_failing_on(event_type)],
        usage_limits=UsageLimits(total_cost_usd_limit=1.0),
    )
    with pytest.raises(UsageLimitExceededError) as info:
        await runner.run_async(0)
    notes = getattr(info.value, "__notes__", [])
    assert len(notes) == 1
    assert notes[0].startswith(
        f"A hook also failed: Hook _failing_on.<locals>.hook raised RuntimeError: hook bug "
        f"while handling {event_type.__name__} in run "
    )
    assert info.value.result is not None
    assert info.value.result.total_cost_usd == Decimal("2.0")


def test_hooks_are_checked_when_the_runner_is_built() -> None:
    step = Step.from_callable(inc, name="a")
    with pytest.raises(PipelineDefinitionError) as info:
        Flujo(step, hooks=[42])  # type: ignore[list-item]
    assert str(info.value) == (
        "Flujo: hooks[0] must be a callable taking one event (or a span listener such as "
        "OTelHook()), got 42."
    )

    def single(e: HookEvent) -> None:
        pass

    with pytest.raises(PipelineDefinitionError) as info:
        Flujo(step, hooks=single)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"Flujo: hooks must be a list of callables, got {single!r}; pass hooks=[my_hook]."
    )

    async def hook(e: HookEvent) -> None:
        pass

    coro = hook(RunStarted(run_id="r", pipeline="p", initial_input=None, time=0.0))
    with pytest.raises(PipelineDefinitionError) as info:
        Flujo(step, hooks=[coro])  # type: ignore[list-item]
    assert str(info.value) == (
        "Flujo: hooks[0] is a coroutine object; pass the function itself "
        "(hooks=[my_hook], not hooks=[my_hook(...)])."
    )


def test_events_are_frozen() -> None:
    event = StepRetried(
        run_id="r", step="s", path=("s",), attempt=1, feedback=None, delay_s=0.0, time=0.0
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.attempt = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="attempt"):
        StepRetried(run_id="r", step="s", path=("s",), attempt=0, feedback=None, delay_s=0, time=0)


# -- logging -------------------------------------------------------------------------------


async def test_the_library_logger_is_silent_and_costs_nothing_by_default() -> None:
    log = logging.getLogger("flujo_actors")
    assert log.handlers == []
    assert not log.isEnabledFor(logging.INFO)
    # Nothing observes the run: the engine takes its no-hooks path.
    assert RunObserver.create(HookSet(), run_id="r", pipeline="p", trace=False) is None


async def test_logging_reports_runs_and_retries_when_enabled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Step.from_callable(FlakyAgent(1, result=5).run, name="flaky", max_retries=1)
    with caplog.at_level(logging.INFO, logger="flujo_actors"):
        result = await Flujo(flaky).run_async(0)
    messages = [r.getMessage() for r in caplog.records if r.name == "flujo_actors"]
    assert messages == [
        f"run {result.run_id}: pipeline pipeline started",
        f"run {result.run_id}: step flaky attempt 1 failed, retrying in 0.000s: "
        "RuntimeError: flaky failure",
        f"run {result.run_id}: finished, success=True, cost=$0, tokens=0",
    ]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="flujo_actors"):
        result = await Flujo(Step.from_callable(inc, name="one")).run_async(0)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug == [
        f"run {result.run_id}: step one started",
        f"run {result.run_id}: step one finished (attempts=1)",
    ]


# -- event names: past tense, never an exception's name -------------------------------


@pytest.mark.parametrize("module", ["flujo_actors.hooks", "flujo_actors.hook_events"])
def test_the_old_step_failed_event_name_is_a_deprecated_alias(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    message = (
        f"{module}.StepFailed is deprecated: the hook event is now StepErrored (StepFailed is "
        f"the exception flujo_actors.errors.StepFailed). Use {module}.StepErrored; the old "
        "name goes in the next release."
    )
    with pytest.warns(DeprecationWarning, match=f"^{re.escape(message)}$"):
        old = mod.StepFailed
    assert old is StepErrored
    with pytest.raises(AttributeError, match=rf"^module {module!r} has no attribute 'StepFaild'$"):
        _ = mod.StepFaild


def test_no_hook_event_shares_a_name_with_an_exception() -> None:
    import flujo_actors.errors
    import flujo_actors.hook_events

    exceptions = {
        name
        for name in dir(flujo_actors.errors)
        if isinstance(getattr(flujo_actors.errors, name), type)
        and issubclass(getattr(flujo_actors.errors, name), BaseException)
    }
    events = set(flujo_actors.hook_events.__all__) - {"Hook", "HookEvent"}
    assert "StepErrored" in events
    assert events & exceptions == set()


async def test_a_match_on_the_deprecated_name_still_sees_failed_steps() -> None:
    with pytest.warns(DeprecationWarning, match=r"^flujo_actors\.hooks\.StepFailed is deprecated"):
        from flujo_actors.hooks import StepFailed
    seen: list[str] = []

    def hook(event: HookEvent) -> None:
        match event:
            case StepFailed(step=name):
                seen.append(name)

    bad = Step.from_callable(FlakyAgent(9, error=KeyError("k")).run, name="bad", max_retries=0)
    await Flujo(bad, hooks=[hook]).run_async(0)
    assert seen == ["bad"]


async def test_the_retry_event_reports_the_supervisors_own_sleep() -> None:
    # The observer takes the attempt machine's command: nothing recomputes the delay
    # from the step's config (this command's delay is not the config's backoff).
    events: list[HookEvent] = []
    observer = RunObserver("r", "p", ((events.append, False),), None)
    frame: Any = attrs.make_class("Frame", ["step", "path"])(
        Step.from_callable(inc, name="s", backoff_s=1.0), ("s",)
    )
    await observer.retry(frame, EmitRetried(attempt=2, feedback="KeyError: 'k'", delay_s=7.5))
    (event,) = events
    assert isinstance(event, StepRetried)
    assert (event.step, event.path, event.attempt, event.feedback, event.delay_s) == (
        "s",
        ("s",),
        2,
        "KeyError: 'k'",
        7.5,
    )


async def test_retry_events_carry_the_backoff_slept(autojump_clock: trio.abc.Clock) -> None:
    events: list[HookEvent] = []
    flaky = Step.from_callable(
        FlakyAgent(2, result=1).run, name="flaky", max_retries=2, backoff_s=0.5, backoff_factor=3.0
    )
    t0 = trio.current_time()
    await Flujo(flaky, hooks=[events.append]).run_async(0)
    retried = [e for e in events if isinstance(e, StepRetried)]
    assert [(e.attempt, e.delay_s, e.time - t0) for e in retried] == [(1, 0.5, 0.0), (2, 1.5, 0.5)]
    assert trio.current_time() - t0 == 2.0
