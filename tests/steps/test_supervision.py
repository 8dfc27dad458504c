"""Supervision inside a step: attempts, timeouts, validators, plugins, backoff, fallbacks.

Times are virtual (``autojump_clock``/``MockClock``) and asserted exactly.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import (
    Flujo,
    InfiniteFallbackError,
    Pipeline,
    PipelineContext,
    PluginOutcome,
    Step,
    StepConfig,
    StepResult,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.policy.attempt import (
    AttemptMachine,
    Finish,
    Invoke,
    Raised,
    RunFallback,
    Sleep,
    Succeeded,
)
from flujo_actors.testing import FlakyAgent, StubAgent, UsageOutput


@attrs.define
class Ctx(PipelineContext):
    notes: list[str] = attrs.Factory(list)
    count: int = 0


async def run(step: Step | Pipeline, data: Any = "in", **kwargs: Any) -> Any:
    return await Flujo(step, **kwargs).run_async(data)


def last(result: Any) -> StepResult:
    r: StepResult = result.step_history[-1]
    return r


class Recorder:
    """An async agent that records (time, input) and fails while ``fail`` says so."""

    def __init__(self, fail: list[bool], error: Exception | None = None) -> None:
        self.fail = fail
        self.error = error or RuntimeError("boom")
        self.calls: list[tuple[float, Any]] = []

    async def run(self, data: Any) -> Any:
        self.calls.append((trio.current_time(), data))
        index = len(self.calls) - 1
        if index < len(self.fail) and self.fail[index]:
            raise self.error
        return f"ok:{data}"


# -- attempts --------------------------------------------------------------------


async def test_max_retries_n_means_n_plus_one_attempts_then_failure() -> None:
    agent = FlakyAgent(failures=100, error=RuntimeError("model overloaded"))
    result = await run(Step.from_callable(agent, name="flaky", max_retries=3))
    assert agent.calls == 4
    r = last(result)
    assert (r.success, r.attempts, r.output) == (False, 4, None)
    assert r.feedback == "RuntimeError: model overloaded"
    assert r.metadata["error_type"] == "RuntimeError"
    assert result.success is False


async def test_succeeds_on_a_retry_and_counts_primary_attempts() -> None:
    agent = FlakyAgent(failures=2, result="done")
    result = await run(Step.from_callable(agent, name="flaky", max_retries=2))
    assert agent.calls == 3
    r = last(result)
    assert (r.success, r.attempts, r.output, r.feedback) == (True, 3, "done", None)
    assert "error_type" not in r.metadata
    assert result.output == "done"


async def test_zero_retries_is_one_attempt_and_default_is_two() -> None:
    once = FlakyAgent(failures=5)
    assert last(await run(Step.from_callable(once, name="a", max_retries=0))).attempts == 1
    assert once.calls == 1
    default = FlakyAgent(failures=5)
    assert last(await run(Step.from_callable(default, name="b"))).attempts == 2
    assert default.calls == 2


async def test_agent_errors_keep_their_type_and_message() -> None:
    async def lookup(data: str) -> str:
        raise KeyError("missing-key")

    r = last(await run(Step.from_callable(lookup, max_retries=0)))
    assert r.feedback == "KeyError: 'missing-key'"
    assert r.metadata["error_type"] == "KeyError"


async def test_sync_agents_are_retried_too() -> None:
    calls: list[str] = []

    def shaky(data: str) -> str:
        calls.append(data)
        if len(calls) < 3:
            raise ValueError(f"try {len(calls)}")
        return data.upper()

    result = await run(Step.from_callable(shaky, max_retries=2), "abc")
    assert result.output == "ABC"
    assert last(result).attempts == 3
    assert calls == ["abc", "abc", "abc"]


# -- timeouts ----------------------------------------------------------------------


async def test_timeout_is_per_attempt_and_fails_the_attempt(
    autojump_clock: trio.abc.Clock,
) -> None:
    starts: list[float] = []

    async def stuck(data: str) -> str:
        starts.append(trio.current_time())
        await trio.sleep(100)
        return "never"

    t0 = trio.current_time()
    result = await run(Step.from_callable(stuck, max_retries=2, timeout_s=1.5))
    assert [s - t0 for s in starts] == [0.0, 1.5, 3.0]
    assert trio.current_time() - t0 == 4.5
    r = last(result)
    assert (r.success, r.attempts) == (False, 3)
    assert r.feedback == "TimeoutError: step 'stuck' timed out after 1.5 s"
    assert r.metadata["error_type"] == "TimeoutError"


async def test_a_timed_out_attempt_is_followed_by_a_successful_one(
    autojump_clock: trio.abc.Clock,
) -> None:
    calls = [0]

    async def slow_then_fast(data: str) -> str:
        calls[0] += 1
        if calls[0] == 1:
            await trio.sleep(10)
        else:
            await trio.sleep(0.5)
        return "fast"

    t0 = trio.current_time()
    result = await run(Step.from_callable(slow_then_fast, max_retries=1, timeout_s=2))
    assert result.output == "fast"
    assert last(result).attempts == 2
    assert trio.current_time() - t0 == 2.5


# -- backoff -------------------------------------------------------------------------


async def test_backoff_grows_geometrically_on_trios_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    agent = Recorder([True] * 10)
    step = Step(
        name="retrying",
        agent=agent,
        config=StepConfig(max_retries=3, backoff_s=1.0, backoff_factor=2.0),
    )
    t0 = trio.current_time()
    result = await run(step)
    # waits of 1, 2 and 4 seconds between the four attempts; none after the last
    assert [t - t0 for t, _ in agent.calls] == [0.0, 1.0, 3.0, 7.0]
    assert trio.current_time() - t0 == 7.0
    assert last(result).attempts == 4


async def test_backoff_from_the_from_callable_keywords(autojump_clock: trio.abc.Clock) -> None:
    agent = Recorder([True, True, False])
    step = Step.from_callable(agent.run, name="r", max_retries=5, backoff_s=0.5, backoff_factor=3.0)
    t0 = trio.current_time()
    result = await run(step)
    assert [t - t0 for t, _ in agent.calls] == [0.0, 0.5, 2.0]
    assert result.output == "ok:in"


def _machine_replay(
    outcomes: list[bool], config: StepConfig, has_fallback: bool
) -> tuple[int, float, str]:
    """What the attempt machine decides for these outcomes: attempts, time slept, outcome."""
    machine = AttemptMachine(config, has_fallback=has_fallback)
    it = iter(outcomes)
    slept = 0.0
    commands = machine.start()
    while True:
        for command in commands:
            if isinstance(command, Sleep):
                slept += command.seconds
            elif isinstance(command, Invoke):
                event = Succeeded("ok") if next(it, False) else Raised(RuntimeError("boom"))
            elif isinstance(command, RunFallback):
                return machine.attempts, slept, "fallback"
            elif isinstance(command, Finish):
                return machine.attempts, slept, "success" if machine.feedback is None else "fail"
        commands = machine.handle(event)


def _engine_replay(
    outcomes: list[bool], config: StepConfig, has_fallback: bool
) -> tuple[int, float, str, int]:
    agent = Recorder([not ok for ok in outcomes] + [True] * (config.max_retries + 1))
    fallback = Step.from_callable(lambda d: "fb", name="fb", max_retries=0)
    step = Step.from_callable(
        agent.run,
        name="modelled",
        max_retries=config.max_retries,
        backoff_s=config.backoff_s,
        backoff_factor=config.backoff_factor,
        fallback=fallback if has_fallback else None,
    )

    async def main() -> tuple[int, float, str, int]:
        t0 = trio.current_time()
        r = last(await run(step))
        outcome = (
            "fallback"
            if r.metadata.get("fallback_triggered")
            else "success"
            if r.success
            else "fail"
        )
        return r.attempts, trio.current_time() - t0, outcome, len(agent.calls)

    result: tuple[int, float, str, int] = trio.run(
        main, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    return result


@given(
    outcomes=st.lists(st.booleans(), max_size=8),
    max_attempts=st.integers(1, 5),
    backoff_s=st.sampled_from([0.0, 0.5, 1.0]),
    backoff_factor=st.sampled_from([1.0, 2.0, 3.0]),
    has_fallback=st.booleans(),
)
def test_the_supervisor_executes_exactly_what_the_machine_decides(
    outcomes: list[bool],
    max_attempts: int,
    backoff_s: float,
    backoff_factor: float,
    has_fallback: bool,
) -> None:
    config = StepConfig(
        max_retries=max_attempts - 1, backoff_s=backoff_s, backoff_factor=backoff_factor
    )
    model_attempts, slept, model_outcome = _machine_replay(outcomes, config, has_fallback)
    attempts, elapsed, outcome, calls = _engine_replay(outcomes, config, has_fallback)
    assert (attempts, outcome, calls) == (model_attempts, model_outcome, model_attempts)
    assert elapsed == slept


# -- validators ----------------------------------------------------------------------


async def test_validator_rejections_retry_and_report_the_last_message() -> None:
    agent = StubAgent(["a", "bb", "ccc"])

    def long_enough(output: str) -> bool:
        if len(output) < 5:
            raise ValueError(f"{output!r} is shorter than 5")
        return True

    result = await run(
        Step.from_callable(agent, name="writer", max_retries=2, validators=[long_enough])
    )
    r = last(result)
    assert agent.calls == 3
    assert (r.success, r.attempts) == (False, 3)
    assert r.feedback == "Validation failed after max retries: 'ccc' is shorter than 5"
    assert r.metadata["error_type"] == "ValidationError"
    assert r.output == "ccc"  # the rejected output stays inspectable
    assert result.output is None


async def test_validator_returning_false_and_async_validators_with_context() -> None:
    seen: list[Any] = []

    async def not_empty(output: str, context: Ctx) -> bool:
        seen.append(context.initial_prompt)
        return bool(output)

    agent = StubAgent(["", "", "text"])
    result = await run(
        Step.from_callable(agent, name="w", max_retries=2, validators=[not_empty]),
        "prompt",
        context_model=Ctx,
    )
    assert result.output == "text"
    assert last(result).attempts == 3
    assert seen == ["prompt"] * 3

    def never(output: str) -> bool:
        return False

    r = last(await run(Step.from_callable(StubAgent(["x"]), name="w2", validators=[never])))
    assert r.feedback == (
        "Validation failed after max retries: validator "
        "test_validator_returning_false_and_async_validators_with_context.<locals>.never "
        "returned False"
    )


async def test_validators_run_in_order_and_the_first_rejection_wins() -> None:
    order: list[str] = []

    def first(output: str) -> bool:
        order.append("first")
        raise ValueError("first says no")

    def second(output: str) -> bool:
        order.append("second")
        return True

    r = last(
        await run(
            Step.from_callable(
                StubAgent(["x"]), name="v", max_retries=0, validators=[first, second]
            )
        )
    )
    assert order == ["first"]
    assert r.feedback == "Validation failed after max retries: first says no"


async def test_a_validator_that_crashes_fails_the_attempt_with_its_error() -> None:
    def broken(output: str) -> bool:
        raise TypeError("validator bug")

    r = last(
        await run(
            Step.from_callable(StubAgent(["x"]), name="v", max_retries=1, validators=[broken])
        )
    )
    assert (r.success, r.attempts, r.feedback) == (False, 2, "TypeError: validator bug")


# -- plugins ---------------------------------------------------------------------------


class ToneCheck:
    """A plugin object: fails while outputs contain '!' and rewrites the accepted one."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def validate(self, output: str, context: Any) -> PluginOutcome:
        self.seen.append(output)
        if "!" in output:
            return PluginOutcome(success=False, feedback=f"too loud: {output}")
        return PluginOutcome(success=True, new_solution=output.lower())


