"""Step.map: a body once per item, drawn lazily, at most max_concurrency at once."""

from __future__ import annotations

import re
import weakref
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from flujo_actors import (
    AnyStep,
    BranchFailureStrategy,
    Flujo,
    MapItemDone,
    MapStep,
    MergeStrategy,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    Step,
    StepResult,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from flujo_actors import AnyStep

IGNORE = BranchFailureStrategy.IGNORE


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


async def double(x: int) -> int:
    await trio.sleep(0.1)
    return x * 2


def body(fn: Any = double, **kwargs: Any) -> Step:
    kwargs.setdefault("max_retries", 0)
    return Step.from_callable(fn, **kwargs)


async def run(step: AnyStep, data: Any, **kwargs: Any) -> StepResult:
    result = await Flujo(step, **kwargs).run_async(data)
    return result.step_history[-1]


# -- outputs, items, reduce -----------------------------------------------------------------


async def test_outputs_come_in_item_order_and_children_are_named_by_index(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def slower_first(x: int) -> int:
        await trio.sleep(10 - x)  # the last item finishes first
        return x * 10

    r = await run(Step.map("m", body(slower_first)), [0, 1, 2, 3])
    assert r.success and r.output == [0, 10, 20, 30]
    assert [c.name for c in r.step_history] == ["m[0]", "m[1]", "m[2]", "m[3]"]
    assert [c.step_history[0].name for c in r.step_history] == ["slower_first"] * 4
    assert r.metadata == {"items": 4, "failed_items": []}
    assert isinstance(Step.map("m", body()), MapStep)


async def test_an_empty_input_maps_to_an_empty_list_and_reduce_sees_it() -> None:
    assert (await run(Step.map("m", body()), [])).output == []
    r = await run(Step.map("m", body(), reduce=len), [])
    assert r.success and r.output == 0 and r.step_history == []


async def test_items_chooses_the_items_from_the_input_and_the_context(
    autojump_clock: trio.abc.Clock,
) -> None:
    def from_ctx(data: dict[str, Any], context: PipelineContext) -> list[int]:
        return [*data["xs"], len(context.run_id) > 0]

    r = await run(Step.map("m", body(), items=from_ctx), {"xs": [1, 2]})
    assert r.output == [2, 4, 2]

    async def async_items(data: int) -> list[int]:
        return list(range(data))

    assert (await run(Step.map("m", body(), items=async_items), 3)).output == [0, 2, 4]


async def test_an_async_iterable_and_a_generator_are_drawn(autojump_clock: trio.abc.Clock) -> None:
    async def agen(data: int) -> AsyncIterator[int]:
        for i in range(data):
            await trio.lowlevel.checkpoint()
            yield i

    assert (await run(Step.map("m", body(), items=agen), 3)).output == [0, 2, 4]

    def gen(data: int) -> Iterator[int]:
        yield from range(data)

    assert (await run(Step.map("m", body(), items=gen), 2)).output == [0, 2]


async def test_reduce_is_sync_or_async_and_gets_the_outputs_in_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    assert (await run(Step.map("m", body(), reduce=sum), [1, 2, 3])).output == 12

    async def joined(outputs: list[int]) -> str:
        return ",".join(map(str, outputs))

    r = await run(Step.map("m", body(), reduce=joined, max_concurrency=1), [3, 1, 2])
    assert r.output == "6,2,4"


async def test_a_body_pipeline_runs_its_steps_in_sequence_per_item() -> None:
    inc = Step.from_callable(lambda x: x + 1, name="inc")
    sq = Step.from_callable(lambda x: x * x, name="sq")
    r = await run(Step.map("m", inc >> sq), [1, 2])
    assert r.output == [4, 9]
    assert [[s.name for s in c.step_history] for c in r.step_history] == [["inc", "sq"]] * 2


# -- build-time checks -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "3"])
def test_max_concurrency_must_be_an_int_of_at_least_one(value: Any) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Map step 'm': max_concurrency must be an int >= 1, got {value!r}. "
            "Pass None for no limit."
        ),
    ):
        Step.map("m", body(), max_concurrency=value)


