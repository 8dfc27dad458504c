"""flujo_actors.serialization: the converter, the registry, safe_* and typed envelopes."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import threading
import uuid
from collections import OrderedDict, deque
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors.errors import SerializationError
from flujo_actors.serialization import (
    MAX_DEPTH,
    TYPE_KEY,
    VALUE_KEY,
    dump_typed,
    dumps_json,
    get_converter,
    load_typed,
    loads_json,
    register_custom_deserializer,
    register_custom_serializer,
    safe_deserialize,
    safe_serialize,
    type_tag,
)
from flujo_actors.testing.serializers import (
    assert_round_trips,
    isolated_serializer_registry,
    serializer_registry,  # noqa: F401 - the fixture, used by name below
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# -- types under test (module level, so their type tags resolve) -----------------


class Money:
    """A plain class: serializable only through the registry."""

    def __init__(self, amount: Decimal, currency: str) -> None:
        self.amount = amount
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Money)
            and (self.amount, self.currency) == (other.amount, other.currency)
        )

    def __hash__(self) -> int:
        return hash((self.amount, self.currency))

    def __repr__(self) -> str:
        return f"Money({self.amount!r}, {self.currency!r})"


class Status(enum.Enum):
    NEW = "new"
    DONE = "done"
    PAIR = (1, 2)


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class LineItem:
    sku: str
    price: Money
    qty: int
    tags: frozenset[str] = frozenset()


@attrs.define
class OrderContext:
    run_id: str
    items: list[LineItem]
    totals: dict[str, Decimal]
    status: Status
    when: datetime | None
    ids: tuple[uuid.UUID, ...]
    blob: bytes
    scratchpad: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class WithLateField:
    x: int
    _private: int = 0
    seen: list[int] = attrs.field(init=False, factory=list)


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float
    label: str = ""
    area: int = dataclasses.field(init=False, default=0)


class Pair(NamedTuple):
    left: Any
    right: Any


class UserId(str):
    pass


class Opaque:
    pass


def _money_to_json(money: Money) -> object:
    return {"amount": money.amount, "currency": money.currency}  # Decimal: serialized again


def _money_from_json(value: Any) -> Money:
    return Money(Decimal(value["amount"]), value["currency"])


@pytest.fixture(autouse=True, scope="module")
def _money_registered() -> Iterator[None]:
    with isolated_serializer_registry():
        register_custom_serializer(Money, _money_to_json)
        register_custom_deserializer(Money, _money_from_json)
        yield


def _same(a: object, b: object) -> bool:
    """Equal values with the same types, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(
            _same(ka, kb) and _same(a[ka], b[kb]) for ka, kb in zip(a, b, strict=True)
        )
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple))
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Decimal):
        return str(a) == str(b)  # exact: Decimal("1.0") == Decimal("1.00") otherwise
    return a == b


def _through_json_text(value: object) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


# -- strategies ------------------------------------------------------------------

_decimals = st.decimals(allow_nan=False, allow_infinity=False)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_text = st.text(max_size=8)
_money = st.builds(Money, _decimals, st.sampled_from(["EUR", "USD", "¥"]))
_line_items = st.builds(
    LineItem,
    sku=_text,
    price=_money,
    qty=st.integers(),
    tags=st.frozensets(_text, max_size=3),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _floats | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=10,
)
_hashable_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | _floats
    | _text
    | _decimals
    | st.uuids()
    | st.binary(max_size=6)
    | st.dates()
    | st.sampled_from(Status)
)
_rich = st.recursive(
    _hashable_scalars
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.times()
    | _money
    | st.sampled_from(Priority)
    | st.builds(UserId, _text),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.builds(Pair, inner, inner)
        | st.dictionaries(_text, inner, max_size=3)
        | st.dictionaries(st.integers() | st.tuples(st.integers()), inner, max_size=3)
        | st.frozensets(_hashable_scalars, max_size=3)
        | st.sets(_hashable_scalars, max_size=3)
        | st.builds(LineItem, _text, _money, st.integers())
    ),
    max_leaves=12,
)
_contexts = st.builds(
    OrderContext,
    run_id=_text,
    items=st.lists(_line_items, max_size=3),
    totals=st.dictionaries(_text, _decimals, max_size=3),
    status=st.sampled_from(Status),
    when=st.none() | st.datetimes(timezones=st.none() | st.just(UTC)),
    ids=st.lists(st.uuids(), max_size=2).map(tuple),
    blob=st.binary(max_size=8),
    scratchpad=st.dictionaries(_text, _json, max_size=3),
)