async def test_plugin_failures_retry_then_report_the_feedback() -> None:
    plugin = ToneCheck()
    agent = StubAgent(["Hi!", "HEY!"])
    r = last(await run(Step.from_callable(agent, name="p", max_retries=1, plugins=[plugin])))
    assert plugin.seen == ["Hi!", "HEY!"]
    assert (r.success, r.attempts) == (False, 2)
    assert r.feedback == "Plugin execution failed after max retries: too loud: HEY!"
    assert r.metadata["error_type"] == "PluginError"


async def test_plugin_success_replaces_the_output_with_new_solution() -> None:
    plugin = ToneCheck()
    result = await run(
        Step.from_callable(StubAgent(["NO!", "Calm Words"]), name="p", plugins=[plugin])
    )
    assert result.output == "calm words"
    assert last(result).attempts == 2


async def test_a_plugin_that_raises_is_a_plugin_failure_with_its_message() -> None:
    def explode(output: str, context: Any) -> PluginOutcome:
        raise RuntimeError("plugin backend down")

    r = last(
        await run(Step.from_callable(StubAgent(["x"]), name="p", max_retries=2, plugins=[explode]))
    )
    assert r.attempts == 3
    assert r.feedback == "Plugin execution failed after max retries: plugin backend down"


async def test_a_plugin_that_returns_something_else_fails_the_attempt() -> None:
    def sloppy(output: str, context: Any) -> Any:
        return True

    r = last(
        await run(Step.from_callable(StubAgent(["x"]), name="p", max_retries=0, plugins=[sloppy]))
    )
    assert r.feedback == (
        "Plugin execution failed after max retries: plugin "
        "test_a_plugin_that_returns_something_else_fails_the_attempt.<locals>.sloppy "
        "returned True, expected a PluginOutcome"
    )