def test_bad_arguments_are_refused_when_the_step_is_built() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact("Step 'm': body must be a Step or a Pipeline, got 3."),
    ):
        Step.map("m", 3)  # type: ignore[arg-type]
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Step 'm': on_item_failure must be a BranchFailureStrategy "
            "(BranchFailureStrategy.PROPAGATE, BranchFailureStrategy.IGNORE), got 'skip'."
        ),
    ):
        Step.map("m", body(), on_item_failure="skip")  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match=r"^Step 'm': merge_strategy must be a "):
        Step.map("m", body(), merge_strategy="sum")  # type: ignore[arg-type]
    with pytest.raises(
        PipelineDefinitionError, match=_exact("Step 'm': items must be callable, got [1, 2].")
    ):
        Step.map("m", body(), items=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(
        PipelineDefinitionError, match=_exact("Step 'm': reduce must be callable, got 'sum'.")
    ):
        Step.map("m", body(), reduce="sum")  # type: ignore[arg-type]

    def two(outputs: list[Any], context: Any) -> int:
        return 0

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Step 'm': reduce .*two has a required parameter 'context' that its call "
        r"\(value\) cannot fill; give it a default or bind it first with functools\.partial\.$",
    ):
        Step.map("m", body(), reduce=two)
    with pytest.raises(PipelineDefinitionError, match=r"^Step name must be a non-empty string"):
        Step.map("", body())


def test_a_built_map_step_cannot_be_changed() -> None:
    m = Step.map("m", body())
    with pytest.raises(PipelineDefinitionError, match=r"^Step 'm' cannot be changed once built"):
        m.max_concurrency = 3


# -- what the items turn out to be (run time) --------------------------------------------------


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (5, "int 5, which is not iterable"),
        ("abc", "a str ('abc'), which would map over its characters"),
        ({"a": 1}, "a mapping (dict), whose keys or items are ambiguous"),
    ],
)
async def test_items_that_are_not_an_iterable_fail_the_step(data: Any, what: str) -> None:
    r = await run(Step.map("m", body()), data)
    assert not r.success and r.step_history == []
    assert r.feedback == (
        f"Map step 'm': the items must be an iterable or an async iterable, got {what}; pass "
        "a list, a generator or an async iterator as the step's input, or items=... to "
        "choose them."
    )
    r = await run(Step.map("m", body(), items=lambda d: d), data)
    assert r.feedback is not None
    assert r.feedback.endswith(
        f"got {what}; make items return a list, a generator or an async iterator."
    )


async def test_items_raising_fails_the_step_naming_it() -> None:
    def broken(data: Any) -> list[int]:
        raise KeyError("docs")

    r = await run(Step.map("m", body(), items=broken), None)
    assert not r.success
    assert r.feedback == "Map step 'm': items raised KeyError: 'docs'"


async def test_an_iterator_failing_midway_stops_the_step_and_keeps_the_done_items(
    autojump_clock: trio.abc.Clock,
) -> None:
    closed: list[bool] = []

    async def flaky() -> AsyncIterator[int]:
        try:
            yield 0
            await trio.sleep(1)  # item 0 finishes meanwhile (0.1 s)
            yield 1
            raise OSError("disk gone")
        finally:
            closed.append(True)

    r = await run(Step.map("m", body(), items=lambda d: flaky()), None)
    assert not r.success
    assert r.feedback == "Map step 'm': drawing item 2 from the items raised OSError: disk gone"
    assert [c.success for c in r.step_history] == [True, False]
    assert r.step_history[0].output == 0
    assert r.step_history[1].metadata["cancelled"] is True
    assert r.step_history[1].feedback == (
        "Cancelled: Map step 'm': drawing item 2 from the items raised OSError: disk gone."
    )
    assert closed == [True]


async def test_a_generator_cut_short_by_a_failure_is_closed() -> None:
    closed: list[int] = []

    def gen(data: Any) -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed.append(1)

    def fail_on_three(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    r = await run(Step.map("m", body(fail_on_three), items=gen, max_concurrency=1), None)
    assert not r.success and len(r.step_history) == 4
    assert closed == [1]


# -- concurrency and laziness ----------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_the_limit_is_never_exceeded_and_is_reached(
    autojump_clock: trio.abc.Clock, limit: int
) -> None:
    running = 0
    peak = 0

    async def counted(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1 + x % 3)
        running -= 1
        return x

    r = await run(Step.map("m", body(counted), max_concurrency=limit), list(range(20)))
    assert r.output == list(range(20))
    assert peak == limit


