"""The agent-step supervisor: the attempt loop, validators and plugins, fallback, cache use."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .. import partial, step_cache
from .._pydantic_compat import is_pydantic_model
from ..context import context_field_names
from ..errors import AsyncioInTrioError, ExecutorLost, PricingNotConfiguredError, UsageReportError
from ..policy.failure import failure_metadata
from ..policy.merge import IDENTITY_ORDER, IDENTITY_RULE, identity_change, identity_of
from ..policy.retry import Action, AttemptPolicy, is_retried
from ..policy.usage import NO_USAGE, charge_of, usage_of
from ..results import ZERO, StepResult, StreamRetried, add_usd, sub_usd
from ..steps.callables import LATE, settle
from ..steps.dsl import PluginOutcome, Step, check_fallback_chain
from .core import breached, run_step
from .invoke import FROM_OUTPUT, call, invoke, no_stream, streams_inline
from .isolation import IMMUTABLE_INPUT, ContextSnapshot, Pristine, immutable

if TYPE_CHECKING:
    from decimal import Decimal

    from ..frames import ExecutionFrame
    from .core import RunState

__all__ = ["run_agent_step"]

_perf = time.perf_counter


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
            ok = await call(v, output, ctx)
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
                outcome = await settle(outcome, no_stream)
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
            await breached()  # the run is over: start nothing new
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
    pristine: Pristine | None = None
    if (
        (max_attempts > 1 or fallback is not None)
        and type(data) not in IMMUTABLE_INPUT
        and not immutable(data)
    ):
        try:
            pristine = Pristine(data)
        except Exception:
            # Not copyable (a lock, a socket, ...): attempts share it, since
            # refusing to run the step would be worse than weaker isolation.
            pristine = None
    checks = bool(step.compiled_validators or step.compiled_plugins)
    # One snapshot per step, not per attempt: each rollback thaws a fresh copy.
    snap = ContextSnapshot(ctx) if ctx is not None and (spec.accepts_context or checks) else None
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
                output, reading = await invoke(frame, step, attempt_data, attempts)
            else:
                started = trio.current_time()
                with trio.CancelScope(deadline=started + timeout) as scope:
                    output, reading = await invoke(frame, step, attempt_data, attempts)
                if scope.cancelled_caught:
                    timed_out = True
                    raise TimeoutError(f"step {step.name!r} timed out after {timeout} s")
                # Blocking code (a sync agent, time.sleep) cannot be interrupted: an
                # attempt that returns after its deadline has still timed out.
                late = trio.current_time() - started
                if late <= timeout:
                    late = 0.0
            if reading is FROM_OUTPUT:
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
        if frame.stream and streams_inline(frame, step):
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
        from ..policy.cache_key import step_cache_identity

        identity = step_cache_identity(step.name, step.agent, cache_key=step.cache_key)
    return identity