async def test_validators_run_before_plugins_inside_each_attempt() -> None:
    order: list[str] = []

    def validator(output: str) -> bool:
        order.append(f"validate {output}")
        return True

    async def plugin(output: str, context: Any) -> PluginOutcome:
        order.append(f"plugin {output}")
        return PluginOutcome(success=output == "good")

    result = await run(
        Step.from_callable(
            StubAgent(["bad", "good"]), name="vp", validators=[validator], plugins=[plugin]
        )
    )
    assert result.output == "good"
    assert order == ["validate bad", "plugin bad", "validate good", "plugin good"]


# -- input and context isolation -------------------------------------------------------


async def test_each_attempt_gets_its_own_copy_of_the_input() -> None:
    seen: list[dict[str, Any]] = []

    async def produce(data: str) -> dict[str, Any]:
        return {"items": [1, 2], "meta": {"n": 2}}

    async def mutating(data: dict[str, Any]) -> int:
        seen.append({"items": list(data["items"]), "meta": dict(data["meta"])})
        data["items"].append(99)
        data["meta"]["n"] = -1
        data["new"] = True
        if len(seen) < 3:
            raise RuntimeError("mutated and failed")
        return len(data["items"])

    result = await run(Step.from_callable(produce) >> Step.from_callable(mutating, max_retries=2))
    assert seen == [{"items": [1, 2], "meta": {"n": 2}}] * 3
    assert result.output == 3
    # the producer's recorded output was never touched either
    assert result.step_history[0].output == {"items": [1, 2], "meta": {"n": 2}}


