"""The control-flow step kinds: parallel, loop, conditional and router.

Each is a sibling of the agent step (:class:`~.agent.AgentStep`) on
:class:`~.base.StepBase` (as is the nested pipeline, :class:`~.base.PipelineStep`), with exactly the options it honours: none has
``fallback``, ``validators``, ``cache``, ... (the router has its router
agent's ``agent``, ``config``, ``placement`` and ``event_loop``). Given an
agent option anyway, a kind refuses it by name when built
(:func:`.options.refuse_unhonoured`). Build them with the ``Step`` factories
and ``pipeline.as_step(name)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from ..errors import PipelineDefinitionError
from .agent import AgentStep
from .base import Pipeline, StepBase, as_pipeline, branch_map
from .callables import Callback, compile_optional, compile_required
from .config import StepConfig
from .options import refuse_unhonoured
from .placement import Placement
from .strategies import (
    BranchFailureStrategy,
    MergeSpec,
    MergeStrategy,
    check_branch_names,
    check_merge,
    include_keys,
)

__all__ = [
    "ConditionalStep",
    "DynamicParallelRouterStep",
    "LoopStep",
    "ParallelStep",
]


@refuse_unhonoured
@attrs.define(eq=False, repr=False)
class ParallelStep(StepBase):
    """Branches run concurrently; output ``{branch_name: branch_output}``."""

    kind: ClassVar[str] = "parallel"

    branches: Mapping[str, Pipeline] = attrs.field(factory=dict, kw_only=True)
    merge_strategy: MergeSpec = attrs.field(default=MergeStrategy.CONTEXT_UPDATE, kw_only=True)
    on_branch_failure: BranchFailureStrategy = attrs.field(
        default=BranchFailureStrategy.PROPAGATE, kw_only=True
    )
    context_include_keys: frozenset[str] | None = attrs.field(default=None, kw_only=True)

    def _validate(self) -> None:
        _compile_fan_out(self)


def _compile_fan_out(step: ParallelStep | DynamicParallelRouterStep) -> None:
    """Validate and normalise what parallel and router steps share."""
    step.branches = branch_map(step.branches, step.name)
    check_branch_names(step.name, step.branches)
    step.merge_strategy, step.on_branch_failure = check_merge(
        step.name, step.merge_strategy, step.on_branch_failure
    )
    step.context_include_keys = include_keys(step.name, step.context_include_keys)


@refuse_unhonoured
@attrs.define(eq=False, repr=False)
class LoopStep(StepBase):
    """Runs its body until the exit condition holds or ``max_loops`` is reached."""

    kind: ClassVar[str] = "loop"

    body: Pipeline = attrs.field(default=None, kw_only=True)
    exit_condition: Any = attrs.field(default=None, kw_only=True)
    max_loops: int = attrs.field(default=5, kw_only=True)
    initial_input_mapper: Any = attrs.field(default=None, kw_only=True)
    iteration_input_mapper: Any = attrs.field(default=None, kw_only=True)
    output_mapper: Any = attrs.field(default=None, kw_only=True)
    compiled_exit: Callback | None = attrs.field(init=False, default=None)
    compiled_initial: Callback | None = attrs.field(init=False, default=None)
    compiled_iteration: Callback | None = attrs.field(init=False, default=None)
    compiled_output: Callback | None = attrs.field(init=False, default=None)

    def _validate(self) -> None:
        n = self.name
        self.body = as_pipeline(self.body, owner=n, what="loop_body_pipeline")
        ml = self.max_loops
        if type(ml) is not int or ml < 1:
            raise PipelineDefinitionError(f"Loop step {n!r}: max_loops must be >= 1, got {ml!r}.")
        self.compiled_exit = compile_required(
            self.exit_condition,
            what="exit_condition_callable",
            step_name=n,
            max_args=2,
            kind="Loop",
            shape="(output, context) -> bool",
        )
        what = "initial_input_to_loop_body_mapper"
        self.compiled_initial = compile_optional(
            self.initial_input_mapper, what=what, step_name=n, max_args=2
        )
        self.compiled_iteration = compile_optional(
            self.iteration_input_mapper, what="iteration_input_mapper", step_name=n, max_args=3
        )
        self.compiled_output = compile_optional(
            self.output_mapper, what="loop_output_mapper", step_name=n, max_args=2
        )


@refuse_unhonoured
@attrs.define(eq=False, repr=False)
class ConditionalStep(StepBase):
    """Runs the branch selected by ``condition(data, context)``.

    ``branch_input_mapper(data, context)`` (optional) is the chosen branch's
    input; ``branch_output_mapper(output, context)`` (optional) turns the
    branch's output into the step's output, after a successful branch.
    """

    kind: ClassVar[str] = "conditional"

    condition: Any = attrs.field(default=None, kw_only=True)
    branches: Mapping[Any, Pipeline] = attrs.field(factory=dict, kw_only=True)
    default_branch: Pipeline | None = attrs.field(default=None, kw_only=True)
    branch_input_mapper: Any = attrs.field(default=None, kw_only=True)
    branch_output_mapper: Any = attrs.field(default=None, kw_only=True)
    compiled_condition: Callback | None = attrs.field(init=False, default=None)
    compiled_input_mapper: Callback | None = attrs.field(init=False, default=None)
    compiled_output_mapper: Callback | None = attrs.field(init=False, default=None)

    def _validate(self) -> None:
        n = self.name
        self.compiled_condition = compile_required(
            self.condition,
            what="condition_callable",
            step_name=n,
            max_args=2,
            kind="Conditional",
            shape="(data, context) -> branch key",
        )
        self.branches = branch_map(self.branches, n, allow_empty=self.default_branch is not None)
        if self.default_branch is not None:
            self.default_branch = as_pipeline(
                self.default_branch, owner=n, what="default_branch_pipeline"
            )
        self.compiled_input_mapper = compile_optional(
            self.branch_input_mapper, what="branch_input_mapper", step_name=n, max_args=2
        )
        self.compiled_output_mapper = compile_optional(
            self.branch_output_mapper, what="branch_output_mapper", step_name=n, max_args=2
        )


@refuse_unhonoured
@attrs.define(eq=False, repr=False)
class DynamicParallelRouterStep(StepBase):
    """The router agent picks branch names; those run as a parallel step."""

    kind: ClassVar[str] = "router"

    # The router agent's call is supervised like an agent step: these are its options.
    agent: Any = attrs.field(default=None, kw_only=True)
    config: StepConfig = attrs.field(factory=StepConfig, kw_only=True)
    placement: Placement | None = attrs.field(default=None, kw_only=True)
    event_loop: str | None = attrs.field(default=None, kw_only=True)
    branches: Mapping[str, Pipeline] = attrs.field(factory=dict, kw_only=True)
    merge_strategy: MergeSpec = attrs.field(default=MergeStrategy.CONTEXT_UPDATE, kw_only=True)
    on_branch_failure: BranchFailureStrategy = attrs.field(
        default=BranchFailureStrategy.PROPAGATE, kw_only=True
    )
    context_include_keys: frozenset[str] | None = attrs.field(default=None, kw_only=True)
    #: The router agent's call as an agent step of the same name (built once, here).
    router: AgentStep = attrs.field(init=False, repr=False)

    def _validate(self) -> None:
        if self.agent is None:
            raise PipelineDefinitionError(
                f"Router step {self.name!r}: router_agent is required; pass a function or "
                "agent returning the name (or list of names) of the branches to run."
            )
        self.router = AgentStep(
            name=self.name,
            agent=self.agent,
            config=self.config,
            placement=self.placement,
            event_loop=self.event_loop,
        )
        self.event_loop = self.router.event_loop  # resolved, as on an agent step
        _compile_fan_out(self)
