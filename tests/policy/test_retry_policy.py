"""The attempt policy of the step supervisor: pure decisions, no event loop."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors.policy.retry import Action, AttemptPolicy, Decision, Replay, replay

policies = st.builds(
    AttemptPolicy,
    max_attempts=st.integers(1, 12),
    backoff_s=st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]),
    backoff_factor=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),
    has_fallback=st.booleans(),
)


def test_retries_until_attempts_are_spent_then_fails() -> None:
    policy = AttemptPolicy(max_attempts=3)
    assert policy.after_failure(1) == Decision(Action.RETRY, 0.0)
    assert policy.after_failure(2) == Decision(Action.RETRY, 0.0)
    assert policy.after_failure(3) == Decision(Action.FAIL)


def test_fallback_takes_over_when_attempts_are_spent() -> None:
    policy = AttemptPolicy(max_attempts=2, has_fallback=True)
    assert policy.after_failure(1).action is Action.RETRY
    assert policy.after_failure(2) == Decision(Action.FALLBACK)


def test_single_attempt_never_retries() -> None:
    assert AttemptPolicy(max_attempts=1).after_failure(1) == Decision(Action.FAIL)
    assert AttemptPolicy(1, has_fallback=True).after_failure(1) == Decision(Action.FALLBACK)


def test_unretryable_failure_skips_the_remaining_attempts() -> None:
    assert AttemptPolicy(5).after_failure(1, retryable=False) == Decision(Action.FAIL)
    policy = AttemptPolicy(5, has_fallback=True)
    assert policy.after_failure(1, retryable=False) == Decision(Action.FALLBACK)


def test_exponential_backoff_values() -> None:
    policy = AttemptPolicy(max_attempts=5, backoff_s=0.5, backoff_factor=3.0)
    assert [policy.after_failure(k).delay_s for k in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 13.5]


def test_zero_backoff_never_waits_whatever_the_factor() -> None:
    policy = AttemptPolicy(max_attempts=4, backoff_s=0.0, backoff_factor=10.0)
    assert [policy.delay_before_retry(k) for k in (1, 2, 3)] == [0.0, 0.0, 0.0]


def test_huge_backoff_saturates_to_infinity_instead_of_raising() -> None:
    policy = AttemptPolicy(max_attempts=5000, backoff_s=1.0, backoff_factor=2.0)
    assert policy.delay_before_retry(4000) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "AttemptPolicy: max_attempts must be an int >= 1, got 0."),
        ({"max_attempts": 1.5}, "AttemptPolicy: max_attempts must be an int >= 1, got 1.5."),
        (
            {"max_attempts": 1, "backoff_s": -1.0},
            "AttemptPolicy: backoff_s must be a number >= 0, got -1.0.",
        ),
        (
            {"max_attempts": 1, "backoff_factor": math.nan},
            "AttemptPolicy: backoff_factor must be a number >= 0, got nan.",
        ),
        (
            {"max_attempts": 1, "backoff_s": True},
            "AttemptPolicy: backoff_s must be a number >= 0, got True.",
        ),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        AttemptPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempt_counts_start_at_one() -> None:
    with pytest.raises(ValueError, match=r"^attempts_made must be >= 1, got 0\.$"):
        AttemptPolicy(3).after_failure(0)
    with pytest.raises(ValueError, match=r"^attempts_made must be >= 1, got 0\.$"):
        AttemptPolicy(3).delay_before_retry(0)


@given(policy=policies, outcomes=st.lists(st.booleans(), max_size=20))
def test_replay_of_any_outcome_sequence(policy: AttemptPolicy, outcomes: list[bool]) -> None:
    """The loop stops at the first success or when attempts are spent, never later."""
    r = replay(policy, outcomes)
    padded = [*outcomes, *([False] * policy.max_attempts)]
    first_success = next((i + 1 for i, ok in enumerate(padded) if ok), None)
    if first_success is not None and first_success <= policy.max_attempts:
        assert r == Replay(first_success, r.delays, "success")
    else:
        assert r.attempts == policy.max_attempts
        assert r.outcome == ("fallback" if policy.has_fallback else "fail")
    # one wait before each retry, growing geometrically from backoff_s
    assert len(r.delays) == r.attempts - 1
    assert list(r.delays) == [
        policy.backoff_s * policy.backoff_factor**k if policy.backoff_s else 0.0
        for k in range(r.attempts - 1)
    ]
    assert 1 <= r.attempts <= policy.max_attempts


@given(policy=policies, attempts=st.integers(1, 30), retryable=st.booleans())
def test_decisions_are_total_and_consistent(
    policy: AttemptPolicy, attempts: int, retryable: bool
) -> None:
    decision = policy.after_failure(attempts, retryable=retryable)
    if retryable and attempts < policy.max_attempts:
        assert decision.action is Action.RETRY
        assert decision.delay_s == policy.delay_before_retry(attempts) >= 0
    else:
        expected = Action.FALLBACK if policy.has_fallback else Action.FAIL
        assert decision == Decision(expected)
    # a pure function: the same question gets the same answer
    assert policy.after_failure(attempts, retryable=retryable) == decision


@given(policy=policies)
def test_delays_never_shrink_when_the_factor_is_at_least_one(policy: AttemptPolicy) -> None:
    delays = [policy.delay_before_retry(k) for k in range(1, policy.max_attempts + 1)]
    if policy.backoff_factor >= 1:
        assert delays == sorted(delays)
    assert delays[0] == policy.backoff_s
