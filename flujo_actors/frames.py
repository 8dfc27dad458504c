"""The message a step actor receives: :class:`ExecutionFrame`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import trio

from .limits import UsageLimits

if TYPE_CHECKING:
    # A frame carries the step it is for and the run's services; only the
    # annotations name their classes (both sit above the value types:
    # tests/test_layers.py). Frames hold live trio objects and are never
    # structured by cattrs, so nothing resolves the annotations at run time.
    from .run.core import RunState  # noqa: TC004
    from .steps.kinds import AnyStep  # noqa: TC004

__all__ = ["ExecutionFrame"]

ContextT = TypeVar("ContextT")


# Not slotted: one frame is built per step execution, and a frozen slotted class
# writes each field through object.__setattr__ (about twice the cost of the whole
# frame when its fields go straight into the instance dict, as attrs does for
# frozen classes without slots). Still frozen: assigning a field raises.
@attrs.frozen(slots=False)
class ExecutionFrame(Generic[ContextT]):
    """Everything one step execution needs, as one immutable message.

    Attributes:
        step: the step to execute (of any kind).
        data: the step's input.
        context: the live context of the pipeline the step belongs to.
        resources: the run's shared resources (passed to agents that accept them).
        limits: the run's usage limits, if any.
        stream: whether chunks of a streaming agent are forwarded live.
        on_chunk: where chunks go when ``stream`` is set.
        breach_event: set by the governor when the run's limits are breached.
        context_setter: replaces the context seen by the rest of this pipeline.
        run: the run's services (governor, hooks, backends; opaque to users),
            None for a frame built outside a run (it cannot be executed).
        path: where the step sits in the pipeline tree, e.g. ``("fan", "a", "s1")``.
        nursery: where the step may start child actors (its chain's nursery):
            cancelling it cancels the step and everything beneath it.
        reply_to: the job (one execution of a pipeline) the step belongs to:
            the step's result is recorded there, and the job's last step (or a
            failure) completes it, which answers whoever started the pipeline
            (the runner, or a parent control-flow step); opaque.
        position: which execution of the step this is: ``path`` plus the loop
            iterations (1-based ints) on the way down, and the branch names;
            it names the step's checkpoint and its ``idempotency_key``.
    """

    step: AnyStep
    data: Any
    context: ContextT
    resources: Any = None
    limits: UsageLimits | None = None
    stream: bool = False
    on_chunk: Callable[[Any], Awaitable[None]] | None = None
    breach_event: trio.Event | None = None
    context_setter: Callable[[ContextT], None] | None = None
    run: RunState | None = None
    path: tuple[str, ...] = ()
    nursery: trio.Nursery | None = None
    reply_to: Any = None
    position: tuple[str | int, ...] = ()