async def test_without_a_limit_every_body_runs_at_once(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    r = await run(Step.map("m", body()), list(range(50)))
    assert r.success and trio.current_time() - start == pytest.approx(0.1)


async def test_items_are_drawn_only_when_a_slot_is_free(autojump_clock: trio.abc.Clock) -> None:
    done = 0
    seen: list[tuple[int, int]] = []  # (item drawn, items done when it was drawn)

    async def source() -> AsyncIterator[int]:
        for i in range(12):
            seen.append((i, done))
            yield i

    async def counted(x: int) -> int:
        nonlocal done
        await trio.sleep(1)
        done += 1
        return x

    r = await run(Step.map("m", body(counted), items=lambda d: source(), max_concurrency=4), None)
    assert r.success and len(r.output) == 12
    # Four items are drawn at once; item i only once i - 4 items have completed.
    assert seen[:5] == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 4)]
    assert all(i - d <= 4 for i, d in seen)


@attrs.define
class Tracked(PipelineContext):
    pass


async def test_contexts_and_items_alive_at_once_stay_bounded() -> None:
    """2,000 items under max_concurrency=10: never more than ~10 context copies alive."""
    alive: dict[int, Any] = {}  # id -> weak reference (contexts are unhashable)
    peak = 0

    class Item:
        pass

    items_alive: weakref.WeakSet[Item] = weakref.WeakSet()

    def source() -> Iterator[Item]:
        for _ in range(2000):
            item = Item()
            items_alive.add(item)
            yield item

    async def note(item: Item, context: Tracked) -> int:
        nonlocal peak
        key = id(context)
        alive.setdefault(key, weakref.ref(context, lambda _r: alive.pop(key, None)))
        peak = max(peak, len(alive), len(items_alive))
        await trio.lowlevel.checkpoint()
        return 1

    r = await run(
        Step.map("m", body(note), items=lambda d: source(), max_concurrency=10),
        None,
        context_model=Tracked,
    )
    assert r.success and sum(r.output) == 2000
    assert peak <= 12  # the limit, plus the one being drawn and one being released
    assert all(c.branch_context is None for c in r.step_history)


# -- failures ------------------------------------------------------------------------------------


def failing_on(bad: set[int], delay: float = 1.0) -> Any:
    async def agent(x: int) -> int:
        await trio.sleep(delay if x not in bad else 0.5)
        if x in bad:
            raise ValueError(f"bad {x}")
        return x

    return agent


async def test_propagate_fails_on_the_first_failure_and_cancels_the_bodies_in_flight(
    autojump_clock: trio.abc.Clock,
) -> None:
    r = await run(Step.map("m", body(failing_on({1}), name="f"), max_concurrency=2), [0, 1, 2, 3])
    assert not r.success
    assert r.feedback == "Item 'm[1]' of map step 'm' failed at step 'f': ValueError: bad 1"
    # Item 0 was in flight and cancelled; items 2 and 3 were never drawn.
    assert [c.name for c in r.step_history] == ["m[0]", "m[1]"]
    cancelled = r.step_history[0]
    assert cancelled.metadata["cancelled"] is True
    assert cancelled.feedback == (
        "Cancelled: item 'm[1]' of map step 'm' failed first (on_item_failure=PROPAGATE)."
    )
    assert r.metadata == {"items": 2, "failed_items": [1]}
    assert r.output[1] is r.step_history[1]


async def test_ignore_puts_failed_items_in_the_output_as_their_result(
    autojump_clock: trio.abc.Clock,
) -> None:
    r = await run(
        Step.map(
            "m", body(failing_on({1, 3}), name="f"), on_item_failure=IGNORE, max_concurrency=2
        ),
        [0, 1, 2, 3],
    )
    assert r.success
    assert r.output[0::2] == [0, 2]
    assert [(o.name, o.feedback) for o in r.output[1::2]] == [
        ("m[1]", "ValueError: bad 1"),
        ("m[3]", "ValueError: bad 3"),
    ]
    assert r.metadata["failed_items"] == [1, 3]


async def test_ignore_with_every_item_failing_fails_the_step(
    autojump_clock: trio.abc.Clock,
) -> None:
    r = await run(Step.map("m", body(failing_on({0, 1}), name="f"), on_item_failure=IGNORE), [0, 1])
    assert not r.success
    assert r.feedback == (
        "Every item of map step 'm' failed (on_item_failure=IGNORE needs one success); the "
        "first, 'm[0]', failed at step 'f': ValueError: bad 0"
    )


async def test_reduce_raising_fails_the_step() -> None:
    def bad(outputs: list[int]) -> int:
        raise ZeroDivisionError("empty")

    r = await run(Step.map("m", body(lambda x: x), reduce=bad), [1])
    assert not r.success and r.output == [1]
    assert r.feedback == "Map step 'm': reduce raised ZeroDivisionError: empty"