# -- round trips -------------------------------------------------------------------


@given(_contexts)
def test_safe_serialize_then_deserialize_rebuilds_attrs_contexts(ctx: OrderContext) -> None:
    data = _through_json_text(safe_serialize(ctx))
    rebuilt = safe_deserialize(data, OrderContext)
    assert rebuilt == ctx
    assert [str(v) for v in rebuilt.totals.values()] == [str(v) for v in ctx.totals.values()]
    assert all(type(item.price) is Money for item in rebuilt.items)


@given(_contexts, st.dictionaries(_text, _rich, max_size=3))
def test_dump_typed_then_load_typed_rebuilds_contexts_with_typed_scratchpads(
    ctx: OrderContext, scratchpad: dict[str, Any]
) -> None:
    ctx.scratchpad = scratchpad
    rebuilt = load_typed(_through_json_text(dump_typed(ctx)))
    assert type(rebuilt) is OrderContext
    assert rebuilt == ctx
    assert _same(rebuilt.scratchpad, ctx.scratchpad)


@given(_rich)
def test_dump_typed_round_trip_preserves_type_and_value(value: object) -> None:
    rebuilt = load_typed(_through_json_text(dump_typed(value)))
    assert _same(rebuilt, value)


@given(_json)
def test_plain_json_passes_through_dump_typed_unwrapped(value: object) -> None:
    dumped = dump_typed(value)
    assert _same(dumped, value)
    assert TYPE_KEY not in json.dumps(dumped)
    assert _same(load_typed(dumped), value)
    assert _same(safe_serialize(value), value)


@given(_rich)
def test_dump_typed_output_is_new_json_data(value: object) -> None:
    dumped = dump_typed(value)
    assert _same(_through_json_text(dumped), dumped)


@given(_contexts)
def test_the_package_converter_structures_what_safe_serialize_wrote(ctx: OrderContext) -> None:
    converter = get_converter()
    assert converter.structure(_through_json_text(safe_serialize(ctx)), OrderContext) == ctx


def test_the_package_converter_unstructures_registered_types_like_safe_serialize() -> None:
    money = Money(Decimal("1.50"), "EUR")
    assert get_converter().unstructure(money) == safe_serialize(money)
    assert safe_serialize(money) == {"amount": "1.50", "currency": "EUR"}


def test_value_formats() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=timezone(timedelta(hours=2)))
    value = {
        "decimal": Decimal("1.10"),
        "datetime": when,
        "date": date(2024, 5, 6),
        "time": time(7, 8, 9),
        "uuid": uuid.UUID(int=1),
        "bytes": b"\x00\xffhi",
        "tuple": (1, (2, 3)),
        "deque": deque([1, 2]),
        "set": {3, 1, 2},
        "mixed_set": frozenset({"b", 2, None}),
        "enum": Status.PAIR,
        "int_enum": Priority.HIGH,
        "user_id": UserId("u1"),
        "point": Point(1, 2.5),
        "ordered": OrderedDict([("b", 1), ("a", 2)]),
    }
    assert safe_serialize(value) == {
        "decimal": "1.10",
        "datetime": "2024-05-06T07:08:09.000010+02:00",
        "date": "2024-05-06",
        "time": "07:08:09",
        "uuid": "00000000-0000-0000-0000-000000000001",
        "bytes": "AP9oaQ==",
        "tuple": [1, [2, 3]],
        "deque": [1, 2],
        "set": [1, 2, 3],
        "mixed_set": ["b", 2, None],  # mixed types: by canonical JSON text
        "enum": [1, 2],
        "int_enum": 2,
        "user_id": "u1",
        "point": {"x": 1, "y": 2.5, "label": "", "area": 0},
        "ordered": {"b": 1, "a": 2},
    }
    assert type(safe_serialize(UserId("u"))) is str
    assert type(safe_serialize(Priority.LOW)) is int


