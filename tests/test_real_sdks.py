"""The real openai / anthropic SDK clients against the fake server in ``fake_llm.py`` (no network).

Figures (usage totals, chunk latencies, cancel-to-close latency, request
counts) are collected here and printed (``pytest -s``); nothing asserts on
wall-clock time. Liveness is checked by a gate instead: the server sends each
chunk only after the consumer received the previous one.
"""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
import trio

from flujo_actors import (
    Flujo,
    PipelineResult,
    Step,
    StreamRetried,
    Usage,
    UsageLimitExceededError,
    UsageLimits,
    usage_of,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from tests.fake_llm import FakeLLM  # mypy names test modules by path
else:
    from fake_llm import FakeLLM  # pytest puts tests/ on sys.path

# The SDKs' streams stop iterating their own inner async generators at "[DONE]" and leave
# them to the garbage collector, which trio reports as a ResourceWarning: not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Async generator '(openai|anthropic|httpx|httpcore)[^']*' was garbage collected"
    ":ResourceWarning"
)

MESSAGES = [{"role": "user", "content": "hello"}]
FIGURES: dict[str, Any] = {}


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    server = FakeLLM(input_tokens=1000).start()
    yield server
    server.stop()


def figure(name: str, value: Any) -> None:
    FIGURES[name] = value
    print(f"FIGURE {name}: {value}")


def oa(fake: FakeLLM, **kw: Any) -> Any:
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="test-key", **kw)


def an(fake: FakeLLM, **kw: Any) -> Any:
    kw.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=fake.url, api_key="test-key", **kw)


def openai_step(client: Any, name: str, model: str = "gpt-4o", **kw: Any) -> Step:
    async def ask(prompt: Any) -> Any:
        return await client.chat.completions.create(model=model, messages=MESSAGES, **kw)

    return Step.from_callable(ask, name=name)


def anthropic_step(client: Any, name: str, model: str = "claude-haiku-4-5") -> Step:
    async def ask(prompt: Any) -> Any:
        return await client.messages.create(model=model, max_tokens=64, messages=MESSAGES)

    return Step.from_callable(ask, name=name)


# -- usage totals -------------------------------------------------------------------------------


async def test_usage_totals_equal_what_the_server_reported(fake: FakeLLM) -> None:
    async with oa(fake) as o, an(fake) as a:
        pipeline = (
            openai_step(o, "first")
            >> Step.parallel(
                "fan", {"gpt": openai_step(o, "gpt"), "claude": anthropic_step(a, "claude")}
            )
            >> anthropic_step(a, "last")
        )
        result = await Flujo(pipeline).run_async("go")
    assert result.success
    server_tokens = sum(i + o for i, o in fake.reported)
    assert len(fake.reported) == 4
    assert result.total_tokens == server_tokens == 4 * 1005
    assert [r.token_counts for r in result.step_history] == [1005, 2010, 1005]
    # Priced from genai-prices: gpt-4o $2.50/M in + $10/M out; claude-haiku-4-5 $1/M + $5/M.
    gpt = Decimal("0.0025") + Decimal("0.00005")
    haiku = Decimal("0.001") + Decimal("0.000025")
    assert result.total_cost_usd == 2 * gpt + 2 * haiku
    figure("usage totals (tokens, cost)", (result.total_tokens, str(result.total_cost_usd)))


async def test_a_token_limit_breaches_on_real_sdk_usage(fake: FakeLLM) -> None:
    async with oa(fake) as o:
        pipeline = openai_step(o, "a") >> openai_step(o, "b") >> openai_step(o, "c")
        with pytest.raises(UsageLimitExceededError) as info:
            await Flujo(pipeline, usage_limits=UsageLimits(total_tokens_limit=2000)).run_async("x")
    assert str(info.value) == (
        "Usage limit exceeded after step 'b': total tokens 2010 > total_tokens_limit 2000. "
        "Raise UsageLimits(total_tokens_limit=...) or lower the steps' usage."
    )
    assert fake.count("/v1/chat/completions") == 2  # 'c' never ran
    figure("token limit breach (limit, total)", (2000, 2010))