async def test_items_that_change_the_run_identity_fail_the_step() -> None:
    def hijack(data: Any, context: PipelineContext) -> list[int]:
        context.run_id = "other"
        return [1]

    r = await run(Step.map("m", body(), items=hijack), None)
    assert not r.success
    assert r.feedback is not None
    assert r.feedback.startswith("Map step 'm': items changed context.run_id from ")


# -- contexts and merging ------------------------------------------------------------------------


@attrs.define
class Ctx(PipelineContext):
    total: int = 0
    seen: list[int] = attrs.Factory(list)


def writer(delay_of: Any = lambda x: 0) -> Any:
    async def write(x: int, context: Ctx) -> int:
        await trio.sleep(delay_of(x))
        context.total = x
        context.seen.append(x)
        context.scratchpad[f"k{x}"] = x
        return x

    return write


async def test_each_body_gets_its_own_context_copy_and_no_merge_leaves_the_context(
    autojump_clock: trio.abc.Clock,
) -> None:
    result = await Flujo(Step.map("m", body(writer())), context_model=Ctx).run_async([1, 2])
    ctx = result.final_pipeline_context
    assert result.success and (ctx.total, ctx.seen, ctx.scratchpad) == (0, [], {})


async def test_context_update_merges_in_item_order_whatever_order_items_finish(
    autojump_clock: trio.abc.Clock,
) -> None:
    step = Step.map(
        "m",
        body(writer(lambda x: 10 - x)),  # the last item finishes first
        merge_strategy=MergeStrategy.CONTEXT_UPDATE,
    )
    result = await Flujo(step, context_model=Ctx).run_async([1, 2, 3])
    ctx = result.final_pipeline_context
    assert ctx.total == 3  # the later item wins
    assert ctx.scratchpad == {"k1": 1, "k2": 2, "k3": 3}
    assert ctx.seen == [3]


async def test_keep_first_and_overwrite_follow_item_order(autojump_clock: trio.abc.Clock) -> None:
    for strategy, expected in ((MergeStrategy.KEEP_FIRST, 1), (MergeStrategy.OVERWRITE, 3)):
        step = Step.map("m", body(writer(lambda x: 10 - x)), merge_strategy=strategy)
        result = await Flujo(step, context_model=Ctx).run_async([1, 2, 3])
        assert result.final_pipeline_context.total == expected


async def test_error_on_conflict_fails_the_step_and_leaves_the_context(
    autojump_clock: trio.abc.Clock,
) -> None:
    step = Step.map("m", body(writer()), merge_strategy=MergeStrategy.ERROR_ON_CONFLICT)
    result = await Flujo(step, context_model=Ctx).run_async([1, 2])
    r = result.step_history[-1]
    assert not r.success
    assert r.feedback == (
        "Step 'm': merge conflict on field 'total': branches 'm[0]' and 'm[1]' set it to "
        "different values (1 and 2) (merge_strategy=ERROR_ON_CONFLICT). Choose another "
        "MergeStrategy or let only one branch write it."
    )
    assert result.final_pipeline_context.total == 0


async def test_a_merge_callable_sees_items_in_order_and_items_see_the_starting_context(
    autojump_clock: trio.abc.Clock,
) -> None:
    merged: list[int] = []

    def merge(main: Ctx, item_ctx: Ctx) -> None:
        merged.append(item_ctx.total)
        main.seen = [*main.seen, item_ctx.total]

    async def check(x: int, context: Ctx) -> int:
        assert context.seen == []  # copied from the context the step started with
        await trio.sleep(10 - x)
        context.total = x
        return x

    step = Step.map("m", body(check), merge_strategy=merge, max_concurrency=2)
    result = await Flujo(step, context_model=Ctx).run_async([1, 2, 3, 4])
    assert result.success
    assert merged == [1, 2, 3, 4]
    assert result.final_pipeline_context.seen == [1, 2, 3, 4]


async def test_a_failed_step_merges_nothing(autojump_clock: trio.abc.Clock) -> None:
    def merge(main: Ctx, item_ctx: Ctx) -> None:
        main.total += item_ctx.total

    async def agent(x: int, context: Ctx) -> int:
        await trio.sleep(x)
        context.total = x
        if x == 3:
            raise ValueError("late failure")
        return x

    for strategy in (merge, MergeStrategy.CONTEXT_UPDATE):
        step = Step.map("m", body(agent), merge_strategy=strategy)
        result = await Flujo(step, context_model=Ctx).run_async([1, 2, 3])
        assert not result.success
        assert result.final_pipeline_context.total == 0


