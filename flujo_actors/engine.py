"""The execution engine: step actors, chains of them, and one executor per step kind.

A *chain* runs one pipeline: each step is an actor, started lazily in the
chain's nursery with its first frame in hand and kept for later frames (a
loop body's actors are reused across iterations). A step actor receives a
:class:`~flujo_actors.frames.ExecutionFrame`, executes its step kind, records
the :class:`StepResult` on the job and sends the next frame to the next
step's actor; the last one (or a failure) completes the job. Control-flow
kinds open nurseries of their own for their branches, so a cancel scope
bounds every branch and nothing outlives the step that started it.
"""

from __future__ import annotations

import dataclasses
import enum
import marshal
import pickle
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from . import partial, step_cache
from ._pydantic_compat import is_pydantic_model
from .actors.actor import Actor, ActorCell
from .actors.deadletters import DeadLetters
from .context import (
    build_context,
    context_field_names,
    copy_context,
    copy_value,
    restore_context,
    snapshot_context,
)
from .errors import (
    AsyncioInTrioError,
    ExecutorLost,
    FlujoInternalError,
    PipelineDefinitionError,
    PricingNotConfiguredError,
    UsageReportError,
)
from .frames import ExecutionFrame
from .governor import Charge, Governor, Release, Reserve
from .limits import UsageLimits
from .policy.failure import failure_metadata
from .policy.ledger import Reservation
from .policy.merge import (
    IDENTITY_FIELDS,
    IDENTITY_ORDER,
    IDENTITY_RULE,
    Fork,
    MergeConflict,
    identity_change,
    identity_of,
    merge_branches,
)
from .policy.retry import Action, AttemptPolicy, is_retried
from .policy.stream import ChunkCollector
from .policy.usage import NO_USAGE, charge_of, usage_of
from .results import ZERO, StepResult, StreamRetried, add_usd, sub_usd
from .steps.callables import LATE, PLAIN, STREAM, SYNC, AgentSpec, Callback, settle
from .steps.dsl import (
    BranchFailureStrategy,
    ConditionalStep,
    DynamicParallelRouterStep,
    LoopStep,
    MergeStrategy,
    ParallelStep,
    Pipeline,
    PipelineStep,
    PluginOutcome,
    Step,
    check_fallback_chain,
)
from .steps.event_loop import asyncio_in_trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["Chain", "Job", "RunState", "run_pipeline", "run_step"]

_perf = time.perf_counter
_IMMUTABLE_INPUT: Final[frozenset[type]] = frozenset(
    {int, str, float, bool, type(None), bytes, Decimal, frozenset}
)


@attrs.define(eq=False)
class RunState:
    """Per-run services every frame can reach (opaque to users)."""

    run_id: str
    resources: Any = None
    limits: UsageLimits | None = None
    governor: Governor | None = None
    limited: bool = False
    breach_event: trio.Event = attrs.Factory(trio.Event)
    dead_letters: DeadLetters = attrs.Factory(DeadLetters)
    cache_backend: Any = None
    hooks: Any = None  # a HookDispatcher or None
    executor: Any = None
    #: What steps cut short by a breach had done, by frame (see :mod:`.partial`).
    partials: dict[int, tuple[Any, StepResult]] = attrs.Factory(dict)

    async def charge(
        self,
        result: StepResult,
        cost: Decimal,
        tokens: int,
        reservation: int | None = None,
        owner: ExecutionFrame[Any] | None = None,
    ) -> None:
        """Report a step's usage to the run's governor.

        Without limits, or when the governor's mailbox can prove the usage
        cannot breach a limit, the message is told and this returns at once
        (no schedule point). Otherwise it asks and waits for the check, so
        nothing after the step starts before it. If the run has been
        breached (by this charge or another one) it raises
        ``trio.Cancelled``: the governor has cancelled the run's scope. The
        usage is recorded even if the caller is cancelled while waiting, and
        then ``result`` is recorded as what ``owner``'s step did (its usage
        counts, so the partial result of the run must show it).
        """
        gov = self.governor
        if gov is None:
            return
        msg = Charge(result, cost, tokens, reservation)
        try:
            # offer() queues the update when the governor can prove it cannot breach a
            # limit; otherwise wait for the check before anything after this step starts.
            if not gov.offer(msg):
                await gov.ask(msg)
            if self.limited and self.breach_event.is_set():
                await _breached()
        except BaseException:
            if owner is not None:
                partial.record(self, owner, result)
            raise

    async def reserve(self, step: Step) -> int | None:
        """Reserve a step's expected usage before it starts; the reservation id or None.

        Returns None without limits (nothing to protect). A refused
        reservation is a breach: the governor cancels the run and this
        raises ``trio.Cancelled``, so the step never starts.
        """
        if not self.limited or self.governor is None:
            return None
        cost = step.expected_cost_usd or ZERO
        tokens = step.expected_tokens or 0
        answer = await self.governor.ask(Reserve(step.name, cost, tokens))
        if type(answer) is Reservation and not self.breach_event.is_set():
            return answer.id
        if type(answer) is Reservation:
            self.release(answer.id)
        await _breached()
        raise AssertionError("unreachable")  # pragma: no cover

    def release(self, reservation: int) -> None:
        """Drop a reservation whose step will not report usage (never blocks)."""
        if self.governor is not None:
            self.governor.tell_nowait(Release(reservation))


async def _breached() -> None:
    """Raise ``trio.Cancelled``: the governor cancelled the run's scope on a breach."""
    await trio.lowlevel.checkpoint()
    raise FlujoInternalError("the run's usage limits were breached but its scope was not cancelled")


class Job:
    """One execution of a chain: the context it runs on and what it produced.

    ``on_finish`` (if set) is called synchronously when the job completes,
    which lets a parallel step count its branches without a waiting task each.
    """

    __slots__ = (
        "context",
        "done",
        "history",
        "on_chunk",
        "on_finish",
        "on_step",
        "output",
        "path",
        "success",
    )

    def __init__(
        self,
        context: Any,
        path: tuple[str, ...] = (),
        on_step: Callable[[int, StepResult, Job], Awaitable[None]] | None = None,
        on_chunk: Callable[[Any], Awaitable[None]] | None = None,
        on_finish: Callable[[Job], None] | None = None,
    ) -> None:
        self.context = context
        self.history: list[StepResult] = []
        self.done = trio.Event()
        self.output: Any = None
        self.success = True
        self.path = path
        self.on_step = on_step
        self.on_chunk = on_chunk
        self.on_finish = on_finish

    def set_context(self, ctx: Any) -> None:
        self.context = ctx

    def finish(self, last: StepResult | None) -> None:
        if last is not None:
            self.output = last.output
            self.success = last.success
        self.done.set()
        if self.on_finish is not None:
            self.on_finish(self)


class _Deliver:
    """Message to a step actor: run step ``index`` of ``job`` on ``data``."""

    __slots__ = ("data", "index", "job")

    def __init__(self, job: Job, index: int, data: Any) -> None:
        self.job = job
        self.index = index
        self.data = data


