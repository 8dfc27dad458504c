"""``retry_on``, tracebacks of failed steps, and retry markers in streams."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from flujo_actors import (
    Flujo,
    InlineExecutor,
    InMemoryStateBackend,
    PipelineDefinitionError,
    PipelineResult,
    Step,
    StepConfig,
    StreamRetried,
    step,
)


class Deterministic(ValueError):
    pass


class Flaky(ConnectionError):
    pass


def failing(*errors: Exception) -> tuple[Any, list[int]]:
    calls: list[int] = []

    async def agent(data: Any) -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return f"ok after {len(calls)}"

    return agent, calls


async def test_default_retries_every_exception() -> None:
    agent, calls = failing(Deterministic("bad"), Flaky("down"))
    result = await Flujo(Step.from_callable(agent, name="a", max_retries=2)).run_async("x")
    assert (result.output, len(calls)) == ("ok after 3", 3)


async def test_retry_on_stops_retrying_other_errors() -> None:
    agent, calls = failing(Deterministic("bad request"))
    s = Step.from_callable(agent, name="a", max_retries=3, retry_on=(ConnectionError,))
    result = await Flujo(s).run_async("x")
    r = result.step_history[-1]
    assert (r.success, r.attempts, len(calls)) == (False, 1, 1)
    assert r.feedback == "Deterministic: bad request"


async def test_retry_on_retries_its_types_and_their_subclasses() -> None:
    agent, calls = failing(Flaky("one"), Flaky("two"))
    s = Step.from_callable(agent, name="a", max_retries=3, retry_on=ConnectionError)
    assert s.config.retry_on == (ConnectionError,)
    result = await Flujo(s).run_async("x")
    assert (result.output, len(calls)) == ("ok after 3", 3)


async def test_a_non_retried_error_hands_over_to_the_fallback_at_once() -> None:
    agent, calls = failing(Deterministic("bad"))
    fb = Step.from_callable(lambda x: "fallback", name="fb")
    s = Step.from_callable(agent, name="a", max_retries=3, retry_on=(Flaky,), fallback=fb)
    r = (await Flujo(s).run_async("x")).step_history[-1]
    assert (r.output, r.attempts, r.metadata["fallback_triggered"], len(calls)) == (
        "fallback",
        1,
        True,
        1,
    )


async def test_timeouts_are_retried_whatever_retry_on_says(autojump_clock: trio.abc.Clock) -> None:
    calls: list[float] = []

    async def slow(data: Any) -> str:
        calls.append(trio.current_time())
        if len(calls) < 2:
            await trio.sleep(10)
        return "done"

    s = Step.from_callable(slow, name="s", max_retries=1, timeout_s=1, retry_on=(Deterministic,))
    result = await Flujo(s).run_async("x")
    assert (result.output, len(calls)) == ("done", 2)


async def test_decorator_and_step_config_take_retry_on() -> None:
    @step(retry_on=(Flaky,), max_retries=2)
    async def dec(data: Any) -> Any:
        raise Deterministic("no")

    direct = Step(name="direct", agent=dec.agent, config=StepConfig(retry_on=(KeyError,)))
    assert dec.config.retry_on == (Flaky,)
    assert direct.config.retry_on == (KeyError,)
    r = (await Flujo(dec).run_async("x")).step_history[-1]
    assert (r.success, r.attempts) == (False, 1)


@pytest.mark.parametrize("bad", ["ValueError", ValueError("x"), (ValueError, 3), KeyboardInterrupt])
def test_retry_on_is_validated_when_the_step_is_built(bad: Any) -> None:
    with pytest.raises(PipelineDefinitionError) as info:
        Step.from_callable(lambda x: x, name="s", retry_on=bad)
    assert str(info.value) == (
        f"Step 's': retry_on must be an exception type (a subclass of Exception) or a tuple of "
        f"them, got {bad!r}; for example retry_on=(ConnectionError, TimeoutError)."
    )


async def test_an_empty_retry_on_retries_no_exception() -> None:
    agent, calls = failing(Flaky("down"))
    r = (
        await Flujo(Step.from_callable(agent, name="a", max_retries=3, retry_on=())).run_async(1)
    ).step_history[-1]
    assert (r.success, len(calls)) == (False, 1)


# -- tracebacks --------------------------------------------------------------------------------


def explode(data: Any) -> Any:
    raise Deterministic(f"cannot handle {data!r}")


async def test_a_failed_step_keeps_its_traceback_inline() -> None:
    r = (
        await Flujo(Step.from_callable(explode, name="e", max_retries=0)).run_async(7)
    ).step_history[-1]
    assert r.metadata["exception_type"] == "test_retry_on_and_tracebacks.Deterministic"
    tb = r.metadata["traceback"]
    assert tb.startswith("Traceback (most recent call last):\n")
    assert 'raise Deterministic(f"cannot handle {data!r}")' in tb
    assert tb.endswith("test_retry_on_and_tracebacks.Deterministic: cannot handle 7\n")


async def test_a_failed_step_keeps_its_traceback_on_an_executor() -> None:
    s = Step.from_callable(explode, name="e", max_retries=0, placement=InlineExecutor())
    r = (await Flujo(s).run_async(7)).step_history[-1]
    assert r.metadata["exception_type"] == "test_retry_on_and_tracebacks.Deterministic"
    assert 'raise Deterministic(f"cannot handle {data!r}")' in r.metadata["traceback"]


async def test_builtin_exception_types_are_bare_and_success_has_no_traceback() -> None:
    def boom(data: Any) -> Any:
        raise KeyError("k")

    result = await Flujo(
        Step.from_callable(lambda x: x, name="ok") >> Step.from_callable(boom, max_retries=0)
    ).run_async(1)
    ok, failed = result.step_history
    assert "traceback" not in ok.metadata
    assert failed.metadata["exception_type"] == "KeyError"


async def test_the_traceback_is_persisted_with_the_run() -> None:
    backend = InMemoryStateBackend()
    runner = Flujo(Step.from_callable(explode, name="e", max_retries=0), state_backend=backend)
    await runner.run_async(7, run_id="r1")
    snap = await backend.load_state("r1")
    assert snap is not None
    stored = snap.step_history[-1]["value"]  # plain JSON: strings as they are
    assert stored["metadata"]["exception_type"] == "test_retry_on_and_tracebacks.Deterministic"
    assert "cannot handle 7" in stored["metadata"]["traceback"]
    again = await runner.resume_async("r1")
    assert again.step_history[-1].metadata["traceback"] == stored["metadata"]["traceback"]


# -- retry markers in streams ------------------------------------------------------------------


async def test_a_retried_stream_marks_where_the_failed_attempt_ends() -> None:
    attempts: list[int] = []

    async def talk(data: str) -> Any:
        attempts.append(1)
        yield f"try{len(attempts)}-a "
        if len(attempts) < 3:
            raise Flaky(f"dropped {len(attempts)}")
        yield "done"

    runner = Flujo(Step.from_callable(talk, name="talk", max_retries=2))
    items = [item async for item in runner.stream_async("x")]
    assert items[:-1] == [
        "try1-a ",
        StreamRetried("talk", 1, "Flaky: dropped 1"),
        "try2-a ",
        StreamRetried("talk", 2, "Flaky: dropped 2"),
        "try3-a ",
        "done",
    ]
    result = items[-1]
    assert isinstance(result, PipelineResult)
    assert result.output == "try3-a done"


async def test_a_stream_that_is_not_retried_has_no_marker() -> None:
    async def talk(data: str) -> Any:
        yield "a"
        raise Deterministic("no")

    runner = Flujo(Step.from_callable(talk, name="talk", max_retries=2, retry_on=(Flaky,)))
    items = [item async for item in runner.stream_async("x")]
    assert items[0] == "a"
    assert isinstance(items[1], PipelineResult)
    assert len(items) == 2
