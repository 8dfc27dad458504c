"""The parallel and router step kinds: branches on context copies, merged back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .. import partial
from ..context import context_copier, context_field_names, copy_context, copy_value
from ..policy.merge import IDENTITY_FIELDS, Fork
from ..results import StepResult
from ..steps.dsl import (
    BranchFailureStrategy,
    DynamicParallelRouterStep,
    MergeStrategy,
    ParallelStep,
    Pipeline,
)
from .agent import run_agent_step
from .checkpoint import execute_part, paused_under
from .common import branch_result, concluded, failed, failed_at, sibling_cancelled, sum_usage
from .core import Chain, Job
from .isolation import IMMUTABLE_INPUT, fork_start
from .merging import ContextMerge

if TYPE_CHECKING:
    from ..frames import ExecutionFrame
    from .core import RunState

__all__ = ["run_parallel_step", "run_router_step"]

_perf = time.perf_counter

#: Branches spawned between two checkpoints of the fan-out (see ``_run_branches``).
SPAWN_BATCH: Final = 1024


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
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    data = frame.data
    path = frame.path
    propagate = on_failure is BranchFailureStrategy.PROPAGATE
    shared_input = type(data) in IMMUTABLE_INPUT
    # Taken before any branch runs: what each branch changed is found against it.
    fork = Fork.of(ctx, include) if ctx is not None and merge != MergeStrategy.NO_MERGE else None
    # The run's identity (run_id, initial_prompt) is carried whatever the include keys say.
    copied = None if include is None else include | IDENTITY_FIELDS
    # Filled by each branch's task as it first runs (see run_branch).
    jobs: list[Job | None] = [None] * len(branches)
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
                # A branch paused for human input has not failed: its siblings finish.
                if (
                    propagate
                    and not job.success
                    and first_failure is None
                    and not paused_under(run.human, job.position)
                ):
                    first_failure = job
                    scope.cancel()  # cancels the siblings still running
                pending -= 1
                if pending == 0:
                    all_done.set()

            # Whole copies of one context: their first agents share one rollback snapshot.
            start = fork_start(ctx, run) if ctx is not None and copied is None else None
            whole = context_copier(type(ctx)) if ctx is not None and copied is None else None

            async def run_branch(i: int, bname: str, pipeline: Pipeline) -> None:
                # The branch's task: its job and copies are made as it first runs, so a
                # wide fan-out does not hold every branch's objects before any runs
                # (they would be walked again and again by the cyclic GC).
                # Positional arguments: keywords cost more than the rest of the call here.
                job = Job(
                    whole(ctx)
                    if whole is not None
                    else copy_context(ctx, copied)
                    if ctx is not None
                    else None,
                    (*path, bname),
                    None,
                    None,
                    on_finish,
                    # The branch name is part of its steps' checkpoint positions (when tracked).
                    (*frame.position, bname) if run.track else None,
                    start,
                )
                jobs[i] = job
                chain = Chain(pipeline.steps, nursery, run)
                try:
                    await chain.drive(job, data if shared_input else copy_value(data))
                finally:
                    # A chain and its step actors refer to each other: dropped here, the
                    # branch's chain is freed at once by its refcount instead of waiting,
                    # with thousands of others, for the cyclic GC (which walks them all).
                    chain.actors = None

            for i, (bname, pipeline) in enumerate(branches):
                nursery.start_soon(run_branch, i, bname, pipeline)
                if i % SPAWN_BATCH == SPAWN_BATCH - 1:
                    # Let the branches spawned so far run before spawning more: a wide
                    # fan-out then holds a batch of waiting tasks, not thousands, whose
                    # objects die young instead of being promoted and walked by the
                    # cyclic GC's oldest generation (its full collections walk the heap).
                    await trio.lowlevel.checkpoint()
            await all_done.wait()
    except BaseException:
        # Every branch has unwound (the nursery waited): keep what they did.
        partial.record(run, frame, _branches_cut_short(run, owner, branches, jobs))
        raise

    output: dict[str, Any] = {}
    results: list[StepResult] = []
    ok: list[tuple[str, Any]] = []
    for (bname, _pipeline), spawned in zip(branches, jobs, strict=True):
        # trio runs every task it spawned, so each made its job; None: a sibling failed
        # (PROPAGATE) before this branch was spawned (see SPAWN_BATCH): cancelled too.
        job = Job(None, (*path, bname)) if spawned is None else spawned
        if job.done:
            r = branch_result(bname, job, job.context)
            if r.success:
                output[bname] = r.output
                ok.append((bname, job.context))
            else:
                output[bname] = r
        else:
            # Cancelled because a sibling failed (PROPAGATE).
            assert first_failure is not None
            r = sibling_cancelled(
                bname,
                job,
                f"sibling branch {first_failure.path[-1]!r} of step {owner!r} failed first "
                "(on_branch_failure=PROPAGATE)",
                job.context,
            )
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
            f"{failed_at(first_failure)}",
        )
    if not ok:
        first = jobs[0]
        assert first is not None  # IGNORE cancels nothing: every branch was spawned
        return (
            output,
            results,
            f"Every branch of step {owner!r} failed (on_branch_failure=IGNORE needs one "
            f"success); the first, {branches[0][0]!r}, failed {failed_at(first)}",
        )
    if fork is not None:
        failure = _merge(ctx, fork, ok, merge, owner)
        if failure is not None:
            return output, results, failure
    return output, results, None


def _branches_cut_short(
    run: RunState, owner: str, branches: list[tuple[str, Pipeline]], jobs: list[Job | None]
) -> StepResult:
    """The result of a parallel step a breach cut short: every branch, the breaching one last."""
    results: list[StepResult] = []
    for (bname, _pipeline), job in zip(branches, jobs, strict=True):
        if job is None:
            continue  # not started: the cancel came before its task first ran
        if job.done:
            results.append(branch_result(bname, job, job.context))
        else:
            results.append(partial.cut_short(run, bname, job.history, branch_context=job.context))
    return partial.cut_short(run, owner, partial.last_to_breach(results, run))


def _merge(ctx: Any, fork: Fork, ok: list[tuple[str, Any]], merge: Any, owner: str) -> str | None:
    """Merge the successful branches' contexts; failure feedback or None."""
    merging = ContextMerge(ctx, fork, merge, owner)
    for bname, bctx in ok:
        merging.add(bname, bctx)
    return merging.finish()


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
    # Failed too, the output maps every branch that ran to its output or StepResult.
    return concluded(step, t0, output if results else None, failure, results)