class StepActor(Actor):
    """The actor of one step position in a chain.

    It receives ``_Deliver`` messages (a frame's worth of data plus the job
    it belongs to), executes its step and hands the output to the next
    step's actor, or completes the job.
    """

    def __init__(self, chain: Chain, index: int) -> None:
        self.chain = chain
        self.index = index
        self.step = chain.steps[index]
        self.last = index == len(chain.steps) - 1
        self.name = self.step.name

    async def handle(self, message: Any) -> Any:
        msg: _Deliver = message
        job = msg.job
        chain = self.chain
        run = chain.run
        step = self.step
        stream = self.last and job.on_chunk is not None
        frame: ExecutionFrame[Any] = ExecutionFrame(
            step,
            msg.data,
            job.context,
            run.resources,
            run.limits,
            stream,
            job.on_chunk if stream else None,
            run.breach_event,
            job.set_context,
            run,
            (*job.path, step.name),
            chain.nursery,
        )
        hooks = run.hooks
        try:
            if hooks is None:
                result = await run_step(frame)
            else:
                # Hooks, tracing or logging are on: events and spans around the step.
                result = await hooks.observe_step(frame, self.index, run_step)
        except BaseException:
            if run.partials:
                # Cut short (a breach, a failing sibling, a cancel): what the step did
                # still belongs to the result.
                done = partial.take(run, frame)
                if done is not None:
                    job.history.append(done)
            raise
        job.history.append(result)
        if job.on_step is not None:
            await job.on_step(self.index, result, job)
        if result.success and not self.last:
            # A cancelled run starts no successor (a chain of sync steps has no
            # checkpoint of its own and would otherwise run to its end).
            await trio.lowlevel.checkpoint_if_cancelled()
            await chain.deliver(self.index + 1, result.output, job)
        else:
            job.finish(result)


class Chain:
    """Runs one pipeline's steps as lazily started step actors.

    Each step's actor is started in ``nursery`` (owned by whoever runs the
    pipeline) with its first message in hand. A *reusable* chain (a loop
    body) keeps its actors, each with a mailbox, for the next frames until
    :meth:`close`; a single-use chain's actors have exactly one message, so
    they get no mailbox and end once they have handed their output on.
    """

    __slots__ = ("cells", "nursery", "run", "steps")

    def __init__(
        self, steps: Sequence[Step], nursery: trio.Nursery, run: RunState, *, reusable: bool = False
    ) -> None:
        self.steps = steps
        self.nursery = nursery
        self.run = run
        self.cells: list[ActorCell | None] | None = [None] * len(steps) if reusable else None

    async def deliver(self, index: int, data: Any, job: Job) -> None:
        msg = _Deliver(job, index, data)
        cells = self.cells
        if cells is None:
            self.nursery.start_soon(_run_step_actor, StepActor(self, index), None, msg)
            return
        cell = cells[index]
        if cell is None:
            # Lazy start with the first frame in hand: no mailbox hop for it.
            cell = ActorCell(self.steps[index].name, 16, self.run.dead_letters)
            cells[index] = cell
            self.nursery.start_soon(_run_step_actor, StepActor(self, index), cell, msg)
        else:
            await cell.ref.tell(msg)

    def start(self, job: Job, data: Any) -> None:
        """Start ``job`` without waiting (single-use chains only)."""
        assert self.cells is None
        self.nursery.start_soon(_run_step_actor, StepActor(self, 0), None, _Deliver(job, 0, data))

    async def execute(self, job: Job, data: Any) -> Job:
        """Run the pipeline once for ``job``; return when it finished or failed.

        Cancellation: a cancelled caller starts nothing (checked before the
        first step starts, so a deep nesting of sync steps cannot keep
        starting levels after a cancel).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.deliver(0, data, job)
        await job.done.wait()
        return job

    def close(self) -> None:
        """Let a reusable chain's actors drain their mailboxes and exit."""
        if self.cells is not None:
            for cell in self.cells:
                if cell is not None:
                    cell.send.close()


async def _run_step_actor(actor: StepActor, cell: ActorCell | None, first: _Deliver) -> None:
    # Step actors never override on_start/on_stop and are stopped by their
    # chain's nursery, so they skip the generic loop's cancel scopes.
    if cell is None:
        await actor.handle(first)
        return
    cell.state = "running"
    handle = actor.handle
    try:
        await handle(first)
        cell.handled += 1  # counted like any other message (statistics)
        async for msg in cell.receive:
            await handle(msg)
            cell.handled += 1
    finally:
        cell.close_mailbox()
        cell.mark_stopped()


async def run_pipeline(
    pipeline: Pipeline,
    run: RunState,
    context: Any,
    data: Any,
    path: tuple[str, ...],
    nursery: trio.Nursery,
) -> Job:
    """Run a sub-pipeline to completion; its step actors live in ``nursery``."""
    job = Job(context, path)
    await Chain(pipeline.steps, nursery, run).execute(job, data)
    return job


async def run_step(frame: ExecutionFrame[Any], *, charge: bool = True) -> StepResult:
    """Execute the frame's step by its kind; never raises for a step failure."""
    step = frame.step
    kind = step.kind
    if kind == "agent":
        return await run_agent_step(frame, charge=charge)
    runner = _KIND_RUNNERS.get(kind)
    if runner is None:
        raise FlujoInternalError(f"no executor for step kind {kind!r}")
    return await runner(frame)


# -- agent steps: the supervisor's attempt loop --------------------------------


_VALIDATION: Final = "Validation failed after max retries: "
_PLUGIN: Final = "Plugin execution failed after max retries: "


class _Rejected(Exception):
    """An attempt's output was rejected by a validator (``_VALIDATION``) or a plugin."""

    def __init__(self, prefix: str, message: str) -> None:
        super().__init__(message)
        self.prefix = prefix
        self.message = message


class _Unfixable(Exception):
    """An attempt failed in a way another attempt cannot fix (no retry)."""


async def _call(cb: Callback, *args: Any) -> Any:
    value = cb.call(*args)
    if cb.is_async or (type(value) not in PLAIN and isinstance(value, LATE)):
        # A sync wrapper around an async callback hands back a coroutine: await it.
        value = await settle(value, _no_stream)
    return value


async def _no_stream(value: Any) -> Any:
    raise TypeError(f"a callback returned an async generator ({value!r}); return a value instead.")


async def _collect_stream(frame: ExecutionFrame[Any], iterator: Any) -> tuple[Any, Any]:
    """Drain a streaming agent, handing each chunk to ``on_chunk`` as it arrives.

    Returns the output and the stream's usage reports (a ``Usage`` the agent
    yields is usage, not a chunk; see :class:`ChunkCollector`). Cancelled (or
    failing) mid-stream, the agent's generator is closed here, before the
    error propagates, rather than whenever it is garbage collected.
    """
    collector = ChunkCollector()
    add = collector.add
    on_chunk = frame.on_chunk if frame.stream else None
    try:
        async for chunk in iterator:
            if add(chunk) and on_chunk is not None:
                await on_chunk(chunk)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    return collector.output(), collector.readings()


# _invoke's "read the usage from the output" marker (the inline, non-streaming path).
_FROM_OUTPUT: Final = object()


