"""Executor fixtures: one session-scoped local Ray cluster for the tests marked ``ray``,
and a hang guard on those tests."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

HERE = Path(__file__).resolve().parent

# Read by ray.init: no usage reporting, no token auth on the throwaway cluster.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _inapplicable(item: pytest.Item) -> bool:
    """Executor-contract cases that do not exist for the inline executor.

    Tests about worker processes (they take the ``remote`` fixture), and a timeout
    of a blocking sync agent (it cannot be interrupted in this process).
    """
    callspec = getattr(item, "callspec", None)
    if callspec is None or callspec.params.get("kind") != "inline":
        return False
    fixtures: Sequence[str] = getattr(item, "fixturenames", ())
    agent = callspec.params.get("agent")
    return "remote" in fixtures or getattr(agent, "__name__", None) == "stuck_sync"


# Per Ray test (setup, call and teardown; the first one starts the cluster): the slowest
# took 59 s on a 2-core machine at load 13. Past this it is a hang, reported with stacks.
RAY_TEST_TIMEOUT_S = 300


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Not generated rather than skipped: a skip in `pytest -rs` must mean something
    # a user relies on did not run.
    dropped = [item for item in items if _inapplicable(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not _inapplicable(item)]
    for item in items:
        if item.get_closest_marker("ray") and not item.get_closest_marker("timeout"):
            # A thread, not SIGALRM: the signal would land inside trio's event loop.
            item.add_marker(pytest.mark.timeout(RAY_TEST_TIMEOUT_S, method="thread"))


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's thread timer for Ray tests, plus what a hang needs explained.

    On expiry: the stacks of the test's trio tasks (the thread dump shows only
    trio's event loop), then the cluster's processes are killed (they would
    outlive the session), then pytest-timeout dumps every thread and exits 1.
    """
    if item.get_closest_marker("ray") is None or settings.method != "thread":
        return None
    timer = threading.Timer(settings.timeout, _on_hang, (item, settings))
    timer.name = f"ray hang guard {item.nodeid}"

    def cancel() -> None:
        timer.cancel()
        timer.join()

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # pytest-timeout's protocol
    timer.start()
    return True


def _on_hang(item: pytest.Item, settings: Any) -> None:
    from pytest_timeout import timeout_timer

    out = item.config.get_terminal_writer()
    try:
        out.sep("+", title=f"{item.nodeid} still running after {settings.timeout} s")
        out.write(_trio_task_stacks())
        out.flush()
        for cluster in _CLUSTER:
            for node in cluster.list_all_nodes():
                node.kill_all_processes(check_alive=False, allow_graceful=False)
    finally:
        timeout_timer(item, settings)  # dumps the threads, then os._exit(1)


def _trio_task_stacks() -> str:
    """Where every live trio task is suspended (read from another thread: diagnostics only)."""
    import trio

    lines = []
    for task in [obj for obj in gc.get_objects() if isinstance(obj, trio.lowlevel.Task)]:
        lines.append(f"trio task {task.name}:\n")
        awaitable: Any = task.coro
        while awaitable is not None:
            frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
            if frame is not None:
                code = frame.f_code
                lines.append(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}\n")
            awaitable = getattr(awaitable, "cr_await", None) or getattr(
                awaitable, "gi_yieldfrom", None
            )
    return "".join(lines)


# The test cluster's system config (the head's; worker nodes read it from the GCS).
_SYSTEM_CONFIG = {
    # Shorter node health checks than Ray's defaults: a killed node is declared dead in
    # seconds (tests wait for that event; this only makes it come sooner). A live node
    # is declared dead only after 4 checks in a row fail or time out (10 s each), so a
    # starved raylet on a loaded machine is not mistaken for a dead one.
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
    # Ray lowers its workers' main thread to nice 15: beside other jobs at nice 0 (a
    # loaded CI machine) they got a few percent of a core and the suite took 6 minutes.
    # The tests measure behaviour, not Ray's deference to the machine's other work.
    "worker_niceness": 0,
    # Nothing reads the cluster's metrics: do not collect and export them.
    "enable_metrics_collection": False,
    # A worker that has not registered within this is killed and started again; under
    # heavy load a start can take many times its ~1 s of CPU. Only a hang guard.
    "worker_register_timeout_seconds": 600,
}
# Per node: no log monitor (log_to_driver=False: nothing forwards worker output).
_NODE_ARGS = {"object_store_memory": 80 * 1024 * 1024, "include_log_monitor": False}


