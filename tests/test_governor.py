"""The governor actor: its mailbox (offer, tell, ask), batching, breach, drain and cancellation."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import ActorStopped
from flujo_actors.errors import FlujoInternalError
from flujo_actors.governor import TELL_BATCH, Charge, Flush, Governor, Release, Reserve
from flujo_actors.policy.ledger import Breach, Reservation, UsageLedger
from flujo_actors.results import StepResult


class Harness:
    """A governor on a ledger, started in a nursery, recording breach callbacks."""

    def __init__(self, cost_limit: Decimal | None = None, token_limit: int | None = None) -> None:
        self.ledger = UsageLedger(cost_limit, token_limit)
        self.event = trio.Event()
        self.breaches = 0
        self.governor = Governor(self.ledger, self.event, self._on_breach)

    def _on_breach(self) -> None:
        self.breaches += 1


def charge(name: str, cost: str | int = 0, tokens: int = 0, rid: int | None = None) -> Charge:
    return Charge(StepResult(name), Decimal(cost), tokens, rid)


async def test_told_usage_is_applied_in_order_and_flush_waits_for_it() -> None:
    h = Harness()
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        assert gov is h.governor and gov.state == "running"
        for i in range(5):
            gov.tell_nowait(charge(f"s{i}", "0.1", 1))
        assert h.ledger.charges == 0  # told: nothing applied before the governor's turn
        assert await gov.ask(Flush()) is None
        assert (h.ledger.cost, h.ledger.tokens, h.ledger.charges) == (Decimal("0.5"), 5, 5)
        gov.close()
    assert gov.state == "stopped"
    assert gov.handled == 6


async def test_a_burst_is_applied_in_one_turn() -> None:
    h = Harness()
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        for _ in range(1000):
            gov.tell_nowait(charge("s", "0.001"))
        await gov.ask(Flush())
        gov.close()
    assert h.ledger.cost == Decimal("1.000")
    assert gov.max_batch == 1001  # every update plus the flush, in a single turn


async def test_told_updates_wake_the_governor_once_per_batch() -> None:
    h = Harness()
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        for _ in range(TELL_BATCH - 1):
            gov.tell_nowait(charge("s", "0.01"))
        await trio.testing.wait_all_tasks_blocked()
        assert h.ledger.charges == 0  # nobody waits for told updates: no wake-up yet
        stats = gov.statistics()
        assert (stats.name, stats.state, stats.mailbox_depth) == (
            "governor",
            "running",
            TELL_BATCH - 1,
        )
        assert stats.mailbox_capacity == math.inf
        gov.tell_nowait(charge("s", "0.01"))
        await trio.testing.wait_all_tasks_blocked()
        assert h.ledger.charges == TELL_BATCH  # the batch is full: applied in one turn
        assert gov.statistics().mailbox_depth == 0
        assert gov.statistics().handled == TELL_BATCH
        gov.close()
    assert h.ledger.cost == Decimal("0.01") * TELL_BATCH
    assert gov.statistics().state == "stopped"


async def test_offer_admits_what_cannot_breach_and_refuses_what_might() -> None:
    h = Harness(cost_limit=Decimal("1.0"), token_limit=100)
    gov = h.governor
    # nothing applied yet, but the mailbox counts what is queued
    assert gov.offer(charge("a", "0.6", 50)) is True
    assert gov.offer(charge("b", "0.4", 50)) is True  # exactly at both limits: fine
    assert gov.offer(charge("c", "0.01")) is False  # 1.01 > 1.0 once a and b apply
    assert gov.offer(charge("d", 0, 1)) is False  # 101 tokens
    assert gov.offer(charge("e")) is True  # zero usage always fits
    async with trio.open_nursery() as nursery:
        await nursery.start(gov.serve)
        await gov.ask(Flush())
        gov.close()
    assert (h.ledger.cost, h.ledger.tokens, h.ledger.charges) == (Decimal("1.0"), 100, 3)
    assert h.breaches == 0


async def test_an_asked_charge_that_breaches_gets_the_breach_and_cancels_once() -> None:
    h = Harness(cost_limit=Decimal("1.00"))
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        assert await gov.ask(charge("a", "0.50")) is None
        answer = await gov.ask(charge("b", "0.75"))
        assert answer == Breach("cost", Decimal("1.00"), Decimal("1.25"))
        assert h.event.is_set() and h.breaches == 1
        # later breaches are applied but do not call on_breach again
        assert await gov.ask(charge("c", "1")) == Breach("cost", Decimal("1.00"), Decimal("2.25"))
        assert h.breaches == 1
        gov.close()
    breached = gov.breached
    assert breached is not None and breached.result is not None
    assert breached.result.name == "b"
    assert breached.message == (
        "Usage limit exceeded after step 'b': total cost $1.25 > total_cost_usd_limit $1.00. "
        "Raise UsageLimits(total_cost_usd_limit=...) or lower the steps' usage."
    )


async def test_token_breach_message() -> None:
    h = Harness(token_limit=10)
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        await gov.ask(charge("chatty", 0, 11))
        gov.close()
    assert gov.breached is not None
    assert gov.breached.message == (
        "Usage limit exceeded after step 'chatty': total tokens 11 > total_tokens_limit 10. "
        "Raise UsageLimits(total_tokens_limit=...) or lower the steps' usage."
    )


async def test_reservations_reconcile_release_and_refusal() -> None:
    h = Harness(cost_limit=Decimal("1.0"))
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        held = await gov.ask(Reserve("a", Decimal("0.7"), 0))
        assert held == Reservation(1, Decimal("0.7"), 0)
        refused = await gov.ask(Reserve("b", Decimal("0.4"), 0))
        assert isinstance(refused, Breach)
        assert h.event.is_set()
        gov.tell_nowait(charge("a", "0.2", 0, held.id))
        gov.tell_nowait(Release(held.id))  # idempotent after the reconcile
        await gov.ask(Flush())
        gov.close()
    assert (h.ledger.cost, h.ledger.reserved_cost) == (Decimal("0.2"), Decimal(0))
    assert gov.breached is not None and gov.breached.result is None
    assert gov.breached.message == (
        "Usage limit would be exceeded: step 'b' was not started because reserving $0.4 on "
        "top of $0 spent and $0.7 reserved by running steps would exceed "
        "total_cost_usd_limit $1.0. Raise UsageLimits(total_cost_usd_limit=...) or lower the "
        "step's expected_cost_usd."
    )


async def test_a_cancelled_asker_still_has_its_usage_recorded() -> None:
    h = Harness(cost_limit=Decimal(100))
    gov = h.governor
    with trio.CancelScope() as scope:
        scope.cancel()
        await gov.ask(charge("a", "3"))  # cancelled while waiting: the answer is dropped
    assert scope.cancelled_caught
    async with trio.open_nursery() as nursery:
        await nursery.start(gov.serve)
        await gov.ask(Flush())
        gov.close()
    assert h.ledger.cost == Decimal(3)


async def test_an_unknown_message_fails_its_asker_not_the_governor() -> None:
    h = Harness()

    class Bogus(Flush):
        pass

    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        with pytest.raises(TypeError, match=r"^Governor got an unknown message Flush\(\)\.$"):
            await gov.ask(Bogus())
        assert await gov.ask(Flush()) is None  # still serving
        gov.close()


async def test_close_drains_what_is_queued_then_later_messages_are_dead_letters() -> None:
    h = Harness()
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        gov.tell_nowait(charge("a", "1"))
        gov.close()
        gov.tell_nowait(charge("b", "2"))  # queued before the governor's last turn: applied
    assert h.ledger.cost == Decimal(3)
    late = charge("late", "5")
    gov.tell_nowait(late)
    later = charge("later", "5")
    assert gov.offer(later) is True
    gov.tell_nowait(Release(7))  # a release for a finished run is dropped silently
    letters = gov.dead_letters.snapshot()
    assert [(d.recipient, d.message, d.reason) for d in letters] == [
        ("governor", late, "stopped"),
        ("governor", later, "stopped"),
    ]
    with pytest.raises(
        ActorStopped, match=r"^The run's governor has stopped; Flush\(\) was not applied\.$"
    ):
        await gov.ask(Flush())
    assert h.ledger.cost == Decimal(3)


async def test_cancelling_the_governor_fails_waiting_askers_and_dead_letters_tells() -> None:
    h = Harness()
    gov = h.governor
    errors: list[ActorStopped] = []

    async def asker() -> None:
        try:
            await gov.ask(charge("waiting", "1"))
        except ActorStopped as exc:
            errors.append(exc)

    scope = trio.CancelScope()

    async def serve() -> None:
        with scope:
            await gov.serve()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        told = charge("told", "2")
        gov.tell_nowait(told)  # queued in the cancelling turn: never applied
        nursery.start_soon(asker)
    assert gov.state == "stopped"
    assert len(errors) == 1
    assert h.ledger.charges == 0
    assert [(d.message, d.reason) for d in gov.dead_letters.snapshot()] == [(told, "stopped")]


# -- concurrency ----------------------------------------------------------------------------


async def test_ten_thousand_concurrent_charges_are_exact() -> None:
    h = Harness(cost_limit=Decimal(1000))
    go = trio.Event()

    async def branch(i: int) -> None:
        await go.wait()
        msg = charge(f"b{i}", "0.001", 1)
        if not h.governor.offer(msg):
            await h.governor.ask(msg)

    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        async with trio.open_nursery() as branches:
            for i in range(10_000):
                branches.start_soon(branch, i)
            await trio.testing.wait_all_tasks_blocked()
            go.set()
        await gov.ask(Flush())
        gov.close()
    assert (h.ledger.cost, h.ledger.tokens) == (Decimal("10.000"), 10_000)
    assert h.ledger.charges == 10_000
    assert gov.max_batch >= 10_000  # one turn for the whole burst (the flush may join it)


def _script() -> Any:
    amount = st.tuples(st.decimals(0, 3, places=2), st.integers(0, 50))
    return st.lists(
        st.tuples(st.sampled_from(["charge", "reserve"]), amount, st.integers(0, 3)),
        min_size=1,
        max_size=25,
    )


@given(
    script=_script(),
    cost_limit=st.decimals(0, 10, places=1),
    token_limit=st.integers(0, 300),
)
def test_concurrent_reserved_steps_never_overspend(
    script: list[tuple[str, tuple[Decimal, int], int]], cost_limit: Decimal, token_limit: int
) -> None:
    """Each task reserves, sleeps, then reports at most what it reserved: spend stays in budget."""

    async def main() -> tuple[UsageLedger, int]:
        h = Harness(cost_limit, token_limit)
        refused = [0]

        async def task(op: str, amount: tuple[Decimal, int], delay: int) -> None:
            cost, tokens = amount
            answer = await h.governor.ask(Reserve("t", cost, tokens))
            if isinstance(answer, Breach):
                refused[0] += 1
                return
            await trio.sleep(delay)
            spent = (cost / 2, tokens // 2) if op == "charge" else (cost, tokens)
            msg = Charge(StepResult("t"), spent[0], spent[1], answer.id)
            if not h.governor.offer(msg):
                assert await h.governor.ask(msg) is None
            h.ledger.check_invariants()
            assert h.ledger.cost + h.ledger.reserved_cost <= cost_limit
            assert h.ledger.tokens + h.ledger.reserved_tokens <= token_limit

        async with trio.open_nursery() as nursery:
            await nursery.start(h.governor.serve)
            async with trio.open_nursery() as tasks:
                for op, amount, delay in script:
                    tasks.start_soon(task, op, amount, delay)
            await h.governor.ask(Flush())
            h.governor.close()
        return h.ledger, refused[0]

    ledger, refused = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert ledger.check() is None
    assert ledger.open_reservations == 0
    assert ledger.charges == len(script) - refused


# -- tallies: told usage without a message per update -------------------------------------


async def test_tallied_usage_is_merged_into_the_tail_and_counted_as_updates() -> None:
    h = Harness(cost_limit=Decimal(10), token_limit=100)
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        assert gov.tally(Decimal("0.1"), 1) is True
        assert gov.tally(Decimal("0.2"), 2) is True
        assert gov.queued_usage() == (Decimal("0.3"), 3)
        assert gov.statistics().mailbox_depth == 2  # two updates wait, in one Tally
        (tally,) = list(gov.mailbox._queue)
        assert repr(tally) == "Tally(updates=2, cost=Decimal('0.3'), tokens=3)"
        await gov.ask(Flush())
        assert (h.ledger.cost, h.ledger.tokens, h.ledger.charges) == (Decimal("0.3"), 3, 2)
        assert gov.queued_usage() == (Decimal(0), 0)
        assert gov.statistics().handled == 3  # two updates and the flush
        gov.close()


async def test_a_message_behind_a_tally_closes_it_so_order_is_kept() -> None:
    h = Harness(cost_limit=Decimal("1.0"))
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        assert gov.tally(Decimal("0.6"), 0) is True
        gov.tell_nowait(charge("told", "0.1"))
        assert gov.tally(Decimal("0.3"), 0) is True  # a new tally behind the Charge
        assert [type(m).__name__ for m in gov.mailbox._queue] == ["Tally", "Charge", "Tally"]
        assert gov.tally(Decimal("0.01"), 0) is False  # 1.01 > 1.0 once all three apply
        await gov.ask(Flush())
        gov.close()
    assert (h.ledger.cost, h.ledger.charges, h.breaches) == (Decimal("1.0"), 3, 0)


async def test_a_tally_taken_by_the_governor_is_not_merged_into() -> None:
    h = Harness()
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        gov.tally(Decimal(1), 0)
        await gov.ask(Flush())  # the governor took and applied the first tally
        gov.tally(Decimal(2), 0)
        assert gov.statistics().mailbox_depth == 1
        await gov.ask(Flush())
        gov.close()
    assert (h.ledger.cost, h.ledger.charges) == (Decimal(3), 2)


async def test_tallied_updates_wake_the_governor_once_per_batch() -> None:
    h = Harness()
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        for _ in range(TELL_BATCH - 1):
            gov.tally(Decimal("0.01"), 1)
        await trio.testing.wait_all_tasks_blocked()
        assert h.ledger.charges == 0
        assert gov.statistics().mailbox_depth == TELL_BATCH - 1
        gov.tally(Decimal("0.01"), 1)
        await trio.testing.wait_all_tasks_blocked()
        assert (h.ledger.charges, h.ledger.tokens) == (TELL_BATCH, TELL_BATCH)
        assert (gov.statistics().mailbox_depth, gov.statistics().handled) == (0, TELL_BATCH)
        gov.close()
    assert h.ledger.cost == Decimal("0.01") * TELL_BATCH


async def test_tallies_left_by_a_cancelled_or_stopped_governor_are_dead_letters() -> None:
    h = Harness()
    gov = h.governor
    scope = trio.CancelScope()

    async def serve() -> None:
        with scope:
            await gov.serve()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        gov.tally(Decimal("0.5"), 5)
        gov.tally(Decimal("0.25"), 1)
    assert gov.tally(Decimal(1), 0) is True  # stopped: nothing to refuse, it is recorded
    assert h.ledger.charges == 0
    assert [(repr(d.message), d.reason) for d in gov.dead_letters.snapshot()] == [
        ("Tally(updates=2, cost=Decimal('0.75'), tokens=6)", "stopped"),
        ("Tally(updates=1, cost=Decimal('1'), tokens=0)", "stopped"),
    ]


async def test_a_tally_that_breaches_is_a_governor_bug_not_a_silent_overspend() -> None:
    h = Harness(cost_limit=Decimal(1))
    gov = h.governor
    assert gov.tally(Decimal("0.5"), 0) is True
    h.ledger.cost = Decimal("0.9")  # behind the governor's back: its proof no longer holds
    gov.close()
    with pytest.raises(
        FlujoInternalError,
        match=r"^the governor admitted Tally\(updates=1, cost=Decimal\('0\.5'\), tokens=0\) "
        r"without a check, but it breached \(cost 1\.4, tokens 0\)$",
    ):
        await gov.serve()
    assert gov.state == "stopped"


@given(
    updates=st.lists(
        st.tuples(st.booleans(), st.decimals(0, 1, places=3), st.integers(0, 20)), max_size=60
    ),
    cost_limit=st.decimals(0, 10, places=2),
    token_limit=st.integers(0, 400),
)
def test_tallies_and_asked_charges_total_exactly_and_breach_at_the_first_overspend(
    updates: list[tuple[bool, Decimal, int]], cost_limit: Decimal, token_limit: int
) -> None:
    """Tasks charge in order (tally when admitted, else ask), like RunState.charge does:
    the totals are exact, and the breach is the first update that took a total over."""

    async def main() -> Harness:
        h = Harness(cost_limit, token_limit)
        async with trio.open_nursery() as nursery:
            gov = await nursery.start(h.governor.serve)
            for i, (tally, cost, tokens) in enumerate(updates):
                if tally and gov.tally(cost, tokens):
                    continue
                msg = charge(f"s{i}", cost, tokens)  # type: ignore[arg-type]
                if not gov.offer(msg):
                    await gov.ask(msg)
            await gov.ask(Flush())
            gov.close()
        return h

    h = trio.run(main)
    assert h.ledger.cost == sum((c for _, c, _ in updates), Decimal(0))
    assert h.ledger.tokens == sum(t for _, _, t in updates)
    assert h.ledger.charges == len(updates)
    cost = Decimal(0)
    tokens = 0
    first = None
    for i, (_, c, t) in enumerate(updates):
        cost += c
        tokens += t
        if first is None and (cost > cost_limit or tokens > token_limit):
            first = f"s{i}"
    breached = h.governor.breached
    assert (breached.result.name if breached and breached.result else None) == first
    assert h.breaches == (first is not None)


# -- units: one repeated usage counted against a credit ------------------------------------------


async def test_a_repeated_usage_is_counted_in_one_tally_against_its_credit() -> None:
    h = Harness(cost_limit=Decimal("1.0"), token_limit=100)
    unit = Decimal("0.3")  # one reading's cost: the same object every time
    async with trio.open_nursery() as nursery:
        gov = await nursery.start(h.governor.serve)
        assert [gov.tally(unit, 2) for _ in range(4)] == [True, True, True, False]  # 1.2 > 1.0
        (tally,) = list(gov.mailbox._queue)
        assert (tally.units, tally.credit, tally.updates) == (3, 3, 3)  # floor(1.0 / 0.3)
        assert repr(tally) == "Tally(updates=3, cost=Decimal('0.9'), tokens=6)"
        assert gov.queued_usage() == (Decimal("0.9"), 6)
        assert gov.statistics().mailbox_depth == 3
        await gov.ask(Flush())
        assert (h.ledger.cost, h.ledger.tokens, h.ledger.charges) == (Decimal("0.9"), 6, 3)
        assert gov.queued_usage() == (Decimal(0), 0)
        assert gov.tally(Decimal("0.1"), 0) is True  # exactly at the limit: fine
        gov.close()
    assert (h.ledger.cost, h.breaches) == (Decimal("1.0"), 0)


async def test_other_usage_seals_the_open_tally_and_is_summed_into_it() -> None:
    h = Harness(cost_limit=Decimal(1))
    gov = h.governor
    unit = Decimal("0.25")
    assert gov.tally(unit, 1) is True  # credit 4: the whole limit is held for its units
    assert gov.tally(Decimal("0.5"), 2) is True  # sealed first (0.75 room again), then summed
    assert gov.tally(unit, 1) is True  # sealed: summed too, exactly at the limit
    assert gov.tally(unit, 1) is False
    (tally,) = list(gov.mailbox._queue)
    assert (tally.units, tally.credit, tally.others, tally.updates) == (1, 1, 2, 3)
    assert repr(tally) == "Tally(updates=3, cost=Decimal('1.00'), tokens=4)"
    assert gov.queued_usage() == (Decimal(1), 4)


async def test_a_message_queued_behind_an_open_tally_gets_its_unused_credit_as_room() -> None:
    h = Harness(cost_limit=Decimal("1.0"))
    gov = h.governor
    unit = Decimal("0.1")
    assert gov.tally(unit, 0) is True  # credit 10: the whole limit is held for this tally
    assert gov.offer(charge("a", "0.8")) is True  # sealed first: 0.1 + 0.8 fits
    assert gov.tally(unit, 0) is True  # a new tally behind the charge, credit 1
    assert gov.tally(unit, 0) is False  # 1.1 > 1.0
    assert gov.queued_usage() == (Decimal("1.0"), 0)
    async with trio.open_nursery() as nursery:
        await nursery.start(gov.serve)
        await gov.ask(Flush())
        gov.close()
    assert (h.ledger.cost, h.ledger.charges, h.breaches) == (Decimal("1.0"), 3, 0)
    assert h.ledger.reserved_cost == 0


async def test_without_limits_a_tally_counts_units_without_credit() -> None:
    h = Harness()
    gov = h.governor
    unit = Decimal("0.001")
    for _ in range(1000):
        assert gov.tally(unit, 3) is True
    (tally,) = list(gov.mailbox._queue)
    assert (tally.units, tally.credit) == (1000, None)
    assert gov.queued_usage() == (Decimal("1.000"), 3000)
    gov.close()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gov.serve)
    assert (str(h.ledger.cost), h.ledger.tokens, h.ledger.charges) == ("1.000", 3000, 1000)


POOL = [Decimal("0.1"), Decimal("0.10"), Decimal("0.25"), Decimal(0), Decimal("0.333")]


@given(
    updates=st.lists(
        st.tuples(
            st.sampled_from(["tally", "tally", "tally", "charge", "flush"]),
            st.integers(0, len(POOL) - 1),
            st.sampled_from([0, 0, 1, 7]),
        ),
        max_size=80,
    ),
    cost_limit=st.one_of(st.none(), st.decimals(0, 8, places=2)),
    token_limit=st.one_of(st.none(), st.integers(0, 200)),
)
def test_tally_admits_exactly_what_fits_whatever_the_units_and_totals_are_exact(
    updates: list[tuple[str, int, int]], cost_limit: Decimal | None, token_limit: int | None
) -> None:
    """Repeated readings (the same Decimal objects, equal values of other exponents),
    charges and flushes in any order: a tally is admitted exactly when everything
    reported before it plus it fits every limit (credits never refuse what fits),
    and the ledger's totals equal the plain sum, digit for digit."""

    async def main() -> tuple[Harness, list[bool], list[bool]]:
        h = Harness(cost_limit, token_limit)
        told: list[bool] = []
        fits: list[bool] = []
        cost, tokens = Decimal(0), 0
        async with trio.open_nursery() as nursery:
            gov = await nursery.start(h.governor.serve)
            for i, (op, k, n) in enumerate(updates):
                if op == "flush":
                    await gov.ask(Flush())
                    continue
                c = POOL[k]
                if op == "tally":
                    fits.append(
                        (cost_limit is None or cost + c <= cost_limit)
                        and (token_limit is None or tokens + n <= token_limit)
                    )
                    told.append(gov.tally(c, n))
                    queued_cost, queued_tokens = gov.queued_usage()
                    assert h.ledger.tokens + queued_tokens == tokens + (n if told[-1] else 0)
                    assert h.ledger.cost + queued_cost == (cost + c if told[-1] else cost)
                if op == "charge" or not told[-1]:
                    msg = charge(f"s{i}", c, n)  # type: ignore[arg-type]
                    if not gov.offer(msg):
                        await gov.ask(msg)
                cost, tokens = cost + c, tokens + n
            await gov.ask(Flush())
            gov.close()
        return h, told, fits

    h, told, fits = trio.run(main)
    reported = [(POOL[k], n) for op, k, n in updates if op != "flush"]
    total = sum((c for c, _ in reported), Decimal(0))
    assert told == fits
    assert str(h.ledger.cost) == str(total)
    assert h.ledger.tokens == sum(n for _, n in reported)
    assert h.ledger.charges == len(reported)
