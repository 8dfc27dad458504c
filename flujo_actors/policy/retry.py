"""Attempt decisions of an agent step's supervisor (pure: no trio, no I/O, no clock).

The step supervisor (``engine.run_agent_step``) runs an attempt, and when it
fails asks :meth:`AttemptPolicy.after_failure` what to do next: retry after
some delay, hand over to the fallback step, or give up. It only executes the
answer, so every rule about attempts lives here and is tested without an
event loop (``tests/policy/test_retry_policy.py``).

Rules:

* ``max_attempts`` (``max_retries + 1``) primary attempts at most;
* retry ``k`` (0-based: the one after the first failure is ``k = 0``) waits
  ``backoff_s * backoff_factor**k`` seconds first (0 when ``backoff_s`` is 0);
* when the attempts are spent (or the failure is not retryable) the fallback
  takes over if there is one, otherwise the step fails.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "RETRY_ALL",
    "Action",
    "AttemptPolicy",
    "Decision",
    "Replay",
    "is_retried",
    "replay",
    "retry_on_types",
]


class Action(enum.Enum):
    """What the supervisor does after a failed attempt."""

    RETRY = "retry"
    FALLBACK = "fallback"
    FAIL = "fail"


@attrs.frozen(slots=True)
class Decision:
    """An action plus, for :attr:`Action.RETRY`, how long to wait first (seconds)."""

    action: Action
    delay_s: float = 0.0


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    # ``not value >= 0`` also refuses NaN.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"AttemptPolicy: {attribute.name} must be a number >= 0, got {value!r}.")


def _positive_int(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"AttemptPolicy: {attribute.name} must be an int >= 1, got {value!r}.")


@attrs.frozen(slots=True)
class AttemptPolicy:
    """The retry rules of one step (built once per step, on its first failure).

    Attributes:
        max_attempts: primary attempts allowed (``max_retries + 1``), >= 1.
        backoff_s: delay before the first retry, >= 0.
        backoff_factor: growth of the delay, >= 0; retry ``k`` (0-based)
            waits ``backoff_s * backoff_factor**k``.
        has_fallback: whether a fallback step takes over when attempts are spent.

    Raises:
        ValueError: on a bad value (the step DSL validates these earlier and
            reports them as ``PipelineDefinitionError``).
    """

    max_attempts: int = attrs.field(validator=_positive_int)
    backoff_s: float = attrs.field(default=0.0, validator=_non_negative)
    backoff_factor: float = attrs.field(default=2.0, validator=_non_negative)
    has_fallback: bool = False

    def delay_before_retry(self, attempts_made: int) -> float:
        """Seconds to wait before the attempt that follows ``attempts_made`` attempts.

        Grows without bound as ``math.inf`` rather than raising when the
        power overflows a float.
        """
        if attempts_made < 1:
            raise ValueError(f"attempts_made must be >= 1, got {attempts_made!r}.")
        if self.backoff_s == 0:
            return 0.0
        try:
            return float(self.backoff_s * self.backoff_factor ** (attempts_made - 1))
        except OverflowError:
            return math.inf

    def after_failure(self, attempts_made: int, *, retryable: bool = True) -> Decision:
        """Decide after ``attempts_made`` primary attempts, the last of which failed.

        Args:
            attempts_made: attempts made so far (>= 1).
            retryable: False for failures another attempt cannot fix (for
                example an output that cannot update the context): no retry.
        """
        if attempts_made < 1:
            raise ValueError(f"attempts_made must be >= 1, got {attempts_made!r}.")
        if retryable and attempts_made < self.max_attempts:
            return Decision(Action.RETRY, self.delay_before_retry(attempts_made))
        if self.has_fallback:
            return Decision(Action.FALLBACK)
        return Decision(Action.FAIL)


@attrs.frozen(slots=True)
class Replay:
    """What the supervisor does for a sequence of attempt outcomes.

    Attributes:
        attempts: primary attempts made.
        delays: the waits before each retry, in order.
        outcome: ``"success"``, ``"fallback"`` or ``"fail"``.
    """

    attempts: int
    delays: tuple[float, ...]
    outcome: str


def replay(policy: AttemptPolicy, outcomes: Iterable[bool]) -> Replay:
    """Simulate the supervisor's loop: ``outcomes[i]`` is whether attempt ``i + 1`` succeeds.

    Outcomes past the point where the loop stops are ignored; if the
    outcomes run out before the loop stops, further attempts fail. This is
    the executable model the engine's attempt loop is tested against.
    """
    attempts = 0
    delays: list[float] = []
    it = iter(outcomes)
    while True:
        attempts += 1
        if next(it, False):
            return Replay(attempts, tuple(delays), "success")
        decision = policy.after_failure(attempts)
        if decision.action is Action.RETRY:
            delays.append(decision.delay_s)
            continue
        outcome = "fallback" if decision.action is Action.FALLBACK else "fail"
        return Replay(attempts, tuple(delays), outcome)


#: What is retried when a step does not say (``StepConfig(retry_on=...)``): every Exception.
RETRY_ALL: tuple[type[Exception], ...] = (Exception,)


def retry_on_types(value: object) -> tuple[type[Exception], ...] | None:
    """``retry_on`` as a tuple of exception types, or None if it is not a valid value.

    Valid: an exception class (a subclass of ``Exception``; ``trio.Cancelled``
    and other ``BaseException``\\ s are never retried) or a tuple/list of them
    (empty: no exception is retried).
    """
    items = (value,) if isinstance(value, type) else value
    if not isinstance(items, (tuple, list)):
        return None
    out = tuple(items)
    for t in out:
        if not (isinstance(t, type) and issubclass(t, Exception)):
            return None
    return out


def is_retried(exc: BaseException, retry_on: tuple[type[Exception], ...]) -> bool:
    """Whether an agent's exception ``exc`` is one ``retry_on`` allows another attempt for."""
    return retry_on is RETRY_ALL or isinstance(exc, retry_on)
