"""The shared vocabulary of the codecs: JSON types, envelope keys, type tags, walk failures."""

from __future__ import annotations

import datetime as _dt
import json
import typing
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NoReturn, TypeAlias, TypeVar

from ..errors import SerializationError

__all__ = [
    "MAX_DEPTH",
    "TYPE_KEY",
    "VALUE_KEY",
    "DeserializeFn",
    "JSONValue",
    "SerializeFn",
    "type_tag",
]

T = TypeVar("T")

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""What :func:`safe_serialize` and :func:`dump_typed` return: plain JSON data."""

TYPE_KEY: Final = "__flujo_type__"
"""The key that marks a typed envelope produced by :func:`dump_typed`."""

VALUE_KEY: Final = "value"
"""The key holding an envelope's payload."""

MAX_DEPTH: Final = 200
"""Nesting limit. Deeper data is reported as a reference cycle (when it is one)
or as too deep, instead of overflowing the interpreter stack."""

SerializeFn: TypeAlias = Callable[[Any], object]
# Registered deserializers are kept as fn(value, type_) (see _with_type).
DeserializeFn: TypeAlias = Callable[[Any, Any], object]
# A per-type handler: (value, depth) -> JSON data (or, for loaders, the object).
_Handler: TypeAlias = Callable[[Any, int], Any]

_JSON_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
# Registering one of these would change what plain JSON data means.
_RESERVED: Final = frozenset({object, str, int, float, bool, type(None), list, dict})

_BUILTIN_TAGS: Final = {
    tuple: "builtins:tuple",
    set: "builtins:set",
    frozenset: "builtins:frozenset",
    dict: "builtins:dict",
    bytes: "builtins:bytes",
    bytearray: "builtins:bytearray",
    Decimal: "decimal:Decimal",
    _dt.datetime: "datetime:datetime",
    _dt.date: "datetime:date",
    _dt.time: "datetime:time",
    uuid.UUID: "uuid:UUID",
}
_BUILTIN_TAG_CLASSES: Final = {tag: tp for tp, tag in _BUILTIN_TAGS.items()}
_SCALAR_BASES: Final = (_dt.datetime, _dt.date, _dt.time, Decimal, uuid.UUID, bytes, bytearray)

# Classes that dump_typed has tagged in this process (or that were registered):
# load_typed resolves these without touching sys.modules. Plain dict: a single
# item assignment is atomic, and a stale miss only costs a lookup.
_TAG_CLASSES: dict[str, type] = {}


def type_tag(tp: type) -> str:
    """Return the ``module:qualname`` tag :func:`dump_typed` records for ``tp``."""
    return _BUILTIN_TAGS.get(tp) or f"{tp.__module__}:{tp.__qualname__}"


def _type_name(tp: type) -> str:
    if tp.__module__ == "builtins":
        return tp.__qualname__
    return f"{tp.__module__}.{tp.__qualname__}"


def _type_repr(type_: object) -> str:
    return _type_name(type_) if isinstance(type_, type) else repr(type_)


def _fix_hint(tp: type) -> str:
    name = tp.__qualname__
    return (
        f"Fix: register_custom_serializer({name}, lambda obj: ...) "
        f"(and register_custom_deserializer({name}, lambda value: ...) to rebuild it)."
    )


def _mro_lookup(tp: type, registry: Mapping[type, T]) -> T | None:
    for base in tp.__mro__:
        found = registry.get(base)
        if found is not None:
            return found
    return None


def _key_segment(key: object) -> str:
    text = repr(key)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"[{text}]"


def _dump_pairs(dump: _Handler, obj: Mapping[Any, Any], depth: int) -> list[list[Any]]:
    """``[[key, value], ...]`` of a mapping, each dumped by ``dump``.

    The tagged form of a mapping whose keys must come back exactly; a failure
    names the key (or ``[<key>]`` when the key itself failed).
    """
    pairs = []
    for key, item in obj.items():
        try:
            dumped_key = dump(key, depth + 1)
        except _Failure as failure:
            failure.push("[<key>]", obj)
            raise
        try:
            pairs.append([dumped_key, dump(item, depth + 1)])
        except _Failure as failure:
            failure.push(_key_segment(key), obj)
            raise
    return pairs


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _sorted_items(items: list[Any]) -> list[Any]:
    """Sort serialized set members deterministically.

    Natural order when the members are comparable (all numbers, all strings),
    otherwise by their canonical JSON text, so equal sets always serialize alike.
    """
    try:
        items.sort()
    except TypeError:
        items.sort(key=_canonical)
    return items


