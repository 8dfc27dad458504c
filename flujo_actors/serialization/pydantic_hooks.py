"""How the codecs handle pydantic models (found through :mod:`flujo_actors._pydantic_compat`).

safe_serialize / the cattrs converter: ``model_dump(mode="json")`` and
``model_validate`` on the target type. dump_typed / load_typed: the fields are
walked like an attrs class's (so values in Any-typed fields, such as a
scratchpad, keep their types), a field value that flujo_actors cannot
serialize falls back to pydantic's own JSON form, and ``model_validate``
rebuilds the same class from the loaded fields. pydantic itself is never
imported here: these run only for a class that is a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import MAX_DEPTH

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["build_dump", "build_loader", "build_ser", "structure"]


def _payload_key(info: Any, name: str) -> str:
    # model_validate reads fields by their (validation) alias unless told otherwise.
    alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
    return alias if isinstance(alias, str) else name


def build_ser(ser: Callable[[Any, int], Any]) -> Callable[[Any, int], Any]:
    """The safe_serialize handler of a model class: ``model_dump(mode="json")``."""
    from ._base import _Failure, _too_deep, _type_name

    def ser_model(obj: Any, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            _too_deep(obj)
        try:
            data = obj.model_dump(mode="json", by_alias=True)
        except Exception as exc:  # pydantic refused a field value
            raise _Failure(
                "pydantic",
                obj,
                f"{_type_name(type(obj))}.model_dump(mode='json') raised {exc!r}. Give the "
                "field a JSON-serializable type, or register_custom_serializer(...) for it.",
                exc,
            ) from exc
        return ser(data, depth + 1)

    return ser_model


def build_dump(
    tp: type, dump: Callable[[Any, int], Any], remember: Callable[[type], str]
) -> Callable[[Any, int], Any]:
    """The dump_typed handler of a model class: its fields, typed, in an envelope."""
    from ._base import TYPE_KEY, VALUE_KEY, _Failure, _too_deep

    tag = remember(tp)
    fields = [(name, _payload_key(info, name)) for name, info in tp.model_fields.items()]  # type: ignore[attr-defined]

    def dump_model(obj: Any, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            _too_deep(obj)
        out: dict[str, Any] = {}
        name = ""
        try:
            for name, key in fields:
                value = getattr(obj, name)
                try:
                    out[key] = dump(value, depth + 1)
                except _Failure as failure:
                    if failure.kind != "unsupported" or failure.subject is not value:
                        raise
                    # A pydantic type flujo_actors does not know (a URL, a path,
                    # a constrained type): pydantic's JSON form, validated back on load.
                    out[key] = obj.model_dump(mode="json", include={name})[name]
            extra = getattr(obj, "__pydantic_extra__", None)
            if extra:
                for name, value in extra.items():
                    out[name] = dump(value, depth + 1)
        except _Failure as failure:
            failure.push(f".{name}", obj)
            raise
        return {TYPE_KEY: tag, VALUE_KEY: out}

    return dump_model


def build_loader(cls: Any, load: Callable[[Any, int], Any]) -> Callable[[Any, int], Any]:
    """The load_typed handler of a model class: ``model_validate`` of the loaded fields."""
    from ._base import _Failure, _type_name

    def load_model(payload: Any, depth: int) -> Any:
        if type(payload) is not dict:
            raise _Failure(
                "shape", payload, f"expected the fields of {_type_name(cls)!r} as an object."
            )
        values = {}
        key = ""
        try:
            for key, item in payload.items():
                values[key] = load(item, depth + 1)
        except _Failure as failure:
            failure.push(f".{key}", payload)
            raise
        return cls.model_validate(values)

    return load_model


def structure(value: Any, type_: Any) -> Any:
    """cattrs structure hook: ``type_.model_validate(value)`` (the target type is passed)."""
    return type_.model_validate(value)
