"""The Ray executor's wait for a result does not depend on the future's callback alone."""

from __future__ import annotations

import concurrent.futures
from types import SimpleNamespace
from typing import Any

import trio

from flujo_actors.executors.ray import _result, _settled


class _WaitReadyOnCall:
    """Stands in for the ``ray`` module: ``wait`` reports the object ready on call ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def wait(self, refs: list[Any], timeout: float) -> tuple[list[Any], list[Any]]:
        assert timeout == 1.0  # real-time polling, bounded so an abandoned thread ends soon
        self.calls += 1
        return (refs, []) if self.calls >= self.n else ([], refs)

    def get(self, ref: Any, timeout: float) -> str:
        assert timeout == 0
        return f"value of {ref}"


async def test_a_lost_future_callback_is_backstopped_by_ray_wait() -> None:
    ray = _WaitReadyOnCall(3)
    done = trio.Event()  # no callback will ever set it
    await _settled(SimpleNamespace(ray=ray), "ref-1", done)  # type: ignore[arg-type]
    assert done.is_set() and ray.calls == 3


async def test_a_set_event_returns_without_polling() -> None:
    ray = _WaitReadyOnCall(1)
    done = trio.Event()
    done.set()
    await _settled(SimpleNamespace(ray=ray), "ref-1", done)  # type: ignore[arg-type]
    assert ray.calls == 0


def test_the_result_comes_from_the_future_or_from_ray_get_when_it_never_completed() -> None:
    conn = SimpleNamespace(ray=_WaitReadyOnCall(1))
    finished: concurrent.futures.Future[str] = concurrent.futures.Future()
    finished.set_result("from the future")
    assert _result(conn, finished, "ref-1") == "from the future"  # type: ignore[arg-type]
    pending: concurrent.futures.Future[str] = concurrent.futures.Future()
    assert _result(conn, pending, "ref-2") == "value of ref-2"  # type: ignore[arg-type]
