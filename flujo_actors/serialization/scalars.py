"""The scalar rules: how each scalar type becomes JSON data and comes back.

The only place these rules are written. :func:`~.converter.make_converter`
registers them on every converter it builds (the plain one behind
``safe_serialize``/``safe_deserialize``, and the typed variant behind
``dump_typed``/``load_typed``, whose envelopes carry the same payloads):

* ``Decimal``: its exact string; read back exactly (a float through its
  shortest ``repr``, as the usage ledger does);
* ``datetime``/``date``/``time``: ISO 8601; ``UUID``: its string;
  ``bytes``/``bytearray``: base64;
* strict ``int``/``float``/``str``/``bool`` (``2.5`` never becomes ``2``,
  ``1`` never becomes ``"1"``; a JSON dict key's string form is accepted);
  their subclasses are written as the base value;
* enums: their value (tuple-valued members come back from lists).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import enum
import uuid
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

from ._base import _type_name

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SCALAR_BASES", "scalar_structure", "scalar_unstructure"]

#: The non-JSON scalar types (and their subclasses) the rules cover.
SCALAR_BASES: Final = (_dt.datetime, _dt.date, _dt.time, Decimal, uuid.UUID, bytes, bytearray)


def _isoformat(obj: Any) -> str:
    return obj.isoformat()  # type: ignore[no-any-return]


def _base64(obj: bytes | bytearray) -> str:
    return base64.b64encode(obj).decode("ascii")


def scalar_unstructure(tp: type) -> Callable[[Any], object] | None:
    """The rule writing a value of the scalar type ``tp`` as JSON data, or None."""
    if issubclass(tp, bool):
        return bool
    if issubclass(tp, int):
        return int
    if issubclass(tp, float):
        return float
    if issubclass(tp, str):
        return str
    if issubclass(tp, (Decimal, uuid.UUID)):
        return str
    if issubclass(tp, (_dt.datetime, _dt.date, _dt.time)):
        return _isoformat
    if issubclass(tp, (bytes, bytearray)):
        return _base64
    return None


# -- reading back ----------------------------------------------------------------


def _exact_decimal(value: object, cls: type[Decimal]) -> Decimal:
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
    # Strict: int(value) would silently truncate 2.5 to 2.
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


def structure_enum(value: object, type_: type[enum.Enum]) -> enum.Enum:
    """An enum member from its value (a tuple-valued member from a list)."""
    try:
        return type_(value)
    except ValueError:
        if isinstance(value, list):
            return type_(_tuplify(value))
        raise


def _structure_builtin(value: object, type_: Any) -> object:
    """``int``/``float``/``str``/``bool``/bytes and their subclasses.

    cattrs routes these through ``functools.singledispatch``, so an ``IntEnum``
    (whose MRO lists ``int`` before ``Enum``) arrives here too.
    """
    if issubclass(type_, enum.Enum):
        return structure_enum(value, type_)
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


#: Structure hooks, as ``(classes, hook(value, type_))``; cattrs follows the MRO.
SCALAR_STRUCTURE: Final[tuple[tuple[tuple[type, ...], Callable[[Any, Any], Any]], ...]] = (
    ((int, float, str, bool, bytes, bytearray), _structure_builtin),
    ((enum.Enum,), structure_enum),
    ((Decimal,), _exact_decimal),
    ((_dt.datetime, _dt.date, _dt.time), _structure_temporal),
    ((uuid.UUID,), _structure_uuid),
)


def scalar_structure(cls: type) -> Callable[[Any, Any], Any] | None:
    """The hook rebuilding a value of the scalar class ``cls`` (``hook(value, cls)``), or None."""
    if issubclass(cls, enum.Enum):
        return None  # enums are not scalars of the envelope: their value is walked
    for bases, hook in SCALAR_STRUCTURE:
        if issubclass(cls, bases):
            return hook
    return None
