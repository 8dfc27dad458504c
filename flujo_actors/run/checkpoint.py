"""Checkpoints below the top level: completed positions are saved, and replayed on resume.

A *position* is one execution of a step inside a run: the step path plus
every loop iteration (1-based ``int``) and parallel/router branch (its
name) on the way down, e.g. ``("outer", "loop", 3, "fan", "a", "call")``; a
map item would add its index the same way. Each step actor below the top
level runs its step through :func:`execute`: when the run has a state
backend, the finished step's :class:`StepResult` and its context effect
(the changes it made, found the way a cache entry finds them, see
:mod:`flujo_actors.step_cache`) are saved as a
:class:`~flujo_actors.backends.state.PositionRecord` before the next step
of its chain starts. On resume, a position with a record is *replayed*: its
result is rebuilt, its context effect applied and its usage charged,
without running anything, so a loop resumes at the iteration in progress and
a parallel step's completed branches are merged as if they had just
finished. Top-level steps are covered by the run's own checkpoint.

The rule is at-least-once for the step that was running at a crash (it runs
again on resume) and exactly-once for every step whose record was committed.
The last step of a parallel branch or map item does not wait for its
record's commit (nothing follows it in its chain; the fan-out step's own,
waited record is committed after it: see :mod:`flujo_actors.persistence`).

Cancellation: a cancelled step records nothing; a cancel while its record
is being written abandons the wait, not the write.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import attrs

from ..policy.merge import apply_changes
from ..step_cache import changes_since, fork_before
from ..steps.agent import AgentStep

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..frames import ExecutionFrame
    from ..policy.merge import BranchChanges
    from ..results import StepResult
    from ..steps.kinds import AnyStep
    from .core import Job

__all__ = ["Positions", "execute", "execute_part", "paused_under", "position_key"]


# What json.dumps(position, ensure_ascii=False, separators=(",", ":")) uses, made once
# (json.dumps builds an encoder per call when given options).
_KEY_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def position_key(position: tuple[Any, ...]) -> str:
    """The text key of a position (JSON: names and iteration numbers stay distinct).

    Every saved step computes one, so the common shape (step and branch names
    that JSON writes as they are, iteration numbers) is spelled out without
    the encoder; anything else goes through it (same text either way).
    """
    parts = []
    for part in position:
        tp = type(part)
        if tp is str:
            if not (part.isprintable() and '"' not in part and "\\" not in part):
                return _KEY_ENCODER.encode(position)
            parts.append(f'"{part}"')
        elif tp is int:
            parts.append(str(part))
        else:
            return _KEY_ENCODER.encode(position)
    return f"[{','.join(parts)}]"


def paused_under(human: Any, position: tuple[Any, ...]) -> bool:
    """Whether a human-input step at or below ``position`` paused (so it did not complete).

    ``human`` is the run's :class:`~flujo_actors.run.human.HumanState` or None.
    """
    if human is None or not human.pending:
        return False
    n = len(position)
    return any(p.position[:n] == position for p in human.pending)


class Positions:
    """A run's completed positions (loaded on resume) and how new ones are saved.

    The runner builds it (see :func:`flujo_actors.persistence.open_positions`)
    with the functions that encode a record, decode one and save one, so the
    step kinds never depend on the serializer or the backend.

    Attributes:
        done: records not replayed yet, by position key (each replays once).
        stored: every record loaded on resume, by position key (what a
            stored reference to a child resolves against; never popped).
        saved: the results of this execution that have a record (saved, or
            replayed), by ``id()``: the result (kept alive, so the id stays
            its own) and its position. A parent's record refers to them
            instead of encoding them again (O(new work) per record); the
            runner clears it once a top-level step's checkpoint refers to them.
        replayed: how many positions this execution replayed instead of running.
    """

    __slots__ = ("decode", "done", "encode", "replayed", "save", "saved", "stored")

    def __init__(
        self,
        save: Callable[[str, Any, bool], Awaitable[None]],
        encode: Callable[[StepResult, BranchChanges | None, tuple[Any, ...]], Any],
        decode: Callable[[Any, str, tuple[Any, ...]], tuple[StepResult, BranchChanges | None]],
        done: dict[str, Any] | None = None,
    ) -> None:
        self.save = save
        self.encode = encode
        self.decode = decode
        self.done: dict[str, Any] = done or {}
        self.stored: dict[str, Any] = dict(self.done)
        self.saved: dict[int, tuple[StepResult, tuple[Any, ...]]] = {}
        self.replayed = 0


async def execute(
    positions: Positions,
    frame: ExecutionFrame[Any],
    job: Job,
    run_step: Callable[[ExecutionFrame[Any]], Awaitable[StepResult]],
    last: bool = False,
) -> StepResult:
    """Replay the frame's position if it completed before, else run it and save it.

    ``last``: the step is the last of its chain. The record of the last step
    of a fan-out's branch (a job with ``on_finish``: parallel branches, map
    items) is queued, not waited for; every other record is durable when
    this returns.

    Raises:
        SerializationError: the step's result or context effect cannot be
            stored (the message names the step).
    """
    key = position_key(frame.position)
    if positions.done:
        record = positions.done.pop(key, None)
        if record is not None:
            return await _replay(positions, frame, job, record)
    step = frame.step
    # An agent step that cannot see the context cannot change it: no copy to diff.
    fork = fork_before(job.context) if _may_change_context(step) else None
    result = await run_step(frame)
    assert frame.run is not None  # every frame a run executes carries it
    if paused_under(frame.run.human, frame.position):
        return result  # waiting for a human: not completed, nothing to save
    position = frame.position
    record = positions.encode(result, changes_since(fork, job.context), position)
    # A fan-out's branch ends here: the fan-out step's own record waits for this one.
    await positions.save(key, record, not (last and job.on_finish is not None))
    positions.saved[id(result)] = (result, position)
    return result


async def execute_part(
    frame: ExecutionFrame[Any],
    part: str,
    run_part: Callable[[ExecutionFrame[Any]], Awaitable[StepResult]],
) -> StepResult:
    """Run one part of a step (a router's routing call) as a position of its own.

    With a state backend the part is checkpointed at ``(*frame.position,
    part)`` and replayed on resume (a router does not route again, so the
    branches it chose are the ones resumed); without one it just runs.
    """
    assert frame.run is not None  # every frame a run executes carries it
    positions: Positions | None = frame.run.positions
    if positions is None:
        return await run_part(frame)
    sub = attrs.evolve(frame, position=(*frame.position, part))
    return await execute(positions, sub, frame.reply_to, run_part)


def _may_change_context(step: AnyStep) -> bool:
    if not isinstance(step, AgentStep) or step.spec is None:
        return True  # control-flow steps run children that may
    spec = step.spec
    return bool(
        spec.accepts_context
        or step.updates_context
        or step.validators
        or step.plugins
        or step.fallback is not None
    )


async def _replay(
    positions: Positions, frame: ExecutionFrame[Any], job: Job, record: Any
) -> StepResult:
    where = f"the checkpoint of step {frame.step.name!r} at {list(frame.position)!r}"
    result, changes = positions.decode(record, where, frame.position)
    positions.saved[id(result)] = (result, frame.position)
    if changes is not None and job.context is not None:
        apply_changes(job.context, changes)
    positions.replayed += 1
    if result.cost_usd or result.token_counts:
        # The usage was spent before the crash: the resumed run's totals include it.
        assert frame.run is not None  # every frame a run executes carries it
        await frame.run.charge(result, result.cost_usd, result.token_counts)
    return result
