"""ProcessExecutor: agent calls on a pool of worker processes (trio-parallel).

For CPU-bound agents. Needs the ``process`` extra (``pip install
'flujo-actors[process]'``: trio-parallel for cancellable worker processes,
cloudpickle so closures and lambdas travel). Neither is imported until the
first call.
"""

from __future__ import annotations

import os
import threading
import weakref
from functools import partial
from typing import Any, ClassVar, Final

import trio

from ..errors import ExecutorLost
from ._lifetime import UntilClosed
from ._work import WorkItem, WorkResult, decode_result, encode_item, run_pickled
from .base import _Counters, _ExecutorBase, require_extra

__all__ = ["ProcessExecutor"]

_WHERE: Final = "process pool"
_WORKER_TYPES: Final = ("spawn", "forkserver")


class _Pool:
    """One trio-parallel worker context, used from any trio run in this process.

    On POSIX a worker is a process and two pipes, usable from whichever trio
    run waits on them (trio-parallel's own default context is shared by every
    trio run in a process the same way). ``trio_parallel.open_worker_context``
    would close the context when the block, hence the trio run, ends; so the
    pool makes its context the way that function does and shuts its workers
    down the way trio-parallel's exit hook does (``WorkerContext._create`` and
    ``_worker_cache.shutdown``: private names of trio-parallel 1.x, pinned in
    pyproject.toml).
    """

    def __init__(self, context: Any, broken: type[BaseException], grace_period_s: float) -> None:
        self.context = context
        self.broken = broken
        self.grace_period_s = grace_period_s
        self._lock = threading.Lock()
        self._running = 0
        self._idle = threading.Event()
        self._idle.set()

    def enter(self) -> None:
        with self._lock:
            self._running += 1
            self._idle.clear()

    def leave(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    def shutdown(self) -> None:
        """Wait for the calls in flight, then stop every idle worker (blocking)."""
        self._idle.wait()
        # Closes each worker's job pipe (it exits on EOF), waits up to the grace
        # period, then kills the rest; raises BrokenWorkerError for unclean exits.
        self.context._worker_cache.shutdown(self.grace_period_s)


def _open_pool(idle_timeout_s: float, grace_period_s: float, worker_type: str) -> _Pool:
    import trio_parallel

    context = trio_parallel.WorkerContext._create(
        idle_timeout=idle_timeout_s,
        grace_period=grace_period_s,
        worker_type=trio_parallel.WorkerType[worker_type.upper()],
    )
    return _Pool(context, trio_parallel.BrokenWorkerError, grace_period_s)


class ProcessExecutor(_ExecutorBase):
    """Runs agent calls in worker processes, at most ``max_workers`` at a time per trio run.

    Lifetime: the pool opens on the first call and **stays warm across trio
    runs**: consecutive ``runner.run(...)`` calls (each its own ``trio.run``)
    reuse the same worker processes instead of spawning new ones. It closes
    on :meth:`aclose`, on leaving ``async with``, on :meth:`close` (from sync
    code), when the executor is garbage-collected, or at the latest when the
    interpreter exits (an ``atexit`` hook stops the workers cleanly). After a
    close the next call opens a fresh pool. ``placement="process"`` uses one
    process-wide instance, :meth:`shared`. An idle worker also exits by itself
    after ``idle_timeout_s``; a worker that died while idle is replaced by the
    next call. POSIX only (on Windows trio-parallel's workers belong to one
    trio run).

    Sync agents run directly in a worker; async agents get a fresh
    ``trio.run`` in the worker per call.

    Cancelling a call (step timeout, usage breach, failing sibling, user
    cancel) kills the worker running it and waits until it is gone, so the
    agent stops wherever it was, even inside blocking code. A worker that dies
    (crash, ``os._exit``, OOM kill) raises
    :class:`~flujo_actors.errors.ExecutorLost`, which the step's supervisor
    retries like any failed attempt; this executor never retries by itself.

    Args:
        max_workers: most calls running at once in one trio run (default: the
            CPU count). Trio runs in several threads at the same time share
            the workers but each have this many slots.
        idle_timeout_s: an idle worker exits after this long.
        worker_type: ``"spawn"`` (default, safest) or ``"forkserver"``
            (faster worker restarts on POSIX).
        grace_period_s: on close, how long workers may take to exit before
            they are killed.

    Raises:
        ImportError: the ``process`` extra is not installed.
        ValueError: an argument is out of range.
    """

    _shared: ClassVar[ProcessExecutor | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        idle_timeout_s: float = 600.0,
        worker_type: str = "spawn",
        grace_period_s: float = 10.0,
    ) -> None:
        require_extra("ProcessExecutor", "process")
        if max_workers is not None and (type(max_workers) is not int or max_workers < 1):
            raise ValueError(
                f"ProcessExecutor: max_workers must be an int >= 1, got {max_workers!r}."
            )
        if worker_type not in _WORKER_TYPES:
            raise ValueError(
                f"ProcessExecutor: worker_type must be one of {_WORKER_TYPES!r}, "
                f"got {worker_type!r}."
            )
        for name, value in (("idle_timeout_s", idle_timeout_s), ("grace_period_s", grace_period_s)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"ProcessExecutor: {name} must be >= 0, got {value!r}.")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.idle_timeout_s = float(idle_timeout_s)
        self.worker_type = worker_type
        self.grace_period_s = float(grace_period_s)
        # The opener is not a bound method: the finalizer below must not keep self alive.
        self._pool: UntilClosed[_Pool] = UntilClosed(
            "ProcessExecutor's worker pool",
            partial(_open_pool, self.idle_timeout_s, self.grace_period_s, worker_type),
            _Pool.shutdown,
        )
        # Capacity limiters are trio objects: one per trio run.
        self._limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
            "flujo_actors_process_limiter"
        )
        self._counters = _Counters()
        # Forgotten without a close: stop the workers when collected (holds the pool's
        # lifetime, not the executor).
        weakref.finalize(self, self._pool.close)

    @classmethod
    def shared(cls) -> ProcessExecutor:
        """The process-wide executor behind ``placement="process"`` (default options).

        Created on first use; its pool stays warm until ``await
        ProcessExecutor.shared().aclose()`` (the next use reopens it) or the
        interpreter exits.
        """
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.max_workers}, worker_type={self.worker_type!r})"

    def _run_limiter(self) -> trio.CapacityLimiter:
        try:
            return self._limiter.get()
        except LookupError:
            limiter = trio.CapacityLimiter(self.max_workers)
            self._limiter.set(limiter)
            return limiter

    async def submit(self, item: WorkItem) -> WorkResult:
        """Run ``item`` in a worker process and return its result.

        Waits for a free worker slot first (``max_workers``). Cancellation
        kills the worker running the item (and waits for it to exit) before
        ``trio.Cancelled`` propagates.

        Raises:
            ExecutorLost: the worker died while running the item.
            SerializationError: the item or its result cannot be pickled.
            ImportError: the ``process`` extra is not installed.
        """
        pool = self._pool.get()
        payload = encode_item(item, _WHERE)
        c = self._counters
        c.submitted += 1
        pool.enter()
        try:
            raw = await pool.context.run_sync(
                run_pickled, payload, _WHERE, kill_on_cancel=True, limiter=self._run_limiter()
            )
        except trio.Cancelled:
            c.cancelled += 1
            raise
        except pool.broken as exc:
            c.lost += 1
            raise ExecutorLost(
                f"Step {item.step_name!r} attempt {item.attempt}: the process-pool worker "
                f"running it died{_exit_detail(exc)}. Worker loss is retryable: the step's "
                "max_retries decides whether it runs again."
            ) from exc
        finally:
            pool.leave()
        c.completed += 1
        return decode_result(raw, item.step_name, _WHERE)

    async def aclose(self) -> None:
        """Stop the worker processes now (idempotent; the next call reopens the pool).

        Waits for running calls to finish (cancel them first to stop them),
        in a worker thread so trio keeps running; the close itself cannot be
        cancelled.
        """
        await self._pool.aclose()

    def close(self) -> None:
        """Stop the worker processes now, from sync code (blocks; idempotent).

        Waits for running calls to finish.

        Raises:
            RuntimeError: called inside a trio run (it would block the calls it
                waits for); ``await aclose()`` there.
        """
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            self._pool.close()
            return
        raise RuntimeError(
            "ProcessExecutor.close() cannot be called inside a trio run (it would block the "
            "run while waiting for its calls); use `await executor.aclose()` instead."
        )


def _exit_detail(exc: BaseException) -> str:
    for arg in exc.args:
        code = getattr(arg, "exitcode", None)
        if isinstance(code, int):
            return f" (exit code {code})"
    return ""
