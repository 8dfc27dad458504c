"""An aiohttp session inside an asyncio step, against a local server (127.0.0.1)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import trio

from flujo_actors import Flujo, PipelineResult, Step

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from tests.fake_llm import FakeLLM  # mypy names test modules by path
else:
    from fake_llm import FakeLLM  # pytest puts tests/ on sys.path


@pytest.fixture
def server() -> Iterator[FakeLLM]:
    fake = FakeLLM().start()
    yield fake
    fake.stop()


def _chat(stream: bool = False) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": stream}


async def test_an_aiohttp_session_works_in_an_asyncio_step(server: FakeLLM) -> None:
    async def ask(prompt: str) -> str:
        # The session is built and used on the run's asyncio loop.
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{server.url}/v1/chat/completions", json=_chat()) as resp,
        ):
            body = await resp.json()
        return f"{prompt}: {body['choices'][0]['message']['content']}"

    result = await Flujo(Step.from_callable(ask, event_loop="asyncio")).run_async("q")
    assert result.success, result.step_history[-1].feedback
    assert result.output == "q: actors all the way down"
    assert server.count("/v1/chat/completions") == 1


async def test_an_aiohttp_stream_is_live_and_a_timeout_closes_the_connection(
    server: FakeLLM,
) -> None:
    async def words(prompt: str) -> AsyncIterator[str]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{server.url}/v1/chat/completions", json=_chat(stream=True)) as resp,
        ):
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    yield choices[0]["delta"]["content"]

    items = [
        item
        async for item in Flujo(Step.from_callable(words, event_loop="asyncio")).stream_async("q")
    ]
    assert items[:-1] == ["actors ", "all ", "the ", "way ", "down"]
    assert isinstance(items[-1], PipelineResult) and items[-1].output == "actors all the way down"

    async def hanging(prompt: str) -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{server.url}/v1/chat/completions",
                json=_chat(stream=True),
                headers={"x-fake-mode": "hang"},
            ) as resp,
        ):
            return await resp.text()  # never completes: the server hangs

    step = Step.from_callable(hanging, event_loop="asyncio", timeout_s=0.2, max_retries=0)
    result = await Flujo(step).run_async("q")
    assert result.step_history[-1].feedback == "TimeoutError: step 'hanging' timed out after 0.2 s"
    # The cancelled asyncio task closed its connection: the server saw the client leave.
    assert await trio.to_thread.run_sync(server.disconnected.wait, 10)