# -- usage ---------------------------------------------------------------------------------------


async def test_usage_adds_up_and_a_breach_keeps_every_completed_item(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def paid(x: int) -> UsageOutput:
        await trio.sleep(x)
        return UsageOutput(x, cost_usd=0.25)

    ok = await run(Step.map("m", body(paid), max_concurrency=2), [1, 2, 3])
    assert ok.cost_usd == Decimal("0.75")

    runner = Flujo(
        Step.map("m", body(paid, name="paid"), max_concurrency=3),
        usage_limits=UsageLimits(total_cost_usd_limit=Decimal("0.6")),
    )
    with pytest.raises(UsageLimitExceededError) as info:
        await runner.run_async([1, 2, 3, 9, 9, 9])
    result = info.value.result
    assert result is not None
    (m,) = result.step_history
    assert m.metadata["cancelled"] is True and m.metadata["items"] == 5
    # Items 0 and 1 completed; item 2's step breached (its item comes last, holding
    # it); items 3 and 4 were in flight and cancelled; item 5 was never drawn.
    assert [(c.name, c.success, str(c.cost_usd)) for c in m.step_history] == [
        ("m[0]", True, "0.25"),
        ("m[1]", True, "0.25"),
        ("m[3]", False, "0"),
        ("m[4]", False, "0"),
        ("m[2]", False, "0.25"),
    ]
    assert [c.metadata.get("cancelled") for c in m.step_history] == [None, None, True, True, True]
    assert [leaf.name for leaf in m.step_history[-1].step_history] == ["paid"]
    assert result.total_cost_usd == m.cost_usd == Decimal("0.75")


# -- streaming and snapshots -----------------------------------------------------------------


async def test_stream_async_yields_each_item_as_it_completes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def slower_first(x: int) -> int:
        await trio.sleep(10 - x)
        return x * 10

    runner = Flujo(Step.from_callable(lambda d: d, name="pre") >> Step.map("m", body(slower_first)))
    got: list[Any] = []
    async for item in runner.stream_async([1, 2, 3]):
        got.append(item)
    *done, final = got
    assert [(d.step, d.index, d.result.output) for d in done] == [
        ("m", 2, 30),
        ("m", 1, 20),
        ("m", 0, 10),
    ]
    assert all(isinstance(d, MapItemDone) and d.result.success for d in done)
    assert final.output == [10, 20, 30]


async def test_a_streamed_failure_is_yielded_before_the_step_fails(
    autojump_clock: trio.abc.Clock,
) -> None:
    runner = Flujo(Step.map("m", body(failing_on({1})), max_concurrency=1))
    got = [item async for item in runner.stream_async([0, 1, 2])]
    *done, final = got
    assert [(d.index, d.result.success) for d in done] == [(0, True), (1, False)]
    assert not final.success


async def test_a_snapshot_shows_items_done_in_flight_and_pending() -> None:
    gates = [trio.Event() for _ in range(5)]

    async def gated(x: int) -> int:
        await gates[x].wait()
        return x

    runner = Flujo(Step.map("m", body(gated), max_concurrency=2))
    views: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run_async, [0, 1, 2, 3, 4])
        for gate in gates:
            await trio.testing.wait_all_tasks_blocked()
            (snap,) = runner.snapshot()
            (node,) = [a for a in snap.actors if a.kind == "step"]
            views.append(node.items)
            gate.set()
    assert [(v.done, v.failed, v.in_flight, v.pending) for v in views] == [
        (0, 0, 2, 3),
        (1, 0, 2, 2),
        (2, 0, 2, 1),
        (3, 0, 2, 0),
        (4, 0, 1, 0),
    ]
    (line,) = [x.strip() for x in snap.format().splitlines() if x.strip().startswith("step m ")]
    assert line.endswith(" items: done=4 failed=0 in_flight=1 pending=0")


async def test_a_snapshot_of_a_lazy_map_does_not_know_what_is_pending() -> None:
    gate = trio.Event()

    async def gated(x: int) -> int:
        await gate.wait()
        return x

    def gen(data: Any) -> Iterator[int]:
        yield from range(3)

    runner = Flujo(Step.map("m", body(gated), items=gen))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run_async, None)
        await trio.testing.wait_all_tasks_blocked()
        (snap,) = runner.snapshot()
        gate.set()
    (node,) = [a for a in snap.actors if a.kind == "step"]
    assert node.items is not None and (node.items.in_flight, node.items.pending) == (3, None)
    (line,) = [x.strip() for x in snap.format().splitlines() if x.strip().startswith("step m ")]
    assert line.endswith(" items: done=0 failed=0 in_flight=3 pending=?")
    assert node.items.pending is None


