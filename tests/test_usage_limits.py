"""Usage governance of runs: exact totals, limits, breach cancellation, reservations."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import (
    BranchFailureStrategy,
    Flujo,
    MergeStrategy,
    Pipeline,
    PipelineDefinitionError,
    PipelineResult,
    Step,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.governor import Governor, Tally
from flujo_actors.policy.ledger import UsageLedger
from flujo_actors.run.core import RunState
from flujo_actors.testing import UsageOutput


def costing(
    name: str,
    cost: Any = 0.0,
    tokens: int = 0,
    log: list[str] | None = None,
    expected_cost_usd: Any = None,
) -> Step:
    """A step whose output reports ``cost``/``tokens``; it logs its name when it starts."""

    async def agent(data: Any) -> UsageOutput:
        if log is not None:
            log.append(name)
        return UsageOutput(name, cost, tokens)

    return Step.from_callable(agent, name=name, max_retries=0, expected_cost_usd=expected_cost_usd)


async def breach_of(runner: Flujo, data: Any = "in") -> UsageLimitExceededError:
    with pytest.raises(UsageLimitExceededError) as info:
        await runner.run_async(data)
    return info.value


def partial(err: UsageLimitExceededError) -> PipelineResult:
    assert err.result is not None
    return err.result


@pytest.fixture
def governor_messages(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every message any governor applies during the test."""
    seen: list[Any] = []
    original = Governor._apply

    def counting(self: Governor, message: Any) -> Any:
        seen.append(message)
        return original(self, message)

    monkeypatch.setattr(Governor, "_apply", counting)
    return seen


# -- UsageLimits ----------------------------------------------------------------------------


def test_limits_are_exact_decimals() -> None:
    limits = UsageLimits(total_cost_usd_limit=0.1, total_tokens_limit=500)
    assert limits.total_cost_usd_limit == Decimal("0.1")
    assert limits.total_tokens_limit == 500
    assert UsageLimits("2.50").total_cost_usd_limit == Decimal("2.50")
    assert UsageLimits(3).total_cost_usd_limit == Decimal(3)
    assert UsageLimits() == UsageLimits(None, None)


@pytest.mark.parametrize("bad", [-0.01, Decimal(-1), float("nan"), float("inf"), "lots", True, [1]])
def test_bad_cost_limits_are_definition_errors(bad: Any) -> None:
    message = (
        "UsageLimits: total_cost_usd_limit must be a finite number >= 0 (int, float, Decimal "
        f"or numeric str) or None for no limit, got {bad!r}; for example "
        "UsageLimits(total_cost_usd_limit=1.50)."
    )
    with pytest.raises(PipelineDefinitionError, match=f"^{re.escape(message)}$"):
        UsageLimits(total_cost_usd_limit=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "100", True, Decimal(10)])
def test_bad_token_limits_are_definition_errors(bad: Any) -> None:
    message = (
        "UsageLimits: total_tokens_limit must be an int >= 0 or None for no limit, got "
        f"{bad!r}; for example UsageLimits(total_tokens_limit=10_000)."
    )
    with pytest.raises(PipelineDefinitionError, match=f"^{re.escape(message)}$"):
        UsageLimits(total_tokens_limit=bad)


def test_usage_limits_must_be_a_usage_limits() -> None:
    with pytest.raises(
        PipelineDefinitionError, match=r"^Flujo: usage_limits must be a UsageLimits"
    ):
        Flujo(costing("a"), usage_limits={"total_cost_usd_limit": 1.0})  # type: ignore[arg-type]


# -- exact totals and the breach rule ----------------------------------------------------------


async def test_two_steps_breaching_one_dollar() -> None:
    """The seed's precise-breach test."""
    started: list[str] = []
    pipeline = (
        costing("first", 0.50, log=started)
        >> costing("second", 0.75, log=started)
        >> costing("third", 0.01, log=started)
    )
    err = await breach_of(Flujo(pipeline, usage_limits=UsageLimits(total_cost_usd_limit=1.00)))
    assert str(err) == (
        "Usage limit exceeded after step 'second': total cost $1.25 > total_cost_usd_limit "
        "$1.0. Raise UsageLimits(total_cost_usd_limit=...) or lower the steps' usage."
    )
    result = partial(err)
    assert [r.name for r in result.step_history] == ["first", "second"]
    assert [r.cost_usd for r in result.step_history] == [Decimal("0.5"), Decimal("0.75")]
    assert result.total_cost_usd == Decimal("1.25")
    assert result.success is False and result.output is None
    assert started == ["first", "second"]  # nothing after the breaching step started


