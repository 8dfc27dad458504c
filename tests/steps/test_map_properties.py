"""Property: a map step never drops an item, never runs one twice, never exceeds its limit.

Random sizes, limits, failing items, failure policies, durations and cancel
points, on trio's mock clock (autojump: virtual time only).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import BranchFailureStrategy, Flujo, Step, StepResult


@given(
    n=st.integers(0, 25),
    limit=st.none() | st.integers(1, 6),
    bad=st.frozensets(st.integers(0, 24), max_size=4),
    ignore=st.booleans(),
    durations=st.lists(st.integers(0, 3), min_size=1, max_size=8),
    cancel_at=st.none() | st.integers(0, 12).map(lambda t: t + 0.5),
    lazy=st.booleans(),
)
def test_no_item_is_dropped_or_run_twice_and_the_limit_holds(
    n: int,
    limit: int | None,
    bad: frozenset[int],
    ignore: bool,
    durations: list[int],
    cancel_at: float | None,
    lazy: bool,
) -> None:
    started: list[int] = []
    finished: list[int] = []
    running = 0
    peak = 0

    async def agent(x: int) -> int:
        nonlocal running, peak
        started.append(x)
        running += 1
        peak = max(peak, running)
        try:
            await trio.sleep(durations[x % len(durations)])
        finally:
            running -= 1
        if x in bad:
            raise ValueError(f"bad {x}")
        finished.append(x)
        return x * 3

    async def source() -> Any:
        for i in range(n):
            await trio.lowlevel.checkpoint()
            yield i

    step = Step.map(
        "m",
        Step.from_callable(agent, max_retries=0),
        items=(lambda d: source()) if lazy else None,
        max_concurrency=limit,
        on_item_failure=BranchFailureStrategy.IGNORE if ignore else BranchFailureStrategy.PROPAGATE,
    )
    runner = Flujo(step)
    results: list[Any] = []

    async def main() -> None:
        scope = trio.move_on_after(cancel_at) if cancel_at is not None else contextlib.nullcontext()
        with scope:
            results.append(await runner.run_async(list(range(n))))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    # Never twice, never beyond the items, never above the limit.
    assert all(c == 1 for c in Counter(started).values())
    assert set(started) <= set(range(n))
    assert peak <= (limit if limit is not None else max(n, 1))
    if not results:
        return  # cancelled from outside: nothing more to say than the above
    (result,) = results
    (m,) = result.step_history
    drawn = m.metadata["items"]
    # Every drawn item is in the result, in item order, named by its index.
    assert [c.name for c in m.step_history] == [f"m[{i}]" for i in range(drawn)]
    failing = bad & set(range(n))
    if ignore or not failing:
        # Every item ran exactly once.
        assert drawn == n and sorted(started) == list(range(n))
        for i, (out, child) in enumerate(zip(m.output, m.step_history, strict=True)):
            if i in bad:
                assert isinstance(out, StepResult) and out is child and not child.success
            else:
                assert out == i * 3 and child.success
        assert m.success == (n == 0 or len(failing) < n)
        return
    # PROPAGATE with a failure: one failed item is the reason; the rest completed or
    # were cancelled in flight (each exactly once), and nothing was drawn after it.
    assert not m.success
    reasons = [c for c in m.step_history if not c.success and not c.metadata.get("cancelled")]
    assert reasons
    for i, child in enumerate(m.step_history):
        if child.success:
            assert i in finished and m.output[i] == i * 3
        elif child.metadata.get("cancelled"):
            assert i not in finished
        else:
            assert i in failing
