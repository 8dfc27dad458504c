"""The body of a Ray async actor that hosts many concurrent agent calls.

Ray runs an async actor's methods as asyncio tasks on one event loop. Our
agents are trio code, so the actor starts a trio *guest run* on that loop
(``trio.lowlevel.start_guest_run``): each call becomes a trio task in one
nursery, and thousands of I/O-bound calls share one worker process. This
module imports neither ray nor cloudpickle; ``ray.py`` wraps the class with
``ray.remote``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import trio

from ._work import arun_pickled

if TYPE_CHECKING:
    import outcome

__all__ = ["AgentHost"]

_log = logging.getLogger("flujo_actors.executors")


class AgentHost:
    """Runs pickled work items as tasks of a trio guest run inside an asyncio actor."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready: asyncio.Future[None] | None = None

    async def _ensure_trio(self) -> tuple[trio.lowlevel.TrioToken, trio.Nursery]:
        if self._ready is None:
            loop = asyncio.get_running_loop()
            self._ready = loop.create_future()
            trio.lowlevel.start_guest_run(
                self._trio_main,
                run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                done_callback=self._trio_done,
            )
        await asyncio.shield(self._ready)
        assert self._token is not None
        assert self._nursery is not None
        return self._token, self._nursery

    async def _trio_main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            assert self._ready is not None
            self._ready.set_result(None)  # guest tasks run on the host loop's thread
            await trio.sleep_forever()

    def _trio_done(self, result: outcome.Outcome[None]) -> None:
        # Only reached if the guest run crashed: calls in flight never answer,
        # Ray sees the actor's tasks hang; log loudly.
        _log.error("the trio guest run of an AgentHost ended: %r", result)

    async def run(self, payload: bytes, where: str) -> bytes | None:
        """Run one pickled work item; returns the pickled result.

        When Ray cancels this call (``ray.cancel``), the item's trio task is
        cancelled and awaited before ``asyncio.CancelledError`` propagates, so
        a cancelled call has stopped when Ray reports it cancelled.
        """
        token, nursery = await self._ensure_trio()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes | None] = loop.create_future()
        scope = trio.CancelScope()

        async def one() -> None:
            try:
                with scope:
                    raw = await arun_pickled(payload, where)
                    if not done.done():
                        done.set_result(raw)
            except Exception as exc:  # a bug of ours: answer it instead of killing the nursery
                if not done.done():
                    done.set_exception(exc)
            finally:
                if not done.done():
                    done.set_result(None)  # cancelled

        token.run_sync_soon(nursery.start_soon, one)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            token.run_sync_soon(scope.cancel)
            await asyncio.shield(done)  # the trio task has ended once this resolves
            raise

    def ping(self) -> bool:
        """Readiness probe (answers once the actor process is up)."""
        return True