async def run_router_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Ask the router agent for branch names, then run those as a parallel step.

    The router call is supervised like an agent step (retries, usage
    charged to the governor) and is the first entry of ``step_history``;
    the chosen branches follow. Every branch started (failed and cancelled
    ones too) is appended to ``context.executed_branches`` after the merge.
    """
    routing: list[StepResult] = []
    step = frame.step
    assert isinstance(step, DynamicParallelRouterStep)
    # The router agent's call runs as the agent step it was compiled to.
    routed = attrs.evolve(frame, step=step.router)
    try:
        return await _run_router(frame, routed, routing)
    except BaseException:
        run = frame.run
        assert run is not None  # every frame a run executes carries it
        # The record is the router agent's (routing not done) or the branches'.
        done = partial.take(run, frame) or partial.take(run, routed)
        history = routing
        if done is not None:
            history = [*routing, *done.step_history] if routing else [done]
        cut = partial.cut_short(run, frame.step.name, history)
        if routing:
            cut.attempts = routing[0].attempts
        partial.record(run, frame, cut)
        raise


async def _run_router(
    frame: ExecutionFrame[Any], router: ExecutionFrame[Any], routing: list[StepResult]
) -> StepResult:
    t0 = _perf()
    step = frame.step
    assert isinstance(step, DynamicParallelRouterStep)
    # The routing decision is completed work too: replayed on resume, never re-asked.
    routed = await execute_part(router, "@route", run_agent_step)
    routing.append(routed)
    history: list[StepResult] = [routed]
    if not routed.success:
        refused = failed(
            step, t0, f"Router of step {step.name!r} failed: {routed.feedback}", history
        )
        refused.attempts = routed.attempts
        return refused
    choice = routed.output
    names = [choice] if isinstance(choice, str) else choice
    if not isinstance(names, (list, tuple)) or not all(isinstance(x, str) for x in names):
        return failed(
            step,
            t0,
            f"Router of step {step.name!r} must return a branch name or a list of branch "
            f"names, got {choice!r}; available: {list(step.branches)!r}.",
            history,
        )
    unknown = [x for x in names if x not in step.branches]
    if unknown:
        return failed(
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
    cost, tokens = sum_usage(history)
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
