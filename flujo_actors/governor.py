"""The governor: one actor per run that owns the usage ledger.

Every usage update of a run, from every step and branch at any depth, is a
message to this actor, so concurrent branches cannot race on the totals.
With limits set, steps ``ask`` (they must know about a breach before
anything after them starts); without limits they ``tell`` and never wait.
On a breach the governor records the breaching step, sets the run's
``breach_event`` and cancels the run's scope, which cancels every in-flight
branch beneath it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import trio

from .actors.actor import Actor
from .policy.ledger import Breach, UsageLedger
from .results import StepResult

__all__ = ["Charge", "Flush", "Governor", "GovernorBreach", "Reserve"]


@attrs.frozen(slots=True)
class Flush:
    """Answered once every message queued before it has been applied."""


@attrs.frozen(slots=True)
class Charge:
    """Usage a step incurred (``reservation_id`` reconciles a reservation)."""

    result: StepResult
    cost: Decimal
    tokens: int
    reservation_id: int | None = None


@attrs.frozen(slots=True)
class Reserve:
    """Hold budget for a step before it starts."""

    step_name: str
    cost: Decimal
    tokens: int


@attrs.frozen(slots=True)
class GovernorBreach:
    """What ended a run: the breach, its message, and the breaching step's result."""

    breach: Breach
    message: str
    result: StepResult | None


class Governor(Actor):
    """Owns one run's :class:`UsageLedger`; the only code that mutates totals.

    Args:
        ledger: the ledger (with the run's limits).
        breach_event: set on the first breach.
        on_breach: called once on the first breach (the runner passes the
            run scope's ``cancel``).
    """

    def __init__(
        self,
        ledger: UsageLedger,
        breach_event: trio.Event,
        on_breach: Callable[[], Any],
    ) -> None:
        self.ledger = ledger
        self.breach_event = breach_event
        self.on_breach = on_breach
        self.breached: GovernorBreach | None = None

    async def handle(self, message: Any) -> Any:
        """Apply one usage message; returns None, a Reservation or a Breach."""
        ledger = self.ledger
        if type(message) is Charge:
            if message.reservation_id is not None:
                breach = ledger.reconcile(message.reservation_id, message.cost, message.tokens)
            else:
                breach = ledger.charge(message.cost, message.tokens)
            if breach is not None:
                self._breach(
                    breach,
                    f"{breach.describe()} (after step {message.result.name!r}).",
                    message.result,
                )
            return breach
        if type(message) is Reserve:
            answer = ledger.reserve(message.cost, message.tokens)
            if isinstance(answer, Breach):
                self._breach(
                    answer,
                    f"{answer.describe()}: step {message.step_name!r} was not started "
                    f"because its reservation (expected cost ${message.cost}, expected "
                    f"tokens {message.tokens}) does not fit the remaining budget.",
                    None,
                )
            return answer
        if type(message) is Flush:
            return None
        raise TypeError(f"Governor got an unknown message {message!r}")

    def _breach(self, breach: Breach, message: str, result: StepResult | None) -> None:
        if self.breached is not None:
            return
        self.breached = GovernorBreach(
            breach,
            message + " Raise UsageLimits or lower the usage of the steps.",
            result,
        )
        self.breach_event.set()
        self.on_breach()