@attrs.define
class RayNodes:
    """Two worker nodes of the session's cluster, ``node_a`` and ``node_b``.

    Each offers one unit of its own custom resource (``{"node_a": 1}``) and one
    unit of ``"pool"``, which both offer; the head node offers neither.
    """

    NAMES = ("node_a", "node_b")

    cluster: Any  # ray.cluster_utils.Cluster
    nodes: dict[str, Any] = attrs.Factory(dict)  # name -> ray._private.node.Node
    _starting: threading.Thread | None = None
    _failed: list[Exception] = attrs.Factory(list)

    def node_id(self, name: str) -> str:
        node_id: str = self.nodes[name].node_id
        return node_id

    def name_of(self, node_id: str) -> str:
        [name] = [n for n, node in self.nodes.items() if node.node_id == node_id]
        return name

    def start_in_background(self) -> None:
        """Start the worker nodes in a thread: they come up while the tests before
        the first one on them run (:meth:`start` waits for them)."""
        self._starting = threading.Thread(target=self._start, name="ray worker nodes")
        self._starting.start()

    def start(self) -> None:
        """Start the worker nodes that are not running, together, and wait until all joined."""
        self.join()
        self._add_missing()
        # add_node's own wait gives up after 30 s: under heavy load a node took longer.
        self.cluster.wait_for_nodes(timeout=300)  # the event we mean; a hang guard

    def join(self) -> None:
        """Wait for a start in the background; raise what it raised."""
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self._failed:
            raise self._failed.pop()

    def _start(self) -> None:
        try:
            # Ray installs a SIGTERM handler per node it starts, which only the main thread
            # may do, and starts a node's processes to die with the thread that started
            # them: started here without either, they still stop with the cluster at the
            # session's end, or a minute after the head node (once they lose its GCS).
            self.cluster._shutdown_at_exit = False
            self._add_missing()
        except Exception as exc:  # re-raised in the main thread by join()
            self._failed.append(exc)
        finally:
            self.cluster._shutdown_at_exit = True

    def _add_missing(self) -> None:
        missing = [name for name in self.NAMES if name not in self.nodes]
        for name in missing:
            # 10 units of the node's own resource: a task pinned with 1 still fits beside an
            # actor host pinned there with a fraction (with 1 unit, an actor holding 0.1 left
            # 0.9 and the tasks waited forever: a fresh-clone CI run hung on exactly that).
            self.nodes[name] = self.cluster.add_node(
                wait=False, num_cpus=1, resources={name: 10, "pool": 1}, **_NODE_ARGS
            )

    def kill(self, name: str) -> None:
        """SIGKILL every process of node ``name``, then wait until Ray declares it dead."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)
        self.cluster.wait_for_nodes(timeout=300)  # the event we mean; the bound is a hang guard


_CLUSTER: list[Any] = []  # the session's ray.cluster_utils.Cluster, once started
_NODES: list[RayNodes] = []  # its worker nodes


@pytest.fixture(scope="session")
def ray_cluster(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Ray cluster on this machine for the session: a head node (2 CPUs, no
    dashboard, autoscaler or log monitor, small object store) and two worker
    nodes, started in the background (:func:`ray_nodes` waits for them).

    Workers get this directory on ``PYTHONPATH`` so the agents and types
    defined in the test modules unpickle by reference, as a user's installed
    package would. It is set in the environment the cluster's processes
    inherit, not as the job's ``runtime_env``: with a runtime_env every worker
    starts through Ray's setup script (~0.5 s more CPU each) and the workers
    Ray prestarts without it cannot run the job's tasks (they sat idle while
    the first call waited for a new one).
    """
    import ray  # make test-ray installs the ray extra: a missing install fails, never skips
    from ray.cluster_utils import Cluster

    path = os.pathsep.join(filter(None, (str(HERE), os.environ.get("PYTHONPATH"))))
    env = {**RAY_ENV, "PYTHONPATH": path}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cluster: Any = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": False,
            "no_monitor": True,  # the autoscaler: nothing to scale on a fixed test cluster
            "_system_config": _SYSTEM_CONFIG,
            **_NODE_ARGS,
        },
    )
    _CLUSTER.append(cluster)
    ray.init(address=cluster.address, log_to_driver=False)
    nodes = RayNodes(cluster)
    _NODES.append(nodes)
    if any("ray_nodes" in getattr(item, "fixturenames", ()) for item in request.session.items):
        # Each node costs seconds of CPU (a raylet, two agents, a worker): started now,
        # they come up beside the tests before the multi-node ones, not in front of them.
        nodes.start_in_background()
    try:
        yield str(cluster.address)
    finally:
        try:
            nodes.join()  # a failed start no test waited for fails the teardown
        finally:
            ray.shutdown()
            cluster.shutdown()
            _CLUSTER.clear()
            _NODES.clear()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def ray_nodes(ray_cluster: str) -> RayNodes:
    """Worker nodes ``node_a`` and ``node_b`` joined to the session's cluster.

    The session's cluster starts them in the background; this waits until they
    have joined. One a test killed is started again for the next test that asks
    (none does when the killing test comes last).
    """
    [nodes] = _NODES
    nodes.start()
    return nodes


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A FIFO an agent writes one line into (open for reading: its writer never blocks)."""
    path = tmp_path / "started.fifo"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path, fd
    os.close(fd)