def test_the_sync_runner_raises_the_same_error() -> None:
    runner = Flujo(costing("a", 2), usage_limits=UsageLimits(total_cost_usd_limit=1))
    with pytest.raises(UsageLimitExceededError, match=r"^Usage limit exceeded after step 'a'"):
        runner.run("in")


async def test_reaching_the_limit_exactly_is_not_a_breach() -> None:
    pipeline = costing("a", 0.25) >> costing("b", Decimal("0.25")) >> costing("c", "0.5")
    result = await Flujo(pipeline, usage_limits=UsageLimits(total_cost_usd_limit=1)).run_async(0)
    assert result.success is True
    assert result.total_cost_usd == Decimal("1.00")


async def test_ten_parallel_tenths_total_exactly_one_and_do_not_breach_one() -> None:
    branches = {f"b{i}": costing(f"b{i}", 0.1) for i in range(10)}
    fan = Step.parallel("fan", branches, merge_strategy=MergeStrategy.NO_MERGE)
    result = await Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=1.0)).run_async(0)
    assert result.success is True
    assert result.total_cost_usd == Decimal("1.0")
    assert result.step_history[0].cost_usd == Decimal("1.0")
    assert sum(0.1 for _ in range(10)) != 1.0  # what floats would have said


async def test_branches_share_one_budget_without_an_even_split() -> None:
    branches = {"big": costing("big", 0.55)} | {f"s{i}": costing(f"s{i}", 0.04) for i in range(9)}
    fan = Step.parallel("fan", branches, merge_strategy=MergeStrategy.NO_MERGE)
    result = await Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=1.0)).run_async(0)
    assert result.success is True
    assert result.total_cost_usd == Decimal("0.91")


async def test_token_limit() -> None:
    pipeline = costing("a", tokens=60) >> costing("b", tokens=50)
    err = await breach_of(Flujo(pipeline, usage_limits=UsageLimits(total_tokens_limit=100)))
    assert str(err) == (
        "Usage limit exceeded after step 'b': total tokens 110 > total_tokens_limit 100. "
        "Raise UsageLimits(total_tokens_limit=...) or lower the steps' usage."
    )
    assert partial(err).total_tokens == 110


async def test_cost_is_checked_before_tokens() -> None:
    limits = UsageLimits(total_cost_usd_limit=1, total_tokens_limit=1)
    err = await breach_of(Flujo(costing("a", 5, 5), usage_limits=limits))
    assert str(err).startswith("Usage limit exceeded after step 'a': total cost $5 >")


async def test_without_limits_usage_is_summed_and_nothing_breaches() -> None:
    pipeline = costing("a", 10**6, 10**9) >> costing("b", 0.1, 1)
    result = await Flujo(pipeline).run_async(0)
    assert result.total_cost_usd == Decimal("1000000.1")
    assert result.total_tokens == 10**9 + 1


async def test_a_breach_in_the_primary_never_runs_the_fallback() -> None:
    backup: list[str] = []
    fb = costing("backup", 0.0, log=backup)
    step = Step.from_callable(
        lambda data: UsageOutput("bad", 2.0),
        name="primary",
        max_retries=0,
        validators=[lambda out: False],
        fallback=fb,
    )
    err = await breach_of(Flujo(step, usage_limits=UsageLimits(total_cost_usd_limit=1)))
    assert backup == []
    last = partial(err).step_history[-1]
    assert (last.name, last.success, last.cost_usd) == ("primary", False, Decimal("2.0"))


# -- breach cancels what is in flight ------------------------------------------------------------


async def test_a_breach_cancels_in_flight_siblings_at_once(autojump_clock: trio.abc.Clock) -> None:
    woke: list[str] = []

    def sleeper(name: str) -> Step:
        async def nap(data: Any) -> str:
            await trio.sleep(10)
            woke.append(name)  # must never happen
            return name

        return Step.from_callable(nap, name=name)

    async def pricey(data: Any) -> UsageOutput:
        await trio.sleep(1)
        return UsageOutput("pricey", 5.0)

    branches: dict[str, Step] = {f"nap{i}": sleeper(f"nap{i}") for i in range(9)}
    branches["pricey"] = Step.from_callable(pricey, name="pricey")
    runner = Flujo(
        Step.parallel("fan", branches) >> costing("after", log=woke),
        usage_limits=UsageLimits(total_cost_usd_limit=1),
    )
    t0 = trio.current_time()
    err = await breach_of(runner)
    assert trio.current_time() - t0 == 1.0  # not 10: the sleepers were cancelled
    await trio.sleep(20)
    assert woke == []
    result = partial(err)
    assert [r.name for r in result.step_history] == ["fan"]
    (fan,) = result.step_history
    # Every branch, cancelled ones included, with the breaching one last.
    assert [r.name for r in fan.step_history] == [*(f"nap{i}" for i in range(9)), "pricey"]
    assert all(r.metadata == {"cancelled": True} for r in fan.step_history)
    assert [r.name for r in fan.step_history[-1].step_history] == ["pricey"]
    assert fan.cost_usd == result.total_cost_usd == Decimal("5.0")