def test_dict_keys_are_coerced_the_way_json_does() -> None:
    value = {7: "int", 2.5: "float", True: "bool", None: "none", Status.NEW: "enum"}
    assert safe_serialize(value) == {
        "7": "int",
        "2.5": "float",
        "true": "bool",
        "null": "none",
        "new": "enum",
    }
    assert safe_serialize({uuid.UUID(int=2): 1, (1, "a"): 2}) == {
        "00000000-0000-0000-0000-000000000002": 1,
        '[1,"a"]': 2,
    }
    assert safe_deserialize({"1": "a", "2": "b"}, dict[int, str]) == {1: "a", 2: "b"}


def test_sets_serialize_in_the_same_order_whatever_their_insertion_order() -> None:
    one = {"b", "a", "c", "aa"}
    two = set()
    for item in ["aa", "c", "a", "b"]:
        two.add(item)
    assert safe_serialize(one) == safe_serialize(two) == ["a", "aa", "b", "c"]
    assert dump_typed(frozenset({(1, 2), (0, 5)})) == dump_typed(frozenset({(0, 5), (1, 2)}))


def test_safe_deserialize_generics_and_optionals() -> None:
    assert safe_deserialize(["1.10", "2"], list[Decimal]) == [Decimal("1.10"), Decimal("2")]
    assert str(safe_deserialize(["1.10"], list[Decimal])[0]) == "1.10"
    assert safe_deserialize(None, Decimal | None) is None
    assert safe_deserialize("3", Decimal | None) == Decimal(3)
    assert safe_deserialize([1, 2], tuple[int, ...]) == (1, 2)
    assert safe_deserialize(["b", "a"], frozenset[str]) == frozenset({"a", "b"})
    assert safe_deserialize([1, 2], Status) is Status.PAIR
    assert safe_deserialize(2, Priority) is Priority.HIGH
    assert safe_deserialize("AP9oaQ==", bytes) == b"\x00\xffhi"
    assert safe_deserialize("2024-05-06", date) == date(2024, 5, 6)
    assert safe_deserialize({"x": 1, "y": 2.5, "label": "p", "area": 0}, Point) == Point(
        1, 2.5, "p"
    )
    assert safe_deserialize({"amount": "1.5", "currency": "EUR"}, Money) == Money(
        Decimal("1.5"), "EUR"
    )


def test_init_false_and_private_fields_round_trip() -> None:
    obj = WithLateField(1, 2)
    obj.seen.append(7)
    data = safe_serialize(obj)
    assert data == {"x": 1, "_private": 2, "seen": [7]}
    rebuilt = safe_deserialize(data, WithLateField)
    assert (rebuilt.x, rebuilt._private, rebuilt.seen) == (1, 2, [7])
    typed = load_typed(dump_typed(obj))
    assert isinstance(typed, WithLateField)
    assert (typed.x, typed._private, typed.seen) == (1, 2, [7])


def test_load_typed_returns_new_objects() -> None:
    item = LineItem("sku", Money(Decimal(1), "EUR"), 1, frozenset({"t"}))
    dumped = dump_typed([item, {"k": [1]}])
    first = load_typed(dumped)
    assert isinstance(first, list)
    first[1]["k"].append(2)
    assert load_typed(dumped) == [item, {"k": [1]}]


def test_assert_round_trips_helper() -> None:
    assert_round_trips(LineItem("sku", Money(Decimal("0.1"), "EUR"), 3), LineItem)
    assert_round_trips({"when": date(2020, 1, 1), 1: (2, 3)})
    with pytest.raises(
        AssertionError,
        match=r"^safe_serialize/safe_deserialize as <class 'int'> changed the value: "
        r"1\.0 came back as 1$",
    ):
        assert_round_trips(1.0, int)


# -- the registry -----------------------------------------------------------------


class Celsius:
    def __init__(self, degrees: float) -> None:
        self.degrees = degrees

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Celsius)
            and (other.degrees == self.degrees)
        )

    def __hash__(self) -> int:
        return hash(self.degrees)