async def _invoke(
    frame: ExecutionFrame[Any], step: Step, data: Any, attempt: int = 1
) -> tuple[Any, Any]:
    """One agent call: its output, and its usage reading (or ``_FROM_OUTPUT``)."""
    spec = step.spec
    assert spec is not None
    if step.placement is not None or frame.run.executor is not None:
        executor = _executor_for(step, frame.run)
        if executor is not None:
            # Placed steps do not stream: the output comes back whole.
            from .executors import submit_step

            return await submit_step(executor, step, data, frame.context, frame.resources, attempt)
    if step.on_asyncio:
        return await _invoke_on_asyncio(frame, spec, data)
    try:
        if frame.stream and spec.stream_call is not None:
            return await _collect_stream(
                frame, spec.stream_call(data, frame.context, frame.resources)
            )
        value = spec.call(data, frame.context, frame.resources)
        kind = spec.kind
        if kind == STREAM:
            return await _collect_stream(frame, value)
        if kind != SYNC:
            value = await value
        if type(value) in PLAIN or not isinstance(value, LATE):
            return value, _FROM_OUTPUT
        # A plain ``def`` wrapper around an async (or streaming) agent: finish its work.
        return await _settle_late(frame, value)
    except (RuntimeError, TypeError) as exc:
        # Only on failure: asyncio code in a trio step gets an error that says so.
        wrong = asyncio_in_trio(step.name, exc)
        if wrong is None:
            raise
        raise wrong from exc


async def _settle_late(frame: ExecutionFrame[Any], value: Any) -> tuple[Any, Any]:
    """Await (or stream) what a sync wrapper around an async agent handed back."""
    streamed: tuple[Any, Any] | None = None

    async def collect(iterator: Any) -> Any:
        nonlocal streamed
        streamed = await _collect_stream(frame, iterator)
        return streamed[0]

    output = await settle(value, collect)
    return streamed if streamed is not None else (output, _FROM_OUTPUT)


async def _invoke_on_asyncio(
    frame: ExecutionFrame[Any], spec: AgentSpec, data: Any
) -> tuple[Any, Any]:
    """Run one attempt of an ``event_loop="asyncio"`` agent on the run's asyncio loop."""
    from .bridge.steps import call_on_asyncio, stream_on_asyncio

    ctx, res = frame.context, frame.resources
    make = spec.stream_call if frame.stream else None
    if make is None and spec.kind == STREAM:
        make = spec.call
    if make is None:
        return await call_on_asyncio(spec, data, ctx, res), _FROM_OUTPUT
    on_chunk = frame.on_chunk if frame.stream else None
    # The same chunk rule as a trio stream: a yielded Usage is usage, not output.
    collector = ChunkCollector()
    if on_chunk is None:
        for chunk in await stream_on_asyncio(lambda: make(data, ctx, res), None):
            collector.add(chunk)
    else:
        forward_to = on_chunk

        async def forward(chunk: Any) -> None:
            if collector.add(chunk):
                await forward_to(chunk)

        await stream_on_asyncio(lambda: make(data, ctx, res), forward)
    return collector.output(), collector.readings()


def _streams_inline(frame: ExecutionFrame[Any], step: Step) -> bool:
    """Whether ``step`` streams its chunks to the frame's consumer (not placed elsewhere)."""
    spec = step.spec
    if frame.on_chunk is None or spec is None:
        return False
    if spec.kind != STREAM and spec.stream_call is None:
        return False
    if step.placement is None and frame.run.executor is None:
        return True
    return _executor_for(step, frame.run) is None


def _executor_for(step: Step, run: RunState) -> Any:
    """The executor for ``step`` (its placement, else the run's), or None for inline.

    A step's explicit ``placement="inline"`` wins over ``Flujo(executor=...)``.
    """
    placement = step.placement
    if placement is None:
        placement = run.executor
    if placement is None or placement == "inline":
        return None
    from .executors import resolve_executor

    return resolve_executor(placement)


async def _check(step: Step, output: Any, ctx: Any) -> Any:
    """Run the validators, then the plugins, on one attempt's output.

    Returns the output (a plugin's ``new_solution`` replaces it). Raises
    :class:`_Rejected` when a validator rejects (raises ``ValueError`` or
    returns ``False``) or a plugin fails (``success=False``, a non-outcome,
    or any exception); other exceptions from a validator propagate and fail
    the attempt like an agent error.
    """
    for v in step.compiled_validators:
        try:
            ok = await _call(v, output, ctx)
        except ValueError as exc:
            raise _Rejected(
                _VALIDATION, str(exc) or f"validator {v.label} raised ValueError"
            ) from exc
        if ok is False:
            raise _Rejected(_VALIDATION, f"validator {v.label} returned False")
    for p in step.compiled_plugins:
        try:
            outcome = p.call(output, ctx)
            if p.is_async or isinstance(outcome, LATE):
                outcome = await settle(outcome, _no_stream)
        except Exception as exc:
            raise _Rejected(
                _PLUGIN, str(exc) or f"plugin {p.label} raised {type(exc).__name__}"
            ) from exc
        if not isinstance(outcome, PluginOutcome):
            raise _Rejected(
                _PLUGIN, f"plugin {p.label} returned {outcome!r}, expected a PluginOutcome"
            )
        if not outcome.success:
            raise _Rejected(_PLUGIN, outcome.feedback or f"plugin {p.label} rejected the output")
        if outcome.new_solution is not None:
            output = outcome.new_solution
    return output


def _apply_context_update(step: Step, output: Any, ctx: Any) -> str | None:
    """Write a mapping, attrs or pydantic output onto the context's fields.

    Nothing is written unless every key is a field, so a refused update
    leaves the context untouched. Returns an error message on bad output.
    """
    if isinstance(output, dict):
        values = output
    elif attrs.has(type(output)) or is_pydantic_model(type(output)):
        values = {name: getattr(output, name) for name in context_field_names(type(output))}
    else:
        return (
            f"Step {step.name!r} has updates_context=True but returned "
            f"{type(output).__name__} {output!r}; return a dict, an attrs instance or a "
            "pydantic model whose keys are context fields."
        )
    names = context_field_names(type(ctx))
    # Writing a field's current value is harmless (an attrs output of the context's
    # own model carries run_id); changing the run's identity is not.
    hijacked = [
        n for n in IDENTITY_ORDER if n in values and n in names and values[n] != getattr(ctx, n)
    ]
    if hijacked:
        return (
            f"Step {step.name!r} has updates_context=True but its output sets "
            f"{hijacked[0]}={values[hijacked[0]]!r} (the run's is "
            f"{getattr(ctx, hijacked[0])!r}): {IDENTITY_RULE}"
        )
    unknown = sorted(str(k) for k in values if k not in names)
    if unknown:
        return (
            f"Step {step.name!r} has updates_context=True but its output has "
            f"{unknown!r}, which {'is not a field' if len(unknown) == 1 else 'are not fields'} "
            f"of {type(ctx).__name__} (fields: {sorted(names)!r}). Add the field to the "
            "context model or drop the key."
        )
    for k, v in values.items():
        object.__setattr__(ctx, k, v)
    return None


# Frozen attrs classes / frozen dataclasses -> their field names; None: mutable.
_FROZEN_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _frozen_fields(t: type) -> tuple[str, ...] | None:
    try:
        return _FROZEN_FIELDS[t]
    except KeyError:
        pass
    names: tuple[str, ...] | None = None
    if attrs.has(t):
        # attrs has no public "is frozen" flag; its frozen classes install this setter.
        if getattr(t.__setattr__, "__name__", "") == "_frozen_setattrs":
            names = tuple(f.name for f in attrs.fields(t))
    elif dataclasses.is_dataclass(t) and t.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        names = tuple(f.name for f in dataclasses.fields(t))
    _FROZEN_FIELDS[t] = names
    return names


