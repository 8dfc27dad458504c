"""Attempt decisions for an agent step (pure: no trio, no I/O).

The step supervisor asks :meth:`AttemptPolicy.after_failure` what to do
after a failed attempt and executes the answer; the policy itself is a plain
value tested without an event loop.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["Action", "AttemptPolicy", "Decision"]


class Action(enum.Enum):
    """What the supervisor does after a failed attempt."""

    RETRY = "retry"
    FALLBACK = "fallback"
    FAIL = "fail"


@attrs.frozen(slots=True)
class Decision:
    """An action plus, for RETRY, how long to wait first (seconds)."""

    action: Action
    delay_s: float = 0.0


@attrs.frozen(slots=True)
class AttemptPolicy:
    """Retry rules of one step.

    Attributes:
        max_attempts: primary attempts allowed (``max_retries + 1``), >= 1.
        backoff_s: delay before the first retry.
        backoff_factor: growth of the delay; retry ``k`` (0-based) waits
            ``backoff_s * backoff_factor**k``.
        has_fallback: whether a fallback step takes over when attempts are spent.
    """

    max_attempts: int = attrs.field(validator=attrs.validators.ge(1))
    backoff_s: float = 0.0
    backoff_factor: float = 2.0
    has_fallback: bool = False

    def delay_before_retry(self, attempts_made: int) -> float:
        """Wait before the attempt that follows ``attempts_made`` attempts."""
        if self.backoff_s <= 0:
            return 0.0
        return float(self.backoff_s * self.backoff_factor ** (attempts_made - 1))

    def after_failure(self, attempts_made: int) -> Decision:
        """Decide after ``attempts_made`` attempts, the last of which failed."""
        if attempts_made < self.max_attempts:
            return Decision(Action.RETRY, self.delay_before_retry(attempts_made))
        if self.has_fallback:
            return Decision(Action.FALLBACK)
        return Decision(Action.FAIL)
