"""The shared vocabulary of the codecs: JSON types, envelope keys, type tags, walk failures."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import typing
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
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


def _walk_items(walk: _Handler) -> _Handler:
    """``[walk(item), ...]`` of an iterable, bounded by MAX_DEPTH; a failure names ``[i]``."""

    def walk_items(obj: Any, depth: int) -> list[Any]:
        if depth >= MAX_DEPTH:
            _too_deep(obj)
        out = []
        index = 0
        try:
            for index, item in enumerate(obj):  # noqa: B007 - used in except
                out.append(walk(item, depth + 1))
        except _Failure as failure:
            failure.push(f"[{index}]", obj)
            raise
        return out

    return walk_items


def _load_list(payload: object, depth: int, load: _Handler) -> list[Any]:
    if type(payload) is not list:
        raise _Failure(
            "shape", payload, f"expected a list payload, got {_type_name(type(payload))!r}."
        )
    return typing.cast("list[Any]", load(payload, depth))


def _own_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


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
    if module is None and module_name.startswith("flujo_actors."):
        # The package's own value types (PipelineContext, results...) always
        # resolve: `import flujo_actors` loads its modules on first use only.
        module = _own_module(module_name)
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


class _TypedDeserializer:
    """A registered deserializer, called as ``fn(value, type_)`` or ``fn(value)``.

    Which one is decided once, at registration, from ``fn``'s signature.
    """

    __slots__ = ("fn", "takes_type")

    def __init__(self, fn: Callable[..., object], takes_type: bool) -> None:
        self.fn = fn
        self.takes_type = takes_type

    def __call__(self, value: Any, type_: Any) -> object:
        if self.takes_type:
            return self.fn(value, type_)
        return self.fn(value)

    def __repr__(self) -> str:
        return repr(self.fn)


def _with_type(fn: Callable[..., object], api: str = "make_converter") -> DeserializeFn:
    """``fn`` as a two-argument deserializer (decided once, by its signature).

    ``fn(value, type_)`` if it declares a second positional parameter without
    a default (or ``*args``); ``fn(value)`` otherwise, and always for a class
    (``register_custom_deserializer(Money, Money)`` calls ``Money(value)``).

    Raises:
        TypeError: ``fn`` takes no positional argument, or more than two required.
    """
    if isinstance(fn, _TypedDeserializer):
        return fn
    if isinstance(fn, type):
        return _TypedDeserializer(fn, False)
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: fn(value)
        return _TypedDeserializer(fn, False)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in params if p.kind in kinds]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    var_args = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    if len(required) > 2 or (not positional and not var_args):
        raise TypeError(
            f"{api}: fn must take the serialized value, and optionally the target type "
            f"as a second argument: fn(value) or fn(value, type_); got {fn!r} with the "
            f"signature {inspect.signature(fn)}."
        )
    return _TypedDeserializer(fn, len(required) == 2 or (var_args and len(positional) < 2))
