"""What every step kind shares: :class:`StepBase` (name, sealing, ``>>``), :class:`Pipeline`.

The step kinds are siblings: the agent step (:class:`~.dsl.Step`) and one
class per control-flow kind (:mod:`.control`), each with exactly the options
it honours; :data:`~.kinds.AnyStep` is their closed union. ``StepBase`` only
holds the identity of a step and the seal: once built, a step (like a
pipeline) refuses every assignment, so a validated definition stays valid
and a pipeline cannot be made to contain itself. The nested-pipeline kind,
:class:`PipelineStep` (``pipeline.as_step(name)``), lives here with
:class:`Pipeline`, which builds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from ..errors import PipelineDefinitionError
from .options import ReadOnlyDict, refuse_mutation, refuse_unhonoured

if TYPE_CHECKING:
    # Type-only: .kinds imports this module, and steps are never structured by cattrs.
    from .kinds import AnyStep  # noqa: TC004

__all__ = ["Pipeline", "PipelineStep", "StepBase", "as_pipeline", "branch_map"]


class _Sealable:
    """Refuses every assignment and deletion once sealed (steps and pipelines).

    Sealed at the end of ``__attrs_post_init__``: a validated definition (no
    cycles, no ignored options) cannot be made invalid afterwards.
    """

    __slots__ = ()
    _what: ClassVar[str]  # "Step" / "Pipeline", for the error
    name: str
    _sealed: bool

    def __setattr__(self, attr: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            refuse_mutation(f"{self._what} {self.name!r}", attr)
        object.__setattr__(self, attr, value)

    def __delattr__(self, attr: str) -> None:
        if getattr(self, "_sealed", False):
            refuse_mutation(f"{self._what} {self.name!r}", attr)
        object.__delattr__(self, attr)

    def _seal(self) -> None:
        object.__setattr__(self, "_sealed", True)

    def _check_name(self, fix: str) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip():
            raise PipelineDefinitionError(
                f"{self._what} name must be a non-empty string, got {name!r}{fix}"
            )


@attrs.define(eq=False, repr=False)
class StepBase(_Sealable):
    """The common base of every step kind: a name, ``>>``, and the seal.

    ``isinstance(x, StepBase)`` tells whether ``x`` is a step of any kind
    (``isinstance(x, Step)`` is true of agent steps only). Not built
    directly: build a kind (``Step.from_callable``, ``Step.parallel``, ...).

    Raises:
        PipelineDefinitionError: on an invalid definition, when built; on any
            assignment to a built step.
    """

    #: A label of the kind for traces, hook events and fingerprints (dispatch
    #: is on the class, never on this string).
    kind: ClassVar[str]
    _what: ClassVar[str] = "Step"

    name: str
    _sealed: bool = attrs.field(init=False, default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._check_name(". Pass name='...' (e.g. the agent's purpose).")
        self._validate()
        self._seal()

    def _validate(self) -> None:
        """Check and compile the kind's options (runs once, before the seal)."""
        raise NotImplementedError  # pragma: no cover - every kind overrides it

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def __rshift__(self, other: AnyStep | Pipeline) -> Pipeline:
        return Pipeline(steps=[self, *_steps_of(other, self.name)])  # type: ignore[list-item]


def _steps_of(other: Any, left: str) -> list[AnyStep]:
    if isinstance(other, StepBase):
        return [other]  # type: ignore[list-item]
    if isinstance(other, Pipeline):
        return list(other.steps)
    raise PipelineDefinitionError(
        f"Cannot chain step {left!r} with {other!r}: `>>` takes a Step or a Pipeline."
    )


def as_pipeline(value: Any, *, owner: str, what: str) -> Pipeline:
    """``value`` as a pipeline (a step becomes a one-step pipeline), else a clear error."""
    if isinstance(value, Pipeline):
        return value
    if isinstance(value, StepBase):
        return Pipeline(steps=[value])  # type: ignore[list-item]
    raise PipelineDefinitionError(
        f"Step {owner!r}: {what} must be a Step or a Pipeline, got {value!r}."
    )


