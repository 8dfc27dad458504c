"""One run of a :class:`~flujo_actors.runner.Flujo`, from its start to its result.

What ``Flujo._execute`` runs once a run id is claimed: the context, the
ledger and the per-run services (:class:`~flujo_actors.run.core.RunState`),
the run's nursery under its :class:`~flujo_actors.actors.run_supervisor.RunSupervisor`
with the governor (started lazily) and the persistence actor (with a
backend), the top-level chain of step actors, then the
:class:`~flujo_actors.results.PipelineResult`. A run that nothing can
cancel from inside (no limits, hooks or backend) opens its nursery only
when its governor first gets a message.

This module holds the run machinery's imports (the run core and every step
kind's executor, the governor, the actor kernel): :class:`Flujo` loads it
when the first runner is built, so ``from flujo_actors import Flujo`` stays
light.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import trio

from .actors.actor import run_turn
from .actors.run_supervisor import RunSupervisor
from .call_sites import CALL_SITES
from .context import build_context
from .errors import UsageLimitExceededError, only_cancelled, sole_error
from .governor import Governor, GovernorBreach
from .partial import contains
from .policy.ledger import UsageLedger
from .results import PausedRun, PipelineResult
from .run.core import Chain, Job, RunState
from .runner_checkpoints import Recorder, first_checkpoint
from .runner_recovery import keep_lease

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .actors.actor import ActorCell
    from .persistence import PersistenceActor, ResumePoint
    from .results import StepResult
    from .run.core import StepActor
    from .runner import Flujo

__all__ = ["LiveRun", "execute_claimed"]


async def execute_claimed(
    runner: Flujo, initial_input: Any, run_id: str, on_chunk: Any, resume: ResumePoint | None
) -> PipelineResult:
    if resume is not None:
        initial_input = resume.initial_input
        context = resume.context
    else:
        context = build_context(
            runner.context_model, runner.initial_context_data, initial_input, run_id
        )
        if runner._backend is not None:
            # Durable before anything starts (so a crash in step 0 resumes too),
            # and atomic: a run id the backend knows is refused here, before
            # any hook or step runs.
            base = first_checkpoint(
                runner.pipeline, runner._pipeline_fingerprint(), run_id, initial_input, context
            )
            await runner._backend.create_run(base)
    limits = runner.usage_limits
    ledger = UsageLedger(
        limits.total_cost_usd_limit if limits else None,
        limits.total_tokens_limit if limits else None,
    )
    if resume is not None:
        ledger.cost, ledger.tokens = resume.cost, resume.tokens
    run = RunState(
        run_id,
        resources=runner.resources,
        limits=limits,
        limited=ledger.limited,
        cache_backend=runner.cache_backend,
        executor=runner.executor,
        call_sites=CALL_SITES,
    )
    observer = None
    if runner._hook_set is not None or runner.trace or _logging_enabled():
        from .hooks import RunObserver

        observer = RunObserver.create(
            runner._hook_set, run_id=run_id, pipeline=runner.pipeline.name, trace=runner.trace
        )
    if observer is not None:
        run.hooks = observer
        await observer.run_started(initial_input)
    job = Job(context, (), None, on_chunk)
    start, data = 0, initial_input
    if resume is not None:
        job.history.extend(resume.history)
        start, data = resume.index, resume.data
    run.track = runner._keyed or runner._backend is not None
    if runner._human:
        from .run.human import HumanState

        run.human = HumanState(resume.answers if resume is not None else None)
    persistence: PersistenceActor | None = None
    recorder: Recorder | None = None
    if runner._backend is not None:
        from .persistence import PersistenceActor, open_positions

        persistence = PersistenceActor(runner._backend, run.dead_letters, run.registry)
        run.positions = open_positions(
            persistence, run_id, resume.positions if resume is not None else None
        )
        job.on_step = recorder = Recorder(
            runner.pipeline,
            run_id,
            persistence,
            resume.base if resume is not None else base,
            ledger,
            run.human,
            resume.new_fingerprint if resume is not None else None,
            positions=run.positions,
        )
    run_nursery = _run_nursery_on_asyncio if runner._uses_asyncio else _run_nursery
    try:
        async with keep_lease(runner.state_backend, run_id):
            try:
                breach = await run_nursery(
                    runner,
                    run,
                    ledger,
                    job,
                    start,
                    data,
                    persistence,
                    resume,
                    context,
                    initial_input,
                )
            except BaseException as exc:
                # Under the lease (a lost lease cancels the body: no error leaf here).
                if recorder is not None and _errored(exc):
                    await recorder.failed(exc)  # an ended run is never stored as running
                raise
            if recorder is not None and breach is not None:
                await recorder.breached(
                    _with_breaching_step(job.history, breach),
                    job.context,
                    ledger.cost,
                    ledger.tokens,
                )
    except BaseException as exc:
        if recorder is not None and only_cancelled(exc):
            await recorder.cancelled()  # the stored status says what happened
        if isinstance(exc, BaseExceptionGroup):
            # An error escaping a run (a hook, a backend, an internal bug) is raised
            # as itself (its own cause kept), not wrapped in the run nursery's group.
            leaf = sole_error(exc)
            raise leaf from leaf.__cause__
        raise
    finally:
        runner._live.pop(run_id, None)
    paused = run.human is not None and bool(run.human.pending)
    if runner.state_backend is None and runner._backend is not None and not paused:
        # Kept in memory only while paused (there is no backend to keep it).
        await runner._backend.delete_state(run_id)
    if observer is None:
        return _finish(run_id, ledger, job, breach, run.human)
    try:
        result = _finish(run_id, ledger, job, breach, run.human)
    except UsageLimitExceededError as exc:
        step = breach.result.name if breach is not None and breach.result is not None else None
        if exc.result is not None:
            await observer.run_finished(exc.result, exc, step)
        raise
    await observer.run_finished(result)
    return result


async def _run_nursery_on_asyncio(runner: Flujo, *args: Any) -> GovernorBreach | None:
    """:meth:`_run_nursery` inside the run's asyncio loop (for asyncio steps)."""
    from .bridge.steps import open_run_loop

    async with open_run_loop():
        return await _run_nursery(runner, *args)


