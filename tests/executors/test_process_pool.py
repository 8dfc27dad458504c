"""The process pool stays warm across trio runs, and goes away when it is closed.

``runner.run`` is one ``trio.run`` per call: the pool (an executor instance, or
the process-wide one behind ``placement="process"``) must serve the next call
with the same worker processes, replace a worker that died in between, still
kill the worker when a call is cancelled, and leave no worker process behind
after ``aclose``/``close``, garbage collection or interpreter exit.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from flujo_actors import Flujo, Step
from flujo_actors.executors.process import ProcessExecutor

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.executors.test_executor_contract import Started, _exits_within, my_pid, stuck_sync
else:  # pytest imports test modules by file name (tests/ has no __init__.py)
    from test_executor_contract import Started, _exits_within, my_pid, stuck_sync


def _children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


def _gone(pid: int) -> bool:
    """Whether ``pid`` exited (a reaped child is gone at once; bounded real-time wait)."""
    gone: bool = _exits_within(pid, 10.0)
    return gone


@pytest.fixture
def shared_pool() -> Iterator[ProcessExecutor]:
    """The process-wide pool, closed after the test (the next user reopens it)."""
    pool = ProcessExecutor.shared()
    yield pool
    pool.close()


def test_runner_run_calls_reuse_the_shared_pools_worker(shared_pool: ProcessExecutor) -> None:
    runner = Flujo(Step.from_callable(my_pid, placement="process"))
    first = runner.run(0).output
    assert first != os.getpid()
    assert first in _children()  # still running between the two trio runs
    second = runner.run(0).output
    assert second == first
    assert ProcessExecutor.shared() is shared_pool
    shared_pool.close()
    assert _gone(first)
    assert first not in _children()


def test_an_executor_instance_stays_warm_until_closed_then_reopens() -> None:
    pool = ProcessExecutor(max_workers=1)
    runner = Flujo(Step.from_callable(my_pid), executor=pool)
    try:
        first = runner.run(0).output
        assert runner.run(0).output == first
        pool.close()
        assert _gone(first)
        reopened = runner.run(0).output  # the next call opens a fresh pool
        assert reopened != first
        assert pool.statistics().completed == 3
    finally:
        pool.close()
    assert _gone(reopened)


def test_a_worker_killed_between_runs_is_replaced() -> None:
    pool = ProcessExecutor(max_workers=1)
    runner = Flujo(Step.from_callable(my_pid, max_retries=0), executor=pool)
    try:
        first = runner.run(0).output
        os.kill(first, signal.SIGKILL)
        assert _gone(first)
        result = runner.run(0)
        assert result.success is True
        assert result.output != first
        assert result.step_history[-1].attempts == 1  # no ExecutorLost, no retry needed
        assert pool.statistics().lost == 0
    finally:
        pool.close()


def test_cancellation_still_kills_the_worker_of_a_warm_pool(tmp_path: Path) -> None:
    pool = ProcessExecutor(max_workers=1)
    finished = tmp_path / "finished"
    warm = trio.run(Flujo(Step.from_callable(my_pid), executor=pool).run_async, 0).output
    stuck = Step.from_callable(stuck_sync, name="stuck", timeout_s=10, max_retries=0)
    started = Started(tmp_path)

    async def second_run() -> tuple[int, Any]:
        results = []

        async def run() -> None:
            paths = (str(started.path), str(finished))
            results.append(await Flujo(stuck, executor=pool).run_async(paths))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            pid = await started.wait()
            clock.jump(10)  # the step's timeout, on the mock clock
        return pid, results[0]

    clock = trio.testing.MockClock()
    try:
        pid, result = trio.run(second_run, clock=clock)
    finally:
        started.close()
        pool.close()
    assert pid == warm  # the stuck call ran on the worker kept from the first run
    assert result.success is False
    assert result.step_history[-1].metadata["error_type"] == "TimeoutError"
    assert _gone(pid)
    assert pool.statistics().cancelled == 1
    assert not finished.exists()


async def test_aclose_stops_the_workers_and_close_refuses_to_block_trio() -> None:
    pool = ProcessExecutor(max_workers=1)
    pid = (await Flujo(Step.from_callable(my_pid), executor=pool).run_async(0)).output
    with pytest.raises(
        RuntimeError,
        match=r"^ProcessExecutor\.close\(\) cannot be called inside a trio run \(it would block "
        r"the run while waiting for its calls\); use `await executor\.aclose\(\)` instead\.$",
    ):
        pool.close()
    assert pid in _children()
    await pool.aclose()
    assert await trio.to_thread.run_sync(_gone, pid)
    await pool.aclose()  # idempotent


async def test_leaving_async_with_by_cancellation_still_stops_the_workers() -> None:
    with trio.CancelScope() as scope:
        async with ProcessExecutor(max_workers=1) as pool:
            pid = (await Flujo(Step.from_callable(my_pid), executor=pool).run_async(0)).output
            assert pid in _children()
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert await trio.to_thread.run_sync(_gone, pid)


def _run_once_on_a_new_pool() -> int:
    pool = ProcessExecutor(max_workers=1)
    pid: int = Flujo(Step.from_callable(my_pid), executor=pool).run(0).output
    return pid


def test_a_forgotten_executor_stops_its_workers_when_collected() -> None:
    pid = _run_once_on_a_new_pool()
    gc.collect()
    assert _gone(pid)


def test_no_worker_outlives_the_interpreter(tmp_path: Path) -> None:
    # Both pools are left open: the exit hook must stop their workers cleanly (a
    # closed job pipe), before multiprocessing's own hook would SIGTERM them.
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys
            from pathlib import Path
            from flujo_actors import Flujo, Step
            from flujo_actors.executors.process import ProcessExecutor

            def arm(marker):
                def terminated(signum, frame):
                    Path(marker).write_text("terminated")
                    os._exit(1)
                signal.signal(signal.SIGTERM, terminated)
                return os.getpid()

            if __name__ == "__main__":
                marker = sys.argv[1]
                shared = Flujo(Step.from_callable(arm, placement="process")).run(marker)
                mine = Flujo(Step.from_callable(arm), executor=ProcessExecutor()).run(marker)
                print(shared.output, mine.output)
            """
        )
    )
    marker = tmp_path / "terminated"
    out = subprocess.run(
        [sys.executable, str(script), str(marker)],
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard only
    )
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert len(set(pids)) == 2
    assert all(_gone(pid) for pid in pids)
    assert not marker.exists()  # stopped by the exit hook, not SIGTERMed
