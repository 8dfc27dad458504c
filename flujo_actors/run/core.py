"""The run core: per-run services, jobs, chains of step actors, and the step dispatch.

How a frame travels (one way, through mailboxes):

1. ``Flujo.run_async`` (:mod:`flujo_actors.runner`) opens the run's nursery
   under a :class:`~flujo_actors.actors.run_supervisor.RunSupervisor` and
   calls :meth:`Chain.execute` on the top-level pipeline with a :class:`Job`.
2. :meth:`Chain.send` builds step 0's :class:`~flujo_actors.frames.ExecutionFrame`
   (``reply_to`` = the job) and puts it in that step actor's mailbox; the
   chain's task runs the actor's turn (:func:`~flujo_actors.actors.run_turn`).
3. :class:`StepActor` runs :func:`run_step`. For a parallel step
   (:mod:`.parallel`) each branch gets a job and a chain of its own on a task
   of its own (:meth:`Chain.start`); the branch's leaf agent step
   (:mod:`.agent`) receives its frame the same way, and the branch's last
   step replies to the branch job (:meth:`Job.finish`), which tells the
   parallel step. Loops (:mod:`.loop`), conditionals and nested pipelines
   (:mod:`.nested`) do the same with one job per iteration or sub-pipeline.
4. The step actor records its result on the job and sends the next frame to
   the next step actor's mailbox; the last one replies to the run's job, and
   the runner builds the :class:`~flujo_actors.results.PipelineResult`.

:func:`run_step` runs a frame's step of any kind through the exhaustive
``match`` of :mod:`.dispatch`. The step kinds' modules sit above this one
(their steps run chains of step actors, and an agent's fallback may be any
step), so this module imports none of them: :mod:`flujo_actors.run`
installs the dispatch when the package is first imported, before any of its
modules can be used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import trio

from .. import partial
from ..actors.actor import Actor, ActorCell, run_turn
from ..actors.mailbox import OneShotMailbox
from ..actors.oneshot import OneShotCell
from ..errors import FlujoInternalError
from ..frames import ExecutionFrame
from ..policy.idempotency import POSITION
from ..steps.agent import AgentStep
from . import checkpoint
from .state import RunState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ..results import StepResult
    from ..steps.base import Pipeline
    from ..steps.kinds import AnyStep

__all__ = [
    "Chain",
    "Job",
    "RunState",
    "StepActor",
    "StepRunner",
    "install_dispatch",
    "run_pipeline",
    "run_step",
]


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
        "position",
        "start",
        "success",
    )

    def __init__(
        self,
        context: Any,
        path: tuple[str, ...] = (),
        on_step: Callable[[int, StepResult, Job], Awaitable[None]] | None = None,
        on_chunk: Callable[[Any], Awaitable[None]] | None = None,
        on_finish: Callable[[Job], None] | None = None,
        position: tuple[str | int, ...] | None = None,
        start: Any = None,
    ) -> None:
        self.context = context
        self.history: list[StepResult] = []
        #: Whether the job finished (a plain flag: nobody waits on a job, its
        #: ``on_finish`` or the chain's return says when).
        self.done = False
        self.output: Any = None
        self.success = True
        self.path = path
        # The path plus loop iterations (see ExecutionFrame.position).
        self.position = path if position is None else position
        self.on_step = on_step
        self.on_chunk = on_chunk
        self.on_finish = on_finish
        #: Set by a fan-out whose branches start on copies of one context: its
        #: rollback snapshot and identity, taken once for every branch (see
        #: :func:`~flujo_actors.run.isolation.fork_start`); the job's first agent
        #: takes it instead of snapshotting its own copy.
        self.start = start

    def set_context(self, ctx: Any) -> None:
        self.context = ctx

    def finish(self, last: StepResult | None) -> None:
        if last is not None:
            self.output = last.output
            self.success = last.success
        self.done = True
        if self.on_finish is not None:
            self.on_finish(self)


class StepActor(Actor):
    """The actor of one step position in a chain; its messages are ExecutionFrames.

    Each frame it receives carries the step, its input, the context and the
    job it belongs to (``frame.reply_to``). It executes the step
    (:func:`run_step`), records the :class:`StepResult` on the job, then
    either sends the next step's frame to the next actor's mailbox
    (:meth:`Chain.send`) and returns that actor's cell, or, after the last
    step or a failure, replies to the job (:meth:`Job.finish`), which is how
    a branch, a loop body or a nested pipeline answers the control-flow step
    that started it, and returns None.
    """

    def __init__(self, chain: Chain, index: int) -> None:
        self.chain = chain
        self.index = index
        self.step = chain.steps[index]
        self.last = index == len(chain.steps) - 1
        self.name = self.step.name
        # Decided once per actor: an agent step (the most frequent kind, and every map
        # item's body) goes straight to its executor, one coroutine and match less per frame.
        self.execute: StepRunner = _run_agent if isinstance(self.step, AgentStep) else _dispatch

    async def handle(self, message: Any) -> Any:
        frame: ExecutionFrame[Any] = message
        job: Job = frame.reply_to
        run = self.chain.run
        hooks = run.hooks
        if run.track:
            # Cheap (a tuple): the key itself is derived only for agents that ask for it.
            POSITION.set((run.run_id, frame.position))
        try:
            if run.positions is not None and job.position:
                # Below the top level with a state backend: replayed or checkpointed.
                result = await checkpoint.execute(run.positions, frame, job, self._run, self.last)
            elif hooks is None:
                result = await self.execute(frame)  # run_step's body: one frame less per step
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
        if (
            result.success
            and not self.last
            and not checkpoint.paused_under(run.human, job.position)
        ):
            # A cancelled run starts no successor (a chain of sync steps has no
            # checkpoint of its own and would otherwise run to its end).
            await trio.lowlevel.checkpoint_if_cancelled()
            return self.chain.send(self.index + 1, result.output, job)
        job.finish(result)
        return None

    async def _run(self, frame: ExecutionFrame[Any]) -> StepResult:
        assert frame.run is not None  # every frame a run executes carries it
        hooks = frame.run.hooks
        if hooks is None:
            return await run_step(frame)
        return await hooks.observe_step(frame, self.index, run_step)  # type: ignore[no-any-return]


class Chain:
    """Runs one pipeline's steps as step actors, one frame at a time.

    :meth:`send` builds the :class:`ExecutionFrame` of step ``index`` for a
    job and puts it in that step's actor's mailbox; the chain's task then
    runs that actor's turn (:func:`~flujo_actors.actors.run_turn`), whose
    value names the next actor to run (the one it sent the next frame to).
    A sequential chain's actors never run at the same time, so they share
    one task: the caller's (:meth:`execute`) or one started in ``nursery``
    (:meth:`start`, a parallel branch). Only a fan-out's chains start tasks:
    the others' ``nursery`` may be None (a run without a nursery of its own).

    A single-use chain's actor gets exactly one frame: its mailbox is a
    :class:`~flujo_actors.actors.mailbox.OneShotMailbox`, and it leaves the
    run's registry once it handed its output on. A *reusable* chain (a loop
    body) keeps its actors, each with a bounded
    :class:`~flujo_actors.actors.mailbox.Mailbox`, for the next frames until
    :meth:`close`.
    """

    __slots__ = ("actors", "cells", "nursery", "run", "steps")

    def __init__(
        self,
        steps: Sequence[AnyStep],
        nursery: trio.Nursery | None,
        run: RunState,
        *,
        reusable: bool = False,
    ) -> None:
        self.steps = steps
        self.nursery = nursery
        self.run = run
        self.cells: list[tuple[StepActor, ActorCell] | None] | None = (
            [None] * len(steps) if reusable else None
        )
        # A single-use chain's step actors, made on first use: a step actor holds no
        # per-frame state, so the jobs of a chain many run on (a map step's items)
        # share them; each frame still gets a cell (its mailbox) of its own.
        self.actors: list[StepActor | None] | None = None

    def frame(self, index: int, data: Any, job: Job) -> ExecutionFrame[Any]:
        """The frame that runs step ``index`` of ``job`` on ``data``."""
        run = self.run
        step = self.steps[index]
        stream = job.on_chunk is not None and index == len(self.steps) - 1
        return ExecutionFrame(
            step,
            data,
            job.context,
            run.resources,
            run.limits,
            stream,
            job.on_chunk if stream else None,
            run.breach_event,
            job.set_context,
            run,
            (*job.path, step.name),
            self.nursery,
            job,
            # Decided per run: only checkpoints, human input and idempotency keys need it.
            (*job.position, step.name) if run.track else (),
        )

    def send(self, index: int, data: Any, job: Job) -> tuple[StepActor, ActorCell]:
        """Put step ``index``'s frame in its actor's mailbox; the actor (created if new).

        Never blocks: a reused actor's mailbox holds at most the one frame
        of the iteration in flight.
        """
        frame = self.frame(index, data, job)
        run = self.run
        cells = self.cells
        if cells is None:
            cell: ActorCell = OneShotCell(
                frame.step.name,
                run.dead_letters,
                OneShotMailbox(frame, full=True),
                run.registry,
                "step",
                frame.path,
            )
            run.registry.add(cell)
            actors = self.actors
            if actors is None:
                actors = self.actors = [None] * len(self.steps)
            actor = actors[index]
            if actor is None:
                actor = actors[index] = StepActor(self, index)
            return actor, cell
        entry = cells[index]
        if entry is None:
            cell = ActorCell(
                frame.step.name,
                16,
                run.dead_letters,
                registry=run.registry,
                kind="step",
                path=frame.path,
            )
            run.registry.add(cell)
            entry = cells[index] = (StepActor(self, index), cell)
        entry[1].mailbox.put_nowait(frame)
        return entry

    async def drive(self, job: Job, data: Any, index: int = 0) -> None:
        """Run ``job`` from step ``index`` on the calling task: frame sent, then turn after turn.

        The body of a branch's task (:meth:`start`); a fan-out that makes its
        jobs on their own tasks awaits it there. Cancellation: propagates from
        the step running (partial results record what it did).
        """
        actor: tuple[StepActor, ActorCell] | None = self.send(index, data, job)
        while actor is not None:
            actor = await run_turn(*actor)

    def start(self, job: Job, data: Any) -> None:
        """Start ``job`` on a task of its own in ``nursery``, without waiting (a branch).

        The first frame is sent (and its actor created) when that task first
        runs: a fan-out spawns all its branches before any runs, and objects
        made on the task die with its turn instead of waiting, thousands at
        once, for the cyclic garbage collector to walk them.
        """
        assert self.nursery is not None, "a fan-out's chain has its fan-out's nursery"
        self.nursery.start_soon(self.drive, job, data)

    async def execute(self, job: Job, data: Any, index: int = 0) -> Job:
        """Run the pipeline (from step ``index``) for ``job`` on this task; return when done.

        Cancellation: a cancelled caller starts nothing (checked before the
        first step starts, so a deep nesting of sync steps cannot keep
        starting levels after a cancel).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.drive(job, data, index)
        return job

    def close(self) -> None:
        """A reusable chain's actors stop: their mailboxes close, they leave the registry."""
        if self.cells is not None:
            registry = self.run.registry
            for entry in self.cells:
                if entry is not None:
                    cell = entry[1]
                    for frame in cell.mailbox.close():
                        cell._dead(frame, "stopped")
                    cell.state = "stopped"
                    registry.discard(cell)