def branch_map(value: Any, owner: str, *, allow_empty: bool = False) -> Mapping[Any, Pipeline]:
    """A read-only ``{key: Pipeline}`` of a control-flow step's branches."""
    if not isinstance(value, Mapping):
        raise PipelineDefinitionError(
            f"Step {owner!r}: branches must be a mapping of name -> Step | Pipeline, got {value!r}."
        )
    if not value and not allow_empty:
        raise PipelineDefinitionError(
            f"Step {owner!r}: branches must not be empty; give at least one branch."
        )
    return ReadOnlyDict(
        f"Step {owner!r}",
        {k: as_pipeline(v, owner=owner, what=f"branch {k!r}") for k, v in value.items()},
    )


@attrs.define(eq=False, repr=False)
class Pipeline(_Sealable):
    """An ordered, immutable sequence of steps; each step's output is the next step's input.

    ``steps`` is a tuple once built; ``>>`` builds a new pipeline.
    """

    steps: Sequence[AnyStep] = attrs.field(factory=tuple)
    _what: ClassVar[str] = "Pipeline"

    name: str = attrs.field(default="pipeline", kw_only=True)
    _sealed: bool = attrs.field(init=False, default=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._check_name("; pass name='...' or leave the default.")
        steps = self.steps
        if isinstance(steps, StepBase) or not isinstance(steps, Iterable):
            raise PipelineDefinitionError(
                f"Pipeline {self.name!r}: steps must be a list of Step, got {steps!r}."
            )
        steps = list(steps)
        if not steps:
            raise PipelineDefinitionError(
                f"Pipeline {self.name!r}: steps must not be empty; add at least one Step."
            )
        for i, s in enumerate(steps):
            if isinstance(s, Pipeline):
                raise PipelineDefinitionError(
                    f"Pipeline {self.name!r}: steps[{i}] is a Pipeline; chain it with `>>` "
                    "or nest it with pipeline.as_step(name)."
                )
            if not isinstance(s, StepBase):
                raise PipelineDefinitionError(
                    f"Pipeline {self.name!r}: steps[{i}] must be a Step, got {s!r}; "
                    "wrap functions with Step.from_callable(fn) or @step."
                )
        # A tuple: a pipeline cannot grow (or come to contain itself) after it was built.
        self.steps = tuple(steps)
        self._seal()

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r} [{', '.join(s.name for s in self.steps)}]>"

    def __rshift__(self, other: AnyStep | Pipeline) -> Pipeline:
        return Pipeline(steps=[*self.steps, *_steps_of(other, self.name)], name=self.name)

    @classmethod
    def from_step(cls, s: AnyStep) -> Pipeline:
        """A one-step pipeline."""
        return cls(steps=[s])

    def as_step(self, name: str, inherit_context: bool = True) -> PipelineStep:
        """This pipeline as one step of another.

        With ``inherit_context`` it reads and writes the parent's context;
        otherwise it gets a fresh context built like the runner builds one.
        """
        return PipelineStep(name=name, pipeline=self, inherit_context=inherit_context)


@refuse_unhonoured
@attrs.define(eq=False, repr=False)
class PipelineStep(StepBase):
    """A nested pipeline run as one step (``pipeline.as_step(name)``)."""

    kind: ClassVar[str] = "pipeline"

    pipeline: Pipeline = attrs.field(default=None, kw_only=True)
    inherit_context: bool = attrs.field(default=True, kw_only=True)
    context_model: Any = attrs.field(default=None, kw_only=True)
    initial_context_data: Mapping[str, Any] | None = attrs.field(default=None, kw_only=True)

    def _validate(self) -> None:
        self.pipeline = as_pipeline(self.pipeline, owner=self.name, what="pipeline")
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
