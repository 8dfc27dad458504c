"""The human-input step kind: the run pauses here until a person answers.

Build it with ``Step.human_input(name, message, *, input_model=None,
sink_to=None)``. When a run reaches it, the run is persisted as paused and
``run_async`` returns a result with ``status == "paused"``; the answer comes
in through ``resume_async(run_id, human_input=value)``, is validated against
``input_model`` and becomes the step's output (and context field
``sink_to``). The runtime side is :mod:`flujo_actors.run.human`; validating
an answer is the runner's (:mod:`flujo_actors.runner_human`).
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar

import attrs

from ..errors import PipelineDefinitionError
from .base import StepBase
from .callables import Callback, compile_callback
from .options import refuse_unhonoured

__all__ = ["HumanInputStep", "input_schema"]


@refuse_unhonoured
@attrs.define(eq=False, repr=False)
class HumanInputStep(StepBase):
    """Pauses the run until :meth:`Flujo.resume_async` brings a human's input.

    Attributes:
        message: what to ask: a string, or a callable ``(data, context) -> str``
            evaluated when the run reaches the step.
        input_model: an attrs class, a pydantic model, or None for any JSON value.
        sink_to: a context field the validated input is also written to, or None.
        schema: the expected input's JSON schema (derived once, at build time).
    """

    kind: ClassVar[str] = "human"

    message: Any = attrs.field(default=None, kw_only=True)
    input_model: Any = attrs.field(default=None, kw_only=True)
    sink_to: str | None = attrs.field(default=None, kw_only=True)
    schema: dict[str, Any] = attrs.field(init=False, factory=dict)
    compiled_message: Callback | None = attrs.field(init=False, default=None)

    def _validate(self) -> None:
        n = self.name
        message = self.message
        if callable(message):
            self.compiled_message = compile_callback(
                message, what="message", step_name=n, max_args=2
            )
        elif not isinstance(message, str) or not message:
            raise PipelineDefinitionError(
                f"Human input step {n!r}: message must be a non-empty string or a callable "
                f"(data, context) -> str, got {message!r}."
            )
        model = self.input_model
        if model is not None and not (
            isinstance(model, type)
            and (attrs.has(model) or callable(getattr(model, "model_validate", None)))
        ):
            raise PipelineDefinitionError(
                f"Human input step {n!r}: input_model must be an attrs class, a pydantic "
                f"model class, or None (any JSON value), got {model!r}."
            )
        sink = self.sink_to
        if sink is not None and (not isinstance(sink, str) or not sink.isidentifier()):
            raise PipelineDefinitionError(
                f"Human input step {n!r}: sink_to must be the name of a context field, "
                f"got {sink!r}."
            )
        self.schema = input_schema(model)


_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}


def input_schema(model: Any) -> dict[str, Any]:
    """The JSON schema of what ``model`` accepts (``{}``: any JSON value)."""
    if model is None:
        return {}
    schema_of = getattr(model, "model_json_schema", None)
    if callable(schema_of):
        found: dict[str, Any] = schema_of()
        return found
    hints = typing.get_type_hints(model)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(model):
        properties[field.name] = _type_schema(hints.get(field.name, field.type))
        if field.default is attrs.NOTHING:
            required.append(field.name)
    schema: dict[str, Any] = {
        "title": model.__name__,
        "type": "object",
        "properties": properties,
    }
    if required:
        schema["required"] = required
    return schema


def _type_schema(tp: Any) -> dict[str, Any]:
    """A JSON schema for one annotation (what is not recognised accepts anything)."""
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if tp is list or origin in (list, tuple, set, frozenset):
        return {"type": "array", "items": _type_schema(args[0])} if args else {"type": "array"}
    if tp is dict or origin is dict:
        if len(args) == 2:
            return {"type": "object", "additionalProperties": _type_schema(args[1])}
        return {"type": "object"}
    if isinstance(tp, type) and attrs.has(tp):
        return input_schema(tp)
    return {}
