"""Usage read from outputs in real runs: counts, extractors, pricing, streams, executors."""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

import attrs
import pytest
import trio

from flujo_actors import (
    Flujo,
    InlineExecutor,
    PipelineResult,
    Step,
    StepResult,
    Usage,
    UsageLimitExceededError,
    UsageLimits,
    register_usage_extractor,
)
from flujo_actors.executors import WorkItem
from flujo_actors.policy import usage as usage_policy


class Tokens(enum.IntEnum):
    MANY = 5000


@attrs.define
class Reported:
    value: Any
    cost_usd: Any = 0
    token_counts: Any = None


def reporting(tokens: Any, cost: Any = 0) -> Any:
    async def llm(data: Any) -> Reported:
        return Reported(data, cost_usd=cost, token_counts=tokens)

    return llm


async def run(step: Step, limits: UsageLimits | None = None, **kw: Any) -> PipelineResult:
    return await Flujo(step, usage_limits=limits, **kw).run_async("in")


def last(result: PipelineResult) -> StepResult:
    return result.step_history[-1]


# -- #12.7: integral token counts, everywhere the same ----------------------------------------


@pytest.mark.parametrize("tokens", [Tokens.MANY, 5000.0, "5000", Decimal("5000")])
async def test_integral_token_counts_count_and_breach_a_token_limit(tokens: Any) -> None:
    result = await run(Step.from_callable(reporting(tokens), name="llm"))
    assert (result.total_tokens, last(result).token_counts) == (5000, 5000)
    with pytest.raises(UsageLimitExceededError) as info:
        await run(
            Step.from_callable(reporting(tokens), name="llm"),
            UsageLimits(total_tokens_limit=4999),
        )
    assert str(info.value) == (
        "Usage limit exceeded after step 'llm': total tokens 5000 > total_tokens_limit 4999. "
        "Raise UsageLimits(total_tokens_limit=...) or lower the steps' usage."
    )


BAD_TOKENS = (
    "UsageReportError: Step 'llm': its output reports token_counts={!r}; token counts must be "
    "a whole number >= 0 (int, integral float or Decimal, or numeric str)."
)


@pytest.mark.parametrize("tokens", [2.5, "lots", True, -3])
async def test_a_bad_token_count_fails_the_step_once_and_clearly(tokens: Any) -> None:
    calls: list[int] = []

    async def llm(data: Any) -> Reported:
        calls.append(1)
        return Reported(data, token_counts=tokens)

    r = last(await run(Step.from_callable(llm, name="llm", max_retries=3)))
    assert (r.success, r.feedback, len(calls)) == (False, BAD_TOKENS.format(tokens), 1)
    assert r.metadata["exception_type"] == "flujo_actors.errors.UsageReportError"


@pytest.mark.parametrize(
    ("tokens", "cost", "feedback"),
    [
        (2.5, 0, BAD_TOKENS.format(2.5)),
        (
            1,
            "abc",
            "UsageReportError: Step 'llm': its output reports cost_usd='abc'; usage must be a "
            "finite number >= 0 (int, float, Decimal or numeric str).",
        ),
    ],
)
async def test_bad_usage_reads_the_same_on_an_executor(
    tokens: Any, cost: Any, feedback: str
) -> None:
    step = Step.from_callable(
        reporting(tokens, cost), name="llm", max_retries=0, placement=InlineExecutor()
    )
    r = last(await run(step))
    assert (r.success, r.feedback) == (False, feedback)


async def test_inline_executor_returns_a_bad_usage_as_data() -> None:
    spec = Step.from_callable(reporting(1, "abc"), name="llm").spec
    assert spec is not None
    result = await InlineExecutor().submit(WorkItem(step_name="llm", agent=spec, data="x"))
    assert result.error is not None
    assert result.error.qualname == "UsageReportError"
    assert result.error.message == (
        "Step 'llm': its output reports cost_usd='abc'; usage must be a finite number >= 0 "
        "(int, float, Decimal or numeric str)."
    )