class WarmCelsius(Celsius):
    pass


@pytest.mark.usefixtures("serializer_registry")
def test_registration_takes_effect_after_earlier_failures() -> None:
    with pytest.raises(SerializationError):
        safe_serialize(Celsius(1.5))
    register_custom_serializer(Celsius, lambda c: c.degrees)
    register_custom_deserializer(Celsius, lambda v: Celsius(v))
    assert safe_serialize({"t": Celsius(1.5)}) == {"t": 1.5}
    assert safe_deserialize(1.5, Celsius) == Celsius(1.5)
    assert dump_typed(Celsius(1.5)) == {TYPE_KEY: type_tag(Celsius), VALUE_KEY: 1.5}


@pytest.mark.usefixtures("serializer_registry")
def test_subclasses_use_the_registered_base_along_the_mro() -> None:
    calls: list[type] = []

    def write(c: Celsius) -> object:
        calls.append(type(c))
        return c.degrees

    register_custom_serializer(Celsius, write)
    register_custom_deserializer(Celsius, lambda v: WarmCelsius(v) if v > 30 else Celsius(v))
    assert safe_serialize([Celsius(1.0), WarmCelsius(40.0)]) == [1.0, 40.0]
    assert calls == [Celsius, WarmCelsius]
    assert safe_deserialize(40.0, WarmCelsius) == WarmCelsius(40.0)
    rebuilt = load_typed(dump_typed(WarmCelsius(35.0)))
    assert type(rebuilt) is WarmCelsius


@pytest.mark.usefixtures("serializer_registry")
def test_registered_types_take_precedence_over_builtin_handling() -> None:
    register_custom_serializer(Decimal, lambda d: {"exact": str(d)})
    register_custom_deserializer(Decimal, lambda v: Decimal(v["exact"]))
    register_custom_serializer(LineItem, lambda item: item.sku)
    register_custom_deserializer(LineItem, lambda sku: LineItem(sku, Money(Decimal(0), "EUR"), 0))
    register_custom_serializer(UserId, lambda uid: f"user:{uid}")
    register_custom_deserializer(UserId, lambda v: UserId(v.removeprefix("user:")))

    assert safe_serialize([Decimal("1.5"), UserId("u")]) == [{"exact": "1.5"}, "user:u"]
    assert safe_deserialize({"exact": "2.5"}, Decimal) == Decimal("2.5")
    assert safe_deserialize("user:u", UserId) == UserId("u")
    item = LineItem("abc", Money(Decimal(0), "EUR"), 0)
    assert safe_serialize(item) == "abc"
    assert safe_deserialize("abc", LineItem) == item
    assert _same(load_typed(dump_typed([Decimal("1.5"), item])), [Decimal("1.5"), item])


@pytest.mark.usefixtures("serializer_registry")
def test_the_fixture_restores_the_registry() -> None:
    with isolated_serializer_registry():
        register_custom_serializer(Opaque, lambda o: "opaque")
        assert safe_serialize(Opaque()) == "opaque"
    with pytest.raises(SerializationError):
        safe_serialize(Opaque())
    assert safe_serialize(Money(Decimal(1), "EUR")) == {"amount": "1", "currency": "EUR"}


@pytest.mark.parametrize(
    ("type_", "fn", "message"),
    [
        (
            "Money",
            str,
            "register_custom_serializer: type_ must be a class, got 'Money'.",
        ),
        (
            dict,
            str,
            "register_custom_serializer: dict is plain JSON data and always serializes as "
            "itself; register a subclass or a wrapper type instead.",
        ),
        (
            object,
            str,
            "register_custom_serializer: cannot register object (it would capture every type).",
        ),
        (Opaque, "nope", "register_custom_serializer: fn must be callable, got 'nope'."),
    ],
)
def test_registration_rejects_bad_arguments(type_: Any, fn: Any, message: str) -> None:
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        register_custom_serializer(type_, fn)


