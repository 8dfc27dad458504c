"""A FastAPI-style app (Starlette, called in-process through httpx) whose requests are runs."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import trio
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from flujo_actors import Flujo, PipelineResult, Step

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, MutableMapping

    from starlette.requests import Request


class Gate:
    """Holds every run until ``n`` runs are inside their step at once (proves concurrency).

    All runs of one asyncio loop share one trio guest run, so one trio Event serves them.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.inside = 0
        self.all_in: trio.Event | None = None

    async def step(self, x: str) -> str:
        if self.all_in is None:
            self.all_in = trio.Event()
        self.inside += 1
        if self.inside == self.n:
            self.all_in.set()
        await self.all_in.wait()
        return x.upper()


def make_app(runner: Flujo, streamer: Flujo) -> Starlette:
    async def run(request: Request) -> JSONResponse:
        result = await runner.run_asyncio(request.query_params["q"])
        return JSONResponse({"output": result.output, "run_id": result.run_id})

    async def stream(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            async for item in streamer.stream_asyncio(request.query_params["q"]):
                if not isinstance(item, PipelineResult):
                    yield item

        return StreamingResponse(body(), media_type="text/plain")

    return Starlette(routes=[Route("/run", run), Route("/stream", stream)])


def test_concurrent_requests_are_concurrent_runs() -> None:
    gate = Gate(10)
    app = make_app(
        Flujo(Step.from_callable(gate.step, name="gate")), Flujo(Step.from_callable(gate.step))
    )

    async def main() -> list[Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            responses = await asyncio.gather(
                *(client.get("/run", params={"q": f"req{i}"}) for i in range(10))
            )
        return [r.json() for r in responses]

    bodies = asyncio.run(main())
    assert [b["output"] for b in bodies] == [f"REQ{i}" for i in range(10)]
    assert len({b["run_id"] for b in bodies}) == 10


def test_a_client_disconnect_cancels_its_run() -> None:
    events: list[str] = []

    async def tokens(q: str) -> AsyncIterator[str]:
        try:
            i = 0
            while True:
                await trio.lowlevel.checkpoint()
                yield f"{q}{i} "
                i += 1
        finally:
            events.append("run closed")

    app = make_app(Flujo(Step.from_callable(tokens)), Flujo(Step.from_callable(tokens)))

    async def main() -> list[bytes]:
        # Drive the ASGI app by hand, as a server does: the client goes away after
        # two body chunks, which Starlette turns into a cancel of the response task.
        sent: list[bytes] = []
        disconnected = asyncio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                sent.append(message["body"])
                if len(sent) == 2:
                    disconnected.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/stream",
            "raw_path": b"/stream",
            "query_string": b"q=t",
            "headers": [],
            "server": ("app", 80),
            "client": ("test", 1),
            "root_path": "",
        }
        await app(scope, receive, send)
        return sent

    sent = asyncio.run(main())
    assert sent[:2] == [b"t0 ", b"t1 "]
    assert events == ["run closed"]  # the run ended with the request