def _immutable(value: Any, depth: int = 0) -> bool:
    """Whether no attempt can mutate ``value`` (so attempts may share it)."""
    t = type(value)
    if t in _IMMUTABLE_INPUT:
        return True
    if depth > 4:
        return False
    if t is tuple or t is frozenset:
        items: Any = value
    elif isinstance(value, enum.Enum):
        return True
    else:
        names = _frozen_fields(t)
        if names is None:
            return False
        items = [getattr(value, n) for n in names]
    for v in items:
        if type(v) not in _IMMUTABLE_INPUT and not _immutable(v, depth + 1):
            return False
    return True


class _Pristine:
    """A value kept pristine: :meth:`thaw` returns a fresh, isolated copy each time.

    The value is serialized once, in C: ``marshal`` for plain data (dicts,
    lists, str, numbers, ...; it refuses subclasses and other types), else
    ``pickle`` (in-process only, never stored), else a structural copy. A
    snapshot of a large context then costs one C-speed dump per step, not a
    Python-level deep copy, and nothing more unless an attempt fails.

    Raises:
        Exception: the value can be neither serialized nor copied.
    """

    __slots__ = ("blob", "how")

    def __init__(self, value: Any) -> None:
        try:
            self.blob: Any = marshal.dumps(value)
            self.how = 0
            return
        except Exception:  # unmarshallable (a class instance, a subclass, ...)
            pass
        try:
            self.blob = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            self.how = 1
            return
        except Exception:  # unpicklable (a lambda, a local class, a lock, ...)
            pass
        self.blob = copy_value(value)
        self.how = 2

    def thaw(self) -> Any:
        how = self.how
        if how == 0:
            return marshal.loads(self.blob)
        if how == 1:
            return pickle.loads(self.blob)  # our own bytes, from this process
        return copy_value(self.blob)


class _ContextSnapshot:
    """A context's field values before a step, to roll a failed attempt back.

    Immutable field values are kept by reference; the others are kept
    pristine together (one dump). A field whose value can be neither
    serialized nor copied (a lock, a client) is kept by reference: rolling
    back rebinds the field but cannot undo changes made inside that object.
    """

    __slots__ = ("fields", "fixed", "names", "pristine")

    def __init__(self, ctx: Any) -> None:
        fixed: list[tuple[str, Any]] = []
        names: list[str] = []
        values: list[Any] = []
        for name in context_field_names(type(ctx)):
            value = getattr(ctx, name)
            if type(value) in _IMMUTABLE_INPUT:
                fixed.append((name, value))
            else:
                names.append(name)
                values.append(value)
        self.fixed = fixed
        self.names = names
        self.fields: list[tuple[str, _Pristine]] = []
        try:
            self.pristine: _Pristine | None = _Pristine(tuple(values))
        except Exception:
            self.pristine = None
            for name, value in zip(names, values, strict=True):
                try:
                    self.fields.append((name, _Pristine(value)))
                except Exception:
                    fixed.append((name, value))

    def restore(self, ctx: Any) -> None:
        """Put the snapshot's values back (it stays intact for later attempts)."""
        setter = object.__setattr__
        for name, value in self.fixed:
            setter(ctx, name, value)
        if self.pristine is not None:
            for name, value in zip(self.names, self.pristine.thaw(), strict=True):
                setter(ctx, name, value)
        for name, kept in self.fields:
            setter(ctx, name, kept.thaw())