async def run_pipeline(
    pipeline: Pipeline,
    run: RunState,
    context: Any,
    data: Any,
    path: tuple[str, ...],
    nursery: trio.Nursery | None,
) -> Job:
    """Run a sub-pipeline to completion; its step actors live in ``nursery``."""
    return await Chain(pipeline.steps, nursery, run).execute(Job(context, path), data)


#: Runs a frame's step and returns its result (never raises for a step failure).
StepRunner: TypeAlias = "Callable[[ExecutionFrame[Any]], Awaitable[StepResult]]"


async def _not_installed(frame: ExecutionFrame[Any]) -> StepResult:
    raise FlujoInternalError("the step dispatch is not installed (import flujo_actors.run)")


_dispatch: StepRunner = _not_installed
#: The agent kind's executor, which the dispatch would reach for an AgentStep.
_run_agent: StepRunner = _not_installed


def install_dispatch(dispatch: StepRunner, agent: StepRunner) -> None:
    """Install the dispatch on step kinds and the agent kind's executor.

    Done once by :mod:`flujo_actors.run`; ``agent`` must be what ``dispatch``
    runs for an :class:`~flujo_actors.steps.agent.AgentStep`.
    """
    global _dispatch, _run_agent
    _dispatch = dispatch
    _run_agent = agent


async def run_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Execute the frame's step by its kind; never raises for a step failure."""
    return await _dispatch(frame)