class _Failure(Exception):
    """Internal: a failure deep inside a walk, collecting its path while unwinding.

    Container handlers append the segment that led to the failing child; the
    public entry point turns the collected path into one SerializationError.
    Raising this costs nothing on the success path (zero-cost ``try`` in 3.11).
    """

    def __init__(
        self,
        kind: str,
        subject: object = None,
        detail: str = "",
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(kind)
        self.kind = kind
        self.subject = subject
        self.detail = detail
        self.cause = cause
        self.segments: list[str] = []
        self.chain: list[object] = []

    def push(self, segment: str, container: object) -> None:
        self.segments.append(segment)
        self.chain.append(container)

    def path(self, root: str, upto: int | None = None) -> str:
        segments = self.segments[::-1]
        if upto is not None:
            segments = segments[:upto]
        if len(segments) > 24:  # a too-deep path would drown the message
            segments = [*segments[:8], "...", *segments[-8:]]
        return root + "".join(segments)

    def to_error(self, root: str, action: str) -> SerializationError:
        at = self.path(root)
        if self.kind == "unsupported":
            tp = type(self.subject)
            return SerializationError(
                f"Cannot serialize an object of type {_type_name(tp)!r} at {at}: it is not "
                "JSON-compatible and no serializer is registered for it. " + _fix_hint(tp)
            )
        if self.kind == "hook":
            tp = type(self.subject)
            return SerializationError(
                f"The serializer registered for {_type_name(tp)!r} raised {self.cause!r} at {at}."
            )
        if self.kind == "deep":
            return self._deep_error(root, action)
        # "key", "collision", "load", "rebuild", "tag", "shape": detail says it all.
        return SerializationError(f"Cannot {action} the value at {at}: {self.detail}")

    def _deep_error(self, root: str, action: str) -> SerializationError:
        # chain[::-1] runs from the root down; the same object twice is a cycle.
        containers = self.chain[::-1]
        first_seen: dict[int, int] = {}
        for depth, container in enumerate(containers):
            seen_at = first_seen.setdefault(id(container), depth)
            if seen_at != depth:
                tp = type(container)
                return SerializationError(
                    f"Cannot {action} a reference cycle: the {_type_name(tp)!r} object at "
                    f"{self.path(root, seen_at)} contains itself at {self.path(root, depth)}. "
                    "Break the cycle, or register a serializer for the type that "
                    "returns an acyclic value."
                )
        return SerializationError(
            f"Cannot {action} the value at {self.path(root)}: it is nested more than "
            f"{MAX_DEPTH} levels deep."
        )


def _too_deep(obj: object) -> NoReturn:
    raise _Failure("deep", obj)


def _unsupported(obj: object, depth: int) -> NoReturn:
    raise _Failure("unsupported", obj)


def _coerce_scalar_key(key: object) -> str | None:
    """JSON's own key coercion (what ``json.dumps`` does), or None if not a scalar."""
    tk = type(key)
    if tk is str:
        return typing.cast("str", key)
    if tk is bool:
        return "true" if key else "false"
    if key is None:
        return "null"
    if tk is int:
        return int.__repr__(typing.cast("int", key))
    if tk is float:
        return float.__repr__(typing.cast("float", key))
    return None


def _exact_decimal(cls: type[Decimal], value: object) -> Decimal:
    if isinstance(value, Decimal):
        return cls(value)
    if type(value) is str or type(value) is int:
        try:
            return cls(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
    if type(value) is float:
        return cls(repr(value))  # the shortest repr, like the usage ledger
    raise TypeError(f"expected a decimal string, got {_type_name(type(value))!r}")