# -- nesting -------------------------------------------------------------------------------------


async def test_a_map_nests_in_a_map_and_in_a_parallel_step() -> None:
    inner = Step.map("inner", Step.from_callable(lambda x: x + 1, name="inc"), reduce=sum)
    outer = Step.map("outer", inner)
    r = await run(outer, [[1, 2], [3]])
    assert r.output == [5, 4]
    assert r.step_history[1].step_history[0].step_history[0].name == "inner[0]"
    fan = Step.parallel("fan", {"a": outer, "b": Step.from_callable(len, name="n")})
    assert (await run(fan, [[1], [2, 3]])).output == {"a": [2, 7], "b": 2}


# -- the one rule for agent options on control-flow steps ----------------------------------


FALLBACK = Step.from_callable(lambda x: x, name="fb")


@pytest.mark.parametrize(
    ("option", "value"),
    [("fallback", FALLBACK), ("validators", (len,)), ("plugins", (len,)), ("cache", True)],
)
def test_a_map_step_refuses_agent_options_like_every_control_flow_step(
    option: str, value: Any
) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Map step 'm': {option}={value!r} is not honoured by control-flow steps. Set "
            f"{option} on the steps inside it, or wrap the control flow in an agent step that "
            "has it (an async function that awaits Flujo(...).run_async)."
        ),
    ):
        MapStep(name="m", body=Pipeline.from_step(body()), **{option: value})


def test_a_map_step_refuses_retries() -> None:
    from flujo_actors import StepConfig

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Map step 'm': max_retries=2 is not honoured by control-flow steps\. ",
    ):
        MapStep(name="m", body=Pipeline.from_step(body()), config=StepConfig(max_retries=2))  # type: ignore[call-arg]


async def test_a_trace_shows_each_item_as_a_branch_span_named_by_index() -> None:
    step = Step.map("m", Step.from_callable(lambda x: x + 1, name="inc"), max_concurrency=2)
    result = await Flujo(step, trace=True).run_async([1, 2, 3])
    assert result.trace is not None
    (m,) = result.trace.children
    assert (m.name, m.kind, m.outcome) == ("m", "map", "success")
    # Spans come in the order the bodies started (trio decides): compare by item.
    assert sorted((c.name, c.kind, [g.name for g in c.children]) for c in m.children) == [
        ("m[0]", "branch", ["inc"]),
        ("m[1]", "branch", ["inc"]),
        ("m[2]", "branch", ["inc"]),
    ]


class Crash(BaseException):
    """Stands in for the process dying mid-run (not a step failure: nothing handles it)."""


async def test_a_resumed_map_does_not_redo_completed_items(autojump_clock: trio.abc.Clock) -> None:
    # In memory: the mock clock would outrun SQLite's commit thread.
    from flujo_actors import InMemoryStateBackend

    calls: list[int] = []
    crash = [True]

    async def work(x: int, context: Ctx) -> int:
        await trio.sleep(10 - x)  # later items finish first
        calls.append(x)
        if x == 2 and crash[0]:
            raise Crash()
        context.scratchpad[f"k{x}"] = x
        return x * 10

    def gen(data: Any) -> Iterator[int]:
        yield from range(5)

    def build() -> AnyStep:
        return Step.map("m", body(work), items=gen, merge_strategy=MergeStrategy.CONTEXT_UPDATE)

    backend = InMemoryStateBackend()
    with pytest.raises(Crash):
        await Flujo(build(), context_model=Ctx, state_backend=backend).run_async(0, run_id="r")
    # Items 4 and 3 completed (checkpointed) before item 2 crashed the run.
    assert sorted(calls) == [2, 3, 4]
    calls.clear()
    crash[0] = False
    resumed = await Flujo(build(), context_model=Ctx, state_backend=backend).resume_async("r")
    assert sorted(calls) == [0, 1, 2]  # completed items are not run again
    assert resumed.success and resumed.output == [0, 10, 20, 30, 40]
    assert resumed.final_pipeline_context.scratchpad == {f"k{i}": i for i in range(5)}
    assert [c.name for c in resumed.step_history[0].step_history] == [f"m[{i}]" for i in range(5)]
