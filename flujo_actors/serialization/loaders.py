"""How :func:`load_typed` rebuilds records, built-in containers and tagged classes."""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import sys
import typing
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._base import _TAG_CLASSES, _exact_decimal, _Failure, _Handler, _type_name

if TYPE_CHECKING:
    from collections.abc import Callable


__all__: list[str] = []  # internal; see flujo_actors.serialization


def _field_names(tp: type) -> tuple[str, ...] | None:
    """All field names of an attrs class or dataclass (``init=False`` ones too)."""
    if attrs.has(tp):
        return tuple(a.name for a in attrs.fields(tp))
    if dataclasses.is_dataclass(tp):
        return tuple(f.name for f in dataclasses.fields(tp))
    return None


def _is_record_type(type_: Any) -> bool:
    """An attrs class or a dataclass, possibly a parametrised generic one."""
    origin = typing.get_origin(type_) or type_
    return isinstance(origin, type) and (attrs.has(origin) or dataclasses.is_dataclass(origin))


def _late_field_names(cls: type) -> list[str]:
    """Names of the fields outside ``__init__`` (``init=False``)."""
    if attrs.has(cls):
        return [a.name for a in attrs.fields(cls) if not a.init]
    return [f.name for f in dataclasses.fields(cls) if not f.init]


def _load_list(payload: object, depth: int, load: _Handler) -> list[Any]:
    if type(payload) is not list:
        raise _Failure(
            "shape", payload, f"expected a list payload, got {_type_name(type(payload))!r}."
        )
    return typing.cast("list[Any]", load(payload, depth))


def _fields_loader(
    cls: type,
    init_fields: list[tuple[str, str]],
    other_fields: list[str],
    load: _Handler,
) -> _Handler:
    def load_fields(payload: object, depth: int) -> Any:
        if type(payload) is not dict:
            raise _Failure(
                "shape", payload, f"expected the fields of {_type_name(cls)!r} as an object."
            )
        fields = typing.cast("dict[str, Any]", payload)
        kwargs: dict[str, Any] = {}
        late: list[tuple[str, Any]] = []
        name = ""
        try:
            for name, alias in init_fields:
                if name in fields:
                    kwargs[alias] = load(fields[name], depth + 1)
            # Fields outside __init__ (init=False) are restored after
            # construction so that their saved state survives a round trip.
            for name in other_fields:
                if name in fields:
                    late.append((name, load(fields[name], depth + 1)))
        except _Failure as failure:
            failure.push(f".{name}", payload)
            raise
        obj = cls(**kwargs)
        for name, value in late:
            object.__setattr__(obj, name, value)  # works for frozen and slotted classes
        return obj

    return load_fields


def _load_builtin_tuple(payload: Any, depth: int, load: _Handler) -> Any:
    return tuple(_load_list(payload, depth, load))


def _load_builtin_set(payload: Any, depth: int, load: _Handler) -> Any:
    return set(_load_list(payload, depth, load))


def _load_builtin_frozenset(payload: Any, depth: int, load: _Handler) -> Any:
    return frozenset(_load_list(payload, depth, load))


def _load_builtin_dict(payload: Any, depth: int, load: _Handler) -> Any:
    pairs = _load_list(payload, depth, load)
    if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
        raise _Failure("shape", payload, "expected a list of [key, value] pairs.")
    return dict(pairs)


_BUILTIN_LOADERS: Final[dict[str, Callable[[Any, int, _Handler], Any]]] = {
    "builtins:tuple": _load_builtin_tuple,
    "builtins:set": _load_builtin_set,
    "builtins:frozenset": _load_builtin_frozenset,
    "builtins:dict": _load_builtin_dict,
    "builtins:bytes": lambda payload, depth, load: base64.b64decode(payload, validate=True),
    "builtins:bytearray": lambda payload, depth, load: bytearray(
        base64.b64decode(payload, validate=True)
    ),
    "decimal:Decimal": lambda payload, depth, load: _exact_decimal(Decimal, payload),
    "datetime:datetime": lambda payload, depth, load: _dt.datetime.fromisoformat(payload),
    "datetime:date": lambda payload, depth, load: _dt.date.fromisoformat(payload),
    "datetime:time": lambda payload, depth, load: _dt.time.fromisoformat(payload),
    "uuid:UUID": lambda payload, depth, load: uuid.UUID(payload),
}


def _resolve_tag(tag: str) -> type:
    """Map a ``module:qualname`` tag to a class, without running any code.

    Classes tagged by dump_typed in this process resolve directly. Otherwise
    the module must already be imported (stored data never makes us import
    a module) and the name must lead, by attribute lookups only, to a class.
    """
    known = _TAG_CLASSES.get(tag)
    if known is not None:
        return known
    module_name, _, qualname = tag.partition(":")
    parts = qualname.split(".")
    if not module_name or not all(part.isidentifier() for part in parts):
        raise _Failure("tag", tag, f"the type tag {tag!r} is not of the form 'module:qualname'.")
    module = sys.modules.get(module_name)
    if module is None:
        raise _Failure(
            "tag",
            tag,
            f"the type tag {tag!r} names a class in the module {module_name!r}, which is "
            "not imported. Import it before loading (stored data never triggers an import).",
        )
    found: object = module
    for part in parts:
        found = getattr(found, part, None)
        if found is None:
            break
    if not isinstance(found, type):
        raise _Failure("tag", tag, f"the type tag {tag!r} does not name a class.")
    return found


# -- the converter ---------------------------------------------------------------