async def run_agent_step(
    frame: ExecutionFrame[Any], *, charge: bool = True, _held: list[int | None] | None = None
) -> StepResult:
    """The step supervisor: attempts, timeouts, validators, plugins, backoff, fallback.

    Decisions come from :class:`AttemptPolicy`; this function only executes
    them. An attempt fails when the agent raises, exceeds ``timeout_s`` (an
    attempt that blocks the event loop, a sync agent or ``time.sleep``,
    cannot be interrupted: if it returns after its deadline it has timed out
    all the same, its output is discarded and its usage counted), or
    its output is rejected by a validator or plugin; each attempt gets its
    own copy of the input, and a failed attempt's context changes are rolled
    back. With usage limits, usage of a failed attempt is reported before
    the next one starts, so a breach stops the retries; a step with
    ``expected_cost_usd``/``expected_tokens`` reserves that budget first.

    Cancellation: ``trio.Cancelled`` is never caught, retried or turned into
    a failure; a cancelled step leaves no reservation behind.
    """
    t0 = _perf()
    step = frame.step
    run: RunState = frame.run
    if run.limited:
        if run.breach_event.is_set():
            await _breached()  # the run is over: start nothing new
        if _held is None and (
            step.expected_cost_usd is not None or step.expected_tokens is not None
        ):
            return await _run_reserved(frame, charge)
    cfg = step.config
    ctx = frame.context
    data = frame.data

    miss: step_cache.CacheMiss | None = None
    if step.cache and run.cache_backend is not None:
        hit = await step_cache.lookup(run.cache_backend, step, _step_identity(step), data, ctx)
        if isinstance(hit, StepResult):
            if _held is not None:
                rid, _held[0] = _held[0], None
                await run.charge(hit, ZERO, 0, rid)
            hit.latency_s = _perf() - t0
            return hit
        miss = hit

    spec = step.spec
    assert spec is not None
    max_attempts = cfg.max_retries + 1
    fallback = step.fallback
    pristine: _Pristine | None = None
    if (
        (max_attempts > 1 or fallback is not None)
        and type(data) not in _IMMUTABLE_INPUT
        and not _immutable(data)
    ):
        try:
            pristine = _Pristine(data)
        except Exception:
            # Not copyable (a lock, a socket, ...): attempts share it, since
            # refusing to run the step would be worse than weaker isolation.
            pristine = None
    checks = bool(step.compiled_validators or step.compiled_plugins)
    # One snapshot per step, not per attempt: each rollback thaws a fresh copy.
    snap = _ContextSnapshot(ctx) if ctx is not None and (spec.accepts_context or checks) else None
    identity = identity_of(ctx) if snap is not None else None
    timeout = cfg.timeout_s
    limited = charge and run.limited
    attempts = 0
    cost = ZERO  # usage of every attempt so far
    tokens = 0
    sent_cost = ZERO  # the part of it already reported to the governor
    sent_tokens = 0
    feedback: str | None = None
    error_type: str | None = None
    failure: BaseException | None = None  # the last attempt's exception, for its traceback
    output: Any = None
    policy: AttemptPolicy | None = None
    while True:
        attempts += 1
        attempt_data = data
        if pristine is not None:
            attempt_data = pristine.thaw()
        timed_out = False
        try:
            late = 0.0
            if timeout is None:
                output, reading = await _invoke(frame, step, attempt_data, attempts)
            else:
                started = trio.current_time()
                with trio.CancelScope(deadline=started + timeout) as scope:
                    output, reading = await _invoke(frame, step, attempt_data, attempts)
                if scope.cancelled_caught:
                    timed_out = True
                    raise TimeoutError(f"step {step.name!r} timed out after {timeout} s")
                # Blocking code (a sync agent, time.sleep) cannot be interrupted: an
                # attempt that returns after its deadline has still timed out.
                late = trio.current_time() - started
                if late <= timeout:
                    late = 0.0
            if reading is _FROM_OUTPUT:
                reading = (
                    None if type(output) in NO_USAGE else usage_of(output, step_name=step.name)
                )
            if reading is not None:
                c, t = charge_of(reading, step_name=step.name, limits=run.limits)
                cost = add_usd(cost, c)
                tokens += t
            if late:
                timed_out = True
                raise TimeoutError(_blocked_message(step.name, timeout, late))
            if checks:
                output = await _check(step, output, ctx)
            if identity is not None:
                changed = identity_change(ctx, identity)
                if changed is not None:
                    raise _Unfixable(f"Step {step.name!r} changed {changed}: {IDENTITY_RULE}")
            if step.updates_context:
                problem = _apply_context_update(step, output, ctx)
                if problem is not None:
                    raise _Unfixable(problem)
            feedback = error_type = failure = None
            break
        except _Rejected as rej:
            feedback = rej.prefix + rej.message
            error_type = "ValidationError" if rej.prefix is _VALIDATION else "PluginError"
            retryable = True
            failure = rej.__cause__  # a validator's or plugin's own exception, if it raised
        except _Unfixable as exc:
            # A definition problem of the output: another attempt will not fix it.
            feedback, error_type, retryable = str(exc), "ContextUpdateError", False
            failure = None
        except AsyncioInTrioError as exc:
            # The step is on the wrong event loop: another attempt fails the same way.
            feedback = f"AsyncioInTrioError: {exc}"
            error_type, retryable, failure = "AsyncioInTrioError", False, exc
        except (UsageReportError, PricingNotConfiguredError) as exc:
            # The output's usage is wrong or cannot be priced: the same next time.
            feedback = f"{type(exc).__name__}: {exc}"
            error_type, retryable, failure = type(exc).__name__, False, exc
        except Exception as exc:
            feedback = f"{type(exc).__name__}: {exc}"
            error_type = type(exc).__name__
            # retry_on selects the agent's errors; our own (timeouts, lost workers) always retry.
            retryable = timed_out or isinstance(exc, ExecutorLost) or is_retried(exc, cfg.retry_on)
            failure = exc
        if snap is not None:
            snap.restore(ctx)
        if policy is None:
            policy = AttemptPolicy(
                max_attempts, cfg.backoff_s, cfg.backoff_factor, fallback is not None
            )
        decision = policy.after_failure(attempts, retryable=retryable)
        if decision.action is not Action.RETRY:
            break
        if limited and (cost != sent_cost or tokens != sent_tokens):
            # Report this attempt's usage now: a breach must stop the retries.
            failed = _step_result(step, None, attempts, cost, tokens, feedback, error_type)
            failed.latency_s = _perf() - t0
            await run.charge(failed, sub_usd(cost, sent_cost), tokens - sent_tokens, owner=frame)
            sent_cost, sent_tokens = cost, tokens
            # Cancelled before it ends (a breach elsewhere), the step shows what it charged.
            partial.record(run, frame, failed)
        if run.hooks is not None:
            await run.hooks.retry(frame, attempts, feedback)
        if frame.stream and _streams_inline(frame, step):
            # Tell the stream's consumer that the chunks so far belong to a failed attempt.
            assert frame.on_chunk is not None
            assert feedback is not None
            await frame.on_chunk(StreamRetried(step.name, attempts, feedback))
        if decision.delay_s > 0:
            await trio.sleep(decision.delay_s)
        else:
            # No attempt may start in a cancelled scope (a sync agent would
            # otherwise run to completion before anything noticed).
            await trio.lowlevel.checkpoint_if_cancelled()

    success = feedback is None
    result = _step_result(step, output, attempts, cost, tokens, feedback, error_type)
    if failure is not None:
        result.metadata.update(failure_metadata(failure))
    if error_type == "ValidationError":
        result.output = output  # the rejected output, for inspection
    rid = None
    if _held is not None:
        rid, _held[0] = _held[0], None
    if charge and (cost != sent_cost or tokens != sent_tokens or rid is not None):
        result.latency_s = _perf() - t0
        await run.charge(result, sub_usd(cost, sent_cost), tokens - sent_tokens, rid, frame)
    if run.partials:
        partial.take(run, frame)  # the step ended: its record of charged attempts is moot
    if not success and fallback is not None:
        result = await _run_fallback(frame, result, fallback)
    if miss is not None and result.success:
        # Through the fallback too: the cache answers for the step's output.
        await step_cache.store(run.cache_backend, step, miss, result, ctx)
    result.latency_s = _perf() - t0
    return result


def _blocked_message(name: str, timeout: float | None, took: float) -> str:
    return (
        f"step {name!r} timed out after {timeout} s: the attempt blocked the event loop "
        f"and returned after {took:.3g} s. Blocking code cannot be interrupted; use "
        "placement='process', or trio.to_thread.run_sync inside an async agent."
    )


async def _run_reserved(frame: ExecutionFrame[Any], charge: bool) -> StepResult:
    """Run an agent step that reserves its expected usage before it starts.

    The reservation is reconciled with the step's actual usage, or released
    if the step ends without reporting (cancelled, or an internal error).
    """
    run: RunState = frame.run
    rid = await run.reserve(frame.step)
    held: list[int | None] = [rid]
    try:
        return await run_agent_step(frame, charge=charge, _held=held)
    finally:
        if held[0] is not None:
            run.release(held[0])


def _step_result(
    step: Step,
    output: Any,
    attempts: int,
    cost: Decimal,
    tokens: int,
    feedback: str | None,
    error_type: str | None,
) -> StepResult:
    success = feedback is None
    result = StepResult(
        step.name, output if success else None, success, attempts, 0.0, cost, tokens, feedback
    )
    if error_type is not None:
        result.metadata["error_type"] = error_type
    return result


async def _run_fallback(
    frame: ExecutionFrame[Any], primary: StepResult, fallback: Step
) -> StepResult:
    """Run ``fallback`` after the primary's attempts are spent; combine both results.

    The fallback gets the step's original input and the live context. The
    result takes the fallback's output and success, keeps the primary's
    ``attempts``, sums both usages, and records ``fallback_triggered`` and
    ``original_error`` in its metadata.

    Raises:
        InfiniteFallbackError: the fallback chain was changed after the
            pipeline was built and now revisits a step.
    """
    run: RunState = frame.run
    check_fallback_chain(frame.step)  # cheap, and only on this path
    # A primary that failed because its scope was cancelled (a timeout racing
    # an outer cancel) must not hand over: a sync fallback would run to the end.
    await trio.lowlevel.checkpoint_if_cancelled()
    if run.hooks is not None:
        await run.hooks.fallback(frame, primary)
    fb_frame = attrs.evolve(frame, step=fallback, path=(*frame.path, fallback.name))
    try:
        fb = await run_step(fb_frame)
    except BaseException:
        # The primary's usage was charged: it stays in the tree, with what the
        # fallback did before the breach cut it short.
        done = partial.take(run, fb_frame)
        cut = partial.cut_short(
            run,
            primary.name,
            [] if done is None else [done],
            attempts=primary.attempts,
        )
        cut.cost_usd = add_usd(cut.cost_usd, primary.cost_usd)
        cut.token_counts += primary.token_counts
        cut.metadata["fallback_triggered"] = True
        cut.metadata["original_error"] = primary.feedback
        partial.record(run, frame, cut)
        raise
    feedback = fb.feedback
    if not fb.success:
        feedback = (
            f"Fallback step {fallback.name!r} failed: {fb.feedback} "
            f"(original error: {primary.feedback})"
        )
    result = StepResult(
        primary.name,
        fb.output,
        fb.success,
        primary.attempts,
        0.0,
        add_usd(primary.cost_usd, fb.cost_usd),
        primary.token_counts + fb.token_counts,
        feedback,
        step_history=[fb],
    )
    result.metadata["fallback_triggered"] = True
    result.metadata["original_error"] = primary.feedback
    if "error_type" in primary.metadata:
        result.metadata["original_error_type"] = primary.metadata["error_type"]
    return result