async def test_a_cost_limit_breaches_on_the_priced_cost(fake: FakeLLM) -> None:
    async with oa(fake) as o:
        pipeline = openai_step(o, "a") >> openai_step(o, "b") >> openai_step(o, "c")
        limits = UsageLimits(total_cost_usd_limit=Decimal("0.005"))
        with pytest.raises(UsageLimitExceededError) as info:
            await Flujo(pipeline, usage_limits=limits).run_async("x")
    partial = info.value.result
    assert partial is not None
    # gpt-4o: 1000 x $2.50/M + 5 x $10/M = $0.00255 a call; 'b' takes the total past $0.005.
    assert str(info.value).startswith("Usage limit exceeded after step 'b': total cost $0.00510")
    assert partial.total_cost_usd == Decimal("0.00510")
    assert [r.name for r in partial.step_history] == ["a", "b"]
    figure("cost limit breach (limit, total)", ("0.005", str(partial.total_cost_usd)))


async def test_an_unknown_model_under_a_cost_limit_fails_with_pricing_not_configured(
    fake: FakeLLM,
) -> None:
    async with oa(fake) as o:
        step = openai_step(o, "local", model="my-local-llama")
        limits = UsageLimits(total_cost_usd_limit=1)
        result = await Flujo(step, usage_limits=limits).run_async("x")
    r = result.step_history[-1]
    assert (r.success, r.metadata["error_type"], r.token_counts) == (
        False,
        "PricingNotConfiguredError",
        0,
    )
    assert r.feedback is not None
    assert "no price for model 'my-local-llama'" in r.feedback


# -- streaming ---------------------------------------------------------------------------------


async def test_openai_chunks_arrive_live_and_the_usage_chunk_counts(fake: FakeLLM) -> None:
    received: list[float] = []
    async with oa(fake) as o:

        async def talk(prompt: str) -> AsyncIterator[Any]:
            stream = await o.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-fake-mode": "gated"},
            )
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        yield usage_of(chunk)  # usage, not output
                    elif chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content

        chunks: list[str] = []
        result: PipelineResult | None = None
        async with contextlib.aclosing(
            Flujo(Step.from_callable(talk, name="talk")).stream_async("go")
        ) as items:
            async for item in items:
                if isinstance(item, PipelineResult):
                    result = item
                    continue
                received.append(time.perf_counter())
                chunks.append(item)
                fake.gate.release()  # only now may the server send the next chunk
    assert fake.gate_timeouts == 0  # every chunk reached the consumer before the next was sent
    assert chunks == ["actors ", "all ", "the ", "way ", "down"]
    assert result is not None
    assert result.output == "actors all the way down"
    assert (result.total_tokens, result.total_cost_usd) == (1005, Decimal("0.00255"))
    lat = [(r - s) * 1000 for s, r in zip(fake.sent, received, strict=True)]
    figure("openai chunk send->receive latency ms (min/median/max)", _stats(lat))


async def test_anthropic_chunks_arrive_live(fake: FakeLLM) -> None:
    received: list[float] = []
    async with an(fake) as a:

        async def talk(prompt: str) -> AsyncIterator[Any]:
            async with a.messages.stream(
                model="claude-haiku-4-5",
                max_tokens=64,
                messages=MESSAGES,
                extra_headers={"x-fake-mode": "gated"},
            ) as stream:
                async for text in stream.text_stream:
                    yield text
                yield usage_of(await stream.get_final_message())

        chunks: list[str] = []
        async with contextlib.aclosing(
            Flujo(Step.from_callable(talk, name="talk")).stream_async("go")
        ) as items:
            async for item in items:
                if isinstance(item, PipelineResult):
                    assert item.total_tokens == 1005
                    continue
                received.append(time.perf_counter())
                chunks.append(item)
                fake.gate.release()
    assert fake.gate_timeouts == 0
    assert chunks == ["actors ", "all ", "the ", "way ", "down"]
    lat = [(r - s) * 1000 for s, r in zip(fake.sent, received, strict=True)]
    figure("anthropic chunk send->receive latency ms (min/median/max)", _stats(lat))


async def test_anthropic_stream_events_report_usage(fake: FakeLLM) -> None:
    async with an(fake) as a:

        async def talk(prompt: str) -> AsyncIterator[Any]:
            stream = await a.messages.create(
                model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES, stream=True
            )
            async for event in stream:  # raw events: message_start / deltas / message_delta
                yield event

        items = [i async for i in Flujo(Step.from_callable(talk, name="talk")).stream_async("go")]
    result = items[-1]
    assert isinstance(result, PipelineResult)
    events = items[:-1]
    assert [e.type for e in events][0::8] == ["message_start", "message_delta"]
    assert result.total_tokens == 1005 == sum(i + o for i, o in fake.reported)
    assert result.total_cost_usd == Decimal("0.001025")
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "actors all the way down"


