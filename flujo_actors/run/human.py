"""The human-input step kind at run time: answer from the resume, or pause the run.

A human-input step with an answer for its position (validated by the
runner before the resume started, see :mod:`flujo_actors.runner_human`)
returns it as its output and writes it to ``sink_to``. Without one it
*pauses*: it records a :class:`~flujo_actors.results.PendingInput` on the
run's :class:`HumanState` and returns an unsuccessful result marked
``metadata["paused"]``. Everything above a paused position treats it as
"not completed": its chain stops (the steps after it do not start), no
enclosing step is checkpointed, a parallel step's siblings are not
cancelled (they finish, then the run pauses), and the top-level
checkpointer stores the run as paused (see
:mod:`flujo_actors.runner_checkpoints`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..context import context_field_names
from ..results import PendingInput, StepResult
from ..steps.human import HumanInputStep
from .checkpoint import paused_under, position_key
from .invoke import call

if TYPE_CHECKING:
    from ..frames import ExecutionFrame

__all__ = ["HumanState", "paused_under", "run_human_step", "user_key"]

_perf = time.perf_counter


class HumanState:
    """A run's human inputs: the answers brought by a resume, and what waits for one.

    Attributes:
        answers: validated answers by position key (each is used once).
        pending: the inputs this execution paused for, in the order reached.
    """

    __slots__ = ("answers", "pending")

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers: dict[str, Any] = answers or {}
        self.pending: list[PendingInput] = []


def user_key(position: tuple[Any, ...]) -> str:
    """How a user addresses a pending input: its position joined by ``/``."""
    return "/".join(str(p) for p in position)


def _failed(step: HumanInputStep, t0: float, why: str) -> StepResult:
    return StepResult(
        step.name, None, False, 1, _perf() - t0, feedback=f"Human input step {step.name!r}: {why}"
    )


async def run_human_step(frame: ExecutionFrame[Any]) -> StepResult:
    """Return the answer for this position, or pause (see the module docstring).

    Cancellation: nothing to cancel but a callable message being evaluated.
    """
    t0 = _perf()
    step = frame.step
    assert isinstance(step, HumanInputStep)
    run = frame.run
    assert run is not None  # every frame a run executes carries it
    human: HumanState | None = run.human
    key = position_key(frame.position)
    if human is not None and key in human.answers:
        value = human.answers.pop(key)
        sink = step.sink_to
        ctx = frame.context
        if sink is not None:
            if ctx is None or sink not in context_field_names(type(ctx)):
                fields = sorted(context_field_names(type(ctx))) if ctx is not None else []
                return _failed(
                    step,
                    t0,
                    f"sink_to={sink!r} is not a field of the context {type(ctx).__name__} "
                    f"(fields: {fields!r}); add the field to the context model or fix sink_to.",
                )
            object.__setattr__(ctx, sink, value)
        return StepResult(step.name, value, True, 1, _perf() - t0)
    message: Any = step.message
    if step.compiled_message is not None:
        try:
            message = await call(step.compiled_message, frame.data, frame.context)
        except Exception as exc:
            return _failed(step, t0, f"its message callable raised {type(exc).__name__}: {exc}")
    pending = PendingInput(
        key=user_key(frame.position),
        path=frame.path,
        position=frame.position,
        step=step.name,
        message=str(message),
        input_schema=step.schema,
    )
    if human is None:  # the runner gives every run of a pipeline with human steps one
        human = run.human = HumanState()
    human.pending.append(pending)
    result = StepResult(
        step.name,
        None,
        False,
        1,
        _perf() - t0,
        feedback=f"Paused: step {step.name!r} waits for human input: {pending.message}",
    )
    result.metadata["paused"] = True
    return result
