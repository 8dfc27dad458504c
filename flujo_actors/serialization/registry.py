"""The registry (one codec generation, swapped under a lock) and the public entry points."""

from __future__ import annotations

import json
import threading
import typing
from typing import TYPE_CHECKING, Any, Final, overload

from ..errors import SerializationError
from ._base import (
    _RESERVED,
    _TAG_CLASSES,
    MAX_DEPTH,
    DeserializeFn,
    JSONValue,
    SerializeFn,
    T,
    _Failure,
    _key_segment,
    _type_name,
    _type_repr,
    _with_type,
    type_tag,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .converter import Converter


__all__ = [
    "dump_typed",
    "dumps_json",
    "get_converter",
    "has_custom_deserializer",
    "has_custom_serializer",
    "load_typed",
    "loads_json",
    "register_custom_deserializer",
    "register_custom_serializer",
    "safe_deserialize",
    "safe_serialize",
]


# -- the registry ------------------------------------------------------------------


class _Generation:
    """One immutable generation of the registry and the two converters it feeds.

    Each converter (the plain one, then the typed variant, from the same
    factory) is built on first use: cattrs costs ~40 ms to import. ``ser``,
    ``dump`` and ``load`` are the converters' walks, bound on first use so
    that a call costs one attribute lookup. A race builds a converter twice;
    either result is correct and one wins.
    """

    __slots__ = ("_plain", "_typed", "deserializers", "dump", "load", "ser", "serializers")

    def __init__(
        self,
        serializers: Mapping[type, SerializeFn],
        deserializers: Mapping[type, DeserializeFn],
    ) -> None:
        self.serializers: Mapping[type, SerializeFn] = dict(serializers)
        self.deserializers: Mapping[type, DeserializeFn] = dict(deserializers)
        self._plain: Converter | None = None
        self._typed: Converter | None = None
        self.ser: Callable[[Any, int], Any] = self._first_ser
        self.dump: Callable[[Any, int], Any] = self._first_dump
        self.load: Callable[[Any, int], Any] = self._first_load

    @property
    def plain(self) -> Converter:
        conv = self._plain
        if conv is None:
            from .converter import make_converter

            conv = self._plain = make_converter(
                serializers=self.serializers, deserializers=self.deserializers
            )
        return conv

    @property
    def typed(self) -> Converter:
        conv = self._typed
        if conv is None:
            from .converter import make_converter

            conv = self._typed = make_converter(
                typed=True,
                serializers=self.serializers,
                deserializers=self.deserializers,
                plain=self.plain,
            )
        return conv

    def _first_ser(self, obj: object, depth: int) -> Any:
        self.ser = self.plain.walk
        return self.ser(obj, depth)

    def _first_dump(self, obj: object, depth: int) -> Any:
        self.dump = self.typed.walk
        return self.dump(obj, depth)

    def _first_load(self, value: object, depth: int) -> Any:
        self.load = self.typed.load
        return self.load(value, depth)


_LOCK: Final = threading.Lock()
_CODEC: _Generation = _Generation({}, {})


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
        _CODEC = _Generation(serializers, _CODEC.deserializers)
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
        _CODEC = _Generation(_CODEC.serializers, deserializers)
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
        _CODEC = _Generation(*snapshot)


def has_custom_serializer(type_: type) -> bool:
    """Whether ``register_custom_serializer(type_, ...)`` was called (a cheap check).

    For encoders with a fast path for a type of their own: they take it only
    while nobody registered a format for that type.
    """
    return type_ in _CODEC.serializers


def has_custom_deserializer(type_: type) -> bool:
    """Whether ``register_custom_deserializer(type_, ...)`` was called (a cheap check)."""
    return type_ in _CODEC.deserializers


def get_converter() -> Converter:
    """Return the package's cattrs converter (current registry generation).

    Use it for read-only work (``structure``/``unstructure``). Do not register
    hooks on it directly: they would vanish at the next registration. Use
    :func:`register_custom_serializer` / :func:`register_custom_deserializer`.
    """
    return _CODEC.plain


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
        return _CODEC.plain.structure(value, typing.cast("Any", type_))
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
    :mod:`flujo_actors.serialization.containers`).

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
    in a module that is *already imported* (a module of flujo_actors itself
    is imported if needed); it must be a kind dump_typed tags (attrs class,
    dataclass, enum, named tuple, registered type, subclass of a supported
    scalar). No other module is imported, and nothing is evaluated.

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


def _one_shot_encoder() -> Callable[[object], str]:
    """``_ENCODER.encode``, without building a new C encoder on every call.

    ``JSONEncoder.encode`` makes a C encoder (and a dict of the containers on
    the way down, to detect cycles) per call: about half of what encoding a
    checkpoint's small record costs. This one is made once, with no cycle
    dict, so it holds no state between calls and threads may share it; a
    cycle (never produced by our dumps) ends as the RecursionError that
    :func:`dumps_json` reports. Same text as ``_ENCODER.encode``.
    """
    from json import encoder as _json_encoder

    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C encoder
        return _ENCODER.encode
    chunks = make(
        None,
        _ENCODER.default,
        _json_encoder.encode_basestring_ascii,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        False,
        False,
        True,
    )
    join = "".join

    def encode(value: object) -> str:
        return join(chunks(value, 0))

    return encode


_ENCODE: Final = _one_shot_encoder()


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
        return _ENCODE(value)
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
