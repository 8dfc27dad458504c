"""Human input on the runner's side: what a paused run stores, and checking the answers.

A paused run stores its pending inputs as the position record
:data:`PAUSED_KEY` (not a JSON list, so no step position can collide with
it), next to its run row with status ``"paused"``. ``resume_async(run_id,
human_input=...)`` reads them back, matches ``human_input`` to them and
validates every answer against its step's ``input_model`` *before* anything
runs: an invalid answer raises :class:`~flujo_actors.errors.HumanInputError`
and the run stays paused, untouched.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .errors import HumanInputError
from .results import PendingInput
from .steps.agent import AgentStep
from .steps.base import PipelineStep
from .steps.kinds import agent_steps, children

if TYPE_CHECKING:
    from collections.abc import Callable

    from .steps.base import Pipeline
    from .steps.human import HumanInputStep
    from .steps.kinds import AnyStep

__all__ = [
    "NO_INPUT",
    "PAUSED_KEY",
    "answers_for",
    "any_step",
    "check_sinks",
    "has_human_steps",
    "has_keyed_agents",
    "pending_from_record",
    "pending_record",
]

_HUMAN: Final = "flujo_actors.steps.human"
"""The module of the human-input kind: a step of that kind exists only once it is loaded."""

PAUSED_KEY: Final = "paused"
"""The position record holding a paused run's pending inputs."""


class _NoInput:
    def __repr__(self) -> str:
        return "<no human input>"


NO_INPUT: Final = _NoInput()
"""``resume_async``'s default: no human input given."""


def any_step(pipeline: Pipeline, pred: Callable[[AnyStep], bool]) -> bool:
    """Whether ``pred`` holds for a step anywhere in ``pipeline`` (fallbacks included)."""
    for step in pipeline.steps:
        at: AnyStep | None = step
        while at is not None:
            if pred(at):
                return True
            at = at.fallback if isinstance(at, AgentStep) else None
        if any(any_step(sub, pred) for _name, sub in children(step)):
            return True
    return False


def has_human_steps(pipeline: Pipeline) -> bool:
    """Whether a human-input step sits anywhere in ``pipeline`` (decided once per runner)."""
    if _HUMAN not in sys.modules:
        return False  # no human step was ever built, so there is none to find
    from .steps.human import HumanInputStep

    return any_step(pipeline, lambda step: isinstance(step, HumanInputStep))


def has_keyed_agents(pipeline: Pipeline) -> bool:
    """Whether an agent anywhere in ``pipeline`` declares ``idempotency_key``."""
    return any(
        step.spec is not None and step.spec.accepts_idempotency_key
        for step in agent_steps(pipeline)
    )


def check_sinks(pipeline: Pipeline, context_model: type[Any]) -> None:
    """Refuse a human-input step whose ``sink_to`` is not a field of its context model.

    A nested pipeline on a fresh context (``inherit_context=False``) is
    checked against its own ``context_model`` when it names one.

    Raises:
        PipelineDefinitionError: naming the step, the field and the model's fields.
    """
    from .context import context_field_names
    from .errors import PipelineDefinitionError
    from .steps.human import HumanInputStep

    for step in pipeline.steps:
        if isinstance(step, HumanInputStep) and step.sink_to is not None:
            names = context_field_names(context_model)
            if step.sink_to not in names:
                raise PipelineDefinitionError(
                    f"Human input step {step.name!r}: sink_to={step.sink_to!r} is not a field "
                    f"of the context model {context_model.__name__} (fields: "
                    f"{sorted(names)!r}); add the field to the model or fix sink_to."
                )
        model = context_model
        if isinstance(step, PipelineStep) and step.inherit_context is False:
            model = step.context_model or context_model
        for _name, sub in children(step):
            check_sinks(sub, model)


def _find(pipeline: Pipeline, path: tuple[str, ...]) -> HumanInputStep | None:
    from .steps.human import HumanInputStep

    for step in pipeline.steps:
        if step.name != path[0]:
            continue
        if len(path) == 1:
            return step if isinstance(step, HumanInputStep) else None
        for name, sub in children(step):
            if name is None:
                found = _find(sub, path[1:])
            elif name == path[1] and len(path) > 2:
                found = _find(sub, path[2:])
            else:
                continue
            if found is not None:
                return found
    return None