@attrs.define
class Basket:
    items: list[int]


def _inputs() -> list[Any]:
    class LocalBasket:  # a local class: not picklable, copied structurally
        def __init__(self) -> None:
            self.items = [1, 2]

    return [
        {"items": [1, 2]},  # plain data: kept with marshal
        Basket([1, 2]),  # a module-level class: kept with pickle
        LocalBasket(),  # neither: a structural/deep copy
        {"items": [1, 2], "key": lambda x: x},  # a lambda inside: copied
    ]


@pytest.mark.parametrize("value", _inputs(), ids=["data", "attrs", "local-class", "lambda"])
async def test_every_kind_of_input_is_pristine_for_each_attempt(value: Any) -> None:
    seen: list[list[int]] = []

    def items(v: Any) -> list[int]:
        got: list[int] = v["items"] if isinstance(v, dict) else v.items
        return got

    async def mutating(data: Any) -> int:
        seen.append(list(items(data)))
        items(data).append(len(seen))
        if len(seen) < 3:
            raise RuntimeError("again")
        return len(items(data))

    result = await run(Step.from_callable(mutating, max_retries=2), value)
    assert seen == [[1, 2], [1, 2], [1, 2]]
    assert result.output == 3
    assert items(value) == [1, 2]  # the caller's object was never handed to an attempt


