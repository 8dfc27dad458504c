"""The control-flow step kinds: parallel, loop, conditional, router and nested pipeline.

Each is a :class:`~flujo_actors.steps.dsl.Step` with no agent attempt of its
own (the router's agent call excepted), so the agent options it does not
honour are refused when it is built (see :func:`.options.refuse_unhonoured`).
Build them with the ``Step`` factories and ``pipeline.as_step(name)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from ..errors import PipelineDefinitionError
from .callables import Callback, compile_callback
from .dsl import Pipeline, Step, _as_pipeline, _branch_map
from .options import ReadOnlyDict
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
    "PipelineStep",
]


@attrs.define(eq=False, repr=False)
class ParallelStep(Step):
    """Branches run concurrently; output ``{branch_name: branch_output}``."""

    kind: ClassVar[str] = "parallel"

    branches: Mapping[str, Pipeline] = attrs.field(factory=dict, kw_only=True)
    merge_strategy: MergeSpec = attrs.field(default=MergeStrategy.CONTEXT_UPDATE, kw_only=True)
    on_branch_failure: BranchFailureStrategy = attrs.field(
        default=BranchFailureStrategy.PROPAGATE, kw_only=True
    )
    context_include_keys: frozenset[str] | None = attrs.field(default=None, kw_only=True)

    def _compile(self) -> None:
        _compile_fan_out(self)


def _compile_fan_out(step: ParallelStep | DynamicParallelRouterStep) -> None:
    """Validate and normalise what parallel and router steps share."""
    step.branches = _branch_map(step.branches, step.name)
    check_branch_names(step.name, step.branches)
    step.merge_strategy, step.on_branch_failure = check_merge(
        step.name, step.merge_strategy, step.on_branch_failure
    )
    step.context_include_keys = include_keys(step.name, step.context_include_keys)


@attrs.define(eq=False, repr=False)
class LoopStep(Step):
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

    def _compile(self) -> None:
        n = self.name
        self.body = _as_pipeline(self.body, owner=n, what="loop_body_pipeline")
        ml = self.max_loops
        if type(ml) is not int or ml < 1:
            raise PipelineDefinitionError(f"Loop step {n!r}: max_loops must be >= 1, got {ml!r}.")
        if self.exit_condition is None:
            raise PipelineDefinitionError(
                f"Loop step {n!r}: exit_condition_callable is required "
                "(a function (output, context) -> bool)."
            )
        self.compiled_exit = compile_callback(
            self.exit_condition, what="exit_condition_callable", step_name=n, max_args=2
        )
        if self.initial_input_mapper is not None:
            self.compiled_initial = compile_callback(
                self.initial_input_mapper,
                what="initial_input_to_loop_body_mapper",
                step_name=n,
                max_args=2,
            )
        if self.iteration_input_mapper is not None:
            self.compiled_iteration = compile_callback(
                self.iteration_input_mapper, what="iteration_input_mapper", step_name=n, max_args=3
            )
        if self.output_mapper is not None:
            self.compiled_output = compile_callback(
                self.output_mapper, what="loop_output_mapper", step_name=n, max_args=2
            )


@attrs.define(eq=False, repr=False)
class ConditionalStep(Step):
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

    def _compile(self) -> None:
        n = self.name
        if self.condition is None:
            raise PipelineDefinitionError(
                f"Conditional step {n!r}: condition_callable is required "
                "(a function (data, context) -> branch key)."
            )
        self.compiled_condition = compile_callback(
            self.condition, what="condition_callable", step_name=n, max_args=2
        )
        self.branches = _branch_map(self.branches, n, allow_empty=self.default_branch is not None)
        if self.default_branch is not None:
            self.default_branch = _as_pipeline(
                self.default_branch, owner=n, what="default_branch_pipeline"
            )
        if self.branch_input_mapper is not None:
            self.compiled_input_mapper = compile_callback(
                self.branch_input_mapper, what="branch_input_mapper", step_name=n, max_args=2
            )
        if self.branch_output_mapper is not None:
            self.compiled_output_mapper = compile_callback(
                self.branch_output_mapper, what="branch_output_mapper", step_name=n, max_args=2
            )


@attrs.define(eq=False, repr=False)
class DynamicParallelRouterStep(Step):
    """The router agent picks branch names; those run as a parallel step."""

    kind: ClassVar[str] = "router"
    # The router agent's call is supervised like an agent step.
    honoured: ClassVar[frozenset[str]] = frozenset({"agent", "config", "placement", "event_loop"})

    branches: Mapping[str, Pipeline] = attrs.field(factory=dict, kw_only=True)
    merge_strategy: MergeSpec = attrs.field(default=MergeStrategy.CONTEXT_UPDATE, kw_only=True)
    on_branch_failure: BranchFailureStrategy = attrs.field(
        default=BranchFailureStrategy.PROPAGATE, kw_only=True
    )
    context_include_keys: frozenset[str] | None = attrs.field(default=None, kw_only=True)

    def _compile(self) -> None:
        if self.agent is None:
            raise PipelineDefinitionError(
                f"Router step {self.name!r}: router_agent is required; pass a function or "
                "agent returning the name (or list of names) of the branches to run."
            )
        super()._compile()  # the router agent
        _compile_fan_out(self)


@attrs.define(eq=False, repr=False)
class PipelineStep(Step):
    """A nested pipeline run as one step (``pipeline.as_step(name)``)."""

    kind: ClassVar[str] = "pipeline"

    pipeline: Pipeline = attrs.field(default=None, kw_only=True)
    inherit_context: bool = attrs.field(default=True, kw_only=True)
    context_model: Any = attrs.field(default=None, kw_only=True)
    initial_context_data: Mapping[str, Any] | None = attrs.field(default=None, kw_only=True)

    def _compile(self) -> None:
        self.pipeline = _as_pipeline(self.pipeline, owner=self.name, what="pipeline")
        if not isinstance(self.inherit_context, bool):
            raise PipelineDefinitionError(
                f"Step {self.name!r}: inherit_context must be True or False, "
                f"got {self.inherit_context!r}."
            )
        data = self.initial_context_data
        if data is not None and not isinstance(data, Mapping):
            raise PipelineDefinitionError(
                f"Step {self.name!r}: initial_context_data must be a mapping of "
                f"field -> value, got {data!r}."
            )
        if self.inherit_context and (data or self.context_model is not None):
            # The parent's context is used as it is: these would be ignored.
            given = "initial_context_data" if data else "context_model"
            raise PipelineDefinitionError(
                f"Step {self.name!r}: {given} has no effect with inherit_context=True (the "
                "nested pipeline shares the parent's context); pass inherit_context=False "
                "for a fresh context built from it."
            )
        if self.context_model is not None:
            from ..context import check_context_model

            check_context_model(self.context_model)
        if data is not None:
            # A copy the caller's dict cannot change after the step was validated.
            self.initial_context_data = ReadOnlyDict(
                f"Step {self.name!r}", data, what="initial_context_data"
            )
