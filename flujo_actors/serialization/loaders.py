"""The typed variant's structure side: how :func:`load_typed` rebuilds tagged values.

:class:`Load` is the structure hook of the typed converter for ``Any``: plain
JSON data comes back as itself, an envelope through the loader of its tag
(records field by field, containers, enums, and the scalar rules of
:mod:`.scalars` for scalar payloads).
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import TYPE_CHECKING, Any, Final

import attrs

from .._pydantic_compat import is_pydantic_model
from . import pydantic_hooks as _pydantic
from ._base import (
    _BUILTIN_TAG_CLASSES,
    MAX_DEPTH,
    TYPE_KEY,
    VALUE_KEY,
    DeserializeFn,
    SerializeFn,
    _Failure,
    _Handler,
    _key_segment,
    _load_list,
    _mro_lookup,
    _resolve_tag,
    _too_deep,
    _type_name,
    _walk_items,
)
from .containers import container_loader
from .scalars import scalar_structure

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


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


def _record_fields(cls: type) -> tuple[list[tuple[str, str]], list[str]] | None:
    """``([(name, init alias), ...], [init=False names])`` of a record class, or None."""
    if attrs.has(cls):
        a_fields = attrs.fields(cls)
        return [(a.name, a.alias) for a in a_fields if a.init], [
            a.name for a in a_fields if not a.init
        ]
    if dataclasses.is_dataclass(cls):
        d_fields = dataclasses.fields(cls)
        return [(f.name, f.name) for f in d_fields if f.init], [
            f.name for f in d_fields if not f.init
        ]
    return None


def _late_field_names(cls: type) -> list[str]:
    """Names of the fields outside ``__init__`` (``init=False``)."""
    record = _record_fields(cls)
    return record[1] if record is not None else []


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


# The built-in containers' envelopes (the scalars' are read by their scalar rule).
_BUILTIN_LOADERS: Final[dict[str, Callable[[Any, int, _Handler], Any]]] = {
    "builtins:tuple": _load_builtin_tuple,
    "builtins:set": _load_builtin_set,
    "builtins:frozenset": _load_builtin_frozenset,
    "builtins:dict": _load_builtin_dict,
}


class Load:
    """``load(value, depth)`` of one registry generation, with its loader cache."""

    def __init__(
        self,
        serializers: Mapping[type, SerializeFn],
        deserializers: Mapping[type, DeserializeFn],
    ) -> None:
        self.serializers = serializers
        self.deserializers = deserializers
        loaders: dict[str, _Handler] = {}
        self._loaders = loaders

        def load(value: object, depth: int) -> Any:
            tp = type(value)
            if tp is str or tp is int or tp is float or tp is bool or value is None:
                return value
            if depth >= MAX_DEPTH:
                _too_deep(value)
            if tp is list:
                return load_items(value, depth)
            if tp is dict:
                mapping = typing.cast("dict[str, Any]", value)
                if TYPE_KEY in mapping:
                    return self._load_envelope(mapping, depth)
                key = ""
                try:
                    result = {}
                    for key, item in mapping.items():
                        result[key] = load(item, depth + 1)
                except _Failure as failure:
                    failure.push(_key_segment(key), value)
                    raise
                return result
            raise _Failure(
                "load",
                value,
                f"load_typed() expects JSON data (as produced by dump_typed()), but found "
                f"an object of type {_type_name(tp)!r}.",
            )

        load_items = _walk_items(load)
        self.load: _Handler = load

    def structure(self, value: object, type_: object) -> Any:
        """The cattrs structure hook (``converter.structure(value, Any)``)."""
        try:
            return self.load(value, 0)
        except _Failure as failure:
            raise failure.to_error("$", "load") from failure.cause

    def _load_envelope(self, envelope: dict[str, Any], depth: int) -> Any:
        tag = envelope[TYPE_KEY]
        if type(tag) is not str or len(envelope) != 2 or VALUE_KEY not in envelope:
            raise _Failure(
                "shape",
                envelope,
                f"a malformed type envelope (expected exactly the keys {TYPE_KEY!r} and "
                f"{VALUE_KEY!r}, with a 'module:qualname' string tag).",
            )
        loader = self._loaders.get(tag)
        if loader is None:
            loader = self._loaders[tag] = self._build_loader(tag)
        try:
            return loader(envelope[VALUE_KEY], depth + 1)
        except _Failure:
            raise
        except Exception as exc:  # a constructor or parser rejected the payload
            raise _Failure(
                "rebuild", envelope, f"cannot rebuild {tag!r} from its payload: {exc!r}.", exc
            ) from exc

    def _build_loader(self, tag: str) -> _Handler:
        load = self.load
        cls = _BUILTIN_TAG_CLASSES.get(tag) or _resolve_tag(tag)
        # Registered types first, built-in ones included (a registered Decimal
        # serializer wrote the payload, so its deserializer must read it).
        custom = _mro_lookup(cls, self.deserializers)
        if custom is not None:
            return lambda payload, depth: custom(payload, cls)
        if _mro_lookup(cls, self.serializers) is not None:
            raise _Failure(
                "tag",
                tag,
                f"{_type_name(cls)!r} has a custom serializer but no deserializer. Fix: "
                f"register_custom_deserializer({cls.__qualname__}, lambda value: ...).",
            )
        builtin = _BUILTIN_LOADERS.get(tag)
        if builtin is not None:
            return lambda payload, depth: builtin(payload, depth, load)
        if issubclass(cls, enum.Enum):
            return lambda payload, depth: cls(load(payload, depth))
        if is_pydantic_model(cls):
            return _pydantic.build_loader(cls, load)
        record = _record_fields(cls)
        if record is not None:
            return _fields_loader(cls, *record, load)
        if issubclass(cls, tuple):
            if hasattr(cls, "_fields"):  # a namedtuple takes positional fields
                return lambda payload, depth: cls(*_load_list(payload, depth, load))
            return lambda payload, depth: cls(_load_list(payload, depth, load))
        scalar = scalar_structure(cls)
        if scalar is not None:
            # Decimal, dates, UUID, bytes and subclasses of int/float/str: the
            # payload is what the scalar rule wrote; the same rule reads it.
            return lambda payload, depth: scalar(payload, cls)
        container = container_loader(cls, load)
        if container is not None:
            return container
        raise _Failure(
            "tag",
            tag,
            f"the type tag {tag!r} names {_type_name(cls)!r}, which dump_typed() never "
            "tags; refusing to rebuild it.",
        )
