"""The governor's messages: what steps send to the run's governor (see :mod:`flujo_actors.governor`).

Each is a :class:`~flujo_actors.actors.mailbox.Request` of the governor's
batching mailbox, so it can be told (nobody waits) or asked (the asker parks
in ``waiter`` until the governor answers it). A :class:`Tally` is never asked:
it holds told usage updates that admission proved cannot breach.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .actors.mailbox import Request
from .results import EXACT, ZERO, add_usd

if TYPE_CHECKING:
    from decimal import Decimal

    from .results import StepResult

__all__ = ["Charge", "Flush", "GovernorMessage", "Release", "Reserve", "Tally", "multiply_usd"]

#: ``a * n`` exactly, whatever the ambient ``decimal`` context says (the ledger's context).
multiply_usd: Final = EXACT.multiply


class GovernorMessage(Request):
    """Base of governor messages: an asker's task waits in ``waiter`` for ``answer``."""

    __slots__ = ()


class Charge(GovernorMessage):
    """Usage a step incurred (``reservation_id`` reconciles that reservation).

    Answered with ``None``, or with the :class:`Breach` it caused.
    """

    __slots__ = ("cost", "reservation_id", "result", "tokens")

    def __init__(
        self, result: StepResult, cost: Decimal, tokens: int, reservation_id: int | None = None
    ) -> None:
        self.waiter = None
        self.error = None
        self.result = result
        self.cost = cost
        self.tokens = tokens
        self.reservation_id = reservation_id

    def __repr__(self) -> str:
        return (
            f"Charge(step={self.result.name!r}, cost={self.cost!r}, tokens={self.tokens!r}, "
            f"reservation_id={self.reservation_id!r})"
        )


class Tally(GovernorMessage):
    """Told usage updates in one message (see :meth:`Governor.tally`).

    ``units`` updates of one repeated usage (``unit_cost``, the very same
    Decimal object each time, and ``unit_tokens``) are only counted; any
    other updates merged into it are summed exactly in ``rest_cost`` and
    ``rest_tokens`` (``others`` of them). Applied as :meth:`total`, which is
    exactly the sum of its updates. ``credit``: how many units the governor
    holds room for under the run's limits (None: no limit bounds them).
    Never asked: admission proved that none of its updates can breach.
    """

    __slots__ = (
        "credit",
        "others",
        "rest_cost",
        "rest_tokens",
        "unit_cost",
        "unit_tokens",
        "units",
    )

    def __init__(self, cost: Decimal, tokens: int, credit: int | None = None) -> None:
        self.waiter = None
        self.error = None
        self.unit_cost = cost
        self.unit_tokens = tokens
        self.units = 1
        self.credit = credit
        self.rest_cost = ZERO
        self.rest_tokens = 0
        self.others = 0

    @property
    def updates(self) -> int:
        """How many usage updates it holds."""
        return self.units + self.others

    @property
    def cost(self) -> Decimal:
        """The exact cost of all its updates."""
        return self.total()[0]

    @property
    def tokens(self) -> int:
        """The tokens of all its updates."""
        return self.total()[1]

    def total(self) -> tuple[Decimal, int]:
        """The exact cost and tokens of all its updates."""
        cost = multiply_usd(self.unit_cost, self.units)
        tokens = self.unit_tokens * self.units
        if self.others:
            return add_usd(cost, self.rest_cost), tokens + self.rest_tokens
        return cost, tokens

    def __repr__(self) -> str:
        cost, tokens = self.total()
        return f"Tally(updates={self.updates!r}, cost={cost!r}, tokens={tokens!r})"


class Reserve(GovernorMessage):
    """Hold budget for a step before it starts.

    Answered with a :class:`Reservation`, or with the :class:`Breach` it
    would cause (the run is then cancelled: the step must not start).
    """

    __slots__ = ("cost", "step_name", "tokens")

    def __init__(self, step_name: str, cost: Decimal, tokens: int) -> None:
        self.waiter = None
        self.error = None
        self.step_name = step_name
        self.cost = cost
        self.tokens = tokens

    def __repr__(self) -> str:
        return f"Reserve(step={self.step_name!r}, cost={self.cost!r}, tokens={self.tokens!r})"


class Release(GovernorMessage):
    """Drop a reservation whose step will never report (it was cancelled)."""

    __slots__ = ("reservation_id",)
    #: Left in a stopped governor's mailbox it is dropped: its ledger is gone.
    DEAD_LETTER = False

    def __init__(self, reservation_id: int) -> None:
        self.waiter = None
        self.error = None
        self.reservation_id = reservation_id

    def __repr__(self) -> str:
        return f"Release(reservation_id={self.reservation_id!r})"


class Flush(GovernorMessage):
    """Answered (with None) once every message queued before it has been applied."""

    __slots__ = ()

    def __init__(self) -> None:
        self.waiter = None
        self.error = None

    def __repr__(self) -> str:
        return "Flush()"
