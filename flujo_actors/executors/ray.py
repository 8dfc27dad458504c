"""RayExecutor: agent calls as Ray tasks, on a local or remote Ray cluster.

Needs the ``ray`` extra (``pip install 'flujo-actors[ray]'``). Ray is not
imported until the first call. The step actor stays in this process; only
the pickled :class:`~flujo_actors.executors.WorkItem` travels.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any, Final

import attrs
import trio

from ..errors import ExecutorLost
from ._lifetime import RunBound
from ._work import RemoteAgentError, WorkItem, WorkResult, decode_result, encode_item, run_pickled
from .base import _Counters, _ExecutorBase, require_extra

__all__ = ["RayExecutor"]

_WHERE: Final = "Ray cluster"
# Our supervisor is the only retry policy: Ray must never re-run an agent call.
_FORBIDDEN_OPTIONS: Final = frozenset({"max_retries", "retry_exceptions", "max_task_retries"})
_log = logging.getLogger("flujo_actors.executors")

_REMOTE: Any = None  # ray.remote(run_pickled), made once per process
_HOST: Any = None  # ray.remote(AgentHost), made once per process


@attrs.frozen
class _Connection:
    ray: Any  # the ray module
    remote: Any  # the remote function
    owned: bool  # we called ray.init, so we call ray.shutdown
    task_error: type[BaseException]
    cancelled_error: type[BaseException]
    ray_error: type[BaseException]
    hosts: list[Any]  # AgentHost actor handles (actor mode), else empty
    load: list[int]  # calls in flight per host
    # Hosts that lost a call: Ray is restarting them, and a call sent before the
    # restart completes fails (ActorUnavailableError), so the next one waits for it.
    down: list[bool]


class RayExecutor(_ExecutorBase):
    """Runs agent calls as Ray tasks (``max_retries=0``: Ray never retries them).

    The connection opens on the first call: if this process is already
    connected (you called ``ray.init``), that connection is used and left
    open; otherwise ``ray.init(address=address, **init_options)`` connects to
    ``address`` (``None``: ``RAY_ADDRESS`` or a running local cluster, else a
    new local one; ``"local"``: always a new local one) and the connection
    (and any cluster it started) is shut down on :meth:`aclose`, on leaving
    ``async with``, or at the latest when the trio run that opened it ends.
    To keep one cluster across many runs, call ``ray.init`` yourself.

    Results are awaited without blocking trio and without a thread per call:
    the ObjectRef's future wakes the waiting task through the trio token.
    When the calling task is cancelled (step timeout, usage breach, failing
    sibling, user cancel) the task is cancelled with ``ray.cancel`` (with
    ``force_cancel``, the default, by killing the worker process, so even
    blocking code stops) and the call waits up to ``cancel_timeout_s``
    seconds of real time for Ray to confirm before ``trio.Cancelled``
    propagates; unconfirmed by then, it raises
    :class:`~flujo_actors.errors.ExecutorLost` instead (the task may still be
    running: nothing is left waiting forever). A worker or node
    lost while running the task raises
    :class:`~flujo_actors.errors.ExecutorLost`, which the step's supervisor
    retries like any failed attempt.

    Args:
        address: the cluster to connect to (see above).
        init_options: more keyword arguments for ``ray.init``.
        task_options: ``.options()`` for every task (``num_cpus``,
            ``resources``, ``runtime_env``, ...); retry options are refused.
            ``resources={"gpu_box": 1}`` pins the calls to the nodes that
            offer that custom resource (``ray start --resources=...``); a
            resource no node offers leaves the call pending until one joins.
            ``resources``, ``num_cpus``, ``num_gpus`` and ``memory`` are
            checked here, before any run.
        force_cancel: kill the worker on cancellation (True) or raise
            ``KeyboardInterrupt`` in it (False: the agent can clean up, but
            blocking calls finish first). Tasks only; see ``actors``.
        cancel_timeout_s: how long (real time) a cancelled call waits for Ray
            to confirm; 0 does not wait (``trio.Cancelled`` propagates at once).
        restart_timeout_s: how long (real time) a call to an actor that lost a
            call waits for Ray to restart it before raising ``ExecutorLost``.
        actors: 0 (default) runs each call as a Ray task. N > 0 runs calls on
            N Ray *async actors* instead, each hosting up to
            ``actor_concurrency`` calls at once as tasks of a trio run inside
            the actor: the mode for I/O-bound async agents (LLM and HTTP
            calls), where a task per call would hold a CPU slot and a worker
            process each. Calls go to the least busy actor. Cancellation
            cancels the call's trio task inside the actor (the actor lives
            on); a sync agent runs in a thread of the actor and cannot be
            stopped. A dead actor raises ``ExecutorLost`` for its calls in
            flight and is restarted by Ray; the next call sent to it waits
            until it answers again, up to ``restart_timeout_s`` (a call sent
            while it restarts would fail),
            so a retry runs on the restarted actor. The actors are killed on close.
            ``task_options`` then apply to the actors (``resources``, ...); a
            host holds no CPU unless ``task_options`` sets ``num_cpus``.
        actor_concurrency: most calls one actor runs at once.

    Raises:
        ImportError: the ``ray`` extra is not installed.
        ValueError: a retry option in ``task_options``, or a bad argument.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        init_options: Mapping[str, Any] | None = None,
        task_options: Mapping[str, Any] | None = None,
        force_cancel: bool = True,
        cancel_timeout_s: float = 10.0,
        restart_timeout_s: float = 60.0,
        actors: int = 0,
        actor_concurrency: int = 1000,
    ) -> None:
        require_extra("RayExecutor", "ray")
        task_options = dict(task_options or {})
        bad = sorted(_FORBIDDEN_OPTIONS & task_options.keys())
        if bad:
            raise ValueError(
                f"RayExecutor: task_options may not set {bad!r}: the step's max_retries is "
                "the only retry policy (Ray retries would repeat an agent call behind its "
                "back). Remove them and set max_retries on the step."
            )
        _check_scheduling(task_options)
        if not _is_number(cancel_timeout_s) or cancel_timeout_s < 0:
            raise ValueError(
                f"RayExecutor: cancel_timeout_s must be >= 0, got {cancel_timeout_s!r}."
            )
        if not _is_number(restart_timeout_s) or restart_timeout_s <= 0:
            raise ValueError(
                f"RayExecutor: restart_timeout_s must be > 0, got {restart_timeout_s!r}."
            )
        for name, value in (("actors", actors), ("actor_concurrency", actor_concurrency)):
            if type(value) is not int or value < (0 if name == "actors" else 1):
                raise ValueError(
                    f"RayExecutor: {name} must be an int >= {0 if name == 'actors' else 1}, "
                    f"got {value!r}."
                )
        self.actors = actors
        self.actor_concurrency = actor_concurrency
        self.address = address
        self.init_options = dict(init_options or {})
        self.task_options = task_options
        self.force_cancel = bool(force_cancel)
        self.cancel_timeout_s = float(cancel_timeout_s)
        self.restart_timeout_s = float(restart_timeout_s)
        self._conn: RunBound[_Connection] = RunBound(
            "RayExecutor's connection", self._open, self._close
        )
        self._counters = _Counters()

    def __repr__(self) -> str:
        return (
            f"RayExecutor(address={self.address!r}, force_cancel={self.force_cancel}, "
            f"actors={self.actors})"
        )

    async def _open(self) -> _Connection:
        global _REMOTE, _HOST
        import ray
        import ray.exceptions

        owned = False
        if not ray.is_initialized():
            # ray.init blocks for seconds when it starts a cluster: keep trio running.
            await trio.to_thread.run_sync(
                partial(ray.init, address=self.address, **self.init_options)
            )
            owned = True
        if _REMOTE is None:
            _REMOTE = ray.remote(max_retries=0, retry_exceptions=False)(run_pickled)
        hosts: list[Any] = []
        if self.actors:
            if _HOST is None:
                from ._ray_host import AgentHost

                _HOST = ray.remote(AgentHost)
            options = {
                "max_restarts": -1,  # a dead host comes back for later calls...
                "max_task_retries": 0,  # ...but the calls it was running are not re-run
                "max_concurrency": self.actor_concurrency,
                # A host waits on I/O: it holds no CPU. Ray's default reserves one CPU per
                # actor for its lifetime as soon as any resource is given, so a host pinned
                # with resources={"node_b": 0.1} took node_b's only CPU and tasks pinned
                # there waited forever (a loaded test run hung on exactly that).
                "num_cpus": 0,
                **self.task_options,
            }
            hosts = [_HOST.options(**options).remote() for _ in range(self.actors)]
        return _Connection(
            ray,
            _REMOTE,
            owned,
            ray.exceptions.RayTaskError,
            ray.exceptions.TaskCancelledError,
            ray.exceptions.RayError,
            hosts,
            [0] * len(hosts),
            [False] * len(hosts),
        )

    @staticmethod
    async def _close(conn: _Connection) -> None:
        for host in conn.hosts:
            with contextlib.suppress(Exception):  # already gone: nothing to stop
                conn.ray.kill(host)
        if conn.owned:
            await trio.to_thread.run_sync(conn.ray.shutdown)

    async def submit(self, item: WorkItem) -> WorkResult:
        """Run ``item`` as a Ray task (or on the least busy actor) and return its result.

        Cancellation cancels the Ray task (see the class docstring) before
        ``trio.Cancelled`` propagates.

        Raises:
            ExecutorLost: the worker or node running the task was lost, or the
                task was cancelled by someone else.
            RemoteAgentError: the task failed outside the agent call.
            SerializationError: the item or its result cannot be pickled.
            ImportError: the ``ray`` extra is not installed.
        """
        conn = await self._conn.get()
        payload = encode_item(item, _WHERE)
        if not conn.hosts:
            ref = conn.remote.options(
                name=f"flujo:{item.step_name}#{item.attempt}", **self.task_options
            ).remote(payload, _WHERE)
            return await self._await(conn, ref, item, host=-1)
        load = conn.load
        host = load.index(min(load))
        load[host] += 1
        try:
            if conn.down[host]:
                await _wait_restarted(conn, host, item, self.restart_timeout_s)
            ref = (
                conn.hosts[host]
                .run.options(name=f"flujo:{item.step_name}#{item.attempt}")
                .remote(payload, _WHERE)
            )
            return await self._await(conn, ref, item, host=host)
        finally:
            load[host] -= 1

    async def _await(self, conn: _Connection, ref: Any, item: WorkItem, *, host: int) -> WorkResult:
        c = self._counters
        c.submitted += 1
        future, done = _done_event(ref)
        try:
            await _settled(conn, ref, done)
        finally:
            if not done.is_set():
                c.cancelled += 1
                # Ray refuses force for actor tasks; the host cancels the call's trio task.
                self._cancel(conn, ref, force=self.force_cancel and host < 0)
                # Shielded: when Cancelled leaves this call, the task has stopped. The bound
                # is real time (Ray confirms in real time; a test's mock clock never would).
                limit = self.cancel_timeout_s
                with trio.CancelScope(shield=True):
                    if limit and not await _settled(conn, ref, done, limit_s=limit):
                        c.lost += 1
                        raise ExecutorLost(
                            f"Step {item.step_name!r} attempt {item.attempt}: cancelled, but "
                            f"Ray did not confirm within cancel_timeout_s={limit!r} s that its "
                            "task stopped; it may still be running on the cluster. Worker "
                            "loss is retryable: the step's max_retries decides whether it "
                            "runs again."
                        )
        try:
            raw = _result(conn, future, ref)
        except conn.cancelled_error as exc:
            c.lost += 1
            raise ExecutorLost(
                f"Step {item.step_name!r} attempt {item.attempt}: its Ray task was cancelled "
                "outside flujo_actors. Worker loss is retryable: the step's max_retries "
                "decides whether it runs again."
            ) from exc
        except conn.task_error as exc:
            c.completed += 1
            raise RemoteAgentError(type(exc).__name__, str(exc)) from exc
        except conn.ray_error as exc:
            c.lost += 1
            if host >= 0:
                conn.down[host] = True  # the next call to it waits for its restart
            raise ExecutorLost(
                f"Step {item.step_name!r} attempt {item.attempt}: the Ray worker running it "
                f"was lost ({type(exc).__name__}). Worker loss is retryable: the step's "
                "max_retries decides whether it runs again."
            ) from exc
        if raw is None:  # the host answered a call it had to drop (cancelled in the actor)
            c.lost += 1
            raise ExecutorLost(
                f"Step {item.step_name!r} attempt {item.attempt}: its Ray actor dropped the "
                "call. Worker loss is retryable: the step's max_retries decides whether it "
                "runs again."
            )
        c.completed += 1
        return decode_result(raw, item.step_name, _WHERE)

    @staticmethod
    def _cancel(conn: _Connection, ref: Any, *, force: bool) -> None:
        try:
            conn.ray.cancel(ref, force=force, recursive=True)
        except Exception:
            # Already finished or unknown to Ray: nothing left to stop.
            _log.debug("ray.cancel failed", exc_info=True)

    async def aclose(self) -> None:
        """Release what this executor made now (idempotent; the next call reopens).

        Kills its actors (``actors=N``) and shuts down the connection, and any
        cluster, that its own ``ray.init`` started; a connection you made with
        ``ray.init`` is left alone. Cannot be cancelled.
        """
        await self._conn.aclose()