def pending_record(pending: list[PendingInput]) -> list[dict[str, Any]]:
    """The JSON record of a paused run's pending inputs."""
    return [
        {
            "key": p.key,
            "path": list(p.path),
            "position": list(p.position),
            "step": p.step,
            "message": p.message,
            "input_schema": p.input_schema,
        }
        for p in pending
    ]


def pending_from_record(record: Any) -> list[PendingInput]:
    """Rebuild what :func:`pending_record` stored (an empty list for nothing)."""
    if not isinstance(record, list):
        return []
    return [
        PendingInput(
            key=item["key"],
            path=tuple(item["path"]),
            position=tuple(item["position"]),
            step=item["step"],
            message=item["message"],
            input_schema=item["input_schema"],
        )
        for item in record
    ]


def answers_for(
    pipeline: Pipeline, run_id: str, pending: list[PendingInput], human_input: Any
) -> dict[str, Any]:
    """Match ``human_input`` to the pending inputs and validate each answer.

    ``human_input`` is the answer itself when one input is pending; a mapping
    whose keys are all pending keys (:attr:`PendingInput.key`) answers those
    inputs (one, several or all; the others stay pending).

    Returns:
        The validated answers by position key.

    Raises:
        HumanInputError: the run waits for no input, several are pending and
            ``human_input`` is not such a mapping, or an answer is invalid.
    """
    if not pending:
        raise HumanInputError(
            f"Run {run_id!r} is paused but waits for no human input (its record is "
            "missing); resume it without human_input."
        )
    by_key = {p.key: p for p in pending}
    keys = [p.key for p in pending]
    if isinstance(human_input, Mapping) and human_input and set(human_input) <= set(by_key):
        chosen = [(by_key[k], v) for k, v in human_input.items()]
    elif len(pending) == 1:
        chosen = [(pending[0], human_input)]
    else:
        raise HumanInputError(
            f"Run {run_id!r} waits for {len(pending)} human inputs ({keys!r}); pass "
            "human_input as a mapping of those keys to their values (one, several or "
            f"all of them), got {human_input!r}."
        )
    # Here, not at the top: the run machinery loads with the first runner, not with Flujo.
    from .run.checkpoint import position_key

    answers: dict[str, Any] = {}
    for item, value in chosen:
        step = _find(pipeline, item.path)
        if step is None:
            raise HumanInputError(
                f"Run {run_id!r} waits for input at {item.key!r}, but this runner's pipeline "
                f"has no human input step at {list(item.path)!r}; resume it with the "
                "pipeline that paused it."
            )
        answers[position_key(item.position)] = _validate(step, item, value, run_id)
    return answers


def _validate(step: HumanInputStep, item: PendingInput, value: Any, run_id: str) -> Any:
    model = step.input_model
    problem: str | None = None
    checked = value
    if model is None:
        from .errors import SerializationError
        from .serialization import dumps_json

        try:
            dumps_json(value, path="human_input")
        except SerializationError as exc:
            problem = f"it is not a JSON value: {exc}"
    elif callable(getattr(model, "model_validate", None)):
        try:
            checked = model.model_validate(value)
        except Exception as exc:
            problem = f"{model.__name__} refused it: {exc}"
    elif isinstance(value, model):
        checked = value
    elif isinstance(value, Mapping):
        from .serialization import get_converter

        try:
            checked = get_converter().structure(dict(value), model)
        except Exception as exc:
            problem = f"{model.__name__} refused it: {_describe(exc)}"
    else:
        problem = f"expected a {model.__name__} or a mapping of its fields"
    if problem is None:
        return checked
    raise HumanInputError(
        f"Human input for step {step.name!r} at {item.key!r} of run {run_id!r} is invalid "
        f"({value!r}): {problem}. The run stays paused; resume it with a value matching "
        f"the schema {item.input_schema!r}."
    )


def _describe(exc: Exception) -> str:
    """A cattrs error with its causes (a ClassValidationError lists them)."""
    causes = getattr(exc, "exceptions", None)
    if not causes:
        return f"{type(exc).__name__}: {exc}"
    parts = []
    for cause in causes:
        notes = "; ".join(str(n) for n in getattr(cause, "__notes__", ()))
        parts.append(f"{type(cause).__name__}: {cause}" + (f" ({notes})" if notes else ""))
    return "; ".join(parts)