async def test_anthropic_stream_helper_final_message_usage(fake: FakeLLM) -> None:
    async with an(fake) as a:

        async def talk(prompt: str) -> AsyncIterator[Any]:
            async with a.messages.stream(
                model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES
            ) as stream:
                async for text in stream.text_stream:
                    yield text
                yield usage_of(await stream.get_final_message())

        result = await Flujo(Step.from_callable(talk, name="talk")).run_async("go")
    assert (result.output, result.total_tokens) == ("actors all the way down", 1005)


async def test_cancelling_the_consumer_closes_the_server_connection(fake: FakeLLM) -> None:
    async with oa(fake) as o:

        async def talk(prompt: str) -> AsyncIterator[str]:
            stream = await o.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                extra_headers={"x-fake-mode": "hang"},
            )
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content

        runner = Flujo(Step.from_callable(talk, name="talk"))
        async with contextlib.aclosing(runner.stream_async("go")) as items:
            async for item in items:
                assert item == "actors "
                cancelled_at = time.perf_counter()
                break  # leaving the loop cancels the run
    closed = await trio.to_thread.run_sync(fake.disconnected.wait, 10)
    assert closed
    figure(
        "cancel -> server saw the close, ms", round((fake.disconnects[0] - cancelled_at) * 1000, 2)
    )


# -- retries -------------------------------------------------------------------------------------

TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


async def test_retry_on_stops_retries_of_a_400(fake: FakeLLM) -> None:
    async with oa(fake) as o:
        step = Step.from_callable(
            openai_step(o, "ask", extra_headers={"x-fake-mode": "400"}).agent,
            name="ask",
            max_retries=3,
            retry_on=TRANSIENT,
        )
        r = (await Flujo(step).run_async("x")).step_history[-1]
    assert (r.success, r.attempts, fake.count("/v1/chat/completions")) == (False, 1, 1)
    assert r.metadata["exception_type"] == "openai.BadRequestError"
    assert "Traceback (most recent call last)" in r.metadata["traceback"]
    figure("400 with retry_on=TRANSIENT: requests", fake.count("/v1/chat/completions"))


async def test_a_500_is_retried_by_the_step_only_when_the_client_does_not_retry(
    fake: FakeLLM,
) -> None:
    async with oa(fake) as o:  # max_retries=0 on the client
        step = Step.from_callable(
            openai_step(o, "ask", extra_headers={"x-fake-mode": "500"}).agent,
            name="ask",
            max_retries=2,
            retry_on=TRANSIENT,
        )
        r = (await Flujo(step).run_async("x")).step_history[-1]
    assert (r.success, r.attempts) == (False, 3)
    assert fake.count("/v1/chat/completions") == 3  # exactly max_retries + 1
    figure("500, client max_retries=0, step max_retries=2: requests", 3)


async def test_sdk_and_step_retries_multiply(fake: FakeLLM) -> None:
    async with oa(fake, max_retries=2) as o:  # the SDK's default
        step = Step.from_callable(
            openai_step(o, "ask", extra_headers={"x-fake-mode": "500"}).agent,
            name="ask",
            max_retries=1,
        )
        r = (await Flujo(step).run_async("x")).step_history[-1]
    assert (r.success, r.attempts) == (False, 2)
    assert fake.count("/v1/chat/completions") == 6  # (1 + 1) step attempts x (1 + 2) requests
    figure("500, client max_retries=2, step max_retries=1: requests", 6)


async def test_a_retried_real_stream_is_marked(fake: FakeLLM) -> None:
    attempts: list[int] = []
    async with oa(fake) as o:

        async def talk(prompt: str) -> AsyncIterator[Any]:
            attempts.append(1)
            stream = await o.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        yield Usage(tokens=chunk.usage.total_tokens, cost_usd=0)
                    elif chunk.choices and chunk.choices[0].delta.content:
                        word = chunk.choices[0].delta.content
                        yield word
                        if len(attempts) == 1 and word == "all ":
                            raise openai.APIConnectionError(request=stream.response.request)

        items = [
            i
            async for i in Flujo(
                Step.from_callable(talk, name="talk", max_retries=1, retry_on=TRANSIENT)
            ).stream_async("go")
        ]
    assert items[:3] == [
        "actors ",
        "all ",
        StreamRetried("talk", 1, "APIConnectionError: Connection error."),
    ]
    result = items[-1]
    assert isinstance(result, PipelineResult)
    assert result.output == "actors all the way down"
    assert result.total_tokens == 1005


def _stats(values: list[float]) -> tuple[float, float, float]:
    s = sorted(values)
    return (round(s[0], 3), round(s[len(s) // 2], 3), round(s[-1], 3))
