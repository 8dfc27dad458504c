"""RayExecutor specifics: connection ownership, connecting by address, no Ray retries,
and the async-actor mode for I/O-bound agents.

The executor contract itself (results, errors, cancellation, worker loss,
concurrency, context) runs against Ray in test_executor_contract.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio.lowlevel
import trio.testing

from flujo_actors import Flujo, Step

if TYPE_CHECKING:
    from tests.executors.ray_bounds import bounded_ray_executor
else:  # pytest imports test modules by file name (tests/ has no __init__.py)
    from ray_bounds import bounded_ray_executor


def triple(x: int) -> int:
    return x * 3


# State shared by the calls that run in one actor process (one trio guest run).
_BARRIER: dict[str, object] = {}


async def meet(n: int) -> int:
    """Returns only once ``n`` calls are inside this process at the same time."""
    if "event" not in _BARRIER:
        _BARRIER.update(event=trio.Event(), arrived=0)
    event = _BARRIER["event"]
    assert isinstance(event, trio.Event)
    _BARRIER["arrived"] = int(_BARRIER["arrived"]) + 1  # type: ignore[call-overload]
    if _BARRIER["arrived"] == n:
        event.set()
    await event.wait()
    return os.getpid()


async def stuck(paths: tuple[str, str]) -> int:
    fifo, finished = paths
    with open(fifo, "w") as f:  # noqa: ASYNC230 - a FIFO the test holds open: never blocks
        f.write(f"{os.getpid()}\n")
    await trio.sleep(3600)
    await trio.Path(finished).write_text("finished")
    return os.getpid()


def crash_once(marker: str) -> int:
    if not os.path.exists(marker):
        Path(marker).write_text("crashed")
        os._exit(3)
    return os.getpid()


def my_pid(x: object) -> int:
    return os.getpid()


async def _read_pid(fd: int) -> int:
    buf = b""
    while not buf.endswith(b"\n"):
        await trio.lowlevel.wait_readable(fd)
        buf += os.read(fd, 64)
    return int(buf)


# Needs the ray extra (RayExecutor checks it is installed): runs in make test-ray.
@pytest.mark.ray
def test_task_options_may_not_turn_on_ray_retries() -> None:
    from flujo_actors.executors.ray import RayExecutor

    with pytest.raises(
        ValueError,
        match=r"^RayExecutor: task_options may not set \['max_retries'\]: the step's max_retries "
        r"is the only retry policy \(Ray retries would repeat an agent call behind its back\)\. "
        r"Remove them and set max_retries on the step\.$",
    ):
        RayExecutor(task_options={"max_retries": 3, "num_cpus": 1})


@pytest.mark.ray
async def test_an_existing_connection_is_used_and_left_open(ray_cluster: str) -> None:
    import ray

    from flujo_actors.executors.ray import RayExecutor

    async with RayExecutor(task_options={"num_cpus": 1}) as executor:
        result = await Flujo(Step.from_callable(triple), executor=executor).run_async(5)
        assert result.output == 15
    assert ray.is_initialized()  # we did not call ray.init, so we do not shut it down


@pytest.mark.ray
def test_connects_to_a_given_address_and_disconnects_at_the_end_of_the_run(
    ray_cluster: str, tmp_path: Path
) -> None:
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import ray
            from flujo_actors import Flujo, Step
            from flujo_actors.executors.ray import RayExecutor

            def add_one(x):
                return x + 1

            if __name__ == "__main__":
                runner = Flujo(Step.from_callable(add_one), executor=RayExecutor(
                    address={ray_cluster!r}, init_options={{"log_to_driver": False}}))
                print(runner.run(41).output, ray.is_initialized())
            """
        )
    )
    env = dict(os.environ)  # the ray_cluster fixture set the Ray variables
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "42 False"


# Needs the ray extra (RayExecutor checks it is installed): runs in make test-ray.
@pytest.mark.ray
def test_actor_options_are_checked() -> None:
    from flujo_actors.executors.ray import RayExecutor

    with pytest.raises(ValueError, match=r"^RayExecutor: actors must be an int >= 0, got -1\.$"):
        RayExecutor(actors=-1)
    with pytest.raises(
        ValueError, match=r"^RayExecutor: actor_concurrency must be an int >= 1, got 0\.$"
    ):
        RayExecutor(actors=1, actor_concurrency=0)


@pytest.mark.ray
async def test_one_actor_runs_many_io_bound_calls_at_once(ray_cluster: str) -> None:
    from flujo_actors.executors.ray import RayExecutor

    n = 40  # more than the cluster's 2 CPUs: Ray tasks could never all meet
    executor = RayExecutor(actors=1, actor_concurrency=n)
    branches = {
        # The barrier is the event this waits on. timeout_s is only a hang guard (calls
        # run one after another would never meet), far above what load can cost.
        f"b{i}": Step.from_callable(
            meet, name=f"meet{i}", placement=executor, timeout_s=600, max_retries=0
        )
        for i in range(n)
    }
    result = await Flujo(Step.parallel("fan", branches)).run_async(n)
    assert result.success is True
    assert len(set(result.output.values())) == 1  # one actor process served them all
    assert executor.statistics().completed == n


@pytest.mark.ray
async def test_cancelling_an_actor_call_stops_it_and_keeps_the_actor(
    ray_cluster: str,
    fifo: tuple[Path, int],
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
) -> None:
    path, fd = fifo
    finished = tmp_path / "finished"
    executor = bounded_ray_executor(actors=1)
    # The timeout fires when the test jumps the mock clock; the work item carries it as a
    # wall-clock deadline. With 5 s, an actor that took 5.1 s to start under load timed the
    # call out before calling the agent, which never wrote its pid: the test waited forever
    # (a CI run hung here). An hour of wall clock is far beyond any actor start-up.
    step = Step.from_callable(stuck, placement=executor, timeout_s=3600, max_retries=0)
    results = []

    async def run() -> None:
        results.append(await Flujo(step).run_async((str(path), str(finished))))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        pid = await _read_pid(fd)
        mock_clock.jump(3600)
    [result] = results
    assert result.success is False
    assert executor.statistics().cancelled == 1
    # The call's trio task ended before Ray confirmed the cancel; the actor lives on.
    assert not finished.exists()
    after = await Flujo(Step.from_callable(my_pid, placement=executor)).run_async(0)
    assert after.output == pid


@pytest.mark.ray
async def test_a_dead_actor_is_lost_then_restarted_for_the_retry(
    ray_cluster: str, tmp_path: Path
) -> None:
    # The retry must wait for Ray's restart of the actor (the executor pings it first):
    # sent at once, it failed with ActorUnavailableError whenever the machine was busy.
    executor = bounded_ray_executor(actors=1)
    step = Step.from_callable(crash_once, placement=executor, max_retries=1)
    result = await Flujo(step).run_async(str(tmp_path / "crashed"))
    assert result.success is True
    assert result.step_history[-1].attempts == 2
    stats = executor.statistics()
    assert (stats.lost, stats.completed) == (1, 1)
