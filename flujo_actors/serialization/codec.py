"""The JSON walker and typed envelopes: one immutable registry generation with its dispatch caches."""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import enum
import typing
import uuid
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from .._pydantic_compat import is_pydantic_model
from . import pydantic_hooks as _pydantic
from ._base import (
    _BUILTIN_TAG_CLASSES,
    _BUILTIN_TAGS,
    _SCALAR_BASES,
    _TAG_CLASSES,
    MAX_DEPTH,
    TYPE_KEY,
    VALUE_KEY,
    DeserializeFn,
    SerializeFn,
    _canonical,
    _coerce_scalar_key,
    _dump_pairs,
    _Failure,
    _Handler,
    _key_segment,
    _mro_lookup,
    _sorted_items,
    _too_deep,
    _type_name,
    _unsupported,
    type_tag,
)
from .converter import make_converter
from .loaders import _BUILTIN_LOADERS, _field_names, _fields_loader, _load_list, _resolve_tag

if TYPE_CHECKING:
    import cattrs


__all__: list[str] = []  # internal; see flujo_actors.serialization


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
            # subclasses: tagged with their own class (see .containers).
            from .containers import container_dump

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
        return {TYPE_KEY: type_tag(dict), VALUE_KEY: _dump_pairs(self.dump, obj, depth)}

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
        from .containers import container_loader

        container = container_loader(cls, load)
        if container is not None:
            return container
        raise _Failure(
            "tag",
            tag,
            f"the type tag {tag!r} names {_type_name(cls)!r}, which dump_typed() never "
            "tags; refusing to rebuild it.",
        )
