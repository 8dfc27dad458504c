"""ProcessExecutor: agent calls on a pool of worker processes (trio-parallel).

For CPU-bound agents. Needs the ``process`` extra (``pip install
'flujo-actors[process]'``: trio-parallel for cancellable worker processes,
cloudpickle so closures and lambdas travel). Neither is imported until the
first call.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Final

import attrs
import trio

from ..errors import ExecutorLost
from ._lifetime import RunBound
from ._work import WorkItem, WorkResult, decode_result, encode_item, run_pickled
from .base import _Counters, _ExecutorBase, require_extra

__all__ = ["ProcessExecutor"]

_WHERE: Final = "process pool"
_WORKER_TYPES: Final = ("spawn", "forkserver")


@attrs.frozen
class _Pool:
    context: Any  # trio_parallel.WorkerContext
    stack: contextlib.AsyncExitStack
    limiter: trio.CapacityLimiter
    broken: type[BaseException]  # trio_parallel.BrokenWorkerError


class ProcessExecutor(_ExecutorBase):
    """Runs agent calls in worker processes, at most ``max_workers`` at a time.

    The pool opens on the first call (workers start on demand and are
    reused) and closes on :meth:`aclose`, on leaving ``async with``, or at
    the latest when the trio run that opened it ends: no worker process
    outlives it. Sync agents run directly in a worker; async agents get a
    fresh ``trio.run`` in the worker per call.

    Cancelling a call (step timeout, usage breach, failing sibling, user
    cancel) kills the worker running it and waits until it is gone, so the
    agent stops wherever it was, even inside blocking code. A worker that dies
    (crash, ``os._exit``, OOM kill) raises
    :class:`~flujo_actors.errors.ExecutorLost`, which the step's supervisor
    retries like any failed attempt; this executor never retries by itself.

    Args:
        max_workers: most calls running at once (default: the CPU count).
        idle_timeout_s: an idle worker exits after this long.
        worker_type: ``"spawn"`` (default, safest) or ``"forkserver"``
            (faster worker restarts on POSIX).
        grace_period_s: on close, how long workers may take to exit before
            they are killed.

    Raises:
        ImportError: the ``process`` extra is not installed.
        ValueError: an argument is out of range.
    """

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
        self._pool: RunBound[_Pool] = RunBound(
            "ProcessExecutor's worker pool", self._open, self._close
        )
        self._counters = _Counters()

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.max_workers}, worker_type={self.worker_type!r})"

    async def _open(self) -> _Pool:
        import trio_parallel

        stack = contextlib.AsyncExitStack()
        context = await stack.enter_async_context(
            trio_parallel.open_worker_context(
                idle_timeout=self.idle_timeout_s,
                grace_period=self.grace_period_s,
                worker_type=trio_parallel.WorkerType[self.worker_type.upper()],
            )
        )
        return _Pool(
            context, stack, trio.CapacityLimiter(self.max_workers), trio_parallel.BrokenWorkerError
        )

    @staticmethod
    async def _close(pool: _Pool) -> None:
        await pool.stack.aclose()

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
        pool = await self._pool.get()
        payload = encode_item(item, _WHERE)
        c = self._counters
        c.submitted += 1
        try:
            raw = await pool.context.run_sync(
                run_pickled, payload, _WHERE, kill_on_cancel=True, limiter=pool.limiter
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
        c.completed += 1
        return decode_result(raw, item.step_name, _WHERE)

    async def aclose(self) -> None:
        """Stop the worker processes now (idempotent; the next call reopens the pool).

        Waits for running calls to finish (cancel them first to stop them);
        the close itself cannot be cancelled.
        """
        await self._pool.aclose()


def _exit_detail(exc: BaseException) -> str:
    for arg in exc.args:
        code = getattr(arg, "exitcode", None)
        if isinstance(code, int):
            return f" (exit code {code})"
    return ""
