"""The exact usage ledger of one run (pure arithmetic; the governor actor is its only owner).

Totals are ``Decimal`` dollars and ``int`` tokens, never floats, so ten
charges of ``Decimal("0.1")`` add up to exactly ``Decimal("1.0")``. The sums
are computed in :data:`~flujo_actors.results.EXACT`, never in the ambient
``decimal`` context: an application's ``getcontext().prec`` cannot round them. A
breach is ``total > limit`` (reaching the limit exactly is allowed).

Reservations hold budget for a step before it starts, so concurrent steps
cannot jointly overspend: a reservation is granted only if what is spent,
plus what other running steps hold, plus the request still fits the limit.
:meth:`UsageLedger.reconcile` swaps a reservation for the step's actual
usage; :meth:`UsageLedger.release` drops one whose step never reported.
"""

from __future__ import annotations

from decimal import Decimal

import attrs

from ..results import EXACT, ZERO, add_usd, sub_usd, sum_usd

__all__ = ["Breach", "Reservation", "UsageLedger"]

_divide_int = EXACT.divide_int

_LIMIT_NAMES = {"cost": "total_cost_usd_limit", "tokens": "total_tokens_limit"}


def _amount(kind: str, value: Decimal | int) -> str:
    return f"${value}" if kind == "cost" else f"{value}"


@attrs.frozen(slots=True)
class Breach:
    """A limit that was (or would have been) exceeded.

    Attributes:
        kind: ``"cost"`` or ``"tokens"``.
        limit: the limit.
        total: what was spent when the breach was detected (for a charge,
            the new total, which is ``> limit``).
        requested: for a refused reservation, the amount asked for (None for
            a charge that went over the limit).
        reserved: for a refused reservation, what running steps held then.
    """

    kind: str
    limit: Decimal | int
    total: Decimal | int
    requested: Decimal | int | None = None
    reserved: Decimal | int = 0

    @property
    def limit_name(self) -> str:
        """The ``UsageLimits`` field that was exceeded."""
        return _LIMIT_NAMES[self.kind]

    def describe(self) -> str:
        """One sentence naming the limit, its value and the total (no step name)."""
        name = self.limit_name
        limit = _amount(self.kind, self.limit)
        total = _amount(self.kind, self.total)
        what = "total cost" if self.kind == "cost" else "total tokens"
        if self.requested is None:
            return f"{what} {total} > {name} {limit}"
        return (
            f"reserving {_amount(self.kind, self.requested)} on top of {total} spent and "
            f"{_amount(self.kind, self.reserved)} reserved by running steps would exceed "
            f"{name} {limit}"
        )


@attrs.frozen(slots=True)
class Reservation:
    """Budget held for one step until it reports its actual usage."""

    id: int
    cost: Decimal
    tokens: int


@attrs.define
class UsageLedger:
    """Spent and reserved usage of one run, checked against optional limits.

    Attributes:
        cost_limit: ``total_cost_usd_limit`` (None: no cost limit).
        token_limit: ``total_tokens_limit`` (None: no token limit).
        cost: exact dollars spent.
        tokens: tokens spent.
        reserved_cost: dollars held by open reservations.
        reserved_tokens: tokens held by open reservations.
        charges: how many usage updates were applied (charges and reconciliations).
    """

    cost_limit: Decimal | None = None
    token_limit: int | None = None
    cost: Decimal = ZERO
    tokens: int = 0
    reserved_cost: Decimal = ZERO
    reserved_tokens: int = 0
    charges: int = 0
    _open: dict[int, Reservation] = attrs.field(factory=dict)
    _next_id: int = 1

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return self.cost_limit is not None or self.token_limit is not None

    @property
    def open_reservations(self) -> int:
        """How many reservations are held."""
        return len(self._open)

    def check(self) -> Breach | None:
        """The breach of the current totals, if any (cost is checked first)."""
        if self.cost_limit is not None and self.cost > self.cost_limit:
            return Breach("cost", self.cost_limit, self.cost)
        if self.token_limit is not None and self.tokens > self.token_limit:
            return Breach("tokens", self.token_limit, self.tokens)
        return None

    def charge(self, cost: Decimal, tokens: int, updates: int = 1) -> Breach | None:
        """Add usage (the sum of ``updates`` usage updates); return the breach if a limit is now exceeded."""
        self.cost = add_usd(self.cost, cost)
        self.tokens += tokens
        self.charges += updates
        return self.check()

    def room_for(
        self, cost: Decimal, tokens: int, queued_cost: Decimal = ZERO, queued_tokens: int = 0
    ) -> int | None:
        """How many more updates of ``cost`` and ``tokens`` fit within the limits (exact).

        The largest ``n`` with ``spent + queued + n * usage <= limit`` for every
        limit set, where ``queued`` is usage on its way that will be charged
        first; None when no limit bounds ``n`` (no limit, or a zero usage that
        fits). 0 when not even one fits (or the totals are over a limit already).
        """
        n: int | None = None
        limit = self.cost_limit
        if limit is not None:
            room = sub_usd(sub_usd(limit, self.cost), queued_cost)
            if room < 0:
                return 0
            if cost:
                n = int(_divide_int(room, cost))
        limit_t = self.token_limit
        if limit_t is not None:
            room_t = limit_t - self.tokens - queued_tokens
            if room_t < 0:
                return 0
            if tokens:
                m = room_t // tokens
                n = m if n is None or m < n else n
        return n

    def reserve(self, cost: Decimal, tokens: int) -> Reservation | Breach:
        """Hold budget, or return the breach the reservation would cause (nothing held then)."""
        if self.cost_limit is not None and (
            add_usd(add_usd(self.cost, self.reserved_cost), cost) > self.cost_limit
        ):
            return Breach("cost", self.cost_limit, self.cost, cost, self.reserved_cost)
        if self.token_limit is not None and (
            self.tokens + self.reserved_tokens + tokens > self.token_limit
        ):
            return Breach("tokens", self.token_limit, self.tokens, tokens, self.reserved_tokens)
        res = Reservation(self._next_id, cost, tokens)
        self._next_id += 1
        self._open[res.id] = res
        self.reserved_cost = add_usd(self.reserved_cost, cost)
        self.reserved_tokens += tokens
        return res

    def release(self, reservation_id: int) -> None:
        """Drop a reservation (unknown ids are ignored: release is idempotent)."""
        res = self._open.pop(reservation_id, None)
        if res is not None:
            self.reserved_cost = sub_usd(self.reserved_cost, res.cost)
            self.reserved_tokens -= res.tokens

    def reconcile(self, reservation_id: int, cost: Decimal, tokens: int) -> Breach | None:
        """Release a reservation and charge the actual usage instead."""
        self.release(reservation_id)
        return self.charge(cost, tokens)

    def check_invariants(self) -> None:
        """Reserved totals equal the sum of open reservations and are never negative."""
        assert self.reserved_cost == sum_usd(r.cost for r in self._open.values())
        assert self.reserved_tokens == sum(r.tokens for r in self._open.values())
        assert self.reserved_cost >= 0
        assert self.reserved_tokens >= 0