async def test_work_result_carries_the_usage_read_in_the_worker() -> None:
    spec = Step.from_callable(reporting(Tokens.MANY, "0.5"), name="llm").spec
    assert spec is not None
    result = await InlineExecutor().submit(WorkItem(step_name="llm", agent=spec, data="x"))
    assert (result.cost_usd, result.token_counts) == (Decimal("0.5"), 5000)
    assert result.usage == Usage(cost_usd=Decimal("0.5"), tokens=5000)


# -- extractors, unreadable usage, pricing in runs ------------------------------------------


class Completion:
    """An SDK-like reply whose usage only a registered extractor can read."""

    def __init__(self, text: str, spent: int) -> None:
        self.text = text
        self.usage = {"credits": spent}


def spending(n: int) -> Any:
    async def llm(data: Any) -> Completion:
        return Completion(f"re: {data}", n)

    return llm


async def test_unreadable_usage_is_zero_without_limits_but_fails_under_one() -> None:
    result = await run(Step.from_callable(spending(9), name="llm"))
    assert (result.success, result.total_tokens) == (True, 0)
    r = last(
        await run(
            Step.from_callable(spending(9), name="llm", max_retries=2),
            UsageLimits(total_tokens_limit=100),
        )
    )
    assert (r.success, r.attempts) == (False, 1)
    assert r.feedback == (
        "UsageReportError: Step 'llm': its output of type test_usage_sources.Completion has a "
        "usage attribute that no usage extractor understands (usage of type dict), so its usage "
        "cannot be counted under total_tokens_limit. Register one: register_usage_extractor("
        "Completion, lambda out: Usage(tokens=..., cost_usd=...))."
    )


async def test_a_registered_extractor_feeds_the_limits() -> None:
    register_usage_extractor(
        Completion, lambda c: Usage(tokens=c.usage["credits"], cost_usd=Decimal("0.01"))
    )
    try:
        pipeline = Step.from_callable(spending(60), name="a") >> Step.from_callable(
            spending(50), name="b"
        )
        with pytest.raises(UsageLimitExceededError) as info:
            await Flujo(pipeline, usage_limits=UsageLimits(total_tokens_limit=100)).run_async("x")
        partial = info.value.result
        assert partial is not None
        assert (partial.total_tokens, partial.total_cost_usd) == (110, Decimal("0.02"))
        assert [r.name for r in partial.step_history] == ["a", "b"]
    finally:
        with usage_policy._lock:
            usage_policy._registered.pop(Completion)
            usage_policy._by_type.clear()


@attrs.frozen
class ModelReply:
    text: str
    usage: Usage
    model: str = "gpt-4o"


def model_reply(model: str) -> Any:
    async def llm(data: Any) -> ModelReply:
        return ModelReply("hi", Usage(input_tokens=200_000, output_tokens=50_000), model)

    return llm


async def test_a_priced_model_breaches_a_cost_limit() -> None:
    # gpt-4o: 200k input x $2.50/M + 50k output x $10/M = $1.00 per call.
    ok = await run(Step.from_callable(model_reply("gpt-4o"), name="llm"))
    assert (ok.total_cost_usd, ok.total_tokens) == (Decimal("1"), 250_000)
    with pytest.raises(UsageLimitExceededError) as info:
        await Flujo(
            Step.from_callable(model_reply("gpt-4o"), name="a")
            >> Step.from_callable(model_reply("gpt-4o"), name="b"),
            usage_limits=UsageLimits(total_cost_usd_limit=Decimal("1.5")),
        ).run_async("x")
    assert info.value.result is not None
    assert info.value.result.total_cost_usd == Decimal("2")