async def test_a_breach_nested_in_a_parallel_inside_a_loop() -> None:
    iterations: list[int] = []

    async def count(data: Any) -> int:
        iterations.append(len(iterations) + 1)
        return int(data) + 1

    fan = Step.parallel(
        "fan",
        {"a": costing("a", 0.3), "b": costing("b", 0.3)},
        merge_strategy=MergeStrategy.NO_MERGE,
    )
    body = Step.from_callable(count, name="count") >> fan
    loop = Step.loop_until(
        "loop",
        body,
        lambda out, ctx: False,
        max_loops=5,
        iteration_input_mapper=lambda out, ctx, i: i,
    )
    err = await breach_of(Flujo(loop, usage_limits=UsageLimits(total_cost_usd_limit=1.0)), 0)
    assert iterations == [1, 2]  # iteration 2 pushed spend to 1.2: no third one
    result = partial(err)
    assert result.total_cost_usd == Decimal("1.2")
    (cut,) = result.step_history
    assert (cut.name, cut.cost_usd, cut.metadata["iterations"]) == ("loop", Decimal("1.2"), 1)
    # Iteration 1 whole, then iteration 2: its count step and the fan cut short.
    assert [r.name for r in cut.step_history] == ["count", "fan", "count", "fan"]
    assert cut.step_history[-1].step_history[-1].step_history[-1].name in {"a", "b"}
    assert str(err).startswith("Usage limit exceeded after step ")
    assert "total cost $1.2 > total_cost_usd_limit $1.0" in str(err)


# -- reservations -------------------------------------------------------------------------------


async def test_a_reservation_that_cannot_fit_does_not_start_its_step() -> None:
    ran: list[str] = []
    big = costing("big", 0.1, log=ran, expected_cost_usd=0.5)
    pipeline = costing("warmup", 0.6) >> big
    err = await breach_of(Flujo(pipeline, usage_limits=UsageLimits(total_cost_usd_limit=1.0)))
    assert ran == []
    assert str(err) == (
        "Usage limit would be exceeded: step 'big' was not started because reserving $0.5 on "
        "top of $0.6 spent and $0 reserved by running steps would exceed "
        "total_cost_usd_limit $1.0. Raise UsageLimits(total_cost_usd_limit=...) or lower the "
        "step's expected_cost_usd."
    )
    result = partial(err)
    assert [r.name for r in result.step_history] == ["warmup"]
    assert result.total_cost_usd == Decimal("0.6")


async def test_token_reservations() -> None:
    step = Step.from_callable(lambda d: UsageOutput("x", 0, 10), name="chat", expected_tokens=200)
    err = await breach_of(Flujo(step, usage_limits=UsageLimits(total_tokens_limit=100)))
    assert str(err) == (
        "Usage limit would be exceeded: step 'chat' was not started because reserving 200 on "
        "top of 0 spent and 0 reserved by running steps would exceed total_tokens_limit 100. "
        "Raise UsageLimits(total_tokens_limit=...) or lower the step's expected_tokens."
    )


async def test_reservations_are_reconciled_to_the_actual_usage() -> None:
    def reserved(name: str, expected: float, actual: float) -> Step:
        return Step.from_callable(
            lambda data: UsageOutput(name, actual), name=name, expected_cost_usd=expected
        )

    # 0.9 is held for "a" but it spends 0.2; then "b" may hold 0.8 and spends it
    pipeline = reserved("a", 0.9, 0.2) >> reserved("b", 0.8, 0.8)
    result = await Flujo(pipeline, usage_limits=UsageLimits(total_cost_usd_limit=1.0)).run_async(0)
    assert result.success is True
    assert result.total_cost_usd == Decimal("1.0")