@pytest.mark.usefixtures("serializer_registry")
def test_registering_from_many_threads_while_serializing() -> None:
    n_types = 40
    classes = [type(f"Dyn{i}", (), {"i": i}) for i in range(n_types)]
    sample = {
        "money": Money(Decimal("1.25"), "EUR"),
        "items": [LineItem("a", Money(Decimal(2), "USD"), 1)],
        "when": date(2024, 1, 1),
    }
    expected_plain = safe_serialize(sample)
    expected_typed = dump_typed(sample)
    start = threading.Barrier(8)
    registered = threading.Event()
    errors: list[BaseException] = []
    rounds = [0]

    def _constructor(cls: type) -> Callable[[Any], object]:
        return lambda value: cls()

    def register(chunk: list[type]) -> None:
        try:
            start.wait()
            for cls in chunk:
                register_custom_serializer(cls, lambda obj: {"dyn": obj.i})
                register_custom_deserializer(cls, _constructor(cls))
        except Exception as exc:  # reported below
            errors.append(exc)

    def serialize() -> None:
        try:
            start.wait()
            while not registered.is_set():
                assert safe_serialize(sample) == expected_plain
                assert dump_typed(sample) == expected_typed
                assert load_typed(expected_typed) == sample
                rounds[0] += 1
        except Exception as exc:  # reported below
            errors.append(exc)

    registrars = [threading.Thread(target=register, args=(classes[i::4],)) for i in range(4)]
    serializers = [threading.Thread(target=serialize) for _ in range(4)]
    for thread in registrars + serializers:
        thread.start()
    for thread in registrars:
        thread.join()
    registered.set()
    for thread in serializers:
        thread.join()

    assert errors == []
    assert rounds[0] > 0
    for cls in classes:
        obj = cls()
        assert safe_serialize(obj) == {"dyn": getattr(obj, "i")}  # noqa: B009
        assert type(load_typed(dump_typed(obj))) is cls


# -- errors ----------------------------------------------------------------------


def _unsupported(type_name: str, where: str, short: str) -> str:
    return re.escape(
        f"Cannot serialize an object of type {type_name!r} at {where}: it is not "
        "JSON-compatible and no serializer is registered for it. "
        f"Fix: register_custom_serializer({short}, lambda obj: ...) "
        f"(and register_custom_deserializer({short}, lambda value: ...) to rebuild it)."
    )


def test_unsupported_value_names_type_path_and_fix() -> None:
    ctx = {"scratchpad": {"ok": 1, "x": Opaque()}}
    where = "context['scratchpad']['x']"
    with pytest.raises(
        SerializationError,
        match=f"^{_unsupported('test_serialization.Opaque', where, 'Opaque')}$",
    ) as info:
        safe_serialize(ctx, path="context")
    assert isinstance(info.value, TypeError)  # SerializationError is a TypeError too


def test_unsupported_value_path_through_attrs_fields_and_lists() -> None:
    @attrs.define
    class Holder:
        items: list[Any]

    with pytest.raises(
        SerializationError,
        match=f"^{_unsupported('test_serialization.Opaque', '$.items[2]', 'Opaque')}$",
    ):
        safe_serialize(Holder([1, 2, Opaque()]))
    with pytest.raises(
        SerializationError,
        match=f"^{_unsupported('test_serialization.Opaque', 'out.items[0][<set member>]', 'Opaque')}$",
    ):
        dump_typed(Holder([{Opaque()}]), path="out")
    with pytest.raises(
        SerializationError,
        match=f"^{_unsupported('test_serialization.Opaque', '$[0][<key>]', 'Opaque')}$",
    ):
        safe_serialize([{Opaque(): 1}])
    with pytest.raises(
        SerializationError,
        match=f"^{_unsupported('test_serialization.Opaque', '$[<key>]', 'Opaque')}$",
    ):
        dump_typed({1: 1, Opaque(): 2})
    with pytest.raises(
        SerializationError,
        match=f"^{_unsupported('test_serialization.Opaque', '$[2]', 'Opaque')}$",
    ):
        dump_typed({1: 1, 2: Opaque()})