async def _run_nursery(
    runner: Flujo,
    run: RunState,
    ledger: UsageLedger,
    job: Job,
    start: int,
    data: Any,
    persistence: PersistenceActor | None,
    resume: ResumePoint | None,
    context: Any,
    initial_input: Any,
) -> GovernorBreach | None:
    """Run the top-level chain under the run's nursery; the governor's breach, if any."""
    run_id = run.run_id
    if persistence is None and not run.limited and run.hooks is None:
        # Nothing can cancel the run from inside (no limit to breach, no hook to
        # fail) and no actor must start with it: its nursery opens only if the
        # governor gets a message (see _run_deferred).
        await _run_deferred(runner, run, ledger, job, start, data)
        return None  # no limits: no breach
    async with trio.open_nursery() as nursery:
        # The run's actors run under one supervisor (ONE_FOR_ALL, intensity 0:
        # see flujo_actors.actors.run_supervisor); each starts only if the run
        # uses it: the governor at its first message, persistence with a backend.
        supervisor = RunSupervisor(run_id, nursery)
        governor = Governor(
            ledger,
            run.breach_event,
            nursery.cancel_scope.cancel,
            run.dead_letters,
            run.registry,
        )
        governor.start_lazily(supervisor)
        run.governor = governor
        runner._live[run_id] = LiveRun(run, ledger, trio.current_time())
        if run.hooks is not None:
            run.hooks.bind(nursery.cancel_scope.cancel)
        if persistence is not None:
            supervisor.start(persistence.run, persistence.cell)
        chain = Chain(runner.pipeline.steps, nursery, run)
        if start < len(runner.pipeline.steps):
            await chain.execute(job, data, start)
        # Graceful stop: the governor drains the usage messages still queued
        # (told, not asked), then exits; the nursery waits for it.
        governor.close()
        if persistence is not None:
            persistence.close()
    return governor.breached


async def _run_deferred(
    runner: Flujo, run: RunState, ledger: UsageLedger, job: Job, start: int, data: Any
) -> None:
    """A run whose nursery opens when its governor is first told something (if ever).

    Without limits, hooks or persistence a run's only actor of its own is the
    governor, and most runs of plain steps report no usage: the top-level
    chain's turns run on this task with no nursery (one nursery and its
    schedule point less per run). A usage report asks the governor to start;
    it is told (nothing can breach), so nobody waits for it: the run's
    nursery opens after the top-level step that reported, the governor
    starts in it and the remaining steps run beside it. Fan-out steps open
    nurseries of their own, so the top-level chain needs none.

    Cancellation: a checkpoint first (a cancelled caller starts no step,
    and a run always lets other tasks run); a cancel propagates from the
    step running, as with a nursery.
    """
    supervisor = _DeferredSupervisor(run.run_id)

    def open_governor() -> Governor:
        governor = Governor(
            ledger, run.breach_event, supervisor.cancel, run.dead_letters, run.registry
        )
        governor.start_lazily(supervisor)
        return governor

    # Built at its first use (a usage report, a snapshot): most runs of plain steps never do.
    run.governor_opener = open_governor
    runner._live[run.run_id] = LiveRun(run, ledger, trio.current_time())
    steps = runner.pipeline.steps
    actor: tuple[StepActor, ActorCell] | None = None
    # A run is a schedule point, as the nursery's exit made it: a loop of runs of
    # sync steps must not starve the other tasks (and a cancelled caller starts nothing).
    await trio.lowlevel.checkpoint()
    if start < len(steps):
        actor = Chain(steps, None, run).send(start, data, job)
        while actor is not None and not supervisor.pending:
            actor = await run_turn(*actor)
    if supervisor.pending:
        async with trio.open_nursery() as nursery:
            supervisor.open(nursery)
            while actor is not None:
                actor = await run_turn(*actor)
            # The governor applies what was told, then exits; the nursery waits for it.
            assert run.governor is not None  # only it starts actors here
            run.governor.close()
    elif run.governor is not None:
        run.governor.close()  # never started: nothing to apply