async def test_a_failed_reserved_step_releases_its_budget() -> None:
    async def broken(data: Any) -> Any:
        raise RuntimeError("no output, no usage")

    first = Step.from_callable(broken, name="first", max_retries=0, expected_cost_usd=0.9)
    tolerant = Step.parallel(
        "tolerant",
        {"fails": first, "fine": Step.from_callable(lambda d: "fine", name="fine")},
        on_branch_failure=BranchFailureStrategy.IGNORE,
    )
    after = Step.from_callable(
        lambda d: UsageOutput("after", 0.5), name="after", expected_cost_usd=1.0
    )
    result = await Flujo(
        tolerant >> after, usage_limits=UsageLimits(total_cost_usd_limit=1.0)
    ).run_async(0)
    assert result.success is True
    assert result.total_cost_usd == Decimal("0.5")


async def test_a_cancelled_reserved_step_releases_its_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def slow(data: Any) -> UsageOutput:
        await trio.sleep(10)
        return UsageOutput("slow", 0.1)

    async def broken(data: Any) -> Any:
        await trio.sleep(1)
        raise RuntimeError("sibling failed")

    inner = Step.parallel(
        "inner",
        {
            "slow": Step.from_callable(slow, name="slow", expected_cost_usd=0.9),
            "broken": Step.from_callable(broken, name="broken", max_retries=0),
        },
    )  # PROPAGATE: "broken" cancels "slow" while it holds 0.9
    outer = Step.parallel(
        "outer",
        {"inner": inner, "ok": Step.from_callable(lambda d: "ok", name="ok")},
        on_branch_failure=BranchFailureStrategy.IGNORE,
    )
    after = Step.from_callable(
        lambda d: UsageOutput("after", 1.0), name="after", expected_cost_usd=1.0
    )
    t0 = trio.current_time()
    result = await Flujo(
        outer >> after, usage_limits=UsageLimits(total_cost_usd_limit=1.0)
    ).run_async(0)
    assert result.success is True
    assert trio.current_time() - t0 == 1.0
    assert result.total_cost_usd == Decimal("1.0")


async def test_concurrent_reservations_refuse_what_does_not_fit(
    autojump_clock: trio.abc.Clock,
) -> None:
    ran: list[str] = []

    def branch(i: int) -> Pipeline:
        async def wait_turn(data: Any) -> Any:
            await trio.sleep(i)  # branch i reserves at t = i
            return data

        async def work(data: Any) -> UsageOutput:
            ran.append(f"w{i}")
            await trio.sleep(10)
            return UsageOutput(i, 0.3)

        return Step.from_callable(wait_turn, name=f"wait{i}") >> Step.from_callable(
            work, name=f"w{i}", expected_cost_usd=0.3
        )

    fan = Step.parallel("fan", {f"b{i}": branch(i) for i in range(5)})
    t0 = trio.current_time()
    err = await breach_of(Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=1.0)))
    assert trio.current_time() - t0 == 3.0  # refused at once at t=3, the others cancelled
    assert ran == ["w0", "w1", "w2"]  # 3 x 0.3 fit; the fourth does not start
    assert str(err).startswith(
        "Usage limit would be exceeded: step 'w3' was not started because reserving $0.3 on "
        "top of $0 spent and $0.9 reserved by running steps would exceed"
    )
    assert partial(err).total_cost_usd == Decimal(0)  # cancelled before any reported


async def test_granted_reservations_do_not_start_once_the_run_is_breached() -> None:
    ran: list[str] = []

    def branch(name: str) -> Step:
        return costing(name, 0.3, log=ran, expected_cost_usd=0.3)

    # all five ask at once: three are granted, the fourth breaches, so none may start
    fan = Step.parallel("fan", {f"b{i}": branch(f"b{i}") for i in range(5)})
    err = await breach_of(Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=1.0)))
    assert ran == []
    assert re.match(r"^Usage limit would be exceeded: step 'b\d' was not started", str(err))


# -- no usage, no messages -------------------------------------------------------------------------


async def test_steps_without_usage_never_message_the_governor(governor_messages: list[Any]) -> None:
    pipeline = Pipeline(
        steps=[Step.from_callable(lambda x: x + 1, name=f"s{i}") for i in range(50)]
    )
    result = await Flujo(pipeline, usage_limits=UsageLimits(total_cost_usd_limit=1)).run_async(0)
    assert result.output == 50
    assert governor_messages == []


