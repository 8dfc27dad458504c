"""The agent-step supervisor: a thin shell executing the commands of the attempt machine.

The decisions are :class:`~flujo_actors.policy.attempt.AttemptMachine`'s;
this module does the I/O: agent calls, validators and plugins, context
updates and rollbacks, governor charges, hooks, sleeps, fallback, cache.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, assert_never

import attrs
import trio

from .. import partial, step_cache
from ..policy import attempt_messages as msg
from ..policy.attempt import AttemptMachine, fallback_feedback
from ..policy.deadline import attempt_deadline, blocked_message, overran, timed_out_message
from ..policy.failure import failure_metadata
from ..policy.merge import IDENTITY_RULE, identity_change
from ..policy.usage import NO_USAGE, charge_of, usage_of
from ..results import ZERO, StepResult, StreamRetried, add_usd
from ..steps.agent import AgentStep, check_fallback_chain
from .core import run_step
from .invoke import FROM_OUTPUT, invoke, streams_inline
from .isolation import IMMUTABLE_INPUT, ContextSnapshot, Pristine, immutable, start_snapshot
from .outputs import Rejection, apply_context_update, check_output
from .state import breached

if TYPE_CHECKING:
    from ..frames import ExecutionFrame
    from ..steps.kinds import AnyStep

__all__ = ["run_agent_step"]

_perf = time.perf_counter


async def run_agent_step(
    frame: ExecutionFrame[Any], *, charge: bool = True, _held: list[int | None] | None = None
) -> StepResult:
    """The step supervisor: executes the commands of the step's :class:`AttemptMachine`.

    Every decision (retry or not, the backoff, when usage is charged,
    rollback, fallback, feedback texts) is the machine's (see
    :mod:`flujo_actors.policy.attempt`); this shell only does what it says:
    invoke the agent (:func:`_attempt`), roll the context back, charge the
    governor, tell hooks and the stream's consumer, sleep on trio's clock,
    run the fallback, use the cache. An attempt fails when the agent raises,
    exceeds ``timeout_s`` (an attempt that blocks the event loop, a sync
    agent or ``time.sleep``, cannot be interrupted: if it returns after its
    deadline it has timed out all the same, its output is discarded and its
    usage counted), or its output is rejected by a validator or plugin; each
    attempt gets its own copy of the input. A step with
    ``expected_cost_usd``/``expected_tokens`` reserves that budget first.
    A step whose first attempt needs none of the machine's services calls
    the agent at once and enters the machine only if that attempt fails.

    Cancellation: ``trio.Cancelled`` is never caught, retried or turned into
    a failure; a cancelled step leaves no reservation behind.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, AgentStep)  # the dispatch (or the router) sends agent steps only
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    if run.limited:
        if run.breach_event.is_set():
            await breached()  # the run is over: start nothing new
        if _held is None and (
            step.expected_cost_usd is not None or step.expected_tokens is not None
        ):
            return await _run_reserved(frame, charge)
    ctx = frame.context
    data = frame.data
    spec = step.spec
    assert spec is not None
    checks = bool(step.compiled_validators or step.compiled_plugins)
    config = step.config
    rolls_back = ctx is not None and (spec.accepts_context or checks)
    streams = bool(frame.stream) and streams_inline(frame, step)
    cached = step.cache and run.cache_backend is not None
    first: msg.AttemptEvent | None = None
    if (
        not (rolls_back or streams or cached or step.updates_context)
        and _held is None
        and config.timeout_s is None
        and (type(data) in IMMUTABLE_INPUT or (not config.max_retries and step.fallback is None))
    ):
        # The first attempt needs nothing of the machine (no cache, deadline, input
        # copy, context snapshot, output check or reservation): the agent is called
        # here, and the machine is entered only if that attempt fails (or must ask
        # the governor), with its outcome; what it decides is the same.
        cost, tokens = ZERO, 0
        try:
            output, reading = await invoke(frame, step, data, 1)
            if reading is FROM_OUTPUT:
                reading = (
                    None if type(output) in NO_USAGE else usage_of(output, step_name=step.name)
                )
            if reading is not None:
                cost, tokens = charge_of(reading, step_name=step.name, limits=run.limits)
        except Exception as exc:
            first = msg.Raised(exc, cost, tokens)
        else:
            # Usage that provably cannot breach is told here (the machine would tell it
            # the same way); near a limit the machine asks the governor (once).
            if not (charge and (cost or tokens)) or run.tally(cost, tokens):
                done = StepResult(step.name, output, True, 1, 0.0, cost, tokens, None)
                if run.partials:
                    partial.take(run, frame)  # the step ended: its charged attempts are moot
                done.latency_s = _perf() - t0
                return done
            first = msg.Succeeded(output, cost, tokens)
    machine = AttemptMachine(
        config,
        step.fallback is not None,  # has_fallback
        cached,
        charge,  # charges
        run.limited,  # limited
        _held is not None,  # reserved
        rolls_back,
        streams,
    )
    pristine: Pristine | None = None
    snap: ContextSnapshot | None = None
    identity: Any = None
    miss: step_cache.CacheMiss | None = None
    result: StepResult | None = None
    commands = machine.start()
    if first is not None:
        commands = machine.handle(first)  # the first attempt ran above
    while True:
        following: tuple[msg.AttemptCommand, ...] | None = None
        for command in commands:
            # isinstance, most frequent first: cheaper than a match statement's class patterns.
            if isinstance(command, msg.Invoke):
                attempt_data = data
                if command.attempt == 1:
                    if command.isolated and type(data) not in IMMUTABLE_INPUT:
                        pristine = _pristine(data)
                    if machine.rolls_back:
                        # One snapshot per step, not per attempt: each rollback thaws a copy.
                        snap, identity = start_snapshot(frame.reply_to, ctx)
                if pristine is not None:
                    attempt_data = pristine.thaw()
                following = await _attempt(
                    machine, frame, step, attempt_data, command, checks, identity
                )
            elif isinstance(command, msg.Conclude):
                result = _concluded(step, machine)
            elif isinstance(command, msg.Finish):
                assert result is not None
                if run.partials:
                    partial.take(run, frame)  # the step ended: its charged attempts are moot
                result.latency_s = _perf() - t0
                return result
            elif isinstance(command, msg.Charge):
                # The common case at once: the step's usage told, no reservation to reconcile.
                if (
                    command.interim
                    or _held is not None
                    or not run.tally(command.cost, command.tokens)
                ):
                    await _charge(frame, machine, command, result, _held, t0)
            elif isinstance(command, msg.Rollback):
                if snap is not None:
                    snap.restore(ctx)
            elif isinstance(command, msg.EmitRetried):
                if run.hooks is not None:
                    await run.hooks.retry(frame, command)
            elif isinstance(command, msg.MarkStreamRetried):
                assert frame.on_chunk is not None
                await frame.on_chunk(StreamRetried(step.name, command.attempt, command.feedback))
            elif isinstance(command, msg.Sleep):
                if command.seconds > 0:
                    await trio.sleep(command.seconds)
                else:
                    await trio.lowlevel.checkpoint_if_cancelled()
            elif isinstance(command, msg.LookUpCache):
                hit = await step_cache.lookup(
                    run.cache_backend, step, _step_identity(step), data, ctx
                )
                if isinstance(hit, StepResult):
                    result, following = hit, machine.handle(msg.CacheHit())
                else:
                    miss = hit
                    following = machine.handle(msg.CacheMissed(storable=hit is not None))
            elif isinstance(command, msg.RunFallback):
                assert result is not None
                assert step.fallback is not None
                if run.partials:
                    partial.take(run, frame)  # the primary ended: its record is moot
                result = await _run_fallback(frame, result, step.fallback)
                following = machine.handle(msg.FallbackFinished(result.success))
            elif isinstance(command, msg.StoreInCache):
                # Through the fallback too: the cache answers for the step's output.
                assert result is not None
                assert miss is not None
                await step_cache.store(run.cache_backend, step, miss, result, ctx)
            elif isinstance(command, msg.Reraise):
                raise command.error
            else:
                assert_never(command)
        assert following is not None
        commands = following