def _step_identity(step: Step) -> str:
    # Decided when the step was built: name, agent identity and agent state
    # (or its cache_key); see policy/cache_key.py.
    identity = step.cache_identity
    if identity is None:
        from .policy.cache_key import step_cache_identity

        identity = step_cache_identity(step.name, step.agent, cache_key=step.cache_key)
    return identity


# -- control flow ------------------------------------------------------------------
#
# Every control-flow step runs its children as jobs on chains of step actors
# started in a nursery beneath the step (its chain's nursery, or a nursery of
# its own for parallel branches), so cancelling the step's scope cancels every
# child at any depth and nothing outlives the step.


def _sum_usage(history: list[StepResult]) -> tuple[Decimal, int]:
    cost = ZERO
    tokens = 0
    for r in history:
        cost = add_usd(cost, r.cost_usd)
        tokens += r.token_counts
    return cost, tokens


def _branch_result(name: str, job: Job, ctx: Any) -> StepResult:
    """A finished job as the StepResult of the branch (or sub-pipeline) ``name``.

    Its latency is its steps' latencies added up (they ran one after another);
    callers that time the whole job themselves overwrite it.
    """
    cost, tokens = _sum_usage(job.history)
    last = job.history[-1] if job.history else None
    return StepResult(
        name,
        job.output if job.success else None,
        job.success,
        1,
        sum(r.latency_s for r in job.history),
        cost,
        tokens,
        None if job.success or last is None else last.feedback,
        ctx,
        step_history=job.history,
    )


def _failed_at(job: Job) -> str:
    """``"at step 'x': feedback"`` for a failed job (names the failing child)."""
    last = job.history[-1]
    return f"at step {last.name!r}: {last.feedback}"


def _include_problem(owner: str, ctx: Any, include: frozenset[str]) -> str | None:
    names = context_field_names(type(ctx))
    unknown = sorted(include.difference(names))
    if not unknown:
        return None
    return (
        f"Step {owner!r}: context_include_keys names {unknown!r}, which "
        f"{'is not a field' if len(unknown) == 1 else 'are not fields'} of "
        f"{type(ctx).__name__} (fields: {sorted(names)!r}). Fix the names or add the "
        "fields to the context model."
    )


async def _run_branches(
    frame: ExecutionFrame[Any],
    owner: str,
    branches: list[tuple[str, Pipeline]],
    merge: Any,
    on_failure: BranchFailureStrategy,
    include: frozenset[str] | None,
) -> tuple[dict[str, Any], list[StepResult], str | None]:
    """Run branches concurrently; merge the successful ones into the main context.

    Each branch is a job on its own single-use chain, with its own structural
    copy of the context (only ``include`` fields, if given) and its own copy
    of a mutable input. All branches' step actors live in one nursery opened
    here: a branch that fails under ``PROPAGATE`` cancels it, which cancels
    the siblings still running (they are reported as cancelled); cancelling
    the caller cancels every branch at any depth.

    Returns:
        (output mapping: each branch's output, or its StepResult if it failed
        or was cancelled; branch results in ``branches`` order; failure
        feedback or None). With no results, no branch was started.
    """
    ctx = frame.context
    if include is not None and ctx is not None:
        problem = _include_problem(owner, ctx, include)
        if problem is not None:
            return {}, [], problem
    run: RunState = frame.run
    data = frame.data
    path = frame.path
    propagate = on_failure is BranchFailureStrategy.PROPAGATE
    shared_input = type(data) in _IMMUTABLE_INPUT
    # Taken before any branch runs: what each branch changed is found against it.
    fork = Fork.of(ctx, include) if ctx is not None and merge != MergeStrategy.NO_MERGE else None
    # The run's identity (run_id, initial_prompt) is carried whatever the include keys say.
    copied = None if include is None else include | IDENTITY_FIELDS
    jobs: list[Job] = []
    first_failure: Job | None = None
    pending = len(branches)
    all_done = trio.Event()

    await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled step starts no branch
    try:
        async with trio.open_nursery() as nursery:
            scope = nursery.cancel_scope

            # Called synchronously as each branch's job completes: no waiting task per branch.
            def on_finish(job: Job) -> None:
                nonlocal pending, first_failure
                if propagate and not job.success and first_failure is None:
                    first_failure = job
                    scope.cancel()  # cancels the siblings still running
                pending -= 1
                if pending == 0:
                    all_done.set()

            for bname, pipeline in branches:
                bctx = copy_context(ctx, copied) if ctx is not None else None
                job = Job(bctx, (*path, bname), on_finish=on_finish)
                jobs.append(job)
                Chain(pipeline.steps, nursery, run).start(
                    job, data if shared_input else copy_value(data)
                )
            await all_done.wait()
    except BaseException:
        # Every branch has unwound (the nursery waited): keep what they did.
        partial.record(run, frame, _branches_cut_short(run, owner, branches, jobs))
        raise

    output: dict[str, Any] = {}
    results: list[StepResult] = []
    ok: list[tuple[str, Any]] = []
    for (bname, _pipeline), job in zip(branches, jobs, strict=True):
        if job.done.is_set():
            r = _branch_result(bname, job, job.context)
            if r.success:
                output[bname] = r.output
                ok.append((bname, job.context))
            else:
                output[bname] = r
        else:
            # Cancelled because a sibling failed (PROPAGATE).
            assert first_failure is not None
            cost, tokens = _sum_usage(job.history)
            r = StepResult(
                bname,
                None,
                False,
                1,
                0.0,
                cost,
                tokens,
                f"Cancelled: sibling branch {first_failure.path[-1]!r} of step {owner!r} "
                "failed first (on_branch_failure=PROPAGATE).",
                job.context,
                step_history=job.history,
            )
            r.metadata["cancelled"] = True
            output[bname] = r
        results.append(r)
    if run.limited and run.breach_event.is_set():
        # A failing branch and a breach at once: the breaching step stays the last leaf.
        results = partial.last_to_breach(results, run)
    if first_failure is not None:
        return (
            output,
            results,
            f"Branch {first_failure.path[-1]!r} of step {owner!r} failed "
            f"{_failed_at(first_failure)}",
        )
    if not ok:
        job = jobs[0]
        return (
            output,
            results,
            f"Every branch of step {owner!r} failed (on_branch_failure=IGNORE needs one "
            f"success); the first, {branches[0][0]!r}, failed {_failed_at(job)}",
        )
    if fork is not None:
        failure = _merge(ctx, fork, ok, merge, owner)
        if failure is not None:
            return output, results, failure
    return output, results, None


def _branches_cut_short(
    run: RunState, owner: str, branches: list[tuple[str, Pipeline]], jobs: list[Job]
) -> StepResult:
    """The result of a parallel step a breach cut short: every branch, the breaching one last."""
    results: list[StepResult] = []
    for (bname, _pipeline), job in zip(branches, jobs, strict=False):
        if job.done.is_set():
            results.append(_branch_result(bname, job, job.context))
        else:
            results.append(partial.cut_short(run, bname, job.history, branch_context=job.context))
    return partial.cut_short(run, owner, partial.last_to_breach(results, run))