async def test_the_fallback_gets_the_original_input() -> None:
    async def mutating(data: list[int]) -> int:
        data.clear()
        raise RuntimeError("gone")

    async def backup(data: list[int]) -> int:
        return sum(data)

    result = await run(Step.from_callable(mutating, fallback=Step.from_callable(backup)), [1, 2, 3])
    assert result.output == 6


@attrs.frozen
class Frozen:
    text: str
    tags: tuple[str, ...]


async def test_immutable_inputs_are_shared_not_copied() -> None:
    seen: list[Any] = []
    value = Frozen("x", ("a", "b"))

    async def flaky(data: Frozen) -> str:
        seen.append(data)
        if len(seen) == 1:
            raise RuntimeError("once")
        return data.text

    result = await run(Step.from_callable(flaky, max_retries=1), value)
    assert result.output == "x"
    assert seen[0] is value and seen[1] is value


async def test_an_input_that_cannot_be_copied_is_still_passed_to_every_attempt() -> None:
    lock = threading.Lock()
    seen: list[Any] = []

    async def uses_lock(data: dict[str, Any]) -> str:
        seen.append(data["lock"])
        if len(seen) == 1:
            raise RuntimeError("first")
        return "locked" if data["lock"] is lock else "copied"

    result = await run(Step.from_callable(uses_lock, max_retries=1), {"lock": lock})
    assert result.output == "locked"
    assert len(seen) == 2


async def test_failed_attempts_context_changes_never_leak() -> None:
    calls = [0]

    async def scribble(data: str, context: Ctx) -> str:
        calls[0] += 1
        context.notes.append(f"attempt {calls[0]}")
        context.scratchpad.setdefault("log", []).append(calls[0])
        context.count += 10
        if calls[0] < 3:
            raise RuntimeError(f"fail {calls[0]}")
        return "ok"

    result = await run(Step.from_callable(scribble, max_retries=2), context_model=Ctx)
    ctx = result.final_pipeline_context
    assert result.output == "ok"
    assert ctx.notes == ["attempt 3"]
    assert ctx.scratchpad == {"log": [3]}
    assert ctx.count == 10


async def test_a_step_that_fails_for_good_leaves_the_context_as_it_found_it() -> None:
    async def setup(data: str, context: Ctx) -> str:
        context.notes.append("setup")
        context.scratchpad["kept"] = {"deep": [1]}
        return data

    async def vandal(data: str, context: Ctx) -> str:
        context.notes.append("vandal")
        context.scratchpad["kept"]["deep"].append(2)
        context.count = 99
        raise RuntimeError("no")

    result = await run(
        Step.from_callable(setup) >> Step.from_callable(vandal, max_retries=1),
        context_model=Ctx,
    )
    ctx = result.final_pipeline_context
    assert result.success is False
    assert (ctx.notes, ctx.scratchpad, ctx.count) == (["setup"], {"kept": {"deep": [1]}}, 0)


@attrs.define
class ClientContext(PipelineContext):
    lock: Any = attrs.Factory(threading.Lock)  # cannot be copied
    count: int = 0


async def test_rollback_works_when_a_context_field_cannot_be_copied() -> None:
    calls = [0]
    seen_locks: list[Any] = []

    async def agent(data: str, context: ClientContext) -> str:
        calls[0] += 1
        seen_locks.append(context.lock)
        context.count += 1
        context.scratchpad["attempt"] = calls[0]
        context.lock = None  # rebinding is rolled back too
        if calls[0] == 1:
            raise RuntimeError("first")
        return "ok"

    result = await run(Step.from_callable(agent, max_retries=1), context_model=ClientContext)
    ctx = result.final_pipeline_context
    assert result.output == "ok"
    assert (ctx.count, ctx.scratchpad, ctx.lock) == (1, {"attempt": 2}, None)
    assert seen_locks[0] is seen_locks[1]  # the same lock, put back after attempt 1