def _pristine(data: Any) -> Pristine | None:
    """A pristine copy of a mutable input, so every attempt gets its own (None: not needed)."""
    if type(data) in IMMUTABLE_INPUT or immutable(data):
        return None
    try:
        return Pristine(data)
    except Exception:
        # Not copyable (a lock, a socket, ...): attempts share it, since
        # refusing to run the step would be worse than weaker isolation.
        return None


async def _attempt(
    machine: AttemptMachine,
    frame: ExecutionFrame[Any],
    step: AgentStep,
    data: Any,
    command: msg.Invoke,
    checks: bool,
    identity: Any,
) -> tuple[msg.AttemptCommand, ...]:
    """Run one attempt (call the agent, read its usage, check its output); the machine's answer."""
    ctx = frame.context
    timeout = command.timeout_s
    timed_out = False
    cost = ZERO
    tokens = 0
    output: Any = None
    try:
        late = 0.0
        if timeout is None:
            output, reading = await invoke(frame, step, data, command.attempt)
        else:
            started = trio.current_time()
            with trio.CancelScope(deadline=attempt_deadline(started, timeout)) as scope:
                output, reading = await invoke(frame, step, data, command.attempt)
            if scope.cancelled_caught:
                timed_out = True
                raise TimeoutError(timed_out_message(step.name, timeout))
            # Blocking code cannot be interrupted: a late return has timed out too.
            late = overran(started, trio.current_time(), timeout)
        if reading is FROM_OUTPUT:
            reading = None if type(output) in NO_USAGE else usage_of(output, step_name=step.name)
        if reading is not None:
            run = frame.run
            assert run is not None  # every frame a run executes carries it
            cost, tokens = charge_of(reading, step_name=step.name, limits=run.limits)
        if late:
            timed_out = True
            raise TimeoutError(blocked_message(step.name, timeout, late))
        if checks:
            output = await check_output(step, output, ctx)
        refused: str | None = None
        if identity is not None:
            changed = identity_change(ctx, identity)
            if changed is not None:
                refused = f"Step {step.name!r} changed {changed}: {IDENTITY_RULE}"
        if refused is None and step.updates_context:
            refused = apply_context_update(step, output, ctx)
    except Rejection as rej:
        # rej.__cause__: a validator's or plugin's own exception, if it raised.
        event: msg.AttemptEvent = msg.Rejected(
            rej.by, rej.message, output, rej.__cause__, cost, tokens
        )
    except Exception as exc:
        if timed_out and isinstance(exc, TimeoutError):
            event = msg.TimedOut(exc, cost, tokens)
        else:
            event = msg.Raised(exc, cost, tokens)
    else:
        if refused is None:
            return machine.succeed(output, cost, tokens)
        event = msg.Refused(refused, cost, tokens)
    return machine.handle(event)


