"""Everything that owns a resource is a ``trio.abc.AsyncResource``: ``aclose`` plus ``async with``.

Leaving the ``async with`` block because the surrounding scope was cancelled
runs ``aclose`` inside that cancelled scope; the resource must be released
all the same (a file closed, a pool closed, a monitor unregistered).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from flujo_actors import InMemoryStateBackend, SQLiteBackend, StateBackendError
from flujo_actors.actors import Actor, ActorDown, start_actor
from flujo_actors.actors.monitor import Monitor
from flujo_actors.backends.postgres import PostgresBackend
from flujo_actors.executors import InlineExecutor
from flujo_actors.executors.process import ProcessExecutor

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


class _Idle(Actor):
    async def handle(self, message: object) -> object:
        return message


@pytest.mark.parametrize(
    "cls",
    [
        InMemoryStateBackend,
        SQLiteBackend,
        PostgresBackend,
        InlineExecutor,
        ProcessExecutor,
        Monitor,
    ],
)
def test_every_resource_owner_is_an_async_resource(cls: type[object]) -> None:
    assert issubclass(cls, trio.abc.AsyncResource)


async def test_sqlite_is_closed_when_its_block_is_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with trio.CancelScope() as scope:
        async with SQLiteBackend(path) as backend:
            await backend.list_runs()
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    with pytest.raises(
        StateBackendError,
        match=rf"^SQLiteBackend\({re.escape(repr(str(path)))}\) is closed; create a new "
        r"backend to reopen it\.$",
    ):
        await backend.list_runs()


async def test_postgres_is_closed_when_its_block_is_cancelled(pg_dsn: Callable[[], str]) -> None:
    with trio.CancelScope() as scope:
        async with PostgresBackend(pg_dsn()) as backend:
            await backend.list_runs()
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    with pytest.raises(
        StateBackendError,
        match=rf"^{re.escape(repr(backend))} is closed; create a new backend to reconnect\.$",
    ):
        await backend.list_runs()


async def test_the_memory_backend_stays_readable_after_a_cancelled_close() -> None:
    with trio.CancelScope() as scope:
        async with InMemoryStateBackend() as backend:
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert await backend.list_runs() == []


async def test_a_monitor_watches_from_its_creation_until_it_is_closed() -> None:
    async with trio.open_nursery() as nursery:
        ref = await start_actor(nursery, _Idle(), name="a")
        early = ref.monitor()  # watching already, before its block is entered
        closed = ref.monitor()
        with trio.CancelScope() as scope:
            scope.cancel()
            await closed.aclose()  # unregistered first, then the checkpoint raises
        assert scope.cancelled_caught
        await ref.stop()
        assert early.down == ActorDown("a", "normal", None)
        async with early as down:
            assert await down.wait() == ActorDown("a", "normal", None)
        assert closed.down is None
        await closed.aclose()  # idempotent