def test_reference_cycles_are_reported_not_recursion_errors() -> None:
    loop: dict[str, Any] = {"name": "a"}
    loop["next"] = [loop]
    with pytest.raises(
        SerializationError,
        match=r"^Cannot serialize a reference cycle: the 'dict' object at ctx\['loop'\] "
        r"contains itself at ctx\['loop'\]\['next'\]\[0\]\. Break the cycle, or register a "
        r"serializer for the type that returns an acyclic value\.$",
    ):
        safe_serialize({"loop": loop}, path="ctx")
    with pytest.raises(SerializationError, match=r"^Cannot serialize a reference cycle: "):
        dump_typed((loop,))


@pytest.mark.usefixtures("serializer_registry")
def test_a_serializer_returning_its_input_is_a_cycle() -> None:
    register_custom_serializer(Opaque, lambda obj: obj)
    with pytest.raises(
        SerializationError,
        match=r"^Cannot serialize a reference cycle: the 'test_serialization\.Opaque' object "
        r"at \$ contains itself at \$<serialized Opaque>\. ",
    ):
        safe_serialize(Opaque())


def test_too_deep_data_is_reported() -> None:
    value: list[Any] = []
    for _ in range(MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(
        SerializationError,
        match=r"^Cannot serialize the value at \$(\[0\]){8}\.\.\.(\[0\]){8}: it is nested "
        rf"more than {MAX_DEPTH} levels deep\.$",
    ):
        safe_serialize(value)


@pytest.mark.usefixtures("serializer_registry")
def test_a_failing_serializer_is_reported_with_its_path_and_cause() -> None:
    failure = ValueError("no currency")
    register_custom_serializer(Opaque, lambda obj: (_ for _ in ()).throw(failure))
    with pytest.raises(
        SerializationError,
        match=r"^The serializer registered for 'test_serialization\.Opaque' raised "
        r"ValueError\('no currency'\) at \$\['a'\]\.$",
    ) as info:
        safe_serialize({"a": Opaque()})
    assert info.value.__cause__ is failure


@attrs.define
class _MapHolder:
    m: dict[Any, str]


def test_colliding_json_keys_are_reported() -> None:
    with pytest.raises(
        SerializationError,
        match=r"^Cannot serialize the value at \$\.m: the keys 1 and '1' both become the JSON "
        r"key '1'\. Use distinct keys\.$",
    ):
        safe_serialize(_MapHolder({1: "a", "1": "b"}))


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (
            {TYPE_KEY: "os:system", VALUE_KEY: "rm"},
            "Cannot load the value at $: the type tag 'os:system' does not name a class.",
        ),
        (
            {TYPE_KEY: "threading:Thread", VALUE_KEY: {}},
            "Cannot load the value at $: the type tag 'threading:Thread' names "
            "'threading.Thread', which dump_typed() never tags; refusing to rebuild it.",
        ),
        (
            {TYPE_KEY: "surely_not_imported_module_xyz:Thing", VALUE_KEY: 1},
            "Cannot load the value at $: the type tag 'surely_not_imported_module_xyz:Thing' "
            "names a class in the module 'surely_not_imported_module_xyz', which is not "
            "imported. Import it before loading (stored data never triggers an import).",
        ),
        (
            {TYPE_KEY: "os:path.join(1)", VALUE_KEY: 1},
            "Cannot load the value at $: the type tag 'os:path.join(1)' is not of the form "
            "'module:qualname'.",
        ),
        (
            {TYPE_KEY: "builtins:tuple", VALUE_KEY: 1, "extra": 2},
            f"Cannot load the value at $: a malformed type envelope (expected exactly the "
            f"keys {TYPE_KEY!r} and {VALUE_KEY!r}, with a 'module:qualname' string tag).",
        ),
        (
            {TYPE_KEY: "decimal:Decimal", VALUE_KEY: "not a number"},
            "Cannot load the value at $: cannot rebuild 'decimal:Decimal' from its payload: "
            "ValueError(\"'not a number' is not a decimal number\").",
        ),
    ],
)
def test_load_typed_refuses_bad_tags_and_payloads(envelope: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=f"^{re.escape(message)}$"):
        load_typed(envelope)