async def test_an_unpriceable_model_under_a_cost_limit_fails_the_step_without_retries() -> None:
    r = last(
        await run(
            Step.from_callable(model_reply("my-finetune"), name="llm", max_retries=2),
            UsageLimits(total_cost_usd_limit=5),
        )
    )
    assert (r.success, r.attempts, r.metadata["error_type"]) == (
        False,
        1,
        "PricingNotConfiguredError",
    )
    assert r.feedback is not None
    assert r.feedback.startswith(
        "PricingNotConfiguredError: Step 'llm': its output reports 250000 tokens but no cost, "
        "and total_cost_usd_limit is set; the price table (genai-prices) knows no price for "
        "model 'my-finetune'."
    )


# -- streams report usage --------------------------------------------------------------------


async def test_a_yielded_usage_counts_and_is_not_output() -> None:
    async def talk(data: str) -> Any:
        yield "hello "
        yield Usage(tokens=30, cost_usd=Decimal("0.002"))
        yield "world"

    runner = Flujo(Step.from_callable(talk, name="talk"))
    items = [item async for item in runner.stream_async("x")]
    assert items[:-1] == ["hello ", "world"]
    result = items[-1]
    assert isinstance(result, PipelineResult)
    assert (result.output, result.total_tokens, result.total_cost_usd) == (
        "hello world",
        30,
        Decimal("0.002"),
    )
    again = await runner.run_async("x")  # not streamed to a consumer: the same usage
    assert (again.output, again.total_tokens) == ("hello world", 30)


async def test_a_streamed_usage_breaches_a_token_limit() -> None:
    async def talk(data: str) -> Any:
        yield "a"
        yield Usage(tokens=101)

    with pytest.raises(UsageLimitExceededError, match=r"total tokens 101 > total_tokens_limit"):
        await Flujo(
            Step.from_callable(talk, name="talk"),
            usage_limits=UsageLimits(total_tokens_limit=100),
        ).run_async("x")


async def test_plain_outputs_under_limits_count_zero() -> None:
    async def plain(data: str) -> dict[str, int]:
        return {"usage": 5}

    result = await run(
        Step.from_callable(plain, name="p"),
        UsageLimits(total_tokens_limit=1, total_cost_usd_limit=0),
    )
    assert (result.success, result.total_tokens, result.total_cost_usd) == (True, 0, Decimal(0))


async def test_usage_of_a_streaming_agent_on_an_executor() -> None:
    async def talk(data: str) -> Any:
        yield "a"
        yield Usage(tokens=12)
        yield "b"

    await trio.lowlevel.checkpoint()
    result = await run(Step.from_callable(talk, name="talk", placement=InlineExecutor()))
    assert (result.output, result.total_tokens) == ("ab", 12)


async def test_a_usage_yielded_on_asyncio_counts_and_is_not_a_chunk() -> None:
    import asyncio

    async def talk(data: str) -> Any:
        await asyncio.sleep(0)
        yield "on "
        yield Usage(tokens=7)
        yield "asyncio"

    step = Step.from_callable(talk, name="talk", event_loop="asyncio")
    items = [item async for item in Flujo(step).stream_async("x")]
    assert items[:-1] == ["on ", "asyncio"]
    result = items[-1]
    assert isinstance(result, PipelineResult)
    assert (result.output, result.total_tokens) == ("on asyncio", 7)
    again = await Flujo(step).run_async("x")
    assert (again.output, again.total_tokens) == ("on asyncio", 7)


async def test_a_yielded_unreadable_usage_fails_the_step_under_a_limit() -> None:
    from flujo_actors import usage_of

    async def talk(data: str) -> Any:
        yield "a"
        yield usage_of(Completion("x", 3))  # a usage nobody can read: not output either

    step = Step.from_callable(talk, name="talk", max_retries=0)
    free = await Flujo(step).run_async("x")
    assert (free.output, free.total_tokens) == ("a", 0)
    r = last(await run(step, UsageLimits(total_tokens_limit=10)))
    assert r.success is False
    assert r.feedback is not None
    assert r.feedback.startswith(
        "UsageReportError: Step 'talk': its output of type test_usage_sources.Completion has a "
        "usage attribute that no usage extractor understands (usage of type dict)"
    )
