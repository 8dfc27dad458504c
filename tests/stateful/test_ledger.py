"""The usage ledger: exact arithmetic, breach rules and reservations (pure, no event loop)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from flujo_actors.policy.ledger import Breach, Reservation, UsageLedger
from flujo_actors.results import to_decimal

costs = st.one_of(
    st.decimals(min_value=0, max_value=5, places=3),
    st.sampled_from([Decimal("0.1"), Decimal("0.2"), Decimal("0.3"), Decimal(0)]),
)
tokens = st.integers(0, 500)
limits_cost = st.one_of(st.none(), st.decimals(min_value=0, max_value=20, places=2))
limits_tokens = st.one_of(st.none(), st.integers(0, 3000))


def test_ten_tenths_are_exactly_one_and_do_not_breach_one() -> None:
    ledger = UsageLedger(cost_limit=to_decimal(1.0))
    breaches = [ledger.charge(to_decimal(0.1), 0) for _ in range(10)]
    assert breaches == [None] * 10
    assert ledger.cost == Decimal("1.0")
    assert ledger.charges == 10
    assert ledger.charge(Decimal("0.01"), 0) == Breach("cost", Decimal("1.0"), Decimal("1.01"))


def test_breach_is_strictly_greater_than_the_limit() -> None:
    ledger = UsageLedger(cost_limit=Decimal(1), token_limit=100)
    assert ledger.charge(Decimal(1), 100) is None
    assert ledger.check() is None
    assert ledger.charge(Decimal(0), 1) == Breach("tokens", 100, 101)


def test_cost_is_reported_before_tokens_when_both_are_exceeded() -> None:
    ledger = UsageLedger(cost_limit=Decimal(1), token_limit=1)
    assert ledger.charge(Decimal(2), 2) == Breach("cost", Decimal(1), Decimal(2))


def test_without_limits_nothing_breaches() -> None:
    ledger = UsageLedger()
    assert not ledger.limited
    assert ledger.charge(Decimal(10**9), 10**12) is None
    assert isinstance(ledger.reserve(Decimal(10**9), 10**12), Reservation)


def test_reservation_is_refused_when_it_cannot_fit() -> None:
    ledger = UsageLedger(cost_limit=Decimal("1.0"))
    ledger.charge(Decimal("0.5"), 0)
    held = ledger.reserve(Decimal("0.3"), 0)
    assert held == Reservation(1, Decimal("0.3"), 0)
    refused = ledger.reserve(Decimal("0.3"), 0)
    assert refused == Breach("cost", Decimal("1.0"), Decimal("0.5"), Decimal("0.3"), Decimal("0.3"))
    assert refused.describe() == (
        "reserving $0.3 on top of $0.5 spent and $0.3 reserved by running steps "
        "would exceed total_cost_usd_limit $1.0"
    )
    # what fits exactly is granted
    assert isinstance(ledger.reserve(Decimal("0.2"), 0), Reservation)
    assert ledger.reserved_cost == Decimal("0.5")


def test_reconcile_swaps_the_reservation_for_the_actual_usage() -> None:
    ledger = UsageLedger(cost_limit=Decimal(1), token_limit=10)
    res = ledger.reserve(Decimal("0.9"), 9)
    assert isinstance(res, Reservation)
    assert ledger.reconcile(res.id, Decimal("0.4"), 4) is None
    assert (ledger.cost, ledger.tokens) == (Decimal("0.4"), 4)
    assert (ledger.reserved_cost, ledger.reserved_tokens) == (Decimal(0), 0)
    assert ledger.open_reservations == 0
    # the actual usage may exceed the reservation: that is a breach like any other
    res2 = ledger.reserve(Decimal("0.1"), 1)
    assert isinstance(res2, Reservation)
    assert ledger.reconcile(res2.id, Decimal("0.7"), 1) == Breach(
        "cost", Decimal(1), Decimal("1.1")
    )


def test_release_is_idempotent() -> None:
    ledger = UsageLedger(cost_limit=Decimal(1))
    res = ledger.reserve(Decimal("0.6"), 0)
    assert isinstance(res, Reservation)
    ledger.release(res.id)
    ledger.release(res.id)
    ledger.release(12345)
    assert ledger.reserved_cost == 0
    ledger.check_invariants()


def test_describe_names_the_limit_its_value_and_the_total() -> None:
    assert Breach("cost", Decimal("1.00"), Decimal("1.25")).describe() == (
        "total cost $1.25 > total_cost_usd_limit $1.00"
    )
    assert Breach("tokens", 100, 101).describe() == "total tokens 101 > total_tokens_limit 100"
    assert Breach("tokens", 100, 90, 20, 5).describe() == (
        "reserving 20 on top of 90 spent and 5 reserved by running steps would exceed "
        "total_tokens_limit 100"
    )


@pytest.mark.parametrize("value", [0.1, 0.2, 1e-7, 123.456, 3.0])
def test_floats_enter_by_their_repr(value: float) -> None:
    assert to_decimal(value) == Decimal(repr(value))


@given(
    amounts=st.lists(st.tuples(costs, tokens), max_size=30),
    cost_limit=limits_cost,
    token_limit=limits_tokens,
)
def test_totals_are_exact_and_breach_iff_a_total_exceeds_its_limit(
    amounts: list[tuple[Decimal, int]], cost_limit: Decimal | None, token_limit: int | None
) -> None:
    ledger = UsageLedger(cost_limit, token_limit)
    cost_sum, token_sum = Decimal(0), 0
    for c, t in amounts:
        cost_sum += c
        token_sum += t
        breach = ledger.charge(c, t)
        over_cost = cost_limit is not None and cost_sum > cost_limit
        over_tokens = token_limit is not None and token_sum > token_limit
        assert (breach is not None) == (over_cost or over_tokens)
        if over_cost:
            assert cost_limit is not None
            assert breach == Breach("cost", cost_limit, cost_sum)
        elif over_tokens:
            assert token_limit is not None
            assert breach == Breach("tokens", token_limit, token_sum)
    assert (ledger.cost, ledger.tokens, ledger.charges) == (cost_sum, token_sum, len(amounts))


class LedgerMachine(RuleBasedStateMachine):
    """Random charges, reservations, reconciliations and releases against a model."""

    held = Bundle("held")

    @initialize(cost_limit=limits_cost, token_limit=limits_tokens)
    def start(self, cost_limit: Decimal | None, token_limit: int | None) -> None:
        self.ledger = UsageLedger(cost_limit, token_limit)
        self.cost = Decimal(0)
        self.tokens = 0
        self.open: dict[int, tuple[Decimal, int]] = {}

    def _fits(self, c: Decimal, t: int) -> bool:
        led = self.ledger
        reserved_c = sum((v[0] for v in self.open.values()), Decimal(0))
        reserved_t = sum(v[1] for v in self.open.values())
        return (led.cost_limit is None or self.cost + reserved_c + c <= led.cost_limit) and (
            led.token_limit is None or self.tokens + reserved_t + t <= led.token_limit
        )

    @rule(c=costs, t=tokens)
    def charge(self, c: Decimal, t: int) -> None:
        self.cost += c
        self.tokens += t
        self.ledger.charge(c, t)

    @rule(target=held, c=costs, t=tokens)
    def reserve(self, c: Decimal, t: int) -> int:
        fits = self._fits(c, t)
        answer = self.ledger.reserve(c, t)
        assert isinstance(answer, Reservation) == fits
        if isinstance(answer, Reservation):
            assert (answer.cost, answer.tokens) == (c, t)
            self.open[answer.id] = (c, t)
            return answer.id
        assert answer.requested in (c, t)
        return -1  # a refused reservation: reconciling or releasing it is a no-op

    @rule(rid=consumes(held), fraction=st.sampled_from([Decimal(0), Decimal("0.5"), Decimal(1)]))
    def reconcile_within(self, rid: int, fraction: Decimal) -> None:
        c, t = self.open.pop(rid, (Decimal(0), 0))
        actual_c, actual_t = c * fraction, int(t * fraction)
        self.cost += actual_c
        self.tokens += actual_t
        self.ledger.reconcile(rid, actual_c, actual_t)

    @rule(rid=consumes(held))
    def release(self, rid: int) -> None:
        self.open.pop(rid, None)
        self.ledger.release(rid)

    @invariant()
    def matches_the_model(self) -> None:
        led = self.ledger
        led.check_invariants()
        assert (led.cost, led.tokens) == (self.cost, self.tokens)
        assert led.reserved_cost == sum((v[0] for v in self.open.values()), Decimal(0))
        assert led.reserved_tokens == sum(v[1] for v in self.open.values())
        assert led.open_reservations == len(self.open)


class ReservedOnlyMachine(RuleBasedStateMachine):
    """When all usage goes through reservations and stays within them, spend never exceeds."""

    held = Bundle("held")

    @initialize(cost_limit=st.decimals(min_value=0, max_value=5, places=2), token_limit=tokens)
    def start(self, cost_limit: Decimal, token_limit: int) -> None:
        self.ledger = UsageLedger(cost_limit, token_limit)

    @rule(target=held, c=costs, t=tokens)
    def reserve(self, c: Decimal, t: int) -> tuple[int, Decimal, int]:
        answer = self.ledger.reserve(c, t)
        if isinstance(answer, Breach):
            return (-1, Decimal(0), 0)
        return (answer.id, c, t)

    @rule(held=consumes(held), data=st.data())
    def reconcile(self, held: tuple[int, Decimal, int], data: st.DataObject) -> None:
        rid, c, t = held
        actual_c = data.draw(st.decimals(min_value=0, max_value=c, places=3))
        actual_t = data.draw(st.integers(0, t))
        if rid >= 0:
            assert self.ledger.reconcile(rid, actual_c, actual_t) is None

    @invariant()
    def never_overspends(self) -> None:
        led = self.ledger
        assert led.cost_limit is not None and led.token_limit is not None
        assert led.cost + led.reserved_cost <= led.cost_limit
        assert led.tokens + led.reserved_tokens <= led.token_limit
        assert led.check() is None


TestLedgerMachine = LedgerMachine.TestCase
TestReservedOnlyMachine = ReservedOnlyMachine.TestCase