async def test_only_steps_with_usage_message_the_governor(governor_messages: list[Any]) -> None:
    steps = [costing(f"c{i}", 0.01) if i % 10 == 0 else costing(f"s{i}") for i in range(50)]
    result = await Flujo(Pipeline(steps=steps)).run_async(0)
    assert result.total_cost_usd == Decimal("0.05")
    # Told (no limit): each update is added to the tally at the mailbox's tail, so the
    # governor applies tallies; together they hold exactly the five steps' updates.
    assert {type(m) for m in governor_messages} == {Tally}
    assert sum(m.updates for m in governor_messages) == 5
    assert sum(m.cost for m in governor_messages) == Decimal("0.05")


async def test_a_flood_of_one_repeated_cost_is_counted_in_one_tally_and_breaches_exactly(
    governor_messages: list[Any],
) -> None:
    # 300 branches report the same float cost: one cached reading, so the governor
    # counts them (units of one Tally) instead of adding 300 Decimals.
    fan = Step.parallel("fan", {f"b{i}": costing(f"b{i}", 0.01, 1) for i in range(300)})
    result = await Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=3)).run_async(0)
    assert (result.total_cost_usd, result.total_tokens) == (Decimal("3.00"), 300)
    (tally,) = governor_messages
    assert (type(tally), tally.units, tally.others) == (Tally, 300, 0)
    # One branch more: the 301st update is asked, breaches, and is the breaching step.
    governor_messages.clear()
    fan = Step.parallel("fan", {f"b{i}": costing(f"b{i}", 0.01, 1) for i in range(301)})
    err = await breach_of(Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=3)))
    assert re.match(
        r"^Usage limit exceeded after step 'b\d+': total cost \$3\.01 > "
        r"total_cost_usd_limit \$3\. ",
        str(err),
    )
    assert [type(m).__name__ for m in governor_messages] == ["Tally", "Charge"]
    assert governor_messages[0].units == 300


def test_the_run_tells_usage_at_once_until_it_is_breached() -> None:
    async def main() -> None:
        ledger = UsageLedger(Decimal(1), None)
        run = RunState("r", limited=True)
        run.governor = Governor(ledger, run.breach_event, lambda: None)
        cost = Decimal("0.5")
        assert run.tally(cost, 0) is True
        assert run.tally(cost, 0) is True
        assert run.tally(cost, 0) is False  # 1.5 > 1: the step must ask (charge)
        run.breach_event.set()
        assert run.tally(Decimal(0), 0) is False  # breached: the step charges, and stops
        assert run.governor.queued_usage() == (Decimal("1.0"), 0)
        assert RunState("no governor").tally(cost, 0) is True

    trio.run(main)


# -- properties ------------------------------------------------------------------------------------

cost_values = st.one_of(
    st.floats(min_value=0, max_value=2, allow_nan=False).map(lambda f: round(f, 3)),
    st.decimals(min_value=0, max_value=2, places=2),
    st.sampled_from([0.1, 0.2, 0.3, 0.7]),
)


@given(
    usages=st.lists(st.tuples(cost_values, st.integers(0, 40)), min_size=1, max_size=12),
    cost_limit=st.one_of(st.none(), st.decimals(min_value=0, max_value=6, places=1)),
    token_limit=st.one_of(st.none(), st.integers(0, 250)),
)
def test_sequential_runs_are_exact_and_breach_iff_a_prefix_exceeds(
    usages: list[tuple[Any, int]], cost_limit: Decimal | None, token_limit: int | None
) -> None:
    started: list[str] = []
    steps = [costing(f"s{i}", c, t, log=started) for i, (c, t) in enumerate(usages)]
    runner = Flujo(
        Pipeline(steps=steps),
        usage_limits=UsageLimits(total_cost_usd_limit=cost_limit, total_tokens_limit=token_limit),
    )
    # the model: exact prefix sums, breach at the first prefix over a limit
    total_c, total_t, breach_at = Decimal(0), 0, None
    for i, (c, t) in enumerate(usages):
        total_c += c if isinstance(c, Decimal) else Decimal(repr(c))
        total_t += t
        if (cost_limit is not None and total_c > cost_limit) or (
            token_limit is not None and total_t > token_limit
        ):
            breach_at = i
            break

    async def main() -> PipelineResult | UsageLimitExceededError:
        try:
            return await runner.run_async(0)
        except UsageLimitExceededError as err:
            return err

    outcome = trio.run(main)
    if breach_at is None:
        assert isinstance(outcome, PipelineResult)
        assert outcome.success is True
        assert (outcome.total_cost_usd, outcome.total_tokens) == (total_c, total_t)
        assert len(started) == len(usages)
    else:
        assert isinstance(outcome, UsageLimitExceededError)
        result = partial(outcome)
        assert [r.name for r in result.step_history] == [f"s{i}" for i in range(breach_at + 1)]
        assert (result.total_cost_usd, result.total_tokens) == (total_c, total_t)
        assert started == [f"s{i}" for i in range(breach_at + 1)]  # nothing after it started
        assert f"after step 's{breach_at}'" in str(outcome)