def test_load_typed_error_paths_point_inside_the_data() -> None:
    item: Any = dump_typed({"items": [LineItem("s", Money(Decimal(1), "EUR"), 1)]})
    item["items"][0][VALUE_KEY]["qty"] = {TYPE_KEY: "builtins:set", VALUE_KEY: 5}
    with pytest.raises(
        SerializationError,
        match=r"^Cannot load the value at out\['items'\]\[0\]\.qty: expected a list payload, "
        r"got 'int'\.$",
    ):
        load_typed(item, path="out")
    with pytest.raises(
        SerializationError,
        match=r"^Cannot load the value at \$\[0\]: load_typed\(\) expects JSON data \(as "
        r"produced by dump_typed\(\)\), but found an object of type 'decimal\.Decimal'\.$",
    ):
        load_typed([Decimal(1)])


@pytest.mark.usefixtures("serializer_registry")
def test_load_typed_needs_a_deserializer_for_custom_serialized_types() -> None:
    register_custom_serializer(Celsius, lambda c: c.degrees)
    dumped = dump_typed(Celsius(3.0))
    with pytest.raises(
        SerializationError,
        match=r"^Cannot load the value at \$: 'test_serialization\.Celsius' has a custom "
        r"serializer but no deserializer\. Fix: register_custom_deserializer\(Celsius, "
        r"lambda value: \.\.\.\)\.$",
    ):
        load_typed(dumped)


def test_safe_deserialize_errors_list_every_problem() -> None:
    with pytest.raises(
        SerializationError,
        match=r"^Cannot rebuild 'test_serialization\.LineItem' from the data at item: "
        r"invalid value for type, expected str \(expected a string, got 1\) @ item\.sku; "
        r"invalid value for type, expected int \(expected an integer, got 2\.5\) @ item\.qty\.$",
    ):
        safe_deserialize(
            {"sku": 1, "price": {"amount": "1", "currency": "EUR"}, "qty": 2.5},
            LineItem,
            path="item",
        )
    with pytest.raises(
        SerializationError,
        match=r"^Cannot rebuild 'test_serialization\.Opaque' at \$: no deserializer is "
        r"registered for it\. Fix: register_custom_deserializer\(Opaque, lambda value: "
        r"\.\.\.\)\.$",
    ):
        safe_deserialize({}, Opaque)
    with pytest.raises(SerializationError, match=r"^Cannot rebuild 'int' from the data at \$: "):
        safe_deserialize(True, int)


def test_dumps_json_names_what_json_cannot_encode() -> None:
    assert loads_json(dumps_json({"a": [1, "é", None]})) == {"a": [1, "é", None]}
    assert dumps_json("é") == '"\\u00e9"'
    with pytest.raises(
        SerializationError,
        match=r"^Cannot encode an object of type 'decimal\.Decimal' at cp\.context\['a'\]\[1\]: "
        r"state and cache backends store JSON data only\. Pass the value through "
        r"safe_serialize\(\) or dump_typed\(\) first\.$",
    ):
        dumps_json({"a": [1, Decimal(1)]}, path="cp.context")
    with pytest.raises(
        SerializationError,
        match=r"^Cannot encode a key of type 'tuple' at \$: JSON object keys must be strings\. ",
    ):
        dumps_json({(1, 2): 1})


@attrs.define
class NoPickle:
    value: Any

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise AssertionError("flujo_actors must never pickle")


@given(_rich)
def test_serialization_never_pickles_or_copies_through_reduce(value: object) -> None:
    wrapped = NoPickle(value)
    assert _same(load_typed(_through_json_text(dump_typed(wrapped))).value, value)  # type: ignore[attr-defined]
    safe_serialize(wrapped)


def test_load_typed_resolves_tags_of_imported_modules_it_has_not_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flujo_actors.serialization import _base, registry

    dumped = dump_typed(LineItem("s", Money(Decimal(1), "EUR"), 2))
    # As in a new process resuming a crashed run: nothing tagged yet.
    monkeypatch.delitem(_base._TAG_CLASSES, type_tag(LineItem))
    monkeypatch.setattr(
        registry,
        "_CODEC",
        registry._Generation(registry._CODEC.serializers, registry._CODEC.deserializers),
    )
    assert load_typed(dumped) == LineItem("s", Money(Decimal(1), "EUR"), 2)
