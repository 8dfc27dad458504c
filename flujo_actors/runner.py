"""The runner: :class:`Flujo` runs a pipeline (run, run_async, stream_async, resume_async).

Over 500 lines on purpose: it is the one class :class:`Flujo`, whose entry
points (run, stream, resume, fork, recover, and their asyncio twins) all go
through one claimed run (``_execute``); its docstrings are most of its
length. Its build-time checks live in :mod:`.runner_args`, one run from
start to result in :mod:`.runner_run` (loaded with the first runner), what
it persists in :mod:`.runner_checkpoints`.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio

from .context import PipelineContext, check_context_model
from .errors import (
    HumanInputError,
    PipelineDefinitionError,
    RunExistsError,
    RunNotFoundError,
)
from .limits import UsageLimits
from .results import ZERO, PipelineResult, add_usd
from .runner_args import (
    check_backend,
    check_executor,
    check_initial_context_data,
    check_resources,
    resolve_state_backend,
    validate_tree,
)
from .runner_human import NO_INPUT, check_sinks, has_human_steps, has_keyed_agents
from .steps.base import StepBase
from .steps.dsl import (
    Pipeline,
    PipelineStep,
)
from .steps.event_loop import check_no_placed_asyncio_steps, pipeline_uses_asyncio
from .steps.kinds import agent_steps
from .steps.options import ReadOnlyDict

if TYPE_CHECKING:
    from .backends.cache import CacheBackend
    from .backends.state import StateBackend
    from .hook_events import Hook
    from .hooks import HookSet
    from .introspection import RuntimeSnapshot
    from .persistence import ResumePoint
    from .runner_run import LiveRun
    from .steps.kinds import AnyStep
    from .steps.placement import Placement
    from .tracing import SpanListener

__all__ = ["Flujo"]


class Flujo:
    """Runs a pipeline: one run = one nursery, one governor, one actor per step.

    Args:
        pipeline_or_step: what to run.
        context_model: an attrs class (subclass :class:`PipelineContext`).
        initial_context_data: field values for the context of each run (each run
            gets its own copy); checked against ``context_model`` here.
        resources: passed to agents that accept ``resources=``.
        usage_limits: :class:`UsageLimits` for each run.
        state_backend: persist every completed step, at any depth (enables resume); a
            ``StateBackend``, a ``postgresql://`` (or ``postgres://``) URL meaning
            ``PostgresBackend(url)`` (extra ``postgres``), or a path (``str``/
            ``os.PathLike``) meaning ``SQLiteBackend(path)``; another URL scheme
            raises ``PipelineDefinitionError``.
        cache_backend: where ``cache=True`` steps keep outputs (a ``CacheBackend``).
        executor: where agent calls run by default (``"inline"``, ``"process"``,
            ``"ray"`` or an executor object).
        hooks: callables receiving run events (sync or async; see
            :mod:`flujo_actors.hooks`), and span listeners such as
            :class:`~flujo_actors.telemetry.otel.OTelHook` (which turn tracing on).
        trace: record a span tree of each run on ``PipelineResult.trace``
            (off by default: an untraced run builds no span).

    Raises:
        PipelineDefinitionError: on an invalid pipeline or argument: a backend or
            executor without its protocol's async methods, an unknown executor name, a coroutine object as
            ``resources``, a non-boolean ``trace``, ``initial_context_data`` the
            model refuses (unknown fields, bad values, ``run_id``/``initial_prompt``).
    """

    def __init__(
        self,
        pipeline_or_step: Pipeline | AnyStep,
        *,
        context_model: type[object] = PipelineContext,
        initial_context_data: Mapping[str, object] | None = None,
        resources: object = None,
        usage_limits: UsageLimits | None = None,
        state_backend: StateBackend | str | os.PathLike[str] | None = None,
        cache_backend: CacheBackend | None = None,
        executor: Placement | None = None,
        hooks: Sequence[Hook | SpanListener] = (),
        trace: bool = False,
    ) -> None:
        if isinstance(pipeline_or_step, StepBase):
            pipeline = Pipeline(steps=[pipeline_or_step])
        elif isinstance(pipeline_or_step, Pipeline):
            pipeline = pipeline_or_step
        else:
            raise PipelineDefinitionError(
                f"Flujo: expected a Step or a Pipeline, got {pipeline_or_step!r}."
            )
        check_context_model(context_model)
        validate_tree(pipeline, [], (pipeline.name,), context_model)
        if initial_context_data is not None and not isinstance(initial_context_data, Mapping):
            raise PipelineDefinitionError(
                f"Flujo: initial_context_data must be a mapping of field -> value, "
                f"got {initial_context_data!r}."
            )
        # Also without data: a model with a required field fails here, not mid-run.
        check_initial_context_data("Flujo", context_model, initial_context_data or {})
        check_resources(resources)
        backend = resolve_state_backend(state_backend)
        if cache_backend is not None:
            from .backends.cache import CacheBackend

            check_backend("cache_backend", cache_backend, CacheBackend, "InMemoryLRUBackend()")
        if type(trace) is not bool:
            raise PipelineDefinitionError(f"Flujo: trace must be True or False, got {trace!r}.")
        check_executor(executor)
        if usage_limits is not None and not isinstance(usage_limits, UsageLimits):
            raise PipelineDefinitionError(
                f"Flujo: usage_limits must be a UsageLimits, got {usage_limits!r}."
            )
        self.pipeline = pipeline
        self.context_model = context_model
        self.initial_context_data: Mapping[str, Any] = ReadOnlyDict(
            "Flujo", initial_context_data or {}, what="initial_context_data", thing="runner"
        )
        self.resources = resources
        self.usage_limits = usage_limits
        self.state_backend = backend
        self.cache_backend = cache_backend
        self.executor = executor
        self._hook_set: HookSet | None = None
        if hooks:
            # Hooks, tracing and their event types load only when used.
            from .hooks import compile_hooks

            self._hook_set = compile_hooks(hooks)
        self.hooks = tuple(hooks)
        self.trace = trace
        self._live: dict[str, LiveRun] = {}
        # Run ids of this runner's runs in progress, claimed before the first
        # await of a run: two runs with one id never run side by side.
        self._claimed: set[str] = set()
        self._fingerprint: str | None = None
        # Decided once: only pipelines with an asyncio step open an asyncio loop per run.
        self._uses_asyncio = pipeline_uses_asyncio(agent_steps(pipeline))
        # Decided once: a pipeline with human-input steps can pause; without a
        # state backend its runs are kept in memory until they finish.
        self._human = has_human_steps(pipeline)
        self._keyed = has_keyed_agents(pipeline)
        if self._human:
            check_sinks(pipeline, context_model)
        self._backend: StateBackend | None = backend
        if self._human and backend is None:
            from .backends.state import InMemoryStateBackend

            self._backend = InMemoryStateBackend()
        if self._uses_asyncio and executor is not None and executor != "inline":
            check_no_placed_asyncio_steps(agent_steps(pipeline), executor)
        # The run machinery (run core, step kinds, governor, actor kernel) loads with
        # the first runner rather than with `from flujo_actors import Flujo`.
        from .runner_run import execute_claimed

        self._run_claimed = execute_claimed
        self._built = True  # from here on the checked settings are read-only

    def __setattr__(self, attr: str, value: Any) -> None:
        # The settings were checked when the runner was built (and the pipeline's
        # fingerprint taken from them): a later assignment would skip both.
        if not attr.startswith("_") and getattr(self, "_built", False):
            raise PipelineDefinitionError(
                f"Flujo: {attr} cannot be changed once the runner is built (it was checked "
                f"then); build a new runner: Flujo(..., {attr}=...)."
            )
        object.__setattr__(self, attr, value)

    # -- public API ---------------------------------------------------------------
    def run(self, initial_input: object) -> PipelineResult:
        """Run to completion from synchronous code (calls ``trio.run``).

        Raises:
            RuntimeError: called inside a running trio loop.
            UsageLimitExceededError: the run breached its limits.
        """
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "Flujo.run() cannot be called inside a running trio event loop; "
                "use `await runner.run_async(...)` instead."
            )
        if _asyncio_running():
            raise RuntimeError(
                "Flujo.run() cannot be called inside a running asyncio event loop (it would "
                "block the loop until the run ends); use `await runner.run_asyncio(...)` "
                "or `runner.stream_asyncio(...)` instead."
            )
        result: PipelineResult = trio.run(self.run_async, initial_input)
        return result

    async def run_async(
        self, initial_input: object, *, run_id: str | None = None
    ) -> PipelineResult:
        """Run the pipeline inside trio and return its :class:`PipelineResult`.

        A failed step ends the run with ``success=False`` (no exception).
        Cancelling the caller cancels the whole run: every step and branch
        beneath it stops, nothing is left running.

        Raises:
            UsageLimitExceededError: a limit was breached; ``.result`` is the
                partial result in the normal tree shape: every completed step,
                the control-flow steps cut short holding their completed
                children, the breaching step as the last leaf of the last entry.
            RuntimeError: called outside trio (from asyncio: use :meth:`run_asyncio`).
        """
        _require_trio("run_async")
        return await self._execute(initial_input, run_id=run_id)

    async def run_asyncio(
        self, initial_input: object, *, run_id: str | None = None
    ) -> PipelineResult:
        """Run the pipeline from asyncio code (FastAPI and friends) and return its result.

        The run executes on trio in guest mode on the calling asyncio loop (no
        thread); concurrent calls on one loop share one trio guest run. Same
        results and errors as :meth:`run_async`. Cancellation: cancelling the
        awaiting asyncio task cancels the run and waits until every step has
        stopped, then raises ``asyncio.CancelledError``.
        """
        from .bridge.host import run_on_trio

        result: PipelineResult = await run_on_trio(self._run_async_kw, initial_input, run_id)
        return result

    async def _run_async_kw(self, initial_input: Any, run_id: str | None) -> PipelineResult:
        return await self.run_async(initial_input, run_id=run_id)

    def stream_asyncio(
        self, initial_input: object, *, run_id: str | None = None
    ) -> AsyncGenerator[Any, None]:
        """:meth:`stream_async` for asyncio code: chunks, then the PipelineResult.

        The run executes on trio in guest mode on the consumer's asyncio loop;
        items are pulled one at a time (backpressure as in :meth:`stream_async`).
        Leaving the loop early (inside ``contextlib.aclosing``), closing the
        iterator or cancelling the consumer cancels the run and waits for it
        to unwind.
        """
        from .bridge.host import stream_on_trio

        def stream(data: Any, rid: str | None) -> AsyncGenerator[Any, None]:
            return self.stream_async(data, run_id=rid)

        return stream_on_trio(stream, initial_input, run_id)

    async def stream_async(
        self, initial_input: object, *, run_id: str | None = None
    ) -> AsyncGenerator[Any, None]:
        """Yield the final step's chunks as it produces them, then the PipelineResult.

        Only a streaming agent in the pipeline's last position streams (an
        async generator function, or an object with ``stream``); otherwise
        the result is the only item. Chunks go through an unbuffered channel:
        the agent cannot produce a chunk before the previous one was taken,
        so a slow consumer slows the producer and nothing piles up. Chunks of
        a failed attempt that is then retried are not taken back.

        Closing the iterator early (``break`` inside ``async with
        contextlib.aclosing(runner.stream_async(x)) as items``) or cancelling
        the consumer cancels the run and waits for it to unwind: every task
        of the run has ended and the agent's generator is closed when that
        returns. Without ``aclosing`` that happens when the iterator is
        garbage collected.

        Raises:
            UsageLimitExceededError: the run breached its limits (after the
                chunks produced before the breach).
            HookError: a hook raised.
            BaseException: whatever else the run raised (an agent's
                ``KeyboardInterrupt`` or other ``BaseException``), as
                :meth:`run_async` raises it.
        """
        _require_trio("stream_async")
        send, receive = trio.open_memory_channel[Any](0)
        scope = trio.CancelScope()
        done = trio.Event()

        async def on_chunk(chunk: Any) -> None:
            await send.send(chunk)

        async def produce() -> None:
            try:
                with scope, send:
                    try:
                        result = await self._execute(
                            initial_input, run_id=run_id, on_chunk=on_chunk
                        )
                    except trio.Cancelled:
                        raise  # this generator closed (our scope) or trio is shutting down
                    except BaseException as exc:
                        # Every exception, KeyboardInterrupt and other BaseExceptions
                        # included, goes to the consumer: one escaping this system
                        # task would crash trio itself (TrioInternalError).
                        await send.send(_Raised(exc))
                    else:
                        await send.send(_Final(result))
            finally:
                done.set()

        # The run executes in a system task rather than a nursery held open
        # across this generator's yields: a nursery there would put the
        # consumer's own code (between items) inside the run's cancel scope,
        # where a breach or a failing run would cancel it, and cancel scopes
        # left open by an abandoned generator corrupt the consumer task's
        # scope stack. The run stays bound to this generator: the finally
        # below cancels it and waits for it to end.
        trio.lowlevel.spawn_system_task(
            produce, name=f"flujo stream {self.pipeline.name}", context=contextvars.copy_context()
        )
        try:
            async for item in receive:
                kind = type(item)
                if kind is _Final:
                    yield item.result
                elif kind is _Raised:
                    raise item.error
                else:
                    yield item
        finally:
            # Cancel before closing the channel: a closed channel would fail the
            # producer's send() as an error of the agent's attempt (and retry it).
            scope.cancel()
            # Shielded: the run must have ended before the consumer moves on,
            # even when the consumer is the one being cancelled.
            with trio.CancelScope(shield=True):
                await done.wait()
            receive.close()

    def snapshot(self) -> tuple[RuntimeSnapshot, ...]:
        """A live view of this runner's runs in progress (empty when none is running).

        Each :class:`~flujo_actors.introspection.RuntimeSnapshot` lists the run's
        actors (the governor and the step actors, nested by pipeline path)
        with their state, mailbox depth/capacity, messages handled, restarts
        and last error, plus the usage applied so far. Call it from any task
        of the trio run (for example a monitor task beside ``run_async``);
        it does not block.
        """
        from .introspection import RuntimeSnapshot, run_tree

        # Totals include the charges queued in the governor's mailbox but not
        # yet applied (it applies told charges in batches): usage reported so far.
        now = trio.current_time()
        snaps = []
        for run_id, live in self._live.items():
            # A run's governor is built at its first use: a snapshot shows it (as "new").
            governor = live.run.open_governor()
            queued_cost, queued_tokens = (
                governor.queued_usage() if governor is not None else (ZERO, 0)
            )
            snaps.append(
                RuntimeSnapshot(
                    run_id=run_id,
                    pipeline=self.pipeline.name,
                    time=now,
                    elapsed_s=now - live.started,
                    total_cost_usd=add_usd(live.ledger.cost, queued_cost),
                    total_tokens=live.ledger.tokens + queued_tokens,
                    dead_letters=len(live.run.dead_letters),
                    actors=run_tree(live.run.registry),
                )
            )
        return tuple(snaps)

    def as_step(self, name: str) -> PipelineStep:
        """This runner's pipeline as one step of another pipeline.

        It runs on a fresh context built from this runner's ``context_model``
        and ``initial_context_data``.
        """
        return PipelineStep(
            name=name,
            pipeline=self.pipeline,
            inherit_context=False,
            context_model=self.context_model,
            initial_context_data=self.initial_context_data,
        )

    async def resume_async(
        self, run_id: str, *, human_input: object = NO_INPUT, allow_changed_pipeline: bool = False
    ) -> PipelineResult:
        """Continue a stored run (needs a ``state_backend``, or human-input steps).

        Completed steps are not re-run, at any depth: the run continues after
        the last persisted top-level step, with the persisted context and
        totals, and the steps of the top-level step in progress that had
        completed (inside loops, branches, nested pipelines) are replayed from
        their checkpoints. A finished run (completed or failed) returns its
        stored result; a paused or cancelled one continues.

        ``human_input`` answers a paused run (see :class:`PausedRun`): the
        value itself when it waits for one input, or a mapping of
        :attr:`PendingInput.key` to value (one, several or all pending
        inputs). It is validated before anything runs. Without it a paused
        run pauses again at the same place.

        Every run stores the structural fingerprint of its pipeline (see
        :mod:`flujo_actors.policy.fingerprint`); a run stored by a different
        pipeline, or by an older flujo_actors without a fingerprint, is
        refused unless ``allow_changed_pipeline=True``. With it, the run
        continues on this runner's pipeline and records its fingerprint at
        the next checkpoint.

        Raises:
            PipelineDefinitionError: no state backend, or the stored run belongs
                to a different pipeline (the message names the first difference).
            RunNotFoundError: the backend does not know ``run_id``.
            RunExistsError: the run is already running in this runner.
            UsageLimitExceededError: the resumed part breached the limits.
            HumanInputError: ``human_input`` for a run that is not paused, that
                does not say which pending input it answers, or that its
                step's ``input_model`` refuses (the run stays paused).
        """
        _require_trio("resume_async")
        if not isinstance(allow_changed_pipeline, bool):
            raise PipelineDefinitionError(
                "Flujo.resume_async: allow_changed_pipeline must be True or False, "
                f"got {allow_changed_pipeline!r}."
            )
        backend = self._backend
        if backend is None:
            raise PipelineDefinitionError(
                "Flujo.resume_async needs a state backend: pass "
                "Flujo(..., state_backend=SQLiteBackend('runs.db')) (or InMemoryStateBackend())."
            )
        snap = await backend.load_state(run_id)
        if snap is None:
            raise RunNotFoundError(
                f"Run {run_id!r} is not in the state backend {type(backend).__name__}; "
                "check the run id (backend.list_runs() lists the known runs)."
            )
        from .runner_checkpoints import changed_message, resume_base
        from .runner_recovery import claim_for_resume

        fingerprint = self._pipeline_fingerprint()
        changed = snap.pipeline_fingerprint != fingerprint
        if changed and not allow_changed_pipeline:
            raise PipelineDefinitionError(changed_message(self.pipeline, fingerprint, run_id, snap))
        n = len(self.pipeline.steps)
        if snap.next_step_index > n:
            raise PipelineDefinitionError(
                f"Run {run_id!r} was saved by pipeline {snap.pipeline_name!r} at step "
                f"{snap.next_step_index}, which does not fit this runner's pipeline "
                f"{self.pipeline.name!r} of {n} steps; resume it with the runner that started it."
            )
        # Persistence (and cattrs) load only when used: `import flujo_actors` stays light.
        from .persistence import ResumePoint, result_from_snapshot
        from .runner_human import PAUSED_KEY, answers_for, pending_from_record

        if snap.status in ("completed", "failed"):
            if human_input is not NO_INPUT:
                raise HumanInputError(
                    f"Run {run_id!r} is {snap.status}, not paused: it waits for no human "
                    "input. Resume it without human_input (you get its stored result)."
                )
            return result_from_snapshot(snap, await backend.load_positions(run_id))
        # Positions first: the stored steps refer to their children's records.
        point = ResumePoint(snap, await backend.load_positions(run_id))
        point.new_fingerprint = fingerprint if changed else None
        point.base = resume_base(snap)
        pending = pending_from_record(point.positions.pop(PAUSED_KEY, None))
        if human_input is not NO_INPUT:
            if snap.status != "paused":
                raise HumanInputError(
                    f"Run {run_id!r} is {snap.status}, not paused: it waits for no human "
                    "input. Resume it without human_input."
                )
            # Checked before anything runs: an invalid answer leaves the run paused.
            point.answers = answers_for(self.pipeline, run_id, pending, human_input)
        await claim_for_resume(backend, run_id)  # a shared backend: this process runs it now
        return await self._execute(None, run_id=run_id, resume=point)

    async def fork_async(
        self,
        source_run_id: str,
        /,
        *,
        at: str | int,
        context_updates: Mapping[str, object] | None = None,
        run_id: str | None = None,
    ) -> PipelineResult:
        """Start a new run from a stored run's checkpoint before top-level step ``at``.

        ``at`` is a top-level step name or index. The new run gets the stored
        history and context up to there (plus ``context_updates``, checked
        against the context model), keeps the run's input, and runs steps
        ``at`` onwards on this runner's pipeline, which may differ from the
        original's after ``at`` (a changed prompt or model) but not before.
        The steps before ``at`` are not run or paid for again; their usage
        counts in the new run's totals. The original run is left untouched.
        The stored run is the first (positional) argument; ``run_id=`` names
        the new run (by default it gets a new id). Needs a ``state_backend``; see :mod:`flujo_actors.runner_fork`.

        Raises:
            PipelineDefinitionError: a bad argument, no state backend, ``at``
                past what the run completed, or a reused step that differs.
            RunNotFoundError: the backend does not know ``source_run_id``.
            RunExistsError: the new ``run_id`` names a stored run.
        """
        _require_trio("fork_async")
        from .runner_fork import fork_run

        return await fork_run(
            self, source_run_id, at=at, context_updates=context_updates, run_id=run_id
        )

    async def recover_async(self) -> list[PipelineResult]:
        """Resume every run of this pipeline whose owner process died; their results.

        Needs a state backend with run leases shared by the runner processes
        (:class:`~flujo_actors.backends.postgres.PostgresBackend`): a run whose
        owner stopped renewing its lease for ``lease_s`` is claimed (row lock,
        ``SKIP LOCKED``: two processes never resume one run) and resumed here,
        after its last persisted step; the step that was running when its
        process died runs again (at least once). Paused runs are not
        recovered. See :mod:`flujo_actors.runner_recovery`.

        Raises:
            PipelineDefinitionError: the state backend does not lease runs.
        """
        _require_trio("recover_async")
        from .runner_recovery import recover  # resume-only code loads with the first resume

        return await recover(self)

    def _pipeline_fingerprint(self) -> str:
        """The pipeline's fingerprint, computed once per runner (on first use)."""
        fingerprint = self._fingerprint
        if fingerprint is None:
            from .policy.fingerprint import pipeline_fingerprint

            fingerprint = self._fingerprint = pipeline_fingerprint(self.pipeline)
        return fingerprint

    # -- the run ------------------------------------------------------------------
    async def _execute(
        self,
        initial_input: Any,
        *,
        run_id: str | None = None,
        on_chunk: Any = None,
        resume: ResumePoint | None = None,
    ) -> PipelineResult:
        run_id = run_id or new_run_id()
        # Claimed before the first await: of concurrent runs with one id in this
        # runner exactly one runs (the state backend's create_run covers the rest).
        if run_id in self._claimed:
            raise RunExistsError(
                f"Run id {run_id!r} is already running in this runner; a run id names one "
                "run. Pass a new run_id (or none, for a generated one), or wait for that "
                "run to finish.",
                run_id,
            )
        self._claimed.add(run_id)
        try:
            return await self._run_claimed(self, initial_input, run_id, on_chunk, resume)
        finally:
            self._claimed.discard(run_id)


def new_run_id() -> str:
    """A fresh run id: a random UUID4 as 32 hex digits (``uuid.uuid4().hex``, cheaper).

    Built from ``os.urandom`` directly: ``uuid.uuid4()`` builds a ``UUID`` object
    (and ``import uuid`` loads more than a run needs) for each run.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    return raw.hex()


def _asyncio_running() -> bool:
    """Whether an asyncio loop runs in this thread (asyncio is not imported for this)."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio._get_running_loop() is not None


def _require_trio(method: str) -> None:
    """Raise a clear RuntimeError when a trio-only method is called outside trio."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        where = "from asyncio code" if _asyncio_running() else "outside a trio run"
        raise RuntimeError(
            f"Flujo.{method}() must be awaited inside trio, but was called {where}. "
            "From asyncio (FastAPI and friends) use `await runner.run_asyncio(...)` or "
            "`runner.stream_asyncio(...)`; from synchronous code use `runner.run(...)`."
        ) from None


class _Final:
    __slots__ = ("result",)

    def __init__(self, result: PipelineResult) -> None:
        self.result = result


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error