@attrs.define
class RichContext(PipelineContext):
    basket: Basket = attrs.Factory(lambda: Basket([1]))
    callback: Any = None  # a lambda: neither marshal nor pickle can keep it


async def test_rollback_of_objects_in_the_context() -> None:
    calls = [0]

    async def agent(data: str, context: RichContext) -> str:
        calls[0] += 1
        context.basket.items.append(calls[0] * 10)
        context.callback = lambda: calls[0]
        if calls[0] == 1:
            raise RuntimeError("first")
        return "ok"

    result = await run(
        Step.from_callable(agent, max_retries=1),
        context_model=RichContext,
        initial_context_data={"callback": lambda: -1},  # the snapshot cannot pickle it
    )
    ctx = result.final_pipeline_context
    assert ctx.basket == Basket([1, 20])
    assert ctx.callback() == 2


async def test_context_changes_of_a_rejected_attempt_are_rolled_back() -> None:
    calls = [0]

    async def writer(data: str, context: Ctx) -> str:
        calls[0] += 1
        context.notes.append(f"draft {calls[0]}")
        return "bad" if calls[0] == 1 else "good"

    def is_good(output: str) -> bool:
        return output == "good"

    result = await run(Step.from_callable(writer, validators=[is_good]), context_model=Ctx)
    assert result.output == "good"
    assert result.final_pipeline_context.notes == ["draft 2"]


async def test_an_unfixable_context_update_is_not_retried() -> None:
    agent = StubAgent([{"no_such_field": 1}])
    r = last(
        await run(
            Step.from_callable(agent, name="upd", max_retries=3, updates_context=True),
            context_model=Ctx,
        )
    )
    assert agent.calls == 1
    assert (r.success, r.attempts, r.metadata["error_type"]) == (False, 1, "ContextUpdateError")
    assert r.feedback is not None and "['no_such_field']" in r.feedback


# -- fallbacks ------------------------------------------------------------------------------


async def test_fallback_runs_after_the_primary_attempts_are_spent() -> None:
    order: list[str] = []

    async def primary(data: str) -> str:
        order.append("primary")
        raise ConnectionError("provider down")

    async def backup(data: str) -> str:
        order.append("backup")
        return f"backup:{data}"

    step = Step.from_callable(
        primary, max_retries=2, fallback=Step.from_callable(backup, max_retries=0)
    )
    result = await run(step, "q")
    r = last(result)
    assert order == ["primary", "primary", "primary", "backup"]
    assert (r.name, r.success, r.output, r.attempts) == ("primary", True, "backup:q", 3)
    assert r.metadata["fallback_triggered"] is True
    assert r.metadata["original_error"] == "ConnectionError: provider down"
    assert r.feedback is None
    assert [h.name for h in r.step_history] == ["backup"]
    assert result.output == "backup:q"
    assert result.success is True


async def test_no_fallback_when_the_primary_succeeds() -> None:
    backup = StubAgent(["backup"])
    step = Step.from_callable(
        FlakyAgent(1, result="primary"), name="p", fallback=Step.from_callable(backup, name="b")
    )
    r = last(await run(step))
    assert (r.output, backup.calls, r.metadata) == ("primary", 0, {})


async def test_a_failing_fallback_fails_the_step_naming_both_errors() -> None:
    async def primary(data: str) -> str:
        raise RuntimeError("primary broke")

    async def backup(data: str) -> str:
        raise ValueError("backup broke")

    step = Step.from_callable(
        primary, max_retries=0, fallback=Step.from_callable(backup, max_retries=1)
    )
    r = last(await run(step))
    assert r.success is False
    assert r.feedback == (
        "Fallback step 'backup' failed: ValueError: backup broke "
        "(original error: RuntimeError: primary broke)"
    )
    assert r.metadata["fallback_triggered"] is True
    assert r.step_history[0].attempts == 2