def _merge(ctx: Any, fork: Fork, ok: list[tuple[str, Any]], merge: Any, owner: str) -> str | None:
    """Merge the successful branches' contexts; failure feedback or None."""
    if isinstance(merge, MergeStrategy):
        try:
            merge_branches(ctx, fork, ok, merge.value)
        except MergeConflict as exc:
            return f"Step {owner!r}: {exc}"
        return None
    # A user callable: a failing merge must not leave the context half merged.
    snap = snapshot_context(ctx)
    identity = identity_of(ctx)
    label = getattr(merge, "__qualname__", None) or type(merge).__qualname__
    try:
        merge_branches(ctx, fork, ok, merge)
    except Exception as exc:
        restore_context(ctx, snap)
        return (
            f"Step {owner!r}: merge_strategy {label} raised {type(exc).__name__}: {exc}; "
            "the context was left as it was before the branches ran."
        )
    changed = identity_change(ctx, identity)
    if changed is not None:
        restore_context(ctx, snap)
        return (
            f"Step {owner!r}: merge_strategy {label} changed {changed}: {IDENTITY_RULE} "
            "The context was left as it was before the branches ran."
        )
    return None


async def run_parallel_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Run every branch on the same input; output ``{branch: output}``.

    A failed or cancelled branch maps to its StepResult; the mapping is the
    output of a failed step too (``PROPAGATE``, every branch failing under
    ``IGNORE``, a merge conflict).

    Cancellation: cancelling the step cancels every branch beneath it.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, ParallelStep)
    output, results, failure = await _run_branches(
        frame,
        step.name,
        list(step.branches.items()),
        step.merge_strategy,
        step.on_branch_failure,
        step.context_include_keys,
    )
    cost, tokens = _sum_usage(results)
    return StepResult(
        step.name,
        # Failed too, the output maps every branch that ran to its output or StepResult.
        output if results else None,
        failure is None,
        1,
        _perf() - t0,
        cost,
        tokens,
        failure,
        step_history=results,
    )


