"""The cattrs converter, built by :func:`make_converter`: strict scalars and the registered hooks."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import enum
import typing
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._pydantic_compat import is_pydantic_model
from . import pydantic_hooks as _pydantic
from ._base import DeserializeFn, SerializeFn, _exact_decimal, _type_name
from .loaders import _is_record_type, _late_field_names

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import cattrs


__all__ = ["make_converter"]


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
