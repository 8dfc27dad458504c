"""A cache hit has every effect its miss had (#4, #24); serialization never costs a result (#23)."""

from __future__ import annotations

import re
import threading
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from flujo_actors import (
    CacheSkippedWarning,
    Flujo,
    InMemoryLRUBackend,
    PipelineContext,
    Step,
    UsageLimits,
)
from flujo_actors.testing import UsageOutput

if TYPE_CHECKING:
    from flujo_actors.steps.kinds import AnyStep


@attrs.define
class Ctx(PipelineContext):
    lang: str | None = None
    seen: list[str] = attrs.Factory(list)


class Opaque:
    """No serializer is registered for it."""

    def __init__(self, cost_usd: float) -> None:
        self.cost_usd = cost_usd


def _runner(*steps: AnyStep, **kwargs: Any) -> Flujo:
    pipeline: Any = steps[0]
    for s in steps[1:]:
        pipeline = pipeline >> s
    kwargs.setdefault("cache_backend", InMemoryLRUBackend())
    return Flujo(pipeline, context_model=Ctx, **kwargs)


# -- #4: a hit replays the miss's context changes ---------------------------------------------


async def test_a_hit_applies_updates_context_like_the_miss() -> None:
    calls: list[str] = []

    async def detect(text: str) -> dict[str, str]:
        calls.append(text)
        return {"lang": "en"}

    runner = _runner(Step.from_callable(detect, updates_context=True, cache=True))
    miss = await runner.run_async("hello")
    hit = await runner.run_async("hello")
    assert calls == ["hello"]
    assert hit.step_history[0].metadata == {"cache_hit": True}
    assert miss.final_pipeline_context.lang == hit.final_pipeline_context.lang == "en"


async def test_a_hit_replays_what_the_agent_wrote_and_keeps_what_others_wrote() -> None:
    calls: list[str] = []

    async def note(text: str, *, context: Ctx) -> str:
        calls.append(text)
        context.lang = "fr"
        context.seen.append("note")
        context.scratchpad["noted"] = text
        context.scratchpad.pop("stale", None)
        return text.upper()

    async def before(text: str, *, context: Ctx) -> str:
        context.scratchpad["run"] = len(calls)  # differs between the runs
        context.scratchpad["stale"] = True
        return text

    runner = _runner(
        Step.from_callable(before, name="before"), Step.from_callable(note, cache=True)
    )
    await runner.run_async("hi")
    second = await runner.run_async("hi")
    assert calls == ["hi"]
    assert second.output == "HI"
    ctx = second.final_pipeline_context
    assert (ctx.lang, ctx.seen) == ("fr", ["note"])
    assert ctx.scratchpad == {"run": 1, "noted": "hi"}  # 'run' is this run's own value


async def test_a_hit_inside_a_parallel_branch_reaches_the_merged_context() -> None:
    async def tag(text: str) -> dict[str, str]:
        return {"lang": "de"}

    fan = Step.parallel(
        "fan", {"t": Step.from_callable(tag, name="tag", updates_context=True, cache=True)}
    )
    runner = _runner(fan)
    await runner.run_async("x")
    second = await runner.run_async("x")
    assert second.step_history[0].step_history[0].step_history[0].metadata["cache_hit"]
    assert second.final_pipeline_context.lang == "de"


async def test_an_entry_writing_fields_this_context_lacks_is_a_miss() -> None:
    cache = InMemoryLRUBackend()
    calls: list[str] = []

    async def detect(text: str) -> dict[str, str]:
        calls.append(text)
        return {"lang": "en"}

    step = Step.from_callable(detect, updates_context=True, cache=True)
    # Built before the first run: the key fingerprints the closure's `calls` as it
    # is when a step is built, and both steps must share it here.
    plain = Flujo(Step.from_callable(detect, cache=True), cache_backend=cache)
    await Flujo(step, context_model=Ctx, cache_backend=cache).run_async("x")
    message = (
        "Step 'detect' (cache=True): its cache entry writes context field(s) ['lang'], "
        "which PipelineContext lacks, so the step ran again."
    )
    with pytest.warns(CacheSkippedWarning, match=rf"^{re.escape(message)}$"):
        result = await plain.run_async("x")
    assert result.output == {"lang": "en"} and calls == ["x", "x"]


# -- #23: what the serializer cannot handle skips the cache, never the result -----------------


def _unserializable(type_name: str, where: str) -> str:
    return (
        f"Cannot serialize an object of type {type_name!r} at {where}: it is not JSON-compatible "
        "and no serializer is registered for it. Fix: register_custom_serializer("
    )


async def test_an_unserializable_output_keeps_its_result_and_usage() -> None:
    calls: list[str] = []

    async def opaque(text: str) -> Opaque:
        calls.append(text)
        return Opaque(cost_usd=0.25)

    runner = _runner(
        Step.from_callable(opaque, cache=True),
        usage_limits=UsageLimits(total_cost_usd_limit=10),
    )
    message = "Step 'opaque' (cache=True): its result stands but was not cached. " + (
        _unserializable(f"{__name__}.Opaque", "output")
    )
    for expected_calls in (1, 2):  # nothing was cached: the agent runs again
        with pytest.warns(CacheSkippedWarning, match=rf"^{re.escape(message)}"):
            result = await runner.run_async("x")
        assert result.success
        assert type(result.output) is Opaque
        assert result.total_cost_usd == Decimal("0.25")
        assert result.step_history[0].cost_usd == Decimal("0.25")
        assert len(calls) == expected_calls


