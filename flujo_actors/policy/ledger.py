"""The exact usage ledger (pure arithmetic; the governor actor is its only owner).

Totals are Decimal and ints; a breach is ``total > limit``. Reservations
hold budget for a step before it starts so concurrent steps cannot jointly
overspend; :meth:`UsageLedger.reconcile` swaps a reservation for the actual
usage.
"""

from __future__ import annotations

from decimal import Decimal

import attrs

from ..results import ZERO

__all__ = ["Breach", "Reservation", "UsageLedger"]


@attrs.frozen(slots=True)
class Breach:
    """Which limit was exceeded (``kind`` is ``"cost"`` or ``"tokens"``), and by how much."""

    kind: str
    limit: Decimal | int
    total: Decimal | int

    def describe(self) -> str:
        if self.kind == "cost":
            return (
                f"Cost limit of ${self.limit} exceeded: total cost ${self.total} "
                f"> total_cost_usd_limit {self.limit}"
            )
        return (
            f"Token limit of {self.limit} exceeded: total tokens {self.total} "
            f"> total_tokens_limit {self.limit}"
        )


@attrs.frozen(slots=True)
class Reservation:
    """Budget held for one step until it reports its actual usage."""

    id: int
    cost: Decimal
    tokens: int


@attrs.define
class UsageLedger:
    """Spent and reserved usage of one run, checked against optional limits."""

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
        return self.cost_limit is not None or self.token_limit is not None

    def check(self) -> Breach | None:
        """The breach of the current totals, if any (cost is checked first)."""
        if self.cost_limit is not None and self.cost > self.cost_limit:
            return Breach("cost", self.cost_limit, self.cost)
        if self.token_limit is not None and self.tokens > self.token_limit:
            return Breach("tokens", self.token_limit, self.tokens)
        return None

    def charge(self, cost: Decimal, tokens: int) -> Breach | None:
        """Add usage and report a breach if a limit is now exceeded."""
        self.cost += cost
        self.tokens += tokens
        self.charges += 1
        return self.check()

    def reserve(self, cost: Decimal, tokens: int) -> Reservation | Breach:
        """Hold budget, or return the breach the reservation would cause."""
        if self.cost_limit is not None:
            want = self.cost + self.reserved_cost + cost
            if want > self.cost_limit:
                return Breach("cost", self.cost_limit, want)
        if self.token_limit is not None:
            want_t = self.tokens + self.reserved_tokens + tokens
            if want_t > self.token_limit:
                return Breach("tokens", self.token_limit, want_t)
        res = Reservation(self._next_id, cost, tokens)
        self._next_id += 1
        self._open[res.id] = res
        self.reserved_cost += cost
        self.reserved_tokens += tokens
        return res

    def release(self, reservation_id: int) -> None:
        """Drop a reservation (unknown ids are ignored: release is idempotent)."""
        res = self._open.pop(reservation_id, None)
        if res is not None:
            self.reserved_cost -= res.cost
            self.reserved_tokens -= res.tokens

    def reconcile(self, reservation_id: int, cost: Decimal, tokens: int) -> Breach | None:
        """Release a reservation and charge the actual usage instead."""
        self.release(reservation_id)
        return self.charge(cost, tokens)

    def check_invariants(self) -> None:
        """Reserved totals equal the sum of open reservations; nothing negative."""
        assert self.reserved_cost == sum((r.cost for r in self._open.values()), ZERO)
        assert self.reserved_tokens == sum(r.tokens for r in self._open.values())
        assert self.reserved_cost >= 0 and self.reserved_tokens >= 0
