"""What state and cache backends stored before the one-converter codec still loads.

``STORED`` is the JSON text that ``dumps_json(dump_typed(representative_values()))``
produced on main before the codec was rebuilt on one cattrs converter (commit
44a7028). It is hard-coded: a change of the stored format must keep loading it,
and what is written today must still be byte-identical.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections import Counter, OrderedDict, defaultdict, deque
from decimal import Decimal
from typing import Any, NamedTuple

import attrs

from flujo_actors import PipelineContext, dump_typed, load_typed, safe_serialize
from flujo_actors.serialization import dumps_json, loads_json


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Point(NamedTuple):
    x: int
    y: int


class Tags(list[str]):
    """A list subclass."""


class Meters(float):
    """A float subclass."""


@dataclasses.dataclass
class Box:
    items: list[Any]
    label: str = "box"


@attrs.frozen
class Order:
    sku: str
    qty: int
    price: Decimal
    seen: frozenset[str] = frozenset()
    total: Decimal = attrs.field(init=False, default=Decimal("0"))


@attrs.define
class Ctx(PipelineContext):
    orders: list[Order] = attrs.Factory(list)


def representative_values() -> dict[str, Any]:
    order = Order("a-1", 2, Decimal("19.990"), frozenset({"x", "y"}))
    object.__setattr__(order, "total", Decimal("39.980"))
    ctx = Ctx(initial_prompt="hi", run_id="r-1", orders=[order])
    ctx.scratchpad["when"] = dt.date(2026, 1, 2)
    return {
        "json": [1, 2.5, "s", True, None, {"k": [None]}],
        "decimal": Decimal("1.10"),
        "big": Decimal("123456789012345678901234567890.000000001"),
        "datetime": dt.datetime(2026, 12, 1, 23, 50, 12, 5, tzinfo=dt.UTC),
        "time": dt.time(1, 2, 3),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "bytes": b"\x00\xffab",
        "bytearray": bytearray(b"xy"),
        "tuple": (1, "a", (2,)),
        "set": {3, 1, 2},
        "frozenset": frozenset({"b", "a"}),
        "int_keys": {1: "one", 2: "two"},
        "marker_key": {"__flujo_type__": "not a tag"},
        "enum": Color.BLUE,
        "int_enum": Level.HIGH,
        "enum_key": {Color.RED: 1},
        "namedtuple": Point(1, 2),
        "list_subclass": Tags(["t"]),
        "float_subclass": Meters(2.5),
        "ordered": OrderedDict([("b", 1), ("a", 2)]),
        "defaultdict": defaultdict(list, {"a": [1]}),
        "counter": Counter({"x": 3}),
        "deque": deque([1, 2], maxlen=4),
        "dataclass": Box([Decimal("2"), {4, 5}]),
        "attrs": order,
        "context": ctx,
    }


STORED = (
    '{"json":[1,2.5,"s",true,null,{"k":[null]}],"decimal":{"__flujo_type__":"decimal:Deci'
    'mal","value":"1.10"},"big":{"__flujo_type__":"decimal:Decimal","value":"123456789012'
    '345678901234567890.000000001"},"datetime":{"__flujo_type__":"datetime:datetime","val'
    'ue":"2026-12-01T23:50:12.000005+00:00"},"time":{"__flujo_type__":"datetime:time","va'
    'lue":"01:02:03"},"uuid":{"__flujo_type__":"uuid:UUID","value":"12345678-1234-5678-12'
    '34-567812345678"},"bytes":{"__flujo_type__":"builtins:bytes","value":"AP9hYg=="},"by'
    'tearray":{"__flujo_type__":"builtins:bytearray","value":"eHk="},"tuple":{"__flujo_ty'
    'pe__":"builtins:tuple","value":[1,"a",{"__flujo_type__":"builtins:tuple","value":[2]'
    '}]},"set":{"__flujo_type__":"builtins:set","value":[1,2,3]},"frozenset":{"__flujo_ty'
    'pe__":"builtins:frozenset","value":["a","b"]},"int_keys":{"__flujo_type__":"builtins'
    ':dict","value":[[1,"one"],[2,"two"]]},"marker_key":{"__flujo_type__":"builtins:dict"'
    ',"value":[["__flujo_type__","not a tag"]]},"enum":{"__flujo_type__":"test_stored_for'
    'mat:Color","value":"blue"},"int_enum":{"__flujo_type__":"test_stored_format:Level","'
    'value":2},"enum_key":{"__flujo_type__":"builtins:dict","value":[[{"__flujo_type__":"'
    'test_stored_format:Color","value":"red"},1]]},"namedtuple":{"__flujo_type__":"test_s'
    'tored_format:Point","value":[1,2]},"list_subclass":{"__flujo_type__":"test_stored_fo'
    'rmat:Tags","value":["t"]},"float_subclass":{"__flujo_type__":"test_stored_format:Met'
    'ers","value":2.5},"ordered":{"__flujo_type__":"collections:OrderedDict","value":[["b'
    '",1],["a",2]]},"defaultdict":{"__flujo_type__":"collections:defaultdict","value":{"d'
    'efault_factory":"builtins:list","items":[["a",[1]]]}},"counter":{"__flujo_type__":"c'
    'ollections:Counter","value":[["x",3]]},"deque":{"__flujo_type__":"collections:deque"'
    ',"value":{"items":[1,2],"maxlen":4}},"dataclass":{"__flujo_type__":"test_stored_form'
    'at:Box","value":{"items":[{"__flujo_type__":"decimal:Decimal","value":"2"},{"__flujo'
    '_type__":"builtins:set","value":[4,5]}],"label":"box"}},"attrs":{"__flujo_type__":"t'
    'est_stored_format:Order","value":{"sku":"a-1","qty":2,"price":{"__flujo_type__":"dec'
    'imal:Decimal","value":"19.990"},"seen":{"__flujo_type__":"builtins:frozenset","value'
    '":["x","y"]},"total":{"__flujo_type__":"decimal:Decimal","value":"39.980"}}},"contex'
    't":{"__flujo_type__":"test_stored_format:Ctx","value":{"initial_prompt":"hi","run_id'
    '":"r-1","scratchpad":{"when":{"__flujo_type__":"datetime:date","value":"2026-01-02"}'
    '},"executed_branches":[],"orders":[{"__flujo_type__":"test_stored_format:Order","val'
    'ue":{"sku":"a-1","qty":2,"price":{"__flujo_type__":"decimal:Decimal","value":"19.990'
    '"},"seen":{"__flujo_type__":"builtins:frozenset","value":["x","y"]},"total":{"__fluj'
    'o_type__":"decimal:Decimal","value":"39.980"}}}]}}}'
)


def test_what_main_stored_loads_back_equal_and_of_the_same_types() -> None:
    loaded = load_typed(loads_json(STORED))
    expected = representative_values()
    assert loaded == expected
    for key, value in expected.items():
        assert type(loaded[key]) is type(value), key
    assert loaded["attrs"].total == Decimal("39.980")
    assert type(loaded["context"].scratchpad["when"]) is dt.date
    assert loaded["defaultdict"].default_factory is list
    assert loaded["deque"].maxlen == 4


def test_what_is_stored_today_is_byte_identical() -> None:
    assert dumps_json(dump_typed(representative_values())) == STORED


def test_safe_serialize_writes_the_same_json_data() -> None:
    assert safe_serialize(representative_values()) == SAFE


SAFE: Any = {
    "attrs": {"price": "19.990", "qty": 2, "seen": ["x", "y"], "sku": "a-1", "total": "39.980"},
    "big": "123456789012345678901234567890.000000001",
    "bytearray": "eHk=",
    "bytes": "AP9hYg==",
    "context": {
        "executed_branches": [],
        "initial_prompt": "hi",
        "orders": [
            {"price": "19.990", "qty": 2, "seen": ["x", "y"], "sku": "a-1", "total": "39.980"}
        ],
        "run_id": "r-1",
        "scratchpad": {"when": "2026-01-02"},
    },
    "counter": {"x": 3},
    "dataclass": {"items": ["2", [4, 5]], "label": "box"},
    "datetime": "2026-12-01T23:50:12.000005+00:00",
    "decimal": "1.10",
    "defaultdict": {"a": [1]},
    "deque": [1, 2],
    "enum": "blue",
    "enum_key": {"red": 1},
    "float_subclass": 2.5,
    "frozenset": ["a", "b"],
    "int_enum": 2,
    "int_keys": {"1": "one", "2": "two"},
    "json": [1, 2.5, "s", True, None, {"k": [None]}],
    "list_subclass": ["t"],
    "marker_key": {"__flujo_type__": "not a tag"},
    "namedtuple": [1, 2],
    "ordered": {"a": 2, "b": 1},
    "set": [1, 2, 3],
    "time": "01:02:03",
    "tuple": [1, "a", [2]],
    "uuid": "12345678-1234-5678-1234-567812345678",
}
