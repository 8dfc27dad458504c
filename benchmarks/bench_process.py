"""The process pool (``placement="process"``) next to raw trio-parallel.

Scenarios:
    process.run_sync: one trivial process-placed step per ``runner.run`` call (a
        fresh ``trio.run`` each time, as a sync script or a web worker calls it).
    process.run_async: the same step per ``await runner.run_async`` inside one trio run.
    process.fanout_sync: N CPU-bound process-placed branches per ``runner.run`` call.
    process.fanout_async: the same per ``await runner.run_async``.

Baselines are raw trio-parallel programs of the same shape: ``trio_parallel.run_sync``
of the same function (its default worker context, which on POSIX lives for the
whole process), in a fresh ``trio.run`` per call for the ``*_sync`` scenarios.
``runner.run`` (and the raw ``trio.run``) cannot run inside the harness's trio
run, so those calls run in a worker thread and time themselves there.

The agents are defined here and pickled by value (cloudpickle), so worker
processes need not import this file; the raw baselines send the same functions.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import trio

from flujo_actors import Flujo, MergeStrategy, Step
from flujo_actors.bench import Scenario, Unavailable, Workload, expect

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["SCENARIOS"]

#: Loop iterations of one CPU-bound branch (about 0.1 s of one core on the dev box).
CPU_WORK = 600_000


def trivial(value: int) -> int:
    """The trivial agent: ``value + 1``."""
    return value + 1


def burn(value: int) -> int:
    """A CPU-bound agent holding the GIL for ``CPU_WORK`` iterations."""
    total = value
    for i in range(CPU_WORK):
        total = (total + i * i) % 1_000_003
    return total


def _modules() -> tuple[Any, Any]:
    try:
        import cloudpickle
        import trio_parallel
    except ImportError as exc:  # the process extra is not installed
        raise Unavailable(f"needs the 'process' extra: {exc}") from exc
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return trio_parallel, cloudpickle


def _in_thread(call: Callable[[], Any], check: Callable[[Any], None]) -> Workload:
    """A workload timing ``call()`` (a blocking call that runs its own ``trio.run``)."""

    def timed() -> float:
        start = time.perf_counter()
        out = call()
        elapsed = time.perf_counter() - start
        check(out)
        return elapsed

    async def once() -> float:
        return await trio.to_thread.run_sync(timed)

    return Workload(once)


def _fanout_runner(size: int) -> Flujo:
    branches = {
        f"b{i}": Step.from_callable(burn, name=f"b{i}", placement="process") for i in range(size)
    }
    return Flujo(Step.parallel("fan", branches, merge_strategy=MergeStrategy.NO_MERGE))


def _check_trivial(result: Any) -> None:
    expect(result.success, "the process step failed")
    expect(result.output == 1, f"got {result.output!r}")


def _check_fanout(size: int) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        expect(result.success, "the fan-out failed")
        expect(len(result.output) == size, f"{len(result.output)} branch outputs")

    return check


def run_sync(_size: int) -> Workload:
    """One trivial process step per ``runner.run`` call."""
    _modules()
    runner = Flujo(Step.from_callable(trivial, placement="process"))
    return _in_thread(lambda: runner.run(0), _check_trivial)


def run_async(_size: int) -> Workload:
    """One trivial process step per ``run_async`` inside the harness's trio run."""
    _modules()
    runner = Flujo(Step.from_callable(trivial, placement="process"))

    async def once() -> None:
        _check_trivial(await runner.run_async(0))

    return Workload(once)


def fanout_sync(size: int) -> Workload:
    """``size`` CPU-bound branches per ``runner.run`` call."""
    _modules()
    runner = _fanout_runner(size)
    return _in_thread(lambda: runner.run(0), _check_fanout(size))


def fanout_async(size: int) -> Workload:
    """``size`` CPU-bound branches per ``run_async``."""
    _modules()
    runner = _fanout_runner(size)
    check = _check_fanout(size)

    async def once() -> None:
        check(await runner.run_async(0))

    return Workload(once)


async def _raw_fanout(tp: Any, size: int, fn: Callable[[int], int]) -> list[int]:
    out: list[int] = []

    async def one() -> None:
        out.append(await tp.run_sync(fn, 0, kill_on_cancel=True))

    async with trio.open_nursery() as nursery:
        for _ in range(size):
            nursery.start_soon(one)
    return out


def _raw_check(size: int) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        expect(len(out) == size, f"{len(out)} results, expected {size}")

    return check


def raw_run_sync(_size: int) -> Workload:
    """``trio_parallel.run_sync(trivial)`` in a fresh ``trio.run`` per call."""
    tp, _ = _modules()
    return _in_thread(lambda: trio.run(_raw_fanout, tp, 1, trivial), _raw_check(1))


def raw_run_async(_size: int) -> Workload:
    """``trio_parallel.run_sync(trivial)`` inside the harness's trio run."""
    tp, _ = _modules()

    async def once() -> None:
        out = await tp.run_sync(trivial, 0, kill_on_cancel=True)
        expect(out == 1, f"got {out!r}")

    return Workload(once)


def raw_fanout_sync(size: int) -> Workload:
    """``size`` ``trio_parallel.run_sync(burn)`` in one nursery, fresh ``trio.run`` per call."""
    tp, _ = _modules()
    return _in_thread(lambda: trio.run(_raw_fanout, tp, size, burn), _raw_check(size))


def raw_fanout_async(size: int) -> Workload:
    """``size`` ``trio_parallel.run_sync(burn)`` in one nursery."""
    tp, _ = _modules()
    check = _raw_check(size)

    async def once() -> None:
        check(await _raw_fanout(tp, size, burn))

    return Workload(once)


def _scenario(
    name: str,
    description: str,
    measure: Callable[[int], Workload | Awaitable[Workload]],
    baseline: Callable[[int], Workload | Awaitable[Workload]],
    baseline_label: str,
    sizes: tuple[int, ...],
) -> Scenario:
    return Scenario(
        name=name,
        description=description,
        measure=measure,
        baseline=baseline,
        baseline_label=baseline_label,
        unit="ms",
        sizes=sizes,
    )


SCENARIOS = [
    _scenario(
        "process.run_sync",
        'One trivial placement="process" step per runner.run call (a fresh trio.run each).',
        run_sync,
        raw_run_sync,
        "trio_parallel.run_sync of the same function in a fresh trio.run per call",
        (1,),
    ),
    _scenario(
        "process.run_async",
        'One trivial placement="process" step per await runner.run_async, in one trio run.',
        run_async,
        raw_run_async,
        "trio_parallel.run_sync of the same function, in one trio run",
        (1,),
    ),
    _scenario(
        "process.fanout_sync",
        "N CPU-bound process branches (NO_MERGE) per runner.run call (fresh trio.run each).",
        fanout_sync,
        raw_fanout_sync,
        "N trio_parallel.run_sync in one nursery, in a fresh trio.run per call",
        (8,),
    ),
    _scenario(
        "process.fanout_async",
        "N CPU-bound process branches (NO_MERGE) per await runner.run_async, in one trio run.",
        fanout_async,
        raw_fanout_async,
        "N trio_parallel.run_sync in one nursery, in one trio run",
        (8,),
    ),
]
