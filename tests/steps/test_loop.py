"""Loop steps: iterations, mappers, metadata, failures, context carry-over, actor reuse."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.lowlevel

from flujo_actors import (
    Flujo,
    LoopStep,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    PipelineResult,
    Step,
)
from flujo_actors.run import core as engine
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from flujo_actors.steps.kinds import AnyStep


@attrs.define
class Ctx(PipelineContext):
    rounds: list[int] = attrs.Factory(list)
    total: int = 0


async def run(step: AnyStep | Pipeline, data: Any = 0) -> PipelineResult:
    return await Flujo(step, context_model=Ctx).run_async(data)


async def add_one(x: int) -> int:
    return x + 1


async def double(x: int) -> int:
    return x * 2


inc = Step.from_callable(add_one, name="inc", max_retries=0)
dbl = Step.from_callable(double, name="dbl", max_retries=0)


def at_least(n: int) -> Any:
    return lambda out, ctx: out >= n


async def test_the_body_runs_until_the_exit_condition_holds() -> None:
    loop = Step.loop_until("loop", inc, at_least(3), max_loops=10)
    result = await run(loop)
    assert result.success
    assert result.output == 3
    r = result.step_history[0]
    assert (r.name, r.success, r.output, r.attempts, r.feedback) == ("loop", True, 3, 1, None)
    assert r.metadata == {"iterations": 3, "exit_reason": "condition"}
    assert [(c.name, c.output) for c in r.step_history] == [("inc", 1), ("inc", 2), ("inc", 3)]


async def test_a_multi_step_body_feeds_its_last_output_to_the_next_iteration() -> None:
    loop = Step.loop_until("loop", inc >> dbl, at_least(20), max_loops=10)
    result = await run(loop, 1)
    assert result.output == 22  # (1+1)*2=4, (4+1)*2=10, (10+1)*2=22
    r = result.step_history[0]
    assert [c.output for c in r.step_history] == [2, 4, 5, 10, 11, 22]
    assert r.metadata["iterations"] == 3


async def test_mappers_shape_the_first_input_each_next_input_and_the_output() -> None:
    calls: list[tuple[str, Any]] = []

    def first(data: int, context: Ctx) -> int:
        calls.append(("initial", data))
        return data * 100

    def nxt(output: int, context: Ctx, iteration: int) -> int:
        calls.append(("iteration", (output, iteration)))
        return output + iteration * 1000

    def out(output: int, context: Ctx) -> str:
        calls.append(("output", output))
        return f"final {output}"

    loop = Step.loop_until(
        "loop",
        inc,
        lambda o, c: o > 3000,
        max_loops=5,
        initial_input_to_loop_body_mapper=first,
        iteration_input_mapper=nxt,
        loop_output_mapper=out,
    )
    result = await run(loop, 2)
    assert calls == [
        ("initial", 2),
        ("iteration", (201, 1)),  # `iteration` = iterations completed so far
        ("iteration", (1202, 2)),
        ("output", 3203),
    ]
    assert result.output == "final 3203"
    assert result.step_history[0].metadata == {"iterations": 3, "exit_reason": "condition"}


async def test_async_callbacks_are_awaited() -> None:
    async def done(out: int, ctx: Ctx) -> bool:
        await trio.lowlevel.checkpoint()
        return out >= 2

    async def nxt(out: int, ctx: Ctx, i: int) -> int:
        return out

    async def mapped(out: int, ctx: Ctx) -> str:
        return f"<{out}>"

    loop = Step.loop_until("loop", inc, done, iteration_input_mapper=nxt, loop_output_mapper=mapped)
    assert (await run(loop)).output == "<2>"


async def test_reaching_max_loops_fails_with_a_clear_feedback() -> None:
    loop = Step.loop_until("loop", inc, at_least(100), max_loops=3)
    result = await run(loop >> inc)
    assert not result.success
    assert result.output is None
    assert [r.name for r in result.step_history] == ["loop"]
    r = result.step_history[0]
    assert r.feedback == (
        "Loop 'loop' reached max_loops=3 without its exit condition being met; raise "
        "max_loops or check exit_condition_callable."
    )
    assert r.metadata == {"iterations": 3, "exit_reason": "max_loops"}
    assert r.output == 3  # the last body output, for inspection
    assert len(r.step_history) == 3


async def test_max_loops_one_runs_the_body_once() -> None:
    result = await run(Step.loop_until("loop", inc, at_least(1), max_loops=1))
    assert result.success
    assert result.step_history[0].metadata == {"iterations": 1, "exit_reason": "condition"}


async def test_a_failing_body_fails_the_loop_naming_the_iteration_and_step() -> None:
    async def fragile(x: int) -> int:
        if x == 2:
            raise ValueError("two is too many")
        return x

    loop = Step.loop_until(
        "loop", inc >> Step.from_callable(fragile, name="fragile", max_retries=0), at_least(9)
    )
    result = await run(loop)
    r = result.step_history[0]
    assert not r.success
    assert r.feedback == (
        "Loop 'loop' iteration 2 failed at step 'fragile': ValueError: two is too many"
    )
    assert r.metadata == {"iterations": 2, "exit_reason": "body_failed"}
    assert r.output is None
    assert [(c.name, c.success) for c in r.step_history] == [
        ("inc", True),
        ("fragile", True),
        ("inc", True),
        ("fragile", False),
    ]


def boom(*args: Any) -> Any:
    raise RuntimeError("callback broke")


@pytest.mark.parametrize(
    ("kwargs", "what", "iterations"),
    [
        ({"exit_condition_callable": boom}, "exit_condition_callable", 1),
        ({"initial_input_to_loop_body_mapper": boom}, "initial_input_to_loop_body_mapper", 0),
        ({"iteration_input_mapper": boom}, "iteration_input_mapper", 1),
        ({"loop_output_mapper": boom}, "loop_output_mapper", 2),
    ],
)
async def test_a_raising_callback_fails_the_step(
    kwargs: dict[str, Any], what: str, iterations: int
) -> None:
    args: dict[str, Any] = {"exit_condition_callable": at_least(2), "max_loops": 5, **kwargs}
    result = await run(Step.loop_until("loop", inc, **args))
    r = result.step_history[0]
    assert not result.success
    assert r.feedback == f"Loop 'loop': {what} raised RuntimeError: callback broke"
    assert r.metadata == {"iterations": iterations, "exit_reason": "error"}
    assert r.output is None


async def test_context_changes_carry_into_the_next_iteration_and_out_of_the_loop() -> None:
    """Seed regression: context updates made inside a loop were lost."""

    async def record(x: int, context: Ctx) -> int:
        context.rounds.append(x)
        context.total += x
        context.scratchpad[f"round{x}"] = list(context.rounds)
        return x + 1

    seen: list[int] = []

    def done(out: int, context: Ctx) -> bool:
        seen.append(context.total)
        return context.total >= 6

    async def after(x: int, context: Ctx) -> int:
        return context.total

    loop = Step.loop_until("loop", Step.from_callable(record, name="record"), done)
    result = await run(loop >> Step.from_callable(after, name="after"), 1)
    assert seen == [1, 3, 6]
    ctx = result.final_pipeline_context
    assert ctx.rounds == [1, 2, 3]
    assert ctx.scratchpad == {"round1": [1], "round2": [1, 2], "round3": [1, 2, 3]}
    assert result.output == 6


async def test_updates_context_steps_inside_a_loop_accumulate() -> None:
    async def bump(x: int, context: Ctx) -> dict[str, Any]:
        return {"total": context.total + 10}

    loop = Step.loop_until(
        "loop",
        Step.from_callable(bump, name="bump", updates_context=True),
        lambda out, ctx: ctx.total >= 30,
    )
    result = await run(loop)
    assert result.final_pipeline_context.total == 30
    assert result.step_history[0].metadata["iterations"] == 3


async def test_iterations_run_one_after_the_other(autojump_clock: trio.abc.Clock) -> None:
    async def nap(x: int) -> int:
        await trio.sleep(1)
        return x + 1

    loop = Step.loop_until("loop", Step.from_callable(nap, name="nap"), at_least(3))
    t0 = trio.current_time()
    assert (await run(loop)).output == 3
    assert trio.current_time() - t0 == 3.0


async def test_usage_of_every_iteration_counts() -> None:
    async def paid(x: Any) -> UsageOutput:
        n = x.value if isinstance(x, UsageOutput) else x
        return UsageOutput(n + 1, cost_usd=0.1, token_counts=2)

    loop = Step.loop_until(
        "loop",
        Step.from_callable(paid, name="paid"),
        lambda out, ctx: out.value >= 10,
        max_loops=20,
    )
    result = await run(loop)
    assert result.total_cost_usd == Decimal("1.0")
    assert result.total_tokens == 20
    assert result.step_history[0].cost_usd == Decimal("1.0")


async def test_body_step_actors_are_reused_across_iterations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[str] = []
    original = engine.StepActor.__init__

    def counting(self: engine.StepActor, chain: engine.Chain, index: int) -> None:
        created.append(chain.steps[index].name)
        original(self, chain, index)

    monkeypatch.setattr(engine.StepActor, "__init__", counting)
    body = inc >> dbl >> Step.from_callable(lambda x: x - 1, name="dec")

    async def actors_for(iterations: int) -> list[str]:
        created.clear()
        counter = {"n": 0}

        def done(out: int, ctx: Ctx) -> bool:
            counter["n"] += 1
            return counter["n"] == iterations

        loop = Step.loop_until("loop", body, done, max_loops=iterations)
        result = await run(loop, 1)
        assert result.step_history[0].metadata["iterations"] == iterations
        return sorted(created)

    once = await actors_for(1)
    many = await actors_for(50)
    assert once == many == ["dbl", "dec", "inc", "loop"]


# -- build-time validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_loops": 0}, "Loop step 'l': max_loops must be >= 1, got 0."),
        ({"max_loops": -3}, "Loop step 'l': max_loops must be >= 1, got -3."),
        ({"max_loops": 2.5}, "Loop step 'l': max_loops must be >= 1, got 2.5."),
        ({"max_loops": True}, "Loop step 'l': max_loops must be >= 1, got True."),
        (
            {"exit_condition_callable": None},
            "Loop step 'l': exit_condition_callable is required (a function (output, "
            "context) -> bool).",
        ),
        (
            {"exit_condition_callable": "done"},
            "Step 'l': exit_condition_callable must be callable, got 'done'.",
        ),
        (
            {"iteration_input_mapper": 3},
            "Step 'l': iteration_input_mapper must be callable, got 3.",
        ),
        (
            {"initial_input_to_loop_body_mapper": [1]},
            "Step 'l': initial_input_to_loop_body_mapper must be callable, got [1].",
        ),
        (
            {"loop_output_mapper": "x"},
            "Step 'l': loop_output_mapper must be callable, got 'x'.",
        ),
        (
            {"loop_body_pipeline": add_one},
            f"Step 'l': loop_body_pipeline must be a Step or a Pipeline, got {add_one!r}.",
        ),
    ],
)
def test_bad_definitions_fail_at_build(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "loop_body_pipeline": inc,
        "exit_condition_callable": at_least(1),
        **kwargs,
    }
    with pytest.raises(PipelineDefinitionError) as info:
        Step.loop_until("l", **args)
    assert str(info.value) == message


def test_a_coroutine_object_as_condition_is_refused() -> None:
    async def done(out: int, ctx: Ctx) -> bool:
        return True  # pragma: no cover

    coro = done(1, Ctx())
    with pytest.raises(PipelineDefinitionError) as info:
        Step.loop_until("l", inc, coro)  # type: ignore[arg-type]
    assert str(info.value) == (
        "Step 'l': exit_condition_callable must be a function, got a coroutine object; "
        "pass the function itself, not its call."
    )


def test_loop_until_returns_a_loop_step() -> None:
    loop = Step.loop_until("l", inc, at_least(1))
    assert isinstance(loop, LoopStep)
    assert loop.max_loops == 5
    assert loop.body.steps == (inc,)
