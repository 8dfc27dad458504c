"""Serialization: one cattrs converter, a thread-safe registry, and typed envelopes.

Everything flujo_actors persists (state checkpoints, cache entries) goes through
this module, and everything it produces is plain JSON data: ``dict`` (``str``
keys), ``list``, ``str``, ``int``, ``float``, ``bool`` and ``None``. Nothing is
ever pickled.

Four entry points:

* :func:`safe_serialize` turns attrs classes, dataclasses, enums, ``Decimal``
  (exact, as a string), ``datetime``/``date``/``time`` (ISO 8601), ``UUID``,
  ``bytes`` (base64), sets, tuples, mappings and registered types into JSON
  data. An unsupported value raises :class:`~flujo_actors.errors.SerializationError`
  naming its type, where it sat (``context.scratchpad['x']``) and the one-line
  fix.
* :func:`safe_deserialize` rebuilds a value of a *known* static type (attrs
  classes, generics such as ``list[Decimal]``, ``X | None``, registered types)
  through the package's cattrs converter.
* :func:`dump_typed` / :func:`load_typed` handle values whose static type is
  unknown (step outputs typed ``Any``): non-JSON values are wrapped in a small
  envelope ``{"__flujo_type__": "module:qualname", "value": ...}`` so they come
  back with their type. Plain JSON data passes through unwrapped.

The registry (:func:`register_custom_serializer`,
:func:`register_custom_deserializer`) is guarded by a lock and published
copy-on-write: a registration builds a new immutable codec generation (with
its own dispatch caches and its own converter, made by :func:`make_converter`)
and swaps it in with one assignment. Readers in other threads never take the
lock and never observe a half-updated table; a call already in progress
finishes on the generation it started with.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import enum
import json
import sys
import threading
import typing
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeAlias, TypeVar, overload

import attrs

from . import _pydantic_compat as _pydantic
from ._pydantic_compat import is_pydantic_model
from .errors import SerializationError

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "MAX_DEPTH",
    "TYPE_KEY",
    "VALUE_KEY",
    "JSONValue",
    "dump_typed",
    "dumps_json",
    "get_converter",
    "load_typed",
    "loads_json",
    "make_converter",
    "register_custom_deserializer",
    "register_custom_serializer",
    "safe_deserialize",
    "safe_serialize",
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


class _Codec:
    """One immutable generation of the registry, with its dispatch caches.

    The handler tables fill lazily, once per concrete type; building a handler
    twice in a race is harmless (both results are equal).
    """

    def __init__(
        self,
        serializers: Mapping[type, SerializeFn],
        deserializers: Mapping[type, DeserializeFn],
    ) -> None:
        self.serializers: Mapping[type, SerializeFn] = dict(serializers)
        self.deserializers: Mapping[type, DeserializeFn] = dict(deserializers)
        self._converter: cattrs.Converter | None = None
        ser_table: dict[type, _Handler] = {}
        dump_table: dict[type, _Handler] = {}
        self._ser_table = ser_table
        self._dump_table = dump_table
        self._loaders: dict[str, _Handler] = {}

        # Closures over local tables: the hot path pays no attribute lookups.
        def ser(obj: object, depth: int) -> Any:
            tp = type(obj)
            if tp is str or tp is int or tp is float or tp is bool or obj is None:
                return obj
            handler = ser_table.get(tp)
            if handler is None:
                handler = ser_table[tp] = self._build_ser(tp)
            return handler(obj, depth)

        def dump(obj: object, depth: int) -> Any:
            tp = type(obj)
            if tp is str or tp is int or tp is float or tp is bool or obj is None:
                return obj
            handler = dump_table.get(tp)
            if handler is None:
                handler = dump_table[tp] = self._build_dump(tp)
            return handler(obj, depth)

        def load(value: object, depth: int) -> Any:
            tp = type(value)
            if tp is str or tp is int or tp is float or tp is bool or value is None:
                return value
            if depth >= MAX_DEPTH:
                _too_deep(value)
            if tp is list:
                items = typing.cast("list[Any]", value)
                index = 0
                try:
                    out = []
                    for index, item in enumerate(items):  # noqa: B007 - used in except
                        out.append(load(item, depth + 1))
                except _Failure as failure:
                    failure.push(f"[{index}]", value)
                    raise
                return out
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

        self.ser = ser
        self.dump = dump
        self.load = load

    # -- the converter ---------------------------------------------------------

    @property
    def converter(self) -> cattrs.Converter:
        conv = self._converter
        if conv is None:
            # Built on first use (cattrs costs ~40 ms to import). A race builds
            # it twice; either result is correct and one wins.
            conv = self._converter = make_converter(
                serializers=self.serializers, deserializers=self.deserializers
            )
        return conv

    # -- safe_serialize handlers -------------------------------------------------

    def _build_ser(self, tp: type) -> _Handler:
        ser = self.ser
        custom = _mro_lookup(tp, self.serializers)
        if custom is not None:
            return self._custom_handler(tp, custom, ser)
        if issubclass(tp, enum.Enum):

            def ser_enum(obj: enum.Enum, depth: int) -> Any:
                try:
                    return ser(obj.value, depth + 1)
                except _Failure as failure:
                    failure.push(".value", obj)
                    raise

            return ser_enum
        if is_pydantic_model(tp):
            return _pydantic.build_ser(ser)
        names = _field_names(tp)
        if names is not None:
            return self._fields_handler(names, ser)
        if issubclass(tp, bool):
            return lambda obj, depth: bool(obj)
        if issubclass(tp, int):
            return lambda obj, depth: int(obj)
        if issubclass(tp, float):
            return lambda obj, depth: float(obj)
        if issubclass(tp, str):
            return lambda obj, depth: str(obj)
        if issubclass(tp, Decimal):
            return lambda obj, depth: str(obj)
        if issubclass(tp, (_dt.datetime, _dt.date, _dt.time)):
            return lambda obj, depth: obj.isoformat()
        if issubclass(tp, uuid.UUID):
            return lambda obj, depth: str(obj)
        if issubclass(tp, (bytes, bytearray)):
            return lambda obj, depth: base64.b64encode(obj).decode("ascii")
        if issubclass(tp, Mapping):
            return self._ser_mapping
        if issubclass(tp, (list, tuple, deque)):
            return self._sequence_handler(ser)
        if issubclass(tp, (set, frozenset)):

            def ser_set(obj: set[Any], depth: int) -> Any:
                if depth >= MAX_DEPTH:
                    _too_deep(obj)
                try:
                    return _sorted_items([ser(item, depth + 1) for item in obj])
                except _Failure as failure:
                    failure.push("[<set member>]", obj)
                    raise

            return ser_set
        return _unsupported

    @staticmethod
    def _custom_handler(tp: type, custom: SerializeFn, ser: _Handler) -> _Handler:
        segment = f"<serialized {tp.__qualname__}>"

        def ser_custom(obj: object, depth: int) -> Any:
            if depth >= MAX_DEPTH:
                _too_deep(obj)
            try:
                produced = custom(obj)
            except Exception as exc:  # a user hook: report it with its path
                raise _Failure("hook", obj, cause=exc) from exc
            try:
                # The hook's output is walked too: it must be JSON data, and
                # helpers such as Decimal inside it still serialize.
                return ser(produced, depth + 1)
            except _Failure as failure:
                failure.push(segment, obj)
                raise

        return ser_custom

    @staticmethod
    def _fields_handler(names: tuple[str, ...], walk: _Handler) -> _Handler:
        def walk_fields(obj: object, depth: int) -> Any:
            if depth >= MAX_DEPTH:
                _too_deep(obj)
            out = {}
            name = ""
            try:
                for name in names:
                    out[name] = walk(getattr(obj, name), depth + 1)
            except _Failure as failure:
                failure.push(f".{name}", obj)
                raise
            return out

        return walk_fields

    @staticmethod
    def _sequence_handler(walk: _Handler) -> _Handler:
        def walk_sequence(obj: list[Any], depth: int) -> Any:
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

        return walk_sequence

    def _ser_mapping(self, obj: Mapping[Any, Any], depth: int) -> Any:
        if depth >= MAX_DEPTH:
            _too_deep(obj)
        ser = self.ser
        out: dict[str, Any] = {}
        for key, item in obj.items():
            json_key = key if type(key) is str else self._json_key(key, obj, depth)
            try:
                out[json_key] = ser(item, depth + 1)
            except _Failure as failure:
                failure.push(_key_segment(key), obj)
                raise
        if len(out) != len(obj):
            self._key_collision(obj, depth)
        return out

    def _json_key(self, key: object, mapping: object, depth: int) -> str:
        coerced = _coerce_scalar_key(key)
        if coerced is not None:
            return coerced
        # Enum, Decimal, UUID, date, tuples...: serialize, then coerce like JSON.
        try:
            value = self.ser(key, depth + 1)
        except _Failure as failure:
            failure.push("[<key>]", mapping)
            raise
        coerced = _coerce_scalar_key(value)
        return coerced if coerced is not None else _canonical(value)

    def _key_collision(self, obj: Mapping[Any, Any], depth: int) -> NoReturn:
        owners: dict[str, object] = {}
        for key in obj:
            coerced = key if type(key) is str else self._json_key(key, obj, depth)
            if coerced in owners:
                raise _Failure(
                    "collision",
                    obj,
                    f"the keys {owners[coerced]!r} and {key!r} both become the JSON key "
                    f"{coerced!r}. Use distinct keys.",
                )
            owners[coerced] = key
        raise AssertionError("unreachable: no collision found")  # pragma: no cover

    # -- dump_typed handlers -------------------------------------------------------

    @staticmethod
    def _remember(tp: type) -> str:
        tag = type_tag(tp)
        _TAG_CLASSES[tag] = tp
        return tag

    def _build_dump(self, tp: type) -> _Handler:
        dump = self.dump
        custom = _mro_lookup(tp, self.serializers)
        if custom is not None:
            tag = self._remember(tp)
            plain = self._custom_handler(tp, custom, self.ser)
            return lambda obj, depth: {TYPE_KEY: tag, VALUE_KEY: plain(obj, depth)}
        if issubclass(tp, enum.Enum):
            tag = self._remember(tp)

            def dump_enum(obj: enum.Enum, depth: int) -> Any:
                try:
                    return {TYPE_KEY: tag, VALUE_KEY: dump(obj.value, depth + 1)}
                except _Failure as failure:
                    failure.push(".value", obj)
                    raise

            return dump_enum
        if is_pydantic_model(tp):
            return _pydantic.build_dump(tp, dump, self._remember)
        names = _field_names(tp)
        if names is not None:
            tag = self._remember(tp)
            fields = self._fields_handler(names, dump)
            return lambda obj, depth: {TYPE_KEY: tag, VALUE_KEY: fields(obj, depth)}
        if tp is not list and issubclass(tp, (Mapping, list, deque, set, frozenset)):
            # OrderedDict, defaultdict, Counter, deque and other container
            # subclasses: tagged with their own class (see _containers.py).
            from ._containers import container_dump

            handler = container_dump(tp, dump, self._remember)
            if handler is not None:
                return handler
        if issubclass(tp, list):
            return self._sequence_handler(dump)
        if issubclass(tp, tuple):
            tag = self._remember(tp) if tp is not tuple else type_tag(tuple)
            items = self._sequence_handler(dump)
            return lambda obj, depth: {TYPE_KEY: tag, VALUE_KEY: items(obj, depth)}
        if issubclass(tp, Mapping):
            return self._dump_mapping
        if issubclass(tp, (set, frozenset)):
            tag = type_tag(frozenset if issubclass(tp, frozenset) else set)

            def dump_set(obj: set[Any], depth: int) -> Any:
                if depth >= MAX_DEPTH:
                    _too_deep(obj)
                try:
                    members = _sorted_items([dump(item, depth + 1) for item in obj])
                except _Failure as failure:
                    failure.push("[<set member>]", obj)
                    raise
                return {TYPE_KEY: tag, VALUE_KEY: members}

            return dump_set
        if issubclass(tp, (*_SCALAR_BASES, int, float, str)) and not issubclass(tp, bool):
            # Decimal, datetime, UUID, bytes and subclasses of int/float/str:
            # the payload is what safe_serialize makes; the tag restores the type.
            tag = self._remember(tp) if tp not in _BUILTIN_TAGS else type_tag(tp)
            plain = self._build_ser(tp)
            return lambda obj, depth: {TYPE_KEY: tag, VALUE_KEY: plain(obj, depth)}
        return _unsupported

    def _dump_mapping(self, obj: Mapping[Any, Any], depth: int) -> Any:
        if depth >= MAX_DEPTH:
            _too_deep(obj)
        dump = self.dump
        out: dict[str, Any] = {}
        key: object = None
        needs_pairs = False
        try:
            for key, item in obj.items():
                if type(key) is not str or key == TYPE_KEY:
                    needs_pairs = True
                    break
                out[key] = dump(item, depth + 1)
        except _Failure as failure:
            failure.push(_key_segment(key), obj)
            raise
        if needs_pairs:
            # Non-string keys (or our own marker as a key) need the tagged
            # form, so that the keys come back exactly.
            return self._dump_items(obj, depth)
        return out

    def _dump_items(self, obj: Mapping[Any, Any], depth: int) -> Any:
        dump = self.dump
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
        return {TYPE_KEY: type_tag(dict), VALUE_KEY: pairs}

    # -- load_typed ------------------------------------------------------------------

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
        if attrs.has(cls):
            a_fields = attrs.fields(cls)
            return _fields_loader(
                cls,
                [(a.name, a.alias) for a in a_fields if a.init],
                [a.name for a in a_fields if not a.init],
                load,
            )
        if dataclasses.is_dataclass(cls):
            d_fields = dataclasses.fields(cls)
            return _fields_loader(
                cls,
                [(f.name, f.name) for f in d_fields if f.init],
                [f.name for f in d_fields if not f.init],
                load,
            )
        if issubclass(cls, tuple):
            if hasattr(cls, "_fields"):  # a namedtuple takes positional fields
                return lambda payload, depth: cls(*_load_list(payload, depth, load))
            return lambda payload, depth: cls(_load_list(payload, depth, load))
        if issubclass(cls, (_dt.datetime, _dt.date, _dt.time)):
            return lambda payload, depth: cls.fromisoformat(payload)
        if issubclass(cls, (bytes, bytearray)):
            return lambda payload, depth: cls(base64.b64decode(payload, validate=True))
        if issubclass(cls, (Decimal, uuid.UUID, int, float, str)) and not issubclass(cls, bool):
            return lambda payload, depth: cls(payload)
        from ._containers import container_loader

        container = container_loader(cls, load)
        if container is not None:
            return container
        raise _Failure(
            "tag",
            tag,
            f"the type tag {tag!r} names {_type_name(cls)!r}, which dump_typed() never "
            "tags; refusing to rebuild it.",
        )


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


def _strict_int(value: object) -> int:
    # Strict: cattrs' default int(value) would silently truncate 2.5 to 2.
    if type(value) is int:
        return value
    if type(value) is str:  # a dict key: JSON made it a string
        return int(value)
    if type(value) is float and value.is_integer():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _strict_float(value: object) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    if type(value) is str:  # a dict key, or json's 'NaN' / 'Infinity'
        return float(value)
    raise ValueError(f"expected a number, got {value!r}")


def _strict_bool(value: object) -> bool:
    if type(value) is bool:
        return value
    if value == "true" or value == "false":  # a bool dict key, coerced by JSON
        return value == "true"
    raise ValueError(f"expected a boolean, got {value!r}")


def _strict_str(value: object) -> str:
    if type(value) is str:
        return value
    raise ValueError(f"expected a string, got {value!r}")


def _strict_bytes(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if type(value) is str:
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError(f"{value!r} is not base64") from None
    raise TypeError(f"expected a base64 string, got {_type_name(type(value))!r}")


def _tuplify(value: object) -> object:
    if isinstance(value, list):
        return tuple(_tuplify(item) for item in value)
    return value


def _structure_enum(value: object, type_: type[enum.Enum]) -> enum.Enum:
    try:
        return type_(value)
    except ValueError:
        if isinstance(value, list):  # a tuple-valued member, serialized as a list
            return type_(_tuplify(value))
        raise


def _structure_scalar(value: object, type_: Any) -> object:
    """Structure hook for ``int``/``float``/``str``/``bool``/bytes and subclasses.

    cattrs routes these through ``functools.singledispatch``, so an ``IntEnum``
    (whose MRO lists ``int`` before ``Enum``) arrives here too.
    """
    if issubclass(type_, enum.Enum):
        return _structure_enum(value, type_)
    if issubclass(type_, bool):
        return _strict_bool(value)
    if issubclass(type_, int):
        number = _strict_int(value)
        return number if type_ is int else type_(number)
    if issubclass(type_, float):
        real = _strict_float(value)
        return real if type_ is float else type_(real)
    if issubclass(type_, str):
        text = _strict_str(value)
        return text if type_ is str else type_(text)
    data = _strict_bytes(value)
    return data if type_ is bytes else type_(data)


def _structure_decimal(value: object, type_: type[Decimal]) -> Decimal:
    return _exact_decimal(type_, value)


def _structure_temporal(value: object, type_: type[_dt.date | _dt.time]) -> object:
    if type(value) is str:
        return type_.fromisoformat(value)
    if isinstance(value, type_):
        return value
    raise TypeError(f"expected an ISO 8601 string, got {_type_name(type(value))!r}")


def _structure_uuid(value: object, type_: type[uuid.UUID]) -> uuid.UUID:
    if type(value) is str:
        return type_(value)
    if isinstance(value, uuid.UUID):
        return value
    raise TypeError(f"expected a UUID string, got {_type_name(type(value))!r}")


def make_converter(
    *,
    serializers: Mapping[type, SerializeFn] | None = None,
    deserializers: Mapping[type, Callable[..., object]] | None = None,
) -> cattrs.Converter:
    """Build a cattrs converter configured the flujo_actors way.

    The package keeps exactly one live converter (see :func:`get_converter`);
    this factory builds it, and builds its replacement when the registry
    changes. Hooks: exact ``Decimal`` strings, ISO 8601 dates and times, UUID
    strings, base64 bytes, strict scalars (``2.5`` never becomes ``2``, ``1``
    never becomes ``"1"``), enums (tuple values included), attrs classes with
    their ``init=False`` fields, and the registered types.

    Class hooks go through cattrs' ``singledispatch`` layer, which cattrs
    consults before anything else and which follows the MRO: a registered type
    takes precedence over the built-in handling (attrs, enum, ``str``, ...),
    and its subclasses use its hooks unless they have their own.

    Args:
        serializers: Type -> ``fn(obj) -> JSON data``, used by ``unstructure``.
        deserializers: Type -> ``fn(value) -> obj`` or ``fn(value, type_) -> obj``
            (as :func:`register_custom_deserializer`), used by ``structure``.

    Returns:
        A new ``cattrs.Converter``.
    """
    import cattrs
    from cattrs.gen import make_dict_structure_fn

    conv = cattrs.Converter(detailed_validation=True)

    for scalar in (int, float, str, bool, bytes, bytearray):
        conv.register_structure_hook(scalar, _structure_scalar)
    conv.register_structure_hook(enum.Enum, _structure_enum)
    conv.register_structure_hook(Decimal, _structure_decimal)
    for temporal in (_dt.datetime, _dt.date, _dt.time):
        conv.register_structure_hook(temporal, _structure_temporal)
    conv.register_structure_hook(uuid.UUID, _structure_uuid)

    def record_structure_factory(cls: Any) -> Callable[[Any, Any], Any]:
        base = make_dict_structure_fn(cls, conv)
        late = _late_field_names(typing.get_origin(cls) or cls)
        if not late:
            return base
        try:
            hints = typing.get_type_hints(typing.get_origin(cls) or cls)
        except Exception:  # unresolvable annotations: rebuild those fields as-is
            hints = {}

        def structure_with_late_fields(value: Any, type_: Any) -> Any:
            # cattrs drops init=False fields (of frozen classes and dataclasses);
            # restore them so that saved state survives a round trip.
            obj = base(value, type_)
            for name in late:
                if name in value:
                    structured = conv.structure(value[name], hints.get(name, Any))
                    object.__setattr__(obj, name, structured)
            return obj

        return structure_with_late_fields

    conv.register_structure_hook_factory(_is_record_type, record_structure_factory)
    # pydantic models: model_dump(mode="json") / model_validate on the target type.
    # Registered types (singledispatch, consulted first) still win.
    conv.register_unstructure_hook_func(is_pydantic_model, _pydantic.unstructure)
    conv.register_structure_hook_func(is_pydantic_model, _pydantic.structure)

    conv.register_unstructure_hook(Decimal, str)
    conv.register_unstructure_hook(uuid.UUID, str)
    for temporal in (_dt.datetime, _dt.date, _dt.time):
        conv.register_unstructure_hook(temporal, lambda obj: obj.isoformat())
    for binary in (bytes, bytearray):
        conv.register_unstructure_hook(binary, lambda obj: base64.b64encode(obj).decode("ascii"))

    for cls, serialize in (serializers or {}).items():
        conv.register_unstructure_hook(cls, _custom_unstructure_hook(conv, serialize))
    for cls, deserialize in (deserializers or {}).items():
        conv.register_structure_hook(cls, _custom_structure_hook(_with_type(deserialize)))
    return conv


def _custom_unstructure_hook(conv: cattrs.Converter, fn: SerializeFn) -> Callable[[Any], object]:
    def unstructure_custom(obj: Any) -> object:
        # Like safe_serialize: the hook's output is unstructured in turn.
        return conv.unstructure(fn(obj))

    return unstructure_custom


def _custom_structure_hook(fn: DeserializeFn) -> Callable[[Any, Any], object]:
    def structure_custom(value: Any, type_: Any) -> object:
        return fn(value, type_)

    return structure_custom


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


# -- the registry ------------------------------------------------------------------

_LOCK: Final = threading.Lock()
_CODEC: _Codec = _Codec({}, {})


def _check_registration(api: str, type_: object, fn: object) -> type:
    if not isinstance(type_, type):
        raise TypeError(f"{api}: type_ must be a class, got {type_!r}.")
    if type_ is object:
        raise TypeError(f"{api}: cannot register object (it would capture every type).")
    if type_ in _RESERVED:
        raise TypeError(
            f"{api}: {type_.__qualname__} is plain JSON data and always serializes as "
            "itself; register a subclass or a wrapper type instead."
        )
    if not callable(fn):
        raise TypeError(f"{api}: fn must be callable, got {fn!r}.")
    return type_


def register_custom_serializer(type_: type[T], fn: Callable[[T], object]) -> None:
    """Teach :func:`safe_serialize` (and :func:`dump_typed`) how to write ``type_``.

    ``fn(obj)`` returns JSON data; its result is serialized again, so it may
    contain other supported values (``Decimal``, nested registered types).
    Subclasses of ``type_`` use ``fn`` unless they have their own entry, and a
    registered type takes precedence over the built-in handling (attrs, enum,
    ...). Registering a type again replaces its function. Thread-safe: calls
    running in other threads finish with the previous registry.

    Args:
        type_: The class to handle.
        fn: ``fn(obj) -> JSON-compatible value``.

    Raises:
        TypeError: ``type_`` is not a class, is a plain JSON type (``str``,
            ``int``, ``float``, ``bool``, ``None``, ``list``, ``dict``), or
            ``fn`` is not callable.
    """
    cls = _check_registration("register_custom_serializer", type_, fn)
    global _CODEC
    with _LOCK:
        serializers = {**_CODEC.serializers, cls: fn}
        _CODEC = _Codec(serializers, _CODEC.deserializers)
        _TAG_CLASSES[type_tag(cls)] = cls


def register_custom_deserializer(type_: type[T], fn: Callable[..., T]) -> None:
    """Teach :func:`safe_deserialize` (and :func:`load_typed`) how to rebuild ``type_``.

    ``fn`` receives what the registered serializer produced and returns the
    object. It is called as ``fn(value, target)`` if it declares a second
    positional parameter without a default (decided once, here), else as
    ``fn(value)``; a class is always called as ``cls(value)``. ``target`` is
    the class to build: the stored value's own class for :func:`load_typed`,
    the requested type for :func:`safe_deserialize`. Subclasses of ``type_``
    use ``fn`` unless they have their own entry, so a deserializer registered
    for a base class (a pydantic ``BaseModel``, say) rebuilds every subclass
    with ``lambda value, cls: cls(**value)``. Thread-safe, like
    :func:`register_custom_serializer`.

    Args:
        type_: The class to rebuild.
        fn: ``fn(value) -> obj`` or ``fn(value, type_) -> obj``.

    Raises:
        TypeError: Same rules as :func:`register_custom_serializer`, or ``fn``
            takes neither ``(value)`` nor ``(value, type_)``.
    """
    cls = _check_registration("register_custom_deserializer", type_, fn)
    typed = _with_type(fn, "register_custom_deserializer")
    global _CODEC
    with _LOCK:
        deserializers = {**_CODEC.deserializers, cls: typed}
        _CODEC = _Codec(_CODEC.serializers, deserializers)
        _TAG_CLASSES[type_tag(cls)] = cls


def _registry_snapshot() -> tuple[dict[type, SerializeFn], dict[type, DeserializeFn]]:
    """Copy the registry (for :mod:`flujo_actors.testing.serializers`)."""
    codec = _CODEC
    return dict(codec.serializers), dict(codec.deserializers)


def _restore_registry(
    snapshot: tuple[Mapping[type, SerializeFn], Mapping[type, DeserializeFn]],
) -> None:
    """Put back a registry taken by :func:`_registry_snapshot`."""
    global _CODEC
    with _LOCK:
        _CODEC = _Codec(*snapshot)


def get_converter() -> cattrs.Converter:
    """Return the package's cattrs converter (current registry generation).

    Use it for read-only work (``structure``/``unstructure``). Do not register
    hooks on it directly: they would vanish at the next registration. Use
    :func:`register_custom_serializer` / :func:`register_custom_deserializer`.
    """
    return _CODEC.converter


# -- the public entry points ---------------------------------------------------------


def safe_serialize(obj: object, *, path: str = "$") -> JSONValue:
    """Turn ``obj`` into plain JSON data.

    Supported: JSON scalars and containers, attrs classes and dataclasses
    (all fields, as objects), enums (their value), ``Decimal`` (exact string),
    ``datetime``/``date``/``time`` (ISO 8601), ``UUID`` (string), ``bytes``
    (base64), tuples and deques (lists), sets (lists, deterministically
    sorted), any mapping (non-string keys coerced the way JSON does), and
    registered types. Floats pass through (``nan``/``inf`` included, as
    Python's ``json`` writes them).

    Args:
        obj: The value.
        path: The name of ``obj`` in error messages, e.g. ``"context"``.

    Returns:
        New JSON data; nothing in it aliases ``obj``.

    Raises:
        SerializationError: A value is not supported (the message names its
            type, its path such as ``context.scratchpad['x']``, and the
            ``register_custom_serializer`` call that fixes it), a registered
            serializer raised, the data contains a reference cycle, two keys
            collide as JSON strings, or nesting exceeds :data:`MAX_DEPTH`.
    """
    try:
        return typing.cast("JSONValue", _CODEC.ser(obj, 0))
    except _Failure as failure:
        raise failure.to_error(path, "serialize") from failure.cause


@overload
def safe_deserialize(value: object, type_: type[T], *, path: str = ...) -> T: ...
@overload
def safe_deserialize(value: object, type_: object, *, path: str = ...) -> Any: ...
def safe_deserialize(value: object, type_: object, *, path: str = "$") -> Any:
    """Rebuild a value of the static type ``type_`` from JSON data.

    Uses the package converter: attrs classes (nested, generic, with
    ``init=False`` fields), dataclasses, ``list[Decimal]``, ``X | None``,
    tuples, sets, enums, dates, UUIDs, bytes and registered types.

    Args:
        value: JSON data, typically from :func:`safe_serialize`.
        type_: The type to build, e.g. ``MyContext`` or ``dict[str, Decimal]``.
        path: The name of ``value`` in error messages.

    Returns:
        The rebuilt object.

    Raises:
        SerializationError: The data does not fit ``type_`` (every problem is
            listed with its path), or no hook knows ``type_``.
    """
    import cattrs

    try:
        return _CODEC.converter.structure(value, typing.cast("Any", type_))
    except cattrs.StructureHandlerNotFoundError as exc:
        name = _type_repr(type_)
        short = type_.__qualname__ if isinstance(type_, type) else name
        raise SerializationError(
            f"Cannot rebuild {name!r} at {path}: no deserializer is registered for it. "
            f"Fix: register_custom_deserializer({short}, lambda value: ...)."
        ) from exc
    except Exception as exc:
        problems = cattrs.transform_error(exc, path=path, format_exception=_format_exception)
        raise SerializationError(
            f"Cannot rebuild {_type_repr(type_)!r} from the data at {path}: "
            + "; ".join(problems)
            + "."
        ) from exc


def _format_exception(exc: BaseException, type_: type | None) -> str:
    from cattrs.v import format_exception

    text = format_exception(exc, type_)
    if isinstance(exc, (ValueError, TypeError)) and str(exc):
        # cattrs' generic wording hides what our hooks and constructors said.
        text = f"{text} ({exc})"
    return text


def dump_typed(obj: object, *, path: str = "$") -> JSONValue:
    """Serialize ``obj`` so that :func:`load_typed` rebuilds the same type.

    JSON scalars, lists and string-keyed dicts stay as they are (recursively).
    Every other supported value becomes ``{"__flujo_type__": "module:qualname",
    "value": payload}``: attrs classes and dataclasses (fields, typed
    recursively), enums, ``Decimal``, dates and times, ``UUID``, bytes,
    tuples and named tuples, sets, dicts with non-string keys, subclasses of
    ``int``/``float``/``str``, and registered types (the payload is the
    registered serializer's output). ``OrderedDict``, ``defaultdict`` (whose
    ``default_factory`` must be ``None`` or a class), ``Counter``, ``deque``
    (with its ``maxlen``), other mappings and subclasses of ``list``/``dict``/
    ``set``/``frozenset`` come back as their own class (see
    :mod:`flujo_actors._containers`).

    Classes should live at module level so another process can resolve their
    tags (crash-resume); classes defined inside functions only round-trip
    within the process that dumped them.

    Args:
        obj: The value.
        path: The name of ``obj`` in error messages.

    Returns:
        New JSON data.

    Raises:
        SerializationError: As :func:`safe_serialize`.
    """
    try:
        return typing.cast("JSONValue", _CODEC.dump(obj, 0))
    except _Failure as failure:
        raise failure.to_error(path, "serialize") from failure.cause


def load_typed(value: object, *, path: str = "$") -> object:
    """Rebuild what :func:`dump_typed` produced: same types, equal values.

    A type tag resolves only to a class that dump_typed tagged in this
    process, a registered class, or a class reachable by attribute lookups
    in a module that is *already imported*; it must be a kind dump_typed
    tags (attrs class, dataclass, enum, named tuple, registered type,
    subclass of a supported scalar). Nothing is imported or evaluated.

    Args:
        value: JSON data from :func:`dump_typed`.
        path: The name of ``value`` in error messages.

    Returns:
        The rebuilt object (new; nothing aliases ``value``).

    Raises:
        SerializationError: A tag does not resolve to such a class (unknown,
            not imported, not a class, not a tagged kind), an envelope is
            malformed, a constructor or registered deserializer rejects its
            payload, or ``value`` is not JSON data.
    """
    try:
        return _CODEC.load(value, 0)
    except _Failure as failure:
        raise failure.to_error(path, "load") from failure.cause


_ENCODER: Final = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=True)


def dumps_json(value: object, *, path: str = "$") -> str:
    """Encode JSON data as compact JSON text (what the backends store).

    ASCII-only output (lone surrogates survive; SQLite text stays valid
    UTF-8). Like ``json.dumps``: tuples become lists, and ``int``/``float``/
    ``bool``/``None`` keys become strings.

    Args:
        value: JSON data, e.g. from :func:`safe_serialize` or :func:`dump_typed`.
        path: The name of ``value`` in error messages.

    Raises:
        SerializationError: ``value`` holds something JSON cannot encode (the
            message names its type and path), a cycle, or is nested too deeply.
    """
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _describe_non_json(value, path, exc) from exc


def loads_json(text: str | bytes) -> JSONValue:
    """Decode JSON text written by :func:`dumps_json` into new JSON data."""
    return typing.cast("JSONValue", json.loads(text))


def _describe_non_json(value: object, root: str, exc: Exception) -> SerializationError:
    # Slow path, only after json refused: find where, to say so.
    stack: list[tuple[object, str, int]] = [(value, root, 0)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, (str, int, float)):
            continue
        if depth >= MAX_DEPTH:
            break
        if isinstance(item, dict):
            for key, child in item.items():
                if key is not None and not isinstance(key, (str, int, float)):
                    return SerializationError(
                        f"Cannot encode a key of type {_type_name(type(key))!r} at {where}: "
                        "JSON object keys must be strings. Pass the value through "
                        "safe_serialize() first."
                    )
                stack.append((child, f"{where}{_key_segment(key)}", depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            return SerializationError(
                f"Cannot encode an object of type {_type_name(type(item))!r} at {where}: "
                "state and cache backends store JSON data only. Pass the value through "
                "safe_serialize() or dump_typed() first."
            )
    return SerializationError(f"Cannot encode the value at {root} as JSON: {exc}.")