def _concluded(step: AgentStep, machine: AttemptMachine, *, so_far: bool = False) -> StepResult:
    """The step's result from the machine's state (``so_far``: a failed attempt's, before a retry)."""
    m = machine
    output = None if so_far else m.output
    result = StepResult(
        step.name, output, m.succeeded, m.attempts, 0.0, m.cost, m.tokens, m.feedback
    )
    if m.error_type is not None:
        result.metadata["error_type"] = m.error_type
    if m.failure is not None and not so_far:
        result.metadata.update(failure_metadata(m.failure))
    return result


async def _charge(
    frame: ExecutionFrame[Any],
    machine: AttemptMachine,
    command: msg.Charge,
    result: StepResult | None,
    held: list[int | None] | None,
    t0: float,
) -> None:
    """Report usage to the governor: a failed attempt's before a retry, or the step's."""
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    if command.interim:
        # A failed attempt's usage before the retry, with the step's result so far.
        assert isinstance(frame.step, AgentStep)
        failed = _concluded(frame.step, machine, so_far=True)
        failed.latency_s = _perf() - t0
        await run.charge(failed, command.cost, command.tokens, owner=frame)
        # Cancelled before it ends (a breach elsewhere), the step shows what it charged.
        partial.record(run, frame, failed)
        return
    assert result is not None
    rid = None
    if held is not None:
        rid, held[0] = held[0], None
    result.latency_s = _perf() - t0
    # A cache hit reconciles its reservation and is nothing the step did.
    owner = frame if machine.attempts else None
    await run.charge(result, command.cost, command.tokens, rid, owner)


async def _run_reserved(frame: ExecutionFrame[Any], charge: bool) -> StepResult:
    """Run an agent step that reserves its expected usage before it starts.

    The reservation is reconciled with the step's actual usage, or released
    if the step ends without reporting (cancelled, or an internal error).
    """
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    assert isinstance(frame.step, AgentStep)
    rid = await run.reserve(frame.step)
    held: list[int | None] = [rid]
    try:
        return await run_agent_step(frame, charge=charge, _held=held)
    finally:
        if held[0] is not None:
            run.release(held[0])


async def _run_fallback(
    frame: ExecutionFrame[Any], primary: StepResult, fallback: AnyStep
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
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    assert isinstance(frame.step, AgentStep)
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
    feedback = fallback_feedback(fallback.name, fb.success, fb.feedback, primary.feedback)
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


def _step_identity(step: AgentStep) -> str:
    # Decided when the step was built: name, agent identity and agent state
    # (or its cache_key); see policy/cache_key.py.
    identity = step.cache_identity
    if identity is None:
        from ..policy.cache_key import step_cache_identity

        identity = step_cache_identity(step.name, step.agent, cache_key=step.cache_key)
    return identity