class _DeferredSupervisor(RunSupervisor):
    """A :class:`RunSupervisor` whose nursery is opened by the run after the first start.

    Actors started before :meth:`open` wait in ``pending`` (None once open).
    """

    __slots__ = ("pending",)

    def __init__(self, run_id: str) -> None:
        # The nursery slot stays empty until open(): nothing may start before then.
        self.run_id = run_id
        self.pending: list[tuple[Callable[[], Awaitable[None]], ActorCell]] | None = []

    def start(self, main: Callable[[], Awaitable[None]], cell: ActorCell) -> None:
        """Start ``main`` now if the nursery is open, else once it opens."""
        if self.pending is None:
            super().start(main, cell)
        else:
            self.pending.append((main, cell))

    def open(self, nursery: trio.Nursery) -> None:
        """The run's nursery is open: start the actors waiting for it."""
        self.nursery = nursery
        pending, self.pending = self.pending, None
        for main, cell in pending or ():
            super().start(main, cell)

    def cancel(self) -> None:
        """Cancel the run's nursery, if open (a run without limits never breaches)."""
        if self.pending is None:
            self.nursery.cancel_scope.cancel()


def _finish(
    run_id: str, ledger: UsageLedger, job: Job, breach: GovernorBreach | None, human: Any
) -> PipelineResult:
    history = job.history
    result = PipelineResult(
        step_history=history,
        total_cost_usd=ledger.cost,
        total_tokens=ledger.tokens,
        final_pipeline_context=job.context,
        success=job.success and breach is None,
        output=job.output if job.success else None,
        run_id=run_id,
    )
    if human is not None and human.pending and breach is None:
        result.status = "paused"
        result.paused = PausedRun(pending=tuple(human.pending))
    if breach is not None:
        _with_breaching_step(history, breach)
        result.output = None
        raise UsageLimitExceededError(breach.message, result)
    return result


def _with_breaching_step(history: list[StepResult], b: GovernorBreach) -> list[StepResult]:
    """``history``, the breaching step appended if it is not in the tree yet (idempotent)."""
    # The breaching step sits in the tree (the last leaf of the last entry); a
    # step kind that did not record its partial result still shows it here.
    if b.result is not None and not contains(history, b.result):
        history.append(b.result)
    return history


def _errored(exc: BaseException) -> bool:
    """Whether an ``Exception`` ended the run (not only cancellations, nor a KeyboardInterrupt).

    A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``,
    ``SystemExit``) is the process going down: the run stays ``"running"``,
    to be resumed (or recovered) like after a crash.
    """
    if isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions if not only_cancelled(e)]
        return bool(leaves) and all(_errored(e) for e in leaves)
    return isinstance(exc, Exception)


def _logging_enabled() -> bool:
    """Whether the ``flujo_actors`` logger would emit INFO records (checked once per run)."""
    logging = sys.modules.get("logging")
    # Never imported: nobody configured logging, so it cannot be enabled.
    if logging is None:
        return False
    logger = _LOGGER.get("flujo_actors")
    if logger is None:
        # Kept: getLogger takes logging's module lock on every call.
        logger = _LOGGER["flujo_actors"] = logging.getLogger("flujo_actors")
    return bool(logger.isEnabledFor(logging.INFO))


#: The ``flujo_actors`` logger, once logging is imported (see _logging_enabled).
_LOGGER: dict[str, Any] = {}


class LiveRun:
    """What :meth:`Flujo.snapshot` needs of a run in progress."""

    __slots__ = ("ledger", "run", "started")

    def __init__(self, run: RunState, ledger: UsageLedger, started: float) -> None:
        self.run = run
        self.ledger = ledger
        self.started = started