async def test_fallback_chains_and_usage_of_both() -> None:
    async def costly_failure(data: str) -> str:
        raise RuntimeError("x")

    third = Step.from_callable(StubAgent([UsageOutput("third", 0.25, 5)]), name="third")
    second = Step.from_callable(costly_failure, name="second", max_retries=0, fallback=third)
    first = Step.from_callable(
        StubAgent([UsageOutput("bad", 0.1, 1)]),
        name="first",
        max_retries=1,
        validators=[lambda out: out.value != "bad"],
        fallback=second,
    )
    result = await run(first)
    r = last(result)
    assert r.output == UsageOutput("third", 0.25, 5)
    assert r.cost_usd == Decimal("0.45") and r.token_counts == 7
    assert result.total_cost_usd == Decimal("0.45") and result.total_tokens == 7
    assert r.metadata["original_error"].startswith("Validation failed after max retries: ")


async def test_fallback_cycles_are_refused_at_build_time_and_before_running() -> None:
    async def f(data: str) -> str:
        raise RuntimeError("always")

    a = Step.from_callable(f, name="a", max_retries=0)
    b = Step.from_callable(f, name="b", max_retries=0, fallback=a)
    # Steps are sealed once built: only a bypass of the seal makes a -> b -> a.
    object.__setattr__(a, "fallback", b)
    with pytest.raises(InfiniteFallbackError) as info:
        Step.from_callable(f, name="c", fallback=a)
    assert str(info.value) == (
        "Step 'c': the fallback chain 'c' -> 'a' -> 'b' -> 'a' revisits step 'a'; "
        "a fallback must lead to a step without a fallback."
    )
    with pytest.raises(
        InfiniteFallbackError,
        match=r"^Step 'a': the fallback chain 'a' -> 'b' -> 'a' revisits step 'a'",
    ):
        Flujo(a)

    # built fine, then made cyclic after the runner validated it: refused before it runs
    x = Step.from_callable(f, name="x", max_retries=0)
    y = Step.from_callable(f, name="y", max_retries=0)
    object.__setattr__(x, "fallback", y)
    runner = Flujo(x)
    object.__setattr__(y, "fallback", x)
    with pytest.raises(
        InfiniteFallbackError, match=r"^Step 'x': the fallback chain 'x' -> 'y' -> 'x'"
    ):
        await runner.run_async("in")


# -- usage across attempts -----------------------------------------------------------------


async def test_usage_of_every_attempt_is_counted() -> None:
    agent = StubAgent([UsageOutput("bad", 0.1, 3), UsageOutput("good", 0.2, 4)])
    result = await run(
        Step.from_callable(agent, name="u", validators=[lambda o: o.value == "good"])
    )
    r = last(result)
    assert (r.cost_usd, r.token_counts) == (Decimal("0.3"), 7)
    assert (result.total_cost_usd, result.total_tokens) == (Decimal("0.3"), 7)


async def test_with_limits_a_breach_during_retries_stops_them() -> None:
    agent = StubAgent([UsageOutput("bad", 0.3, 0)])
    step = Step.from_callable(agent, name="pricey", max_retries=5, validators=[lambda o: False])
    with pytest.raises(UsageLimitExceededError) as info:
        await run(step, usage_limits=UsageLimits(total_cost_usd_limit=0.5))
    assert agent.calls == 2  # 0.3 + 0.3 > 0.5: no third attempt
    result = info.value.result
    assert result is not None
    assert result.total_cost_usd == Decimal("0.6")
    r = result.step_history[-1]
    assert (r.name, r.success, r.attempts, r.cost_usd) == ("pricey", False, 2, Decimal("0.6"))