@given(
    branches=st.lists(
        st.tuples(st.decimals(0, 1, places=2), st.decimals(0, 1, places=2), st.integers(0, 3)),
        min_size=2,
        max_size=12,
    ),
    limit=st.decimals(0, 4, places=1),
)
def test_concurrent_reserved_branches_never_overspend(
    branches: list[tuple[Decimal, Decimal, int]], limit: Decimal
) -> None:
    """Each branch reserves at least what it spends; whatever the timing, spend <= limit."""

    def branch(i: int, spend: Decimal, extra: Decimal, delay: int) -> Step:
        async def work(data: Any) -> UsageOutput:
            await trio.sleep(delay)
            return UsageOutput(i, spend)

        return Step.from_callable(work, name=f"b{i}", expected_cost_usd=spend + extra)

    fan = Step.parallel(
        "fan",
        {f"b{i}": branch(i, s, e, d) for i, (s, e, d) in enumerate(branches)},
        merge_strategy=MergeStrategy.NO_MERGE,
    )
    runner = Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=limit))

    async def main() -> PipelineResult | UsageLimitExceededError:
        try:
            return await runner.run_async(0)
        except UsageLimitExceededError as err:
            return err

    outcome = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    if isinstance(outcome, UsageLimitExceededError):
        assert "was not started because" in str(outcome)  # only refusals, never overspend
        result = partial(outcome)
    else:
        result = outcome
    assert result.total_cost_usd <= limit
    if result.success:
        assert result.total_cost_usd == sum((s for s, _, _ in branches), Decimal(0))


async def test_stress_many_concurrent_branches_sum_exactly(autojump_clock: trio.abc.Clock) -> None:
    costs: list[Any] = []
    for i in range(200):
        costs.append(0.1 if i % 3 == 0 else Decimal("0.013") if i % 3 == 1 else "0.007")

    def branch(i: int) -> Step:
        async def work(data: Any) -> UsageOutput:
            await trio.sleep(i % 7)
            return UsageOutput(i, costs[i], i)

        return Step.from_callable(work, name=f"b{i}")

    fan = Step.parallel(
        "fan", {f"b{i}": branch(i) for i in range(200)}, merge_strategy=MergeStrategy.NO_MERGE
    )
    expected = sum(
        (Decimal(repr(c)) if isinstance(c, float) else Decimal(c) for c in costs), Decimal(0)
    )
    runner = Flujo(fan, usage_limits=UsageLimits(total_cost_usd_limit=expected))
    result = await runner.run_async(0)
    assert result.success is True
    assert result.total_cost_usd == expected == Decimal("8.033")
    assert result.total_tokens == sum(range(200))
    assert result.step_history[0].cost_usd == expected


@attrs.frozen
class Answer:
    text: str
    cost_usd: float
    token_counts: int


async def test_usage_attributes_of_any_output_type_count() -> None:
    async def llm(data: Any) -> Answer:
        return Answer("hi", 0.002, 17)

    result = await Flujo(Step.from_callable(llm)).run_async(0)
    assert result.output == Answer("hi", 0.002, 17)
    assert (result.total_cost_usd, result.total_tokens) == (Decimal("0.002"), 17)


async def test_no_step_of_a_breached_run_starts_its_agent() -> None:
    """A step handed a frame after the breach (a sibling's next step) must not run its agent."""
    from flujo_actors import ExecutionFrame
    from flujo_actors.run.core import run_step

    calls: list[str] = []

    def agent(data: str) -> str:  # sync: nothing would stop it once called
        calls.append(data)
        return data

    run = RunState("r", limited=True)
    run.breach_event.set()
    plain = Step.from_callable(agent, name="plain")
    reserved = Step.from_callable(agent, name="reserved", expected_cost_usd=0.1)
    for step in (plain, reserved):
        frame: ExecutionFrame[Any] = ExecutionFrame(step, "x", None, run=run, path=(step.name,))
        with trio.CancelScope() as scope:
            scope.cancel()  # what the governor did on the breach
            await run_step(frame)
        assert scope.cancelled_caught
    assert calls == []
