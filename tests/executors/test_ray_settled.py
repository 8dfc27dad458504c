"""The Ray executor's waits: a result's does not depend on the future's callback alone,
and the bounded ones (a cancel's confirmation, an actor's restart) end in real time."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from flujo_actors import Step
from flujo_actors.errors import ExecutorLost
from flujo_actors.executors import WorkItem
from flujo_actors.executors.ray import _done_event, _result, _settled, _wait_restarted


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


class _SettlesLater:
    """An ObjectRef whose future the test completes, from another thread like Ray does."""

    def __init__(self) -> None:
        self.fut: concurrent.futures.Future[str] = concurrent.futures.Future()

    def future(self) -> concurrent.futures.Future[str]:
        return self.fut


async def test_the_done_event_is_set_in_the_run_when_ray_settles_the_future() -> None:
    ref = _SettlesLater()
    future, done = _done_event(ref)
    assert future is ref.fut and not done.is_set()
    await trio.to_thread.run_sync(ref.fut.set_result, "value")  # the callback's Ray thread
    await done.wait()  # set through the run's token, not on the Ray thread
    assert future.result() == "value"


def test_a_future_settling_after_the_run_ended_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ref = _SettlesLater()

    async def main() -> trio.Event:
        return _done_event(ref)[1]

    done = trio.run(main)
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        ref.fut.set_result("late")  # nobody waits for it any more
    assert caplog.records == []  # concurrent.futures logs a callback that raises
    assert not done.is_set()


class _NeverReady:
    """Stands in for the ``ray`` module: nothing ever settles; ``wait`` takes its timeout."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []
        self.cancelled: list[Any] = []

    def wait(self, refs: list[Any], timeout: float) -> tuple[list[Any], list[Any]]:
        self.timeouts.append(timeout)
        time.sleep(timeout)  # real time, in trio's worker thread, like ray.wait
        return [], refs

    def cancel(self, ref: Any, **options: Any) -> None:
        self.cancelled.append(ref)


class _Ref:
    """An ObjectRef whose future never completes."""

    def future(self) -> concurrent.futures.Future[Any]:
        return concurrent.futures.Future()


class _Host:
    """An actor handle whose ``ping`` never answers (Ray cannot restart the actor)."""

    def __init__(self) -> None:
        self.ref = _Ref()
        self.ping = SimpleNamespace(options=lambda **_: SimpleNamespace(remote=lambda: self.ref))


async def test_a_bounded_wait_gives_up_after_its_limit_of_real_time() -> None:
    ray = _NeverReady()
    done = trio.Event()
    settled = await _settled(SimpleNamespace(ray=ray), "ref-1", done, limit_s=0.3)  # type: ignore[arg-type]
    assert settled is False and not done.is_set()
    assert all(0 < t <= 0.3 for t in ray.timeouts)  # never waits past the limit


async def test_an_actor_that_never_comes_back_is_lost_not_waited_for_forever() -> None:
    ray, host = _NeverReady(), _Host()
    conn = SimpleNamespace(ray=ray, hosts=[host], down=[True], ray_error=RuntimeError)
    item = WorkItem(step_name="call", agent=Step.from_callable(echo).spec, data=1, attempt=2)  # type: ignore[arg-type]
    with pytest.raises(
        ExecutorLost,
        match=r"^Step 'call' attempt 2: its Ray actor did not answer within "
        r"restart_timeout_s=0\.2 s after losing a call \(Ray could not restart it\)\. Worker "
        r"loss is retryable: the step's max_retries decides whether it runs again\.$",
    ):
        await _wait_restarted(conn, 0, item, 0.2)  # type: ignore[arg-type]
    assert conn.down == [True]  # the next call probes it again
    assert ray.cancelled == [host.ref]  # Ray stops retrying the probe


def echo(x: object) -> object:
    return x


def _conn(ray: Any) -> Any:
    class TaskError(Exception):
        pass

    return SimpleNamespace(
        ray=ray, task_error=TaskError, cancelled_error=TaskError, ray_error=TaskError, down=[]
    )


# Needs the ray extra (RayExecutor checks it is installed); no cluster: Ray is faked.
@pytest.mark.ray
async def test_a_cancel_ray_never_confirms_is_lost_not_waited_for_forever() -> None:
    from flujo_actors.executors.ray import RayExecutor

    executor = RayExecutor(cancel_timeout_s=0.3)
    ray, ref = _NeverReady(), _Ref()
    item = WorkItem(step_name="call", agent=Step.from_callable(echo).spec, data=1)  # type: ignore[arg-type]
    with trio.CancelScope() as scope:
        scope.cancel()  # the caller was cancelled: a step timeout, a failing sibling, a user
        with pytest.raises(
            ExecutorLost,
            match=r"^Step 'call' attempt 1: cancelled, but Ray did not confirm within "
            r"cancel_timeout_s=0\.3 s that its task stopped; it may still be running on the "
            r"cluster\. Worker loss is retryable: the step's max_retries decides whether it "
            r"runs again\.$",
        ):
            await executor._await(_conn(ray), ref, item, host=-1)
    assert ray.cancelled == [ref]
    stats = executor.statistics()
    assert (stats.submitted, stats.cancelled, stats.lost) == (1, 1, 1)


@pytest.mark.ray
async def test_cancel_timeout_zero_does_not_wait_for_the_confirmation() -> None:
    from flujo_actors.executors.ray import RayExecutor

    executor = RayExecutor(cancel_timeout_s=0)
    ray, ref = _NeverReady(), _Ref()
    item = WorkItem(step_name="call", agent=Step.from_callable(echo).spec, data=1)  # type: ignore[arg-type]
    with trio.CancelScope() as scope:
        scope.cancel()
        await executor._await(_conn(ray), ref, item, host=-1)
    assert scope.cancelled_caught  # trio.Cancelled propagated: nothing raised instead
    assert ray.cancelled == [ref]
    stats = executor.statistics()
    assert (stats.cancelled, stats.lost) == (1, 0)


@pytest.mark.ray
def test_the_wait_bounds_are_checked() -> None:
    from flujo_actors.executors.ray import RayExecutor

    with pytest.raises(ValueError, match=r"^RayExecutor: cancel_timeout_s must be >= 0, got -1\.$"):
        RayExecutor(cancel_timeout_s=-1)
    with pytest.raises(ValueError, match=r"^RayExecutor: restart_timeout_s must be > 0, got 0\.$"):
        RayExecutor(restart_timeout_s=0)
    with pytest.raises(
        ValueError, match=r"^RayExecutor: restart_timeout_s must be > 0, got True\.$"
    ):
        RayExecutor(restart_timeout_s=True)