@pytest.mark.parametrize(
    ("cost", "shown"),
    [(float("nan"), "nan"), (-0.5, "-0.5"), ("abc", "'abc'"), (float("inf"), "inf")],
)
async def test_an_invalid_reported_cost_fails_the_attempt(cost: Any, shown: str) -> None:
    r = last(
        await run(
            Step.from_callable(StubAgent([UsageOutput("x", cost)]), name="bad", max_retries=0)
        )
    )
    assert r.success is False
    assert r.feedback == (
        f"UsageReportError: Step 'bad': its output reports cost_usd={shown}; usage must be a "
        "finite "
        "number >= 0 (int, float, Decimal or numeric str)."
    )


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelling_during_an_attempt_propagates_and_never_retries(
    autojump_clock: trio.abc.Clock,
) -> None:
    starts: list[float] = []

    async def slow(data: str) -> str:
        starts.append(trio.current_time())
        await trio.sleep(10)
        return "late"

    runner = Flujo(Step.from_callable(slow, max_retries=5, timeout_s=20))
    outcome: list[Any] = []
    t0 = trio.current_time()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def go() -> None:
                outcome.append(await runner.run_async("in"))

            nursery.start_soon(go)
            await trio.sleep(3)
            scope.cancel()
    assert scope.cancelled_caught  # the Cancelled reached the canceller: not swallowed
    assert outcome == []
    assert starts == [t0]
    await trio.sleep(100)  # nothing left running that could make another attempt
    assert starts == [t0]
    assert trio.current_time() - t0 == 103


async def test_cancelling_during_a_backoff_sleep_stops_further_attempts(
    autojump_clock: trio.abc.Clock,
) -> None:
    agent = Recorder([True] * 10)
    runner = Flujo(
        Step.from_callable(agent.run, name="r", max_retries=5, backoff_s=10.0, backoff_factor=1.0)
    )
    t0 = trio.current_time()
    with trio.move_on_after(15) as scope:
        await runner.run_async("in")
    assert scope.cancelled_caught
    # attempts at 0 and 10; cancelled during the second 10 s backoff
    assert [t - t0 for t, _ in agent.calls] == [0.0, 10.0]
    await trio.sleep(60)
    assert len(agent.calls) == 2


async def test_an_outer_cancel_during_a_timed_attempt_is_not_a_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    agent = Recorder([])

    async def slow(data: str) -> str:
        await agent.run(data)
        await trio.sleep(10)
        return "late"

    with trio.move_on_after(1) as scope:
        await Flujo(Step.from_callable(slow, max_retries=3, timeout_s=5)).run_async("x")
    assert scope.cancelled_caught
    assert len(agent.calls) == 1


async def test_a_sync_agent_is_not_retried_after_its_scope_was_cancelled() -> None:
    calls = [0]
    outer = trio.CancelScope()

    def cancels_then_fails(data: str) -> str:
        calls[0] += 1
        outer.cancel()  # e.g. the user cancelled while this attempt ran
        raise RuntimeError("failed while being cancelled")

    with outer:
        await run(Step.from_callable(cancels_then_fails, max_retries=5))
    assert outer.cancelled_caught
    assert calls[0] == 1  # no attempt starts in a cancelled scope, even without a backoff


async def test_no_fallback_runs_in_a_cancelled_scope() -> None:
    outer = trio.CancelScope()
    ran: list[str] = []

    def primary(data: str) -> str:
        outer.cancel()
        raise RuntimeError("failed while being cancelled")

    def backup(data: str) -> str:  # sync: it would run to the end if called
        ran.append("backup")
        return "backup"

    with outer:
        await run(Step.from_callable(primary, max_retries=0, fallback=Step.from_callable(backup)))
    assert outer.cancelled_caught
    assert ran == []


async def test_a_cancel_scope_inside_an_agent_is_not_a_failure() -> None:
    calls = [0]

    async def cancels_itself(data: str) -> str:
        calls[0] += 1
        with trio.CancelScope() as inner:
            inner.cancel()
            await trio.lowlevel.checkpoint()
        # the agent's own scope caught its Cancelled: the attempt goes on
        return "fine"

    result = await run(Step.from_callable(cancels_itself, max_retries=3))
    assert (result.output, calls[0]) == ("fine", 1)
