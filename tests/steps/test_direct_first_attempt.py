"""An agent step's first attempt called directly decides exactly what the attempt machine does.

A step whose first attempt needs none of the machine's services (no
deadline, input copy, snapshot, output check, cache or reservation) calls the
agent at once and enters the machine only when that attempt fails. A
``timeout_s`` far beyond any attempt sends the same step through the machine
from the start: both must give the same results, usage and retries.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import Flujo, Step, UsageLimitExceededError, UsageLimits
from flujo_actors.testing.agents import UsageOutput

#: One attempt's outcome: raise, return a plain value, or return a value with usage.
outcomes = st.sampled_from(["raise", "plain", "paid"])


def _agent(script: list[str]) -> Any:
    calls = [0]

    async def agent(data: int) -> Any:
        outcome = script[min(calls[0], len(script) - 1)]
        calls[0] += 1
        if outcome == "raise":
            raise ValueError(f"attempt {calls[0]} failed")
        if outcome == "paid":
            return UsageOutput(data + calls[0], cost_usd=0.25, token_counts=2)
        return data + calls[0]

    return agent


def _run(script: list[str], retries: int, limit: float | None, timeout: float | None) -> Any:
    step = Step.from_callable(_agent(script), name="s", max_retries=retries, timeout_s=timeout)
    limits = None if limit is None else UsageLimits(total_cost_usd_limit=limit)
    # "after" unwraps the value: passing the UsageOutput on would charge it again.
    after = Step.from_callable(lambda d: getattr(d, "value", d), name="after")
    runner = Flujo(step >> after, usage_limits=limits)
    try:
        result = trio.run(runner.run_async, 1)
    except UsageLimitExceededError as exc:
        partial, breached = exc.result, True
    else:
        partial, breached = result, False
    assert partial is not None
    result = partial
    rows = [
        (r.name, r.output, r.success, r.attempts, r.cost_usd, r.token_counts, r.feedback)
        for r in result.step_history
    ]
    return breached, rows, result.total_cost_usd, result.total_tokens


@given(
    st.lists(outcomes, min_size=1, max_size=4),
    st.integers(0, 3),
    st.sampled_from([None, 0.2, 0.5, 10.0]),
)
def test_the_direct_first_attempt_matches_the_machine(
    script: list[str], retries: int, limit: float | None
) -> None:
    direct = _run(script, retries, limit, None)
    assert direct == _run(script, retries, limit, 1e9), (script, retries, limit)


def test_a_failed_direct_attempt_is_retried_by_the_machine() -> None:
    breached, rows, cost, tokens = _run(["raise", "paid"], 1, None, None)
    assert not breached
    assert rows[0] == ("s", rows[0][1], True, 2, Decimal("0.25"), 2, None)
    assert (rows[0][1].value, rows[1][1], cost, tokens) == (3, 3, Decimal("0.25"), 2)
