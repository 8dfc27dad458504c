"""The map step kind: its body once per item, items drawn lazily, at most ``max_concurrency`` at once.

Each item runs as a job on the body's chain of step actors (a single-use
chain, like a parallel branch), in a nursery the step owns, on its own
structural copy of the context. The step task draws the next item only when
a slot is free, so an async iterator of 100,000 items under
``max_concurrency=100`` never has more than 100 bodies, context copies and
items alive; what stays per item is its result (the output list is O(n)).
Completed items' contexts are folded into the merge in item order as soon as
every earlier item has completed, then dropped.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterator, Mapping, Sized
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .. import partial
from ..actors.actor import run_turn
from ..context import context_copier, copy_context
from ..policy.merge import Fork, identity_of
from ..results import MapItemDone, StepResult
from ..steps.map import MapStep, item_name
from ..steps.strategies import BranchFailureStrategy, MergeStrategy
from .common import (
    branch_result,
    concluded,
    failed,
    failed_at,
    hijacked,
    sibling_cancelled,
)
from .core import Chain, Job
from .invoke import call
from .isolation import fork_start
from .merging import ContextMerge

if TYPE_CHECKING:
    from ..frames import ExecutionFrame
    from .core import RunState

__all__ = ["MapProgress", "run_map_step"]

_perf = time.perf_counter
_MAP = "Map step"


@attrs.define(eq=False)
class MapProgress:
    """A live map step's counters, read by :meth:`Flujo.snapshot <flujo_actors.Flujo.snapshot>`.

    ``total`` is known when the items are a sized collection (a list), else None.
    """

    drawn: int = 0
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    total: int | None = None


def _not_iterable(step: MapStep, source: Any) -> str:
    if isinstance(source, (str, bytes, bytearray)):
        what = f"a {type(source).__name__} ({source!r:.60}), which would map over its characters"
    elif isinstance(source, Mapping):
        what = f"a mapping ({type(source).__name__}), whose keys or items are ambiguous"
    else:
        what = f"{type(source).__name__} {source!r:.60}, which is not iterable"
    fix = (
        "pass a list, a generator or an async iterator as the step's input, or items=... "
        "to choose them"
        if step.compiled_items is None
        else "make items return a list, a generator or an async iterator"
    )
    return f"Map step {step.name!r}: the items must be an iterable or an async iterable, got {what}; {fix}."


class _Items:
    """Draws the items one at a time (sync or async iterator), and closes what it opened."""

    __slots__ = ("aiter", "iter")

    def __init__(self, source: Any) -> None:
        self.aiter: Any = None
        self.iter: Iterator[Any] | None = None
        if hasattr(type(source), "__aiter__"):
            self.aiter = source.__aiter__()
        else:
            self.iter = iter(source)

    async def aclose(self) -> None:
        # A generator cut short (a failure stopped the drawing) runs its cleanup now.
        if self.aiter is not None:
            aclose = getattr(self.aiter, "aclose", None)
            if aclose is not None:
                await aclose()
        else:
            close = getattr(self.iter, "close", None)
            if close is not None:
                close()


_END = object()


async def _anext(it: Any) -> Any:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return _END


async def run_map_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Run the body once per item; output: the outputs in item order, or ``reduce(outputs)``.

    Items are drawn only when fewer than ``max_concurrency`` bodies are in
    flight. Under ``PROPAGATE`` the first failing item fails the step,
    stops the drawing and cancels the bodies in flight (reported as
    cancelled); under ``IGNORE`` a failed item's output is its StepResult.
    Children in ``step_history`` are the items in item order, named
    ``"{step}[{index}]"``. Streaming, each completed item is also yielded as
    :class:`~flujo_actors.MapItemDone`.

    Cancellation: cancelling the step cancels every body in flight and
    stops the drawing; the record of a breach holds every completed item.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, MapStep)
    ctx = frame.context
    name = step.name
    source = frame.data
    if step.compiled_items is not None:
        identity = identity_of(ctx) if ctx is not None else None
        try:
            source = step.compiled_items.call(frame.data, ctx)
            # An async generator function is an items source itself, not a late value.
            while isinstance(source, Awaitable):
                source = await source
        except Exception as exc:
            return failed(
                step, t0, f"Map step {name!r}: items raised {type(exc).__name__}: {exc}", []
            )
        problem = hijacked(ctx, identity, _MAP, name, "items")
        if problem is not None:
            return failed(step, t0, problem, [])
    if isinstance(source, (str, bytes, bytearray, Mapping)):
        return failed(step, t0, _not_iterable(step, source), [])
    try:
        items = _Items(source)
    except TypeError:
        return failed(step, t0, _not_iterable(step, source), [])
    return await _MapRun(frame, step, items, source).run(t0)


class _ItemJob(Job):
    """An item's job: its index rides along, so completing it needs no closure per item.

    Made once per item: the caller passes :class:`Job`'s arguments positionally
    (keywords cost more than the rest of the call) and sets ``index`` after.
    """

    __slots__ = ("index",)
    index: int


class _MapRun:
    """The state of one execution of a map step (the step task draws, bodies finish)."""

    def __init__(
        self, frame: ExecutionFrame[Any], step: MapStep, items: _Items, source: Any
    ) -> None:
        self.frame = frame
        self.step = step
        # What every item's job is made of, looked up once.
        self.name = step.name
        self.path = frame.path
        self.position = frame.position
        self.items = items
        run = frame.run
        assert run is not None  # every frame a run executes carries it
        self.run_state: RunState = run
        self.track = run.track
        ctx = frame.context
        self.ctx = ctx
        merge = step.merge_strategy
        self.merging: ContextMerge | None = None
        self.base = ctx
        if ctx is not None and merge != MergeStrategy.NO_MERGE:
            # Taken before any item runs: what each item changed is found against it.
            self.merging = ContextMerge(ctx, Fork.of(ctx), merge, step.name)
            if not isinstance(merge, MergeStrategy):
                # A merge callable writes the live context as items complete: later
                # items are copied from the context as it was when the step started.
                self.base = copy_context(ctx)
        self.propagate = step.on_item_failure is BranchFailureStrategy.PROPAGATE
        self.limit = step.max_concurrency
        self.outputs: list[Any] = []
        self.results: list[StepResult | None] = []
        self.jobs: dict[int, Job] = {}  # the items in flight
        self.waiting: dict[int, Any] = {}  # completed items not merged yet: context or None
        self.next_merge = 0
        self.busy = 0  # slots taken: bodies in flight, and results being streamed
        self.wake: trio.Event | None = None
        self.first_failure: int | None = None
        self.stopped: str | None = None  # why the drawing stopped early
        self.failed_items: list[int] = []
        self.progress = MapProgress(total=len(source) if isinstance(source, Sized) else None)
        self.scope: trio.CancelScope | None = None
        self.stream = frame.stream and frame.on_chunk is not None
        self.emitters: trio.Nursery | None = None
        self.finish = self._finish_item  # one bound method for every item's job
        self.start: Any = None  # the items' shared rollback snapshot (fork_start)
        self.chain: Chain  # the body's chain, made with the items' nursery
        base = self.base
        self.copy = context_copier(type(base)) if base is not None else None

    async def run(self, t0: float) -> StepResult:
        frame = self.frame
        run = self.run_state
        live = run.live_maps
        live[frame.path] = self.progress
        try:
            if self.stream:
                # Streamed results are handed on in a nursery of their own: a failing
                # item's cancel stops the bodies, not the result it is delivering.
                async with trio.open_nursery() as emitters:
                    self.emitters = emitters
                    await self._draw_all()
            else:
                await self._draw_all()
        except BaseException:
            # Every body has unwound (the nursery waited): keep what the items did.
            partial.record(run, frame, self._cut_short())
            raise
        finally:
            live.pop(frame.path, None)
            await self.items.aclose()
        return await self._finish(t0)

    async def _draw_all(self) -> None:
        step = self.step
        name = step.name
        limit = self.limit
        items = self.items
        it = items.iter
        ait = items.aiter
        base = self.base
        progress = self.progress
        outputs = self.outputs
        results = self.results
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled step draws no item
        # Every item starts on a copy of base: their first agents share one rollback snapshot.
        self.start = fork_start(base, self.run_state) if base is not None else None
        async with trio.open_nursery() as nursery:
            self.scope = nursery.cancel_scope
            self.chain = Chain(step.body.steps, nursery, self.run_state)
            start_soon = nursery.start_soon
            run_item = self._run_item
            index = 0
            while True:
                if limit is not None and self.busy >= limit:
                    self.wake = wake = trio.Event()
                    await wake.wait()
                    continue
                if self.stopped is not None:
                    break
                try:
                    item = next(it, _END) if it is not None else await _anext(ait)
                except Exception as exc:
                    self.stopped = (
                        f"Map step {name!r}: drawing item {index} from the items raised "
                        f"{type(exc).__name__}: {exc}"
                    )
                    nursery.cancel_scope.cancel()
                    break
                if item is _END or self.stopped is not None:
                    break
                outputs.append(None)
                results.append(None)
                self.busy += 1
                progress.drawn += 1
                progress.in_flight += 1
                # Only the task is made here: the item's job and context copy are made
                # when it first runs (see Chain.start), so an unbounded map does not
                # hold every item's objects at once before the first one runs.
                start_soon(run_item, index, item)
                index += 1

    async def _run_item(self, index: int, item: Any) -> None:
        """Item ``index``'s task: its job, on a copy of the base context, through the body."""
        copy = self.copy
        job = _ItemJob(
            copy(self.base) if copy is not None else None,
            (*self.path, item_name(self.name, index)),
            None,
            None,
            self.finish,
            # The item index is part of its steps' checkpoint positions (when tracked).
            (*self.position, index) if self.track else None,
            self.start,
        )
        job.index = index
        self.jobs[index] = job
        # Chain.drive inline: one coroutine less per item.
        actor: tuple[Any, Any] | None = self.chain.send(0, item, job)
        while actor is not None:
            actor = await run_turn(*actor)

    def _finish_item(self, job: Job) -> None:
        # Called synchronously as the item's job completes (no waiting task per item).
        assert isinstance(job, _ItemJob)
        index = job.index
        del self.jobs[index]
        step = self.step
        r = branch_result(job.path[-1], job, None)
        self.results[index] = r
        progress = self.progress
        progress.done += 1
        progress.in_flight -= 1
        if r.success:
            self.outputs[index] = r.output
        else:
            self.outputs[index] = r
            progress.failed += 1
            self.failed_items.append(index)
            if self.propagate and self.stopped is None:
                self.first_failure = index
                self.stopped = f"Item {r.name!r} of map step {step.name!r} failed {failed_at(job)}"
                self._cancel()
        merging = self.merging
        if merging is not None:
            self._merge_in_order(index, job.context if r.success else None, merging)
        if self.emitters is not None:
            self.emitters.start_soon(self._emit, index, r)
        else:
            self._release()

    def _merge_in_order(self, index: int, ctx: Any, merging: ContextMerge) -> None:
        waiting = self.waiting
        waiting[index] = ctx
        name = self.step.name
        while self.next_merge in waiting:
            i = self.next_merge
            c = waiting.pop(i)
            if c is not None:
                merging.add(item_name(name, i), c)
            self.next_merge = i + 1
        if merging.failure is not None and self.stopped is None:
            # The step fails whatever the remaining items do: stop spending on them.
            self.stopped = merging.failure
            self._cancel()

    def _cancel(self) -> None:
        if self.scope is not None:
            self.scope.cancel()

    def _release(self) -> None:
        self.busy -= 1
        wake = self.wake
        if wake is not None:
            self.wake = None
            wake.set()

    async def _emit(self, index: int, r: StepResult) -> None:
        on_chunk = self.frame.on_chunk
        assert on_chunk is not None
        try:
            await on_chunk(MapItemDone(self.step.name, index, r))
        finally:
            self._release()

    def _items_so_far(self) -> list[StepResult]:
        """Every drawn item's result in item order (in-flight ones as their job stands)."""
        out: list[StepResult] = []
        run = self.run_state
        name = self.step.name
        for i, r in enumerate(self.results):
            if r is None:
                job = self.jobs.get(i)
                r = partial.cut_short(run, item_name(name, i), job.history if job else [])
            out.append(r)
        return out

    def _cut_short(self) -> StepResult:
        run = self.run_state
        if self.merging is not None:
            self.merging.abandon()
        cut = partial.cut_short(
            run, self.step.name, partial.last_to_breach(self._items_so_far(), run)
        )
        cut.metadata["items"] = len(self.results)
        return cut

    async def _finish(self, t0: float) -> StepResult:
        step = self.step
        name = step.name
        results: list[StepResult] = []
        outputs = self.outputs
        first = self.first_failure
        why = None
        if first is not None:
            why = (
                f"item {item_name(name, first)!r} of map step {name!r} failed first "
                "(on_item_failure=PROPAGATE)"
            )
        elif self.stopped is not None:
            why = self.stopped.removesuffix(".")
        for i, r in enumerate(self.results):
            if r is None:
                # Cancelled in flight: a failing item, a merge conflict or a failed draw.
                assert why is not None
                job = self.jobs.get(i) or Job(None)  # a task cancelled before it ran
                r = sibling_cancelled(item_name(name, i), job, why, None)
                outputs[i] = r
            results.append(r)
        run = self.run_state
        if run.limited and run.breach_event.is_set():
            results = partial.last_to_breach(results, run)
        failure = self.stopped
        if failure is None and results and len(self.failed_items) == len(results):
            last = self.results[0].step_history[-1]  # type: ignore[union-attr]
            failure = (
                f"Every item of map step {name!r} failed (on_item_failure=IGNORE needs one "
                f"success); the first, {item_name(name, 0)!r}, failed at step "
                f"{last.name!r}: {last.feedback}"
            )
        merging = self.merging
        if merging is not None:
            if failure is None:
                failure = merging.finish()
            else:
                merging.abandon()
        output: Any = outputs
        if failure is None and step.compiled_reduce is not None:
            try:
                output = await call(step.compiled_reduce, outputs)
            except Exception as exc:
                failure = f"Map step {name!r}: reduce raised {type(exc).__name__}: {exc}"
        # Failed too, the output lists every drawn item's output or StepResult.
        result = concluded(step, t0, output, failure, results)
        result.metadata["items"] = len(results)
        result.metadata["failed_items"] = self.failed_items
        return result
