"""RayExecutor on a multi-node cluster on this machine (``ray.cluster_utils.Cluster``).

A head node and two worker nodes, ``node_a`` and ``node_b``, each offering its
own custom resource and a shared ``"pool"`` resource (``conftest.RayNodes``).
Steps pinned by resources land on the intended node (the node id the task
sees), a node killed during a step gives ``ExecutorLost`` and the step's retry
runs on the surviving node, and cancelling a step stops its task on a worker
node. Every wait is on the event meant (a FIFO line written by the agent,
Ray declaring a node dead); time bounds are hang guards only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio.lowlevel
import trio.testing

from flujo_actors import Flujo, Step

if TYPE_CHECKING:
    from tests.executors.conftest import RayNodes
    from tests.executors.ray_bounds import bounded_ray_executor
    from tests.executors.test_executor_contract import _exits_within
else:  # pytest imports test modules by file name (tests/ has no __init__.py)
    from ray_bounds import bounded_ray_executor
    from test_executor_contract import _exits_within


def node_and_pid(x: object) -> tuple[str, int]:
    import ray

    return ray.get_runtime_context().get_node_id(), os.getpid()


def _announce(fifo: str) -> None:
    import ray

    with open(fifo, "w") as f:  # the test holds the FIFO open for reading: never blocks
        f.write(f"{ray.get_runtime_context().get_node_id()} {os.getpid()}\n")


def blocked_once(paths: tuple[str, str]) -> str:
    """The first call announces its node and blocks; later calls return their node id."""
    import ray

    fifo, first = paths
    if not os.path.exists(first):
        Path(first).write_text("started")
        _announce(fifo)
        time.sleep(3600)
    node_id: str = ray.get_runtime_context().get_node_id()
    return node_id


def blocked(paths: tuple[str, str]) -> str:
    fifo, finished = paths
    _announce(fifo)
    time.sleep(3600)
    Path(finished).write_text("finished")
    return "finished"


async def _read_line(fd: int) -> tuple[str, int]:
    buf = b""
    while not buf.endswith(b"\n"):
        await trio.lowlevel.wait_readable(fd)
        buf += os.read(fd, 256)
    node_id, pid = buf.decode().split()
    return node_id, int(pid)


@pytest.mark.ray
async def test_steps_pinned_by_resources_land_on_their_node(ray_nodes: RayNodes) -> None:
    from flujo_actors.executors.ray import RayExecutor

    on_a = RayExecutor(task_options={"resources": {"node_a": 1}})
    on_b = RayExecutor(task_options={"resources": {"node_b": 1}})
    # An async-actor host pinned the same way (a fraction: tasks pinned there still fit).
    host_b = RayExecutor(actors=1, task_options={"resources": {"node_b": 0.1}})
    # The host first, so it is alive while the tasks pinned to its node run (it lives as long
    # as this trio run): a host holding node_b's only CPU made them wait forever.
    first = await Flujo(Step.from_callable(node_and_pid, placement=host_b)).run_async(0)
    assert first.output[0] == ray_nodes.node_id("node_b")
    fan = Step.parallel(
        "fan",
        {
            **{
                f"a{i}": Step.from_callable(node_and_pid, name=f"a{i}", placement=on_a)
                for i in range(3)
            },
            **{
                f"b{i}": Step.from_callable(node_and_pid, name=f"b{i}", placement=on_b)
                for i in range(3)
            },
            "host": Step.from_callable(node_and_pid, name="host", placement=host_b),
        },
    )
    result = await Flujo(fan).run_async(0)
    assert result.success is True
    landed = {branch: node for branch, (node, _pid) in result.output.items()}
    a, b = ray_nodes.node_id("node_a"), ray_nodes.node_id("node_b")
    assert landed == {"a0": a, "a1": a, "a2": a, "b0": b, "b1": b, "b2": b, "host": b}


@pytest.mark.ray
async def test_cancelling_a_step_stops_its_task_on_a_worker_node(
    ray_nodes: RayNodes,
    fifo: tuple[Path, int],
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
) -> None:
    path, fd = fifo
    finished = tmp_path / "finished"
    on_b = bounded_ray_executor(task_options={"resources": {"node_b": 1}})
    # An hour: the item carries the timeout as a wall-clock deadline, which a task started
    # late under load must not reach before the agent announces itself (see test_ray.py).
    step = Step.from_callable(blocked, placement=on_b, timeout_s=3600, max_retries=0)
    results = []

    async def run() -> None:
        results.append(await Flujo(step).run_async((str(path), str(finished))))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        node_id, pid = await _read_line(fd)
        mock_clock.jump(3600)  # the step's timeout
    [result] = results
    assert node_id == ray_nodes.node_id("node_b")
    assert result.success is False
    assert result.step_history[-1].metadata["error_type"] == "TimeoutError"
    assert on_b.statistics().cancelled == 1
    assert await trio.to_thread.run_sync(_exits_within, pid, 60.0)  # force-cancel killed it
    assert not finished.exists()


# Last of the tests on worker nodes: the node it kills is started again only if a test
# after it asks for the nodes.
@pytest.mark.ray
async def test_a_node_killed_during_a_step_is_lost_and_the_retry_runs_on_a_survivor(
    ray_nodes: RayNodes,
    fifo: tuple[Path, int],
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
) -> None:
    from flujo_actors.executors.ray import RayExecutor

    path, fd = fifo
    pool = RayExecutor(task_options={"resources": {"pool": 1}})  # node_a or node_b
    # The retry waits out a backoff on the mock clock, which only moves once Ray
    # has declared the killed node dead: the retry can never be sent to it.
    step = Step.from_callable(blocked_once, placement=pool, max_retries=1, backoff_s=1.0)
    results = []

    async def run() -> None:
        results.append(await Flujo(step).run_async((str(path), str(tmp_path / "first"))))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        node_id, _pid = await _read_line(fd)
        victim = ray_nodes.name_of(node_id)
        # Ray's node handling needs the main thread (signals): the run pauses meanwhile.
        ray_nodes.kill(victim)
        mock_clock.autojump_threshold = 0  # the backoff may pass now
    [result] = results
    survivor = "node_b" if victim == "node_a" else "node_a"
    assert result.success is True
    assert result.output == ray_nodes.node_id(survivor)
    assert result.step_history[-1].attempts == 2
    stats = pool.statistics()
    assert (stats.lost, stats.completed) == (1, 1)


# Needs the ray extra (RayExecutor checks it is installed): runs in make test-ray.
@pytest.mark.ray
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"resources": {"node_a": 0}},
            r"^RayExecutor: task_options\['resources'\]\['node_a'\] must be a number > 0, "
            r"got 0\.$",
        ),
        (
            {"resources": {"node_a": True}},
            r"^RayExecutor: task_options\['resources'\]\['node_a'\] must be a number > 0, "
            r"got True\.$",
        ),
        (
            {"resources": ["node_a"]},
            r"^RayExecutor: task_options\['resources'\] must map custom resource names to "
            r"amounts, e\.g\. \{'node_a': 1\}, got \['node_a'\]\.$",
        ),
        (
            {"resources": {"CPU": 2}},
            r"^RayExecutor: task_options\['resources'\] may not name 'CPU'; set "
            r"task_options\['num_cpus'\] instead\.$",
        ),
        (
            {"num_cpus": -1},
            r"^RayExecutor: task_options\['num_cpus'\] must be a number >= 0, got -1\.$",
        ),
    ],
)
def test_placement_options_are_checked_when_the_executor_is_built(
    options: dict[str, object], message: str
) -> None:
    from flujo_actors.executors.ray import RayExecutor

    with pytest.raises(ValueError, match=message):
        RayExecutor(task_options=options)