async def test_an_unserializable_context_change_keeps_the_result() -> None:
    async def lock(text: str, *, context: Ctx) -> UsageOutput:
        context.scratchpad["lock"] = threading.Lock()
        return UsageOutput(text, cost_usd=0.5)

    runner = _runner(Step.from_callable(lock, cache=True))
    message = "Step 'lock' (cache=True): its result stands but was not cached. " + (
        _unserializable("_thread.lock", "context.scratchpad['lock']")
    )
    with pytest.warns(CacheSkippedWarning, match=rf"^{re.escape(message)}"):
        result = await runner.run_async("x")
    assert result.success and result.output.value == "x"
    assert result.total_cost_usd == Decimal("0.5")


async def test_an_input_without_a_cache_key_runs_uncached() -> None:
    calls: list[Any] = []

    async def first(text: str) -> Opaque:
        return Opaque(cost_usd=0)

    async def second(data: Opaque) -> str:
        calls.append(data)
        return "ran"

    runner = _runner(
        Step.from_callable(first, name="first"), Step.from_callable(second, cache=True)
    )
    with pytest.warns(
        CacheSkippedWarning,
        match=r"^Step 'second' \(cache=True\) ran uncached: "
        r"its input has no cache key\. Cannot compute the cache key of step ",
    ):
        result = await runner.run_async("x")
    assert result.output == "ran" and len(calls) == 1


class DictCache:
    """A minimal cache backend whose entries a test can rewrite."""

    def __init__(self) -> None:
        self.entries: dict[str, Any] = {}

    async def get(self, key: str) -> tuple[bool, Any]:
        return (True, self.entries[key]) if key in self.entries else (False, None)

    async def put(self, key: str, value: Any) -> None:
        self.entries[key] = value


@pytest.mark.parametrize(
    "entry",
    [
        {"format": 1, "output": {"__flujo_type__": "nowhere:Gone", "value": 1}},
        "abab",  # not an entry of this format
    ],
)
async def test_an_entry_that_cannot_be_rebuilt_is_a_miss(entry: Any) -> None:
    cache = DictCache()
    runner = _runner(
        Step.from_callable(lambda text: text * 2, name="double", cache=True), cache_backend=cache
    )
    await runner.run_async("ab")
    (key,) = cache.entries
    cache.entries[key] = entry
    with pytest.warns(
        CacheSkippedWarning,
        match=r"^Step 'double' \(cache=True\): its cache entry cannot be rebuilt, so the step "
        r"ran again\. ",
    ):
        result = await runner.run_async("ab")
    assert result.output == "abab"
    assert "cache_hit" not in result.step_history[0].metadata
    assert cache.entries[key] != entry  # the fresh result replaced it


# -- #24: a step that succeeded through its fallback is cached ------------------------------


async def test_a_fallback_success_is_cached_and_its_hit_reports_the_fallback() -> None:
    calls: list[str] = []

    async def primary(text: str) -> str:
        calls.append("primary")
        raise RuntimeError("model down")

    async def backup(text: str, *, context: Ctx) -> UsageOutput:
        calls.append("backup")
        context.lang = "en"
        return UsageOutput(f"backup:{text}", cost_usd=0.1)

    step = Step.from_callable(
        primary,
        cache=True,
        max_retries=0,
        fallback=Step.from_callable(backup, name="backup"),
    )
    runner = _runner(step)
    miss = await runner.run_async("q")
    assert miss.step_history[0].metadata == {
        "fallback_triggered": True,
        "original_error": "RuntimeError: model down",
        "original_error_type": "RuntimeError",
    }
    hit = await runner.run_async("q")
    assert calls == ["primary", "backup"]  # neither ran again
    assert hit.step_history[0].metadata == {
        "cache_hit": True,
        "fallback_triggered": True,
        "original_error": "RuntimeError: model down",
        "original_error_type": "RuntimeError",
    }
    assert hit.output == miss.output and hit.output.value == "backup:q"
    assert hit.total_cost_usd == 0 and hit.final_pipeline_context.lang == "en"


async def test_a_failed_fallback_is_not_cached() -> None:
    calls: list[str] = []

    async def primary(text: str) -> str:
        calls.append("primary")
        raise RuntimeError("down")

    async def backup(text: str) -> str:
        calls.append("backup")
        raise RuntimeError("also down")

    step = Step.from_callable(
        primary, cache=True, max_retries=0, fallback=Step.from_callable(backup, max_retries=0)
    )
    runner = _runner(step)
    assert not (await runner.run_async("q")).success
    assert not (await runner.run_async("q")).success
    assert calls == ["primary", "backup", "primary", "backup"]
