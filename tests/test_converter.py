"""One converter factory: the plain converter and its typed variant share the rules."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest

from flujo_actors import SerializationError, dump_typed, load_typed, safe_serialize
from flujo_actors.serialization import get_converter, make_converter
from flujo_actors.serialization.converter import Converter

VALUES: list[Any] = [
    Decimal("1.10"),
    dt.date(2026, 1, 2),
    b"\x00",
    {1: (2, {3})},
    [{"a": Decimal(1)}],
    "plain",
]


class Opaque:
    pass


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_package_converter_writes_what_safe_serialize_writes(value: Any) -> None:
    assert get_converter().unstructure(value) == safe_serialize(value)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_typed_variant_writes_and_reads_the_envelopes(value: Any) -> None:
    typed = make_converter(typed=True)
    assert isinstance(typed, Converter)
    dumped = typed.unstructure(value)
    assert dumped == dump_typed(value)
    again = typed.structure(dumped, Any)
    assert again == value
    assert type(again) is type(value)
    assert load_typed(dumped) == value


def test_the_converters_fail_as_the_entry_points_do() -> None:
    message = (
        "Cannot serialize an object of type 'test_converter.Opaque' at $[0]: it is not "
        "JSON-compatible and no serializer is registered for it. Fix: "
        "register_custom_serializer(Opaque, lambda obj: ...) (and "
        "register_custom_deserializer(Opaque, lambda value: ...) to rebuild it)."
    )
    with pytest.raises(SerializationError, match=f"^{re.escape(message)}$"):
        get_converter().unstructure([Opaque()])
    with pytest.raises(SerializationError, match=f"^{re.escape(message)}$"):
        make_converter(typed=True).unstructure([Opaque()])
    with pytest.raises(
        SerializationError,
        match=r"^Cannot load the value at \$: the type tag 'nowhere_xyz:Thing' names a class "
        r"in the module 'nowhere_xyz', which is not imported\. Import it before loading "
        r"\(stored data never triggers an import\)\.$",
    ):
        make_converter(typed=True).structure(
            {"__flujo_type__": "nowhere_xyz:Thing", "value": 1}, Any
        )


def test_registered_hooks_feed_both_variants() -> None:
    class Celsius:
        def __init__(self, degrees: float) -> None:
            self.degrees = degrees

    plain = make_converter(
        serializers={Celsius: lambda c: c.degrees}, deserializers={Celsius: Celsius}
    )
    typed = make_converter(
        typed=True,
        serializers={Celsius: lambda c: c.degrees},
        deserializers={Celsius: Celsius},
        plain=plain,
    )
    assert plain.unstructure(Celsius(3.0)) == 3.0
    assert plain.structure(3.0, Celsius).degrees == 3.0
    dumped: Any = typed.unstructure(Celsius(3.0))
    assert dumped["value"] == 3.0
    rebuilt: Any = typed.structure(dumped, Any)
    assert rebuilt.degrees == 3.0


def test_a_str_subclass_gets_its_own_hook_not_cattrs_identity() -> None:
    class Name(str):
        pass

    assert type(safe_serialize(Name("x"))) is str
    dumped: Any = dump_typed(Name("x"))
    assert dumped["value"] == "x"