# Ray's predefined resources have their own options; in `resources` Ray refuses them late.
_PREDEFINED: Final = {
    "CPU": "num_cpus",
    "GPU": "num_gpus",
    "memory": "memory",
    "object_store_memory": "object_store_memory",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_scheduling(options: Mapping[str, Any]) -> None:
    """Refuse bad placement options when the executor is built, not at the first call."""
    for key in ("num_cpus", "num_gpus", "memory"):
        value = options.get(key)
        if value is not None and not (_is_number(value) and value >= 0):
            raise ValueError(
                f"RayExecutor: task_options[{key!r}] must be a number >= 0, got {value!r}."
            )
    resources = options.get("resources")
    if resources is None:
        return
    if not isinstance(resources, Mapping) or not all(isinstance(k, str) for k in resources):
        raise ValueError(
            "RayExecutor: task_options['resources'] must map custom resource names to "
            f"amounts, e.g. {{'node_a': 1}}, got {resources!r}."
        )
    for name, amount in resources.items():
        if name in _PREDEFINED:
            raise ValueError(
                f"RayExecutor: task_options['resources'] may not name {name!r}; set "
                f"task_options[{_PREDEFINED[name]!r}] instead."
            )
        if not (_is_number(amount) and amount > 0):
            raise ValueError(
                f"RayExecutor: task_options['resources'][{name!r}] must be a number > 0, "
                f"got {amount!r}."
            )


def _done_event(ref: Any) -> tuple[Any, trio.Event]:
    """``ref``'s future, and an Event that the future's callback sets in this trio run.

    The callback runs on a Ray thread and hands the ``set`` to the run
    through its token; once the run has finished, nobody waits for the
    result and the callback does nothing. Call from inside the trio run.
    """
    future = ref.future()
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def wake(_: Any) -> None:  # runs on a Ray thread
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    return future, done


async def _settled(
    conn: _Connection, ref: Any, done: trio.Event, *, limit_s: float | None = None
) -> bool:
    """Wait until ``ref`` is settled (``done`` is set); False if ``limit_s`` passed first.

    ``done`` is set by the future's callback. The callback was seen to be
    lost under load (a fresh-clone CI run waited forever on a finished task),
    so ``ray.wait`` in a worker thread is the backstop: it sets ``done``
    itself once the object is ready, polling every second of real time
    (never trio's clock, which tests may drive). ``limit_s`` bounds the wait
    in real time too (``None``: no bound).

    Cancellation: both waits stop; an abandoned ``ray.wait`` ends within 1 s.
    """
    if done.is_set():
        return True
    end = None if limit_s is None else time.monotonic() + limit_s

    async def backstop() -> None:
        while not done.is_set():
            step = 1.0 if end is None else min(1.0, end - time.monotonic())
            if step <= 0:
                break  # out of time: the caller raises
            wait = functools.partial(conn.ray.wait, [ref], timeout=step)
            ready, _ = await trio.to_thread.run_sync(wait, abandon_on_cancel=True)
            if ready:
                done.set()

    async with trio.open_nursery() as nursery:

        async def callback() -> None:
            await done.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(callback)
        await backstop()  # returns once the object is ready or the time is up
        nursery.cancel_scope.cancel()
    return done.is_set()


async def _wait_restarted(conn: _Connection, host: int, item: WorkItem, limit_s: float) -> None:
    """Wait until ``host``, which lost a call, answers again (Ray restarts it).

    The probe is the host's ``ping``, which Ray may retry until the actor is
    back (it is idempotent; agent calls never are). Bounded by ``limit_s`` of
    real time: an actor Ray cannot restart (no node can place it) raises
    :class:`~flujo_actors.errors.ExecutorLost` instead of waiting forever; the
    host stays marked down, so the next call probes it again. Cancellation
    only stops the waiting.
    """
    ref = conn.hosts[host].ping.options(max_task_retries=-1).remote()
    future, done = _done_event(ref)
    if not await _settled(conn, ref, done, limit_s=limit_s):
        with contextlib.suppress(Exception):  # stop Ray retrying the probe for nobody
            conn.ray.cancel(ref)
        raise ExecutorLost(
            f"Step {item.step_name!r} attempt {item.attempt}: its Ray actor did not answer "
            f"within restart_timeout_s={limit_s!r} s after losing a call (Ray could not "
            "restart it). Worker loss is retryable: the step's max_retries decides whether "
            "it runs again."
        )
    try:
        _result(conn, future, ref)
    except conn.ray_error as exc:
        raise ExecutorLost(
            f"Step {item.step_name!r} attempt {item.attempt}: its Ray actor did not come "
            f"back after losing a call ({type(exc).__name__}). Worker loss is retryable: "
            "the step's max_retries decides whether it runs again."
        ) from exc
    conn.down[host] = False


def _result(conn: _Connection, future: Any, ref: Any) -> Any:
    """The settled ``ref``'s value (raises its error) without blocking.

    The future holds it once its callback ran; when the backstop of
    :func:`_settled` saw the object ready first, ``ray.get`` reads it (ready,
    so it returns at once).
    """
    if future.done():
        return future.result()
    return conn.ray.get(ref, timeout=0)
