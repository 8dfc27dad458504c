"""Usage totals are exact whatever the application's ambient ``decimal`` context says."""

from __future__ import annotations

import decimal
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import Flujo, Pipeline, Step, UsageLimitExceededError, UsageLimits
from flujo_actors.policy.ledger import Breach, UsageLedger
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from flujo_actors.steps.kinds import AnyStep

TINY = Decimal("0.50000000000000000000000000001")  # 29 significant digits


def test_ledger_default_precision_does_not_round_a_breach_away() -> None:
    ledger = UsageLedger(cost_limit=Decimal(1))
    assert ledger.charge(TINY, 0) is None
    breach = ledger.charge(TINY, 0)
    assert ledger.cost == Decimal("1.00000000000000000000000000002")
    assert breach is not None
    assert breach.describe() == (
        "total cost $1.00000000000000000000000000002 > total_cost_usd_limit $1"
    )


def test_ledger_ignores_a_low_ambient_precision() -> None:
    with decimal.localcontext(prec=2):
        ledger = UsageLedger(cost_limit=Decimal("1.03"))
        ledger.charge(Decimal("1.0"), 0)
        breach = ledger.charge(Decimal("0.04"), 0)
        res = ledger.reserve(Decimal("0.001"), 0)
    assert ledger.cost == Decimal("1.04")
    assert breach is not None
    assert isinstance(res, Breach)
    ledger.check_invariants()


def test_reservations_release_exactly_under_low_precision() -> None:
    with decimal.localcontext(prec=1):
        ledger = UsageLedger(cost_limit=Decimal(10))
        a = ledger.reserve(Decimal("0.123456789"), 0)
        b = ledger.reserve(Decimal("1.000000001"), 0)
        assert ledger.reserved_cost == Decimal("1.123456790")
        ledger.release(a.id)  # type: ignore[union-attr]
        assert ledger.reserved_cost == Decimal("1.000000001")
        ledger.reconcile(b.id, Decimal("0.999999999"), 3)  # type: ignore[union-attr]
        ledger.check_invariants()
    assert (ledger.reserved_cost, ledger.cost, ledger.tokens) == (
        Decimal(0),
        Decimal("0.999999999"),
        3,
    )


def _run(costs: list[Decimal], limit: Decimal | None, parallel: bool) -> Any:
    steps = []
    for i, c in enumerate(costs):

        async def spend(data: Any, c: Decimal = c) -> UsageOutput:
            return UsageOutput(data, cost_usd=c)

        steps.append(Step.from_callable(spend, name=f"s{i}"))
    if parallel:
        pipeline: AnyStep | Pipeline = Step.parallel("fan", {s.name: s for s in steps})
    else:
        pipeline = Pipeline(steps=steps)
    runner = Flujo(pipeline, usage_limits=UsageLimits(total_cost_usd_limit=limit))

    async def main() -> Any:
        try:
            return await runner.run_async("x")
        except UsageLimitExceededError as exc:
            return exc

    return trio.run(main)


costs_st = st.lists(
    st.decimals(
        min_value=Decimal(0), max_value=Decimal(3), places=30, allow_nan=False, allow_infinity=False
    ),
    min_size=1,
    max_size=6,
)


@given(
    prec=st.integers(min_value=1, max_value=28),
    costs=costs_st,
    limit_cut=st.integers(min_value=0, max_value=6),
    parallel=st.booleans(),
)
def test_run_totals_are_exact_under_any_ambient_precision(
    prec: int, costs: list[Decimal], limit_cut: int, parallel: bool
) -> None:
    exact = sum((Fraction(c) for c in costs), Fraction(0))
    # A limit exactly at a partial sum (or none): reaching it is allowed, passing it breaches.
    limit = None
    if limit_cut < len(costs):
        with decimal.localcontext(prec=decimal.MAX_PREC):
            limit = sum(costs[: limit_cut + 1], Decimal(0))
    with decimal.localcontext(prec=prec):
        outcome = _run(costs, limit, parallel)
    if isinstance(outcome, UsageLimitExceededError):
        assert limit is not None
        result = outcome.result
        assert result is not None
        assert Fraction(result.total_cost_usd) > Fraction(limit)
    else:
        result = outcome
        assert Fraction(result.total_cost_usd) == exact
        assert limit is None or exact <= Fraction(limit)
    if not parallel:
        assert Fraction(result.total_cost_usd) == sum(
            (Fraction(r.cost_usd) for r in result.step_history), Fraction(0)
        )


def test_two_costs_past_28_digits_breach_a_limit_of_one() -> None:
    outcome = _run([TINY, TINY], Decimal(1), parallel=False)
    assert isinstance(outcome, UsageLimitExceededError)
    assert outcome.result is not None
    assert outcome.result.total_cost_usd == Decimal("1.00000000000000000000000000002")


@pytest.mark.parametrize("parallel", [False, True])
def test_application_precision_two_does_not_round_totals(parallel: bool) -> None:
    with decimal.localcontext(prec=2):
        result = _run([Decimal("1.0"), Decimal("0.04")], None, parallel)
    assert result.total_cost_usd == Decimal("1.04")


def test_a_breach_partial_tree_adds_up_exactly_under_low_precision() -> None:
    def spender(cost: str, delay: float) -> Any:
        async def spend(data: Any) -> UsageOutput:
            await trio.sleep(delay)
            return UsageOutput(data, cost_usd=Decimal(cost))

        return spend

    fan = Step.parallel(
        "fan",
        {
            "a": Step.from_callable(spender("1.01", 0), name="a"),
            "b": Step.from_callable(spender("0.04", 1), name="b"),
            "c": Step.from_callable(spender("5", 2), name="c"),
            "d": Step.from_callable(spender("0", 9), name="d"),
        },
    )
    runner = Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=2))

    async def main() -> UsageLimitExceededError:
        with pytest.raises(UsageLimitExceededError) as info:
            await runner.run_async("x")
        return info.value

    with decimal.localcontext(prec=2):
        err = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert err.result is not None
    (cut,) = err.result.step_history
    assert cut.cost_usd == Decimal("6.05") == err.result.total_cost_usd
