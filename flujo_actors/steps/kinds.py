"""The closed set of step kinds: :data:`AnyStep`, the union every dispatch matches on.

Each kind is a sibling class on :class:`~.base.StepBase` with exactly the
options it honours. Code that handles steps matches on the class and ends
with ``typing.assert_never``, so mypy proves every kind is handled (see
:func:`flujo_actors.run.dispatch.run_step`).

Adding a kind: define its class in its own module of this package (an
``attrs.define(eq=False, repr=False)`` subclass of ``StepBase`` with a
``kind`` label and a ``_validate`` that checks and compiles its options,
decorated with ``options.refuse_unhonoured``), add it to :data:`AnyStep`
below and its factory to ``dsl.Step``, then let mypy show each ``match``
that needs a ``case`` for it (the dispatch, :func:`agent_steps`,
``runner_args``).

Only the agent and nested-pipeline kinds load with this module: the control,
map and human kinds load on first use (a plain pipeline of agent steps never
imports them, which keeps ``from flujo_actors import Flujo, Step`` light).
:data:`AnyStep` is built on first access; the traversals import the other kinds
when they meet a step that is none of the two (such a step means its module is
loaded already, so the import is a dictionary look-up).
"""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING, TypeAlias, assert_never

from .agent import AgentStep
from .base import PipelineStep

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .base import Pipeline
    from .control import (
        ConditionalStep,
        DynamicParallelRouterStep,
        LoopStep,
        ParallelStep,
    )
    from .human import HumanInputStep
    from .map import MapStep

    AnyStep: TypeAlias = (
        AgentStep
        | ParallelStep
        | DynamicParallelRouterStep
        | LoopStep
        | ConditionalStep
        | MapStep
        | PipelineStep
        | HumanInputStep
    )
    """Every step kind. A step of any kind is an instance of :class:`~.base.StepBase`."""

__all__ = ["AnyStep", "agent_steps", "children"]


def _any_step() -> object:
    from . import control, human, map

    kinds = (
        AgentStep,
        control.ParallelStep,
        control.DynamicParallelRouterStep,
        control.LoopStep,
        control.ConditionalStep,
        map.MapStep,
        PipelineStep,
        human.HumanInputStep,
    )
    return functools.reduce(operator.or_, kinds)


if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        # PEP 562: AnyStep names every kind, so building it loads them all; only on use.
        if name == "AnyStep":
            globals()["AnyStep"] = found = _any_step()
            return found
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def agent_steps(pipeline: Pipeline) -> Iterator[AgentStep]:
    """Every agent step of the tree: fallbacks, branches, bodies, nested pipelines, routers.

    A router yields its router agent's step. The tree must be free of cycles
    (built definitions are; ``Flujo`` checks a tree forced past the seal).
    """
    for step in pipeline.steps:
        yield from _agent_steps_of(step)


def _agent_steps_of(step: AnyStep) -> Iterator[AgentStep]:
    if isinstance(step, AgentStep):
        yield step
        if step.fallback is not None:
            yield from _agent_steps_of(step.fallback)
        return
    if isinstance(step, PipelineStep):
        yield from agent_steps(step.pipeline)
        return
    from .control import ConditionalStep, DynamicParallelRouterStep, LoopStep, ParallelStep
    from .human import HumanInputStep
    from .map import MapStep

    match step:
        case ParallelStep():
            for sub in step.branches.values():
                yield from agent_steps(sub)
        case DynamicParallelRouterStep():
            yield step.router
            for sub in step.branches.values():
                yield from agent_steps(sub)
        case LoopStep() | MapStep():
            yield from agent_steps(step.body)
        case ConditionalStep():
            for sub in step.branches.values():
                yield from agent_steps(sub)
            if step.default_branch is not None:
                yield from agent_steps(step.default_branch)
        case HumanInputStep():
            pass
        case _:
            assert_never(step)


def children(step: AnyStep) -> list[tuple[str | None, Pipeline]]:
    """The sub-pipelines of a step, each with the path element that leads into it.

    Parallel and router branches appear in a position's path by their name;
    the other kinds' sub-pipelines do not (None). An agent step's fallback is
    not a sub-pipeline (it runs at the agent's own position): none.
    """
    if isinstance(step, AgentStep):
        return []
    if isinstance(step, PipelineStep):
        return [(None, step.pipeline)]
    from .control import ConditionalStep, DynamicParallelRouterStep, LoopStep, ParallelStep
    from .human import HumanInputStep
    from .map import MapStep

    match step:
        case ParallelStep() | DynamicParallelRouterStep():
            return [(str(k), p) for k, p in step.branches.items()]
        case ConditionalStep():
            found: list[tuple[str | None, Pipeline]] = [(None, p) for p in step.branches.values()]
            if step.default_branch is not None:
                found.append((None, step.default_branch))
            return found
        case LoopStep() | MapStep():
            return [(None, step.body)]
        case HumanInputStep():
            return []
        case _:
            assert_never(step)
