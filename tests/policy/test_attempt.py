"""The attempt state machine, without pipelines or trio: events in, commands out."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors.errors import (
    AsyncioInTrioError,
    ExecutorLost,
    FlujoInternalError,
    PricingNotConfiguredError,
    UsageReportError,
)
from flujo_actors.policy.attempt import (
    AttemptCommand,
    AttemptEvent,
    AttemptMachine,
    CacheHit,
    CacheMissed,
    Charge,
    Conclude,
    EmitRetried,
    FallbackFinished,
    Finish,
    Invoke,
    LookUpCache,
    MarkStreamRetried,
    Raised,
    Refused,
    Rejected,
    Reraise,
    Rollback,
    RunFallback,
    Sleep,
    StoreInCache,
    Succeeded,
    TimedOut,
    backoff_delay,
    fallback_feedback,
)
from flujo_actors.policy.retry import RETRY_ALL


@attrs.frozen
class Config:
    """What the machine reads of a StepConfig (a plain value: no DSL needed)."""

    max_retries: int = 1
    timeout_s: float | None = None
    backoff_s: float = 0.0
    backoff_factor: float = 2.0
    retry_on: Any = RETRY_ALL


class Cancelled(BaseException):
    """Stands in for ``trio.Cancelled``: a BaseException that is not an Exception."""


class Transient(Exception):
    pass


_WAITING = (Invoke, LookUpCache, RunFallback)


def state(m: AttemptMachine) -> tuple[Any, ...]:
    """What a shell reads on Conclude (or an interim Charge): the step so far."""
    return (
        m.succeeded,
        m.attempts,
        m.cost,
        m.tokens,
        m.output,
        m.feedback,
        m.error_type,
        m.failure,
    )


_TERMINAL = (Finish, Reraise)


# -- single decisions ------------------------------------------------------------------


def test_a_first_success_concludes_and_finishes_without_anything_else() -> None:
    m = AttemptMachine(Config(max_retries=3, timeout_s=2.0))
    assert m.start() == (Invoke(1, 2.0, True),)
    assert m.handle(Succeeded("out")) == (Conclude(), Finish())
    assert state(m) == (True, 1, Decimal(0), 0, "out", None, None, None)


def test_a_single_attempt_without_fallback_needs_no_isolated_input() -> None:
    assert AttemptMachine(Config(max_retries=0)).start() == (Invoke(1, None, False),)
    m = AttemptMachine(Config(max_retries=0), has_fallback=True)
    assert m.start() == (Invoke(1, None, True),)


def test_a_retry_rolls_back_charges_under_a_limit_tells_and_sleeps_then_invokes() -> None:
    m = AttemptMachine(
        Config(max_retries=2, backoff_s=0.5, backoff_factor=3.0),
        limited=True,
        rolls_back=True,
        streams=True,
    )
    m.start()
    error = RuntimeError("boom")
    assert m.handle(Raised(error, Decimal("0.25"), 7)) == (
        Rollback(),
        Charge(Decimal("0.25"), 7, interim=True),
        EmitRetried(1, "RuntimeError: boom", 0.5),
        MarkStreamRetried(1, "RuntimeError: boom"),
        Sleep(0.5),
        Invoke(2, None, True),
    )
    # The interim charge goes with the step so far.
    assert state(m) == (
        False,
        1,
        Decimal("0.25"),
        7,
        None,
        "RuntimeError: boom",
        "RuntimeError",
        error,
    )
    # The second retry waits backoff_s * factor; nothing new to charge.
    assert m.handle(Raised(error)) == (
        Rollback(),
        EmitRetried(2, "RuntimeError: boom", 1.5),
        MarkStreamRetried(2, "RuntimeError: boom"),
        Sleep(1.5),
        Invoke(3, None, True),
    )
    # The last attempt succeeds: its usage is charged at the end, the interim part is not again.
    assert m.handle(Succeeded("ok", Decimal("0.5"), 3)) == (
        Conclude(),
        Charge(Decimal("0.5"), 3),
        Finish(),
    )
    assert state(m) == (True, 3, Decimal("0.75"), 10, "ok", None, None, None)


def test_without_limits_failed_attempts_are_charged_once_at_the_end() -> None:
    m = AttemptMachine(Config(max_retries=1))
    m.start()
    assert m.handle(Raised(RuntimeError("x"), Decimal("0.1"), 1)) == (
        EmitRetried(1, "RuntimeError: x", 0.0),
        Sleep(0.0),
        Invoke(2, None, True),
    )
    error = RuntimeError("y")
    assert m.handle(Raised(error, Decimal("0.2"), 2)) == (
        Conclude(),
        Charge(Decimal("0.3"), 3),
        Finish(),
    )
    assert state(m) == (False, 2, Decimal("0.3"), 3, None, "RuntimeError: y", "RuntimeError", error)


def test_a_step_that_does_not_charge_never_charges() -> None:
    m = AttemptMachine(Config(max_retries=1), charges=False, limited=True)
    m.start()
    assert not any(
        isinstance(c, Charge) for c in m.handle(Raised(RuntimeError("x"), Decimal(1), 1))
    )
    assert m.handle(Succeeded("ok", Decimal(1), 1)) == (Conclude(), Finish())
    assert state(m)[:4] == (True, 2, Decimal(2), 2)


def test_a_first_success_charges_the_reported_cost_object_itself() -> None:
    cost = Decimal("0.001")
    m = AttemptMachine(Config(), limited=True)
    m.start()
    conclude, charge, finish = m.succeed("ok", cost, 2)
    assert (conclude, charge, finish) == (Conclude(), Charge(Decimal("0.001"), 2), Finish())
    assert isinstance(charge, Charge)
    assert charge.cost is cost  # no arithmetic: the governor counts repeats of one object
    assert m.cost is cost


def test_a_reserved_step_reports_even_no_usage() -> None:
    m = AttemptMachine(Config(), reserved=True)
    m.start()
    assert m.handle(Succeeded("ok")) == (Conclude(), Charge(Decimal(0), 0), Finish())


@pytest.mark.parametrize(
    ("event", "feedback", "error_type", "output"),
    [
        (
            Rejected("validator", "too short", "x"),
            "Validation failed after max retries: too short",
            "ValidationError",
            "x",
        ),
        (
            Rejected("plugin", "nope", "x"),
            "Plugin execution failed after max retries: nope",
            "PluginError",
            None,
        ),
        (Refused("Step 's' has updates_context=True but ..."), None, "ContextUpdateError", None),
        (TimedOut(TimeoutError("step 's' timed out after 1 s")), None, "TimeoutError", None),
    ],
)
def test_feedback_error_type_and_kept_output_of_each_failure(
    event: AttemptEvent, feedback: str | None, error_type: str, output: Any
) -> None:
    m = AttemptMachine(Config(max_retries=0))
    m.start()
    commands = m.handle(event)
    assert commands == (Conclude(), Finish())
    if feedback is None:
        feedback = (
            event.message
            if isinstance(event, Refused)
            else "TimeoutError: step 's' timed out after 1 s"
        )
    assert (m.succeeded, m.feedback, m.error_type, m.output) == (
        False,
        feedback,
        error_type,
        output,
    )


def test_a_rejection_keeps_the_validators_own_exception_for_the_traceback() -> None:
    cause = ValueError("too short")
    m = AttemptMachine(Config(max_retries=0))
    m.start()
    assert m.handle(Rejected("validator", "too short", "x", cause)) == (Conclude(), Finish())
    assert m.failure is cause


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RuntimeError("x"), True),
        (ExecutorLost("worker died"), True),
        (AsyncioInTrioError("wrong loop"), False),
        (UsageReportError("bad cost"), False),
        (PricingNotConfiguredError("no price"), False),
    ],
)
def test_what_is_retried_by_default(error: Exception, retried: bool) -> None:
    m = AttemptMachine(Config(max_retries=3))
    m.start()
    assert isinstance(m.handle(Raised(error))[-1], Invoke) is retried


def test_retry_on_selects_agent_errors_but_timeouts_lost_workers_and_rejections_always_retry() -> (
    None
):
    cases: list[tuple[AttemptEvent, bool]] = [
        (Raised(Transient("t")), True),
        (Raised(RuntimeError("deterministic")), False),
        (TimedOut(TimeoutError("slow")), True),
        (Raised(ExecutorLost("died")), True),
        (Rejected("validator", "no"), True),
        (Rejected("plugin", "no"), True),
        (Refused("cannot update"), False),
    ]
    for event, retried in cases:
        m = AttemptMachine(Config(max_retries=1, retry_on=(Transient,)))
        m.start()
        assert isinstance(m.handle(event)[-1], Invoke) is retried, event


def test_an_empty_retry_on_retries_no_agent_error() -> None:
    m = AttemptMachine(Config(max_retries=3, retry_on=()))
    m.start()
    assert m.handle(Raised(RuntimeError("x")))[-1] == Finish()


def test_a_cancellation_is_reraised_never_retried_nor_a_failure() -> None:
    m = AttemptMachine(Config(max_retries=5), has_fallback=True, rolls_back=True)
    m.start()
    cancelled = Cancelled()
    assert m.handle(Raised(cancelled)) == (Reraise(cancelled),)
    with pytest.raises(
        FlujoInternalError,
        match=r"^AttemptMachine in state 'done' cannot take Succeeded\(output=1, cost=Decimal\('0'\), tokens=0\)$",
    ):
        m.handle(Succeeded(1))


def test_the_fallback_takes_over_when_attempts_are_spent_and_a_success_is_stored() -> None:
    m = AttemptMachine(Config(max_retries=0), has_fallback=True, cached=True)
    assert m.start() == (LookUpCache(),)
    assert m.handle(CacheMissed()) == (Invoke(1, None, True),)
    error = RuntimeError("x")
    assert m.handle(Raised(error)) == (Conclude(), RunFallback())
    assert state(m) == (False, 1, Decimal(0), 0, None, "RuntimeError: x", "RuntimeError", error)
    assert m.handle(FallbackFinished(success=True)) == (StoreInCache(), Finish())


def test_a_failed_fallback_is_not_stored_and_an_unkeyed_input_never_is() -> None:
    m = AttemptMachine(Config(max_retries=0), has_fallback=True, cached=True)
    m.start()
    m.handle(CacheMissed())
    m.handle(Raised(RuntimeError("x")))
    assert m.handle(FallbackFinished(success=False)) == (Finish(),)
    m = AttemptMachine(Config(max_retries=0), cached=True)
    m.start()
    m.handle(CacheMissed(storable=False))
    assert m.handle(Succeeded(1)) == (Conclude(), Finish())


def test_a_cache_hit_finishes_without_an_attempt() -> None:
    m = AttemptMachine(Config(), cached=True)
    m.start()
    assert m.handle(CacheHit()) == (Finish(),)
    assert m.attempts == 0
    m = AttemptMachine(Config(), cached=True, reserved=True)
    m.start()
    assert m.handle(CacheHit()) == (Charge(Decimal(0), 0), Finish())


def test_fallback_feedback_names_both_failures() -> None:
    assert fallback_feedback("fb", True, None, "RuntimeError: x") is None
    assert fallback_feedback("fb", False, "KeyError: 'k'", "RuntimeError: x") == (
        "Fallback step 'fb' failed: KeyError: 'k' (original error: RuntimeError: x)"
    )


def test_events_out_of_turn_are_internal_errors() -> None:
    m = AttemptMachine(Config())
    with pytest.raises(
        FlujoInternalError, match=r"^AttemptMachine in state 'start' cannot take CacheHit\(\)$"
    ):
        m.handle(CacheHit())
    m.start()
    with pytest.raises(
        FlujoInternalError, match=r"^AttemptMachine.start\(\) called in state 'attempt'$"
    ):
        m.start()
    with pytest.raises(
        FlujoInternalError,
        match=r"^AttemptMachine in state 'attempt' cannot take FallbackFinished\(success=True\)$",
    ):
        m.handle(FallbackFinished(True))


def test_backoff_delay() -> None:
    assert [backoff_delay(0.5, 3.0, k) for k in (1, 2, 3)] == [0.5, 1.5, 4.5]
    assert backoff_delay(0.0, 10.0, 4) == 0.0
    assert backoff_delay(1.0, 2.0, 5000) == math.inf
    with pytest.raises(ValueError, match=r"^attempts_made must be >= 1, got 0\.$"):
        backoff_delay(1.0, 2.0, 0)


# -- any sequence of events ---------------------------------------------------------------

configs = st.builds(
    Config,
    max_retries=st.integers(0, 6),
    timeout_s=st.sampled_from([None, 1.0]),
    backoff_s=st.sampled_from([0.0, 0.25, 1.0]),
    backoff_factor=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    retry_on=st.sampled_from([RETRY_ALL, (Transient,), ()]),
)
flags = st.fixed_dictionaries(
    {
        "has_fallback": st.booleans(),
        "cached": st.booleans(),
        "charges": st.booleans(),
        "limited": st.booleans(),
        "reserved": st.booleans(),
        "rolls_back": st.booleans(),
        "streams": st.booleans(),
    }
)
costs = st.sampled_from([Decimal(0), Decimal("0.1"), Decimal("0.25")])
tokens = st.integers(0, 3)
errors = st.sampled_from(
    [
        RuntimeError("boom"),
        Transient("flaky"),
        ExecutorLost("died"),
        AsyncioInTrioError("loop"),
        UsageReportError("bad"),
        Cancelled(),
    ]
)
outcomes = st.one_of(
    st.builds(Succeeded, st.integers(), costs, tokens),
    st.builds(Raised, errors, costs, tokens),
    st.builds(TimedOut, st.just(TimeoutError("slow")), costs, tokens),
    st.builds(
        Rejected,
        st.sampled_from(["validator", "plugin"]),
        st.just("no"),
        st.integers(),
        st.none(),
        costs,
        tokens,
    ),
    st.builds(Refused, st.just("cannot update"), costs, tokens),
)


def _retryable(event: AttemptEvent, config: Config) -> bool:
    if isinstance(event, (TimedOut, Rejected)):
        return True
    if isinstance(event, Raised):
        exc = event.error
        if isinstance(exc, ExecutorLost):
            return True
        if isinstance(exc, (AsyncioInTrioError, UsageReportError)):
            return False
        return config.retry_on is RETRY_ALL or isinstance(exc, config.retry_on)
    return False


@given(config=configs, flags=flags, data=st.data())
def test_any_sequence_of_events(
    config: Config, flags: dict[str, bool], data: st.DataObject
) -> None:
    m = AttemptMachine(config, **flags)
    max_attempts = config.max_retries + 1
    emitted: list[AttemptCommand] = []
    fed: list[AttemptEvent] = []
    concluded: list[tuple[Any, ...]] = []  # the machine's state when it concluded
    invokes: list[Invoke] = []
    used_cost, used_tokens = Decimal(0), 0
    commands = m.start()
    while True:
        # Only the last command of a batch waits for an event or ends the step.
        assert all(not isinstance(c, _WAITING + _TERMINAL) for c in commands[:-1])
        emitted.extend(commands)
        if any(isinstance(c, Conclude) for c in commands):
            concluded.append(state(m))
        last = commands[-1]
        if isinstance(last, _TERMINAL):
            break
        assert isinstance(last, _WAITING)
        event: AttemptEvent
        if isinstance(last, LookUpCache):
            event = data.draw(st.one_of(st.just(CacheHit()), st.builds(CacheMissed)))
        elif isinstance(last, RunFallback):
            event = FallbackFinished(data.draw(st.booleans()))
        else:
            invokes.append(last)
            event = data.draw(outcomes)
            used_cost += event.cost
            used_tokens += event.tokens
        fed.append(event)
        commands = m.handle(event)

    # The step ends exactly once; nothing more is accepted afterwards.
    assert sum(isinstance(c, _TERMINAL) for c in emitted) == 1
    with pytest.raises(FlujoInternalError):
        m.handle(Succeeded(0))

    # Attempts are numbered 1..n, never more than max_retries + 1.
    assert [i.attempt for i in invokes] == list(range(1, len(invokes) + 1))
    assert len(invokes) == m.attempts <= max_attempts
    assert all(i.timeout_s == config.timeout_s for i in invokes)
    assert all(i.isolated == (max_attempts > 1 or flags["has_fallback"]) for i in invokes)

    attempt_events = [
        e for e in fed if not isinstance(e, (CacheHit, CacheMissed, FallbackFinished))
    ]
    if isinstance(last, Reraise):
        # A cancellation is re-raised at once: no retry, no result, no charge.
        assert isinstance(attempt_events[-1], Raised)
        assert last.error is attempt_events[-1].error
        assert not isinstance(last.error, Exception)
        assert emitted[-1] is last
        assert not any(isinstance(c, Conclude) for c in emitted[-2:])
        return

    # Every failure but the last is retried exactly when it can be; each retry
    # is announced with the delay it sleeps, which follows the backoff.
    for event in attempt_events[:-1]:
        assert not isinstance(event, Succeeded)
        assert _retryable(event, config)
    retried = [c for c in emitted if isinstance(c, EmitRetried)]
    sleeps = [c for c in emitted if isinstance(c, Sleep)]
    assert [r.attempt for r in retried] == list(range(1, len(invokes)))
    assert [s.seconds for s in sleeps] == [r.delay_s for r in retried]
    assert [r.delay_s for r in retried] == [
        config.backoff_s * config.backoff_factor**k if config.backoff_s else 0.0
        for k in range(len(retried))
    ]
    marks = [c for c in emitted if isinstance(c, MarkStreamRetried)]
    assert len(marks) == (len(retried) if flags["streams"] else 0)
    rollbacks = sum(isinstance(c, Rollback) for c in emitted)
    failures = sum(not isinstance(e, Succeeded) for e in attempt_events)
    assert rollbacks == (failures if flags["rolls_back"] else 0)

    conclusions = [c for c in emitted if isinstance(c, Conclude)]
    assert len(conclusions) == len(concluded)
    charges = [c for c in emitted if isinstance(c, Charge)]
    fallback_ran = any(isinstance(c, RunFallback) for c in emitted)
    hit = isinstance(fed[0], CacheHit) if fed else False
    if hit:
        assert not invokes and not conclusions
        assert charges == ([Charge(Decimal(0), 0)] if flags["reserved"] else [])
        return
    assert len(conclusions) == 1
    success, attempts, cost, used, output, feedback, _error_type, _failure = concluded[0]
    final = attempt_events[-1]
    assert success is isinstance(final, Succeeded)
    assert (attempts, cost, used) == (len(invokes), used_cost, used_tokens)
    if success:
        assert feedback is None
        assert output == final.output  # type: ignore[union-attr]
    else:
        # Spent, or not retryable: the fallback takes over if there is one.
        assert len(invokes) == max_attempts or not _retryable(final, config)
        assert feedback is not None
    assert fallback_ran is (not success and flags["has_fallback"])

    # Every attempt's usage is charged exactly once (failed attempts' too);
    # before a retry only under a limit.
    if flags["charges"]:
        assert sum((c.cost for c in charges), Decimal(0)) == used_cost
        assert sum(c.tokens for c in charges) == used_tokens
    else:
        assert charges == []
    assert all(not c.interim for c in charges) or (flags["limited"] and flags["charges"])
    assert sum(not c.interim for c in charges) <= 1

    stored = [c for c in emitted if isinstance(c, StoreInCache)]
    storable = flags["cached"] and isinstance(fed[0], CacheMissed) and fed[0].storable
    step_success = success or (isinstance(fed[-1], FallbackFinished) and fed[-1].success)
    assert len(stored) == (1 if storable and step_success else 0)
    if stored:
        assert emitted[-2] == StoreInCache()