async def run_router_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Ask the router agent for branch names, then run those as a parallel step.

    The router call is supervised like an agent step (retries, usage
    charged to the governor) and is the first entry of ``step_history``;
    the chosen branches follow. Every branch started (failed and cancelled
    ones too) is appended to ``context.executed_branches`` after the merge.
    """
    routing: list[StepResult] = []
    try:
        return await _run_router(frame, routing)
    except BaseException:
        run: RunState = frame.run
        # The record is the router agent's (routing not done) or the branches'.
        done = partial.take(run, frame)
        history = routing
        if done is not None:
            history = [*routing, *done.step_history] if routing else [done]
        cut = partial.cut_short(run, frame.step.name, history)
        if routing:
            cut.attempts = routing[0].attempts
        partial.record(run, frame, cut)
        raise


async def _run_router(frame: ExecutionFrame[Any], routing: list[StepResult]) -> StepResult:
    t0 = _perf()
    step = frame.step
    assert isinstance(step, DynamicParallelRouterStep)
    routed = await run_agent_step(frame)
    routing.append(routed)
    history: list[StepResult] = [routed]
    if not routed.success:
        failed = _failed(
            step, t0, f"Router of step {step.name!r} failed: {routed.feedback}", history
        )
        failed.attempts = routed.attempts
        return failed
    choice = routed.output
    names = [choice] if isinstance(choice, str) else choice
    if not isinstance(names, (list, tuple)) or not all(isinstance(x, str) for x in names):
        return _failed(
            step,
            t0,
            f"Router of step {step.name!r} must return a branch name or a list of branch "
            f"names, got {choice!r}; available: {list(step.branches)!r}.",
            history,
        )
    unknown = [x for x in names if x not in step.branches]
    if unknown:
        return _failed(
            step,
            t0,
            f"Router of step {step.name!r} chose unknown branch(es) {unknown!r}; "
            f"available: {list(step.branches)!r}.",
            history,
        )
    chosen = list(dict.fromkeys(names))  # first mention wins; duplicates run once
    output: dict[str, Any] = {}
    failure = None
    if chosen:
        output, results, failure = await _run_branches(
            frame,
            step.name,
            [(x, step.branches[x]) for x in chosen],
            step.merge_strategy,
            step.on_branch_failure,
            step.context_include_keys,
        )
        history.extend(results)
        ctx = frame.context
        if results and ctx is not None and hasattr(ctx, "executed_branches"):
            # After the merge: a branch's own writes cannot hide what ran.
            ctx.executed_branches.extend(r.name for r in results)
    cost, tokens = _sum_usage(history)
    result = StepResult(
        step.name,
        output if failure is None or len(history) > 1 else None,
        failure is None,
        routed.attempts,
        _perf() - t0,
        cost,
        tokens,
        failure,
        step_history=history,
    )
    result.metadata["selected_branches"] = chosen
    return result


def _failed(step: Step, t0: float, feedback: str, history: list[StepResult]) -> StepResult:
    cost, tokens = _sum_usage(history)
    return StepResult(
        step.name, None, False, 1, _perf() - t0, cost, tokens, feedback, step_history=history
    )


def _raised(step: Step, what: str, exc: Exception) -> str:
    return f"Loop {step.name!r}: {what} raised {type(exc).__name__}: {exc}"


_LOOP: Final = "Loop"


def _hijacked(
    ctx: Any, before: tuple[Any, ...] | None, kind: str, name: str, what: str
) -> str | None:
    """If a callback changed an identity field of ``ctx``: put it back; the failure, else None."""
    if before is None:
        return None
    changed = identity_change(ctx, before)
    if changed is None:
        return None
    for field, value in zip(IDENTITY_ORDER, before, strict=True):
        if hasattr(ctx, field):
            object.__setattr__(ctx, field, value)
    return f"{kind} {name!r}: {what} changed {changed}: {IDENTITY_RULE}"


async def run_loop_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Run the body until the exit condition holds or ``max_loops`` is reached.

    The body's step actors are started once and reused by every iteration
    (a reusable chain), and every iteration runs on the live context, so its
    changes carry into the next iteration and out of the loop. A callback
    that raises fails the step. Cancellation: cancelling the step cancels the
    iteration in flight; the body's actors are closed either way.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, LoopStep)
    ctx = frame.context
    run: RunState = frame.run
    history: list[StepResult] = []
    data = frame.data
    iterations = 0
    exit_reason = "max_loops"
    failure: str | None = None
    output: Any = None
    # Callbacks get the live context too: they must not change the run's identity.
    identity = identity_of(ctx) if ctx is not None else None
    if step.compiled_initial is not None:
        try:
            data = await _call(step.compiled_initial, data, ctx)
        except Exception as exc:
            failure = _raised(step, "initial_input_to_loop_body_mapper", exc)
        else:
            failure = _hijacked(
                ctx, identity, _LOOP, step.name, "initial_input_to_loop_body_mapper"
            )
        if failure is not None:
            exit_reason = "error"
    exit_cb = step.compiled_exit
    assert exit_cb is not None
    iteration_cb = step.compiled_iteration
    max_loops = step.max_loops
    path = frame.path
    in_flight: Job | None = None  # the iteration whose results are not in history yet
    try:
        # The body's actors live in a nursery of the loop's own, so a cancel (a
        # breach) unwinds them before the loop keeps what its iterations did.
        async with trio.open_nursery() as nursery:
            chain = Chain(step.body.steps, nursery, run, reusable=True)
            try:
                while failure is None:
                    job = in_flight = Job(ctx, path)
                    await chain.execute(job, data)
                    iterations += 1
                    history.extend(job.history)
                    in_flight = None
                    if job.context is not ctx:
                        # A body step replaced the context: later iterations and the
                        # steps after the loop see the new one.
                        ctx = job.context
                        if frame.context_setter is not None:
                            frame.context_setter(ctx)
                    if not job.success:
                        failure = (
                            f"Loop {step.name!r} iteration {iterations} failed {_failed_at(job)}"
                        )
                        exit_reason = "body_failed"
                        break
                    output = job.output
                    try:
                        done = await _call(exit_cb, output, ctx)
                    except Exception as exc:
                        failure = _raised(step, "exit_condition_callable", exc)
                    else:
                        failure = _hijacked(
                            ctx, identity, _LOOP, step.name, "exit_condition_callable"
                        )
                    if failure is not None:
                        exit_reason = "error"
                        break
                    if done:
                        exit_reason = "condition"
                        break
                    if iterations >= max_loops:
                        failure = (
                            f"Loop {step.name!r} reached max_loops={max_loops} without its exit "
                            "condition being met; raise max_loops or check exit_condition_callable."
                        )
                        break
                    if iteration_cb is None:
                        data = output
                    else:
                        try:
                            data = await _call(iteration_cb, output, ctx, iterations)
                        except Exception as exc:
                            failure = _raised(step, "iteration_input_mapper", exc)
                        else:
                            failure = _hijacked(
                                ctx, identity, _LOOP, step.name, "iteration_input_mapper"
                            )
                        if failure is not None:
                            exit_reason = "error"
            finally:
                chain.close()
    except BaseException:
        kept = history if in_flight is None else [*history, *in_flight.history]
        cut = partial.cut_short(run, step.name, kept, latency_s=_perf() - t0)
        cut.metadata["iterations"] = iterations
        cut.metadata["exit_reason"] = "usage_limit" if run.breach_event.is_set() else "cancelled"
        partial.record(run, frame, cut)
        raise
    if failure is None and step.compiled_output is not None:
        try:
            output = await _call(step.compiled_output, output, ctx)
        except Exception as exc:
            failure = _raised(step, "loop_output_mapper", exc)
        else:
            failure = _hijacked(ctx, identity, _LOOP, step.name, "loop_output_mapper")
        if failure is not None:
            exit_reason = "error"
    cost, tokens = _sum_usage(history)
    result = StepResult(
        step.name,
        output if failure is None or exit_reason == "max_loops" else None,
        failure is None,
        1,
        _perf() - t0,
        cost,
        tokens,
        failure,
        step_history=history,
    )
    result.metadata["iterations"] = iterations
    result.metadata["exit_reason"] = exit_reason
    return result


async def _run_nested(
    frame: ExecutionFrame[Any], pipeline: Pipeline, ctx: Any, path: tuple[str, ...]
) -> Job:
    """Run ``pipeline`` to completion on ``ctx``; its actors live in a nursery of its own.

    The last step of the nested pipeline streams if the enclosing step does.
    Cut short by a breach, the enclosing step records the steps that
    completed (and the partial result of the one in flight) once they have
    unwound.
    """
    job = Job(ctx, path, on_chunk=frame.on_chunk if frame.stream else None)
    run: RunState = frame.run
    try:
        async with trio.open_nursery() as nursery:
            await Chain(pipeline.steps, nursery, run).execute(job, frame.data)
    except BaseException:
        branch_context = None if ctx is frame.context else ctx
        partial.record(
            run,
            frame,
            partial.cut_short(run, frame.step.name, job.history, branch_context=branch_context),
        )
        raise
    return job


def _adopt_context(frame: ExecutionFrame[Any], job: Job) -> None:
    # A child replaced the shared context: the rest of the parent pipeline sees it too.
    if job.context is not frame.context and frame.context_setter is not None:
        frame.context_setter(job.context)


async def run_conditional_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Run the branch whose key ``condition(data, context)`` returns, on the live context.

    Cancellation: cancelling the step cancels the branch.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, ConditionalStep)
    assert step.compiled_condition is not None
    ctx = frame.context
    identity = identity_of(ctx) if ctx is not None else None
    try:
        key = await _call(step.compiled_condition, frame.data, ctx)
    except Exception as exc:
        return _failed(
            step,
            t0,
            f"Conditional step {step.name!r}: condition_callable raised "
            f"{type(exc).__name__}: {exc}",
            [],
        )
    hijacked = _hijacked(ctx, identity, "Conditional step", step.name, "condition_callable")
    if hijacked is not None:
        return _failed(step, t0, hijacked, [])
    try:
        branch = step.branches.get(key)
    except TypeError:  # an unhashable key matches nothing
        branch = None
    used_default = branch is None
    if branch is None:
        branch = step.default_branch
    if branch is None:
        return _failed(
            step,
            t0,
            f"Conditional step {step.name!r}: no branch matches key {key!r} "
            f"(branches: {list(step.branches)!r}) and there is no default_branch_pipeline; "
            "add the key or a default_branch_pipeline.",
            [],
        )
    job = await _run_nested(frame, branch, frame.context, frame.path)
    _adopt_context(frame, job)
    result = _branch_result(step.name, job, None)
    result.latency_s = _perf() - t0
    result.metadata["executed_branch_key"] = key
    result.metadata["default_branch"] = used_default
    if not job.success:
        which = "default branch" if used_default else f"branch {key!r}"
        result.feedback = (
            f"Conditional step {step.name!r}: {which} (key {key!r}) failed {_failed_at(job)}"
        )
    return result


async def run_pipeline_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Run a nested pipeline as one step, on the parent's context or a fresh one.

    A fresh context is built like the runner builds one: ``initial_prompt``
    from this step's input, the run's ``run_id``, the step's context model
    (the parent's by default) and ``initial_context_data``; the step's
    ``branch_context`` is that context. Cancellation: cancelling the step
    cancels the nested pipeline.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, PipelineStep)
    run: RunState = frame.run
    if step.inherit_context:
        ctx = frame.context
    else:
        model = step.context_model or type(frame.context)
        try:
            ctx = build_context(model, step.initial_context_data, frame.data, run.run_id)
        except PipelineDefinitionError as exc:
            return _failed(step, t0, f"Nested pipeline step {step.name!r}: {exc}", [])
    job = await _run_nested(frame, step.pipeline, ctx, frame.path)
    if step.inherit_context:
        _adopt_context(frame, job)
    result = _branch_result(step.name, job, None if step.inherit_context else job.context)
    result.latency_s = _perf() - t0
    if not job.success:
        result.feedback = f"Nested pipeline step {step.name!r} failed {_failed_at(job)}"
    return result


_KIND_RUNNERS: dict[str, Callable[[ExecutionFrame[Any]], Awaitable[StepResult]]] = {
    "parallel": run_parallel_step,
    "loop": run_loop_step,
    "conditional": run_conditional_step,
    "router": run_router_step,
    "pipeline": run_pipeline_step,
}
