"""Persistence and cache round trips keep every value's type (containers, subclasses)."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections import Counter, OrderedDict, defaultdict, deque
from typing import Any, NamedTuple

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flujo_actors import (
    Flujo,
    InMemoryLRUBackend,
    InMemoryStateBackend,
    PipelineContext,
    SerializationError,
    Step,
    dump_typed,
    load_typed,
    register_custom_deserializer,
    register_custom_serializer,
    safe_deserialize,
    safe_serialize,
)
from flujo_actors.serialization import dumps_json, loads_json
from flujo_actors.testing.serializers import serializer_registry  # noqa: F401 - fixture


class Tags(list[str]):
    """A list subclass."""


class Config(dict[str, Any]):
    """A dict subclass."""


class Ids(frozenset[int]):
    """A frozenset subclass."""


class Point(NamedTuple):
    x: int
    y: int


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Box:
    items: list[Any]


@attrs.define
class Pair:
    left: Any
    right: Any


def through_json(value: Any) -> Any:
    """What the state and cache backends do: dump_typed, JSON text, load_typed."""
    return load_typed(loads_json(dumps_json(dump_typed(value))))


def same_shape(a: Any, b: Any) -> bool:
    """Equal, and of the same type at every level."""
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, (defaultdict,)) and a.default_factory is not b.default_factory:
        return False
    if isinstance(a, deque) and a.maxlen != b.maxlen:
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_shape(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, deque)):
        return all(same_shape(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Box):
        return same_shape(a.items, b.items)
    if isinstance(a, Pair):
        return same_shape(a.left, b.left) and same_shape(a.right, b.right)
    return True


@pytest.mark.parametrize(
    "value",
    [
        OrderedDict([("b", 1), ("a", 2)]),
        defaultdict(list, {"a": [1]}),
        defaultdict(None, {1: "x"}),
        Counter({"x": 3, 7: 1}),
        deque([1, 2, 3], maxlen=5),
        deque(),
        Tags(["a", "b"]),
        Config(a=1),
        Ids({1, 2}),
        frozenset({"a", 1}),
        {1, 2},
        (1, "a"),
        Point(1, 2),
        Color.BLUE,
        Box([OrderedDict(a=Counter("aab"))]),
        Pair(deque([Point(1, 2)]), {Color.RED: defaultdict(int)}),
    ],
    ids=repr,
)
def test_containers_come_back_as_their_own_type(value: Any) -> None:
    again = through_json(value)
    assert same_shape(value, again)


def test_a_defaultdict_keeps_working_as_one() -> None:
    counts: defaultdict[str, int] = defaultdict(int)
    counts["seen"] += 1
    again = through_json(counts)
    again["new"] += 1  # the factory came back: no KeyError
    assert again == {"seen": 1, "new": 1}


def test_a_defaultdict_with_a_lambda_factory_fails_naming_the_path_and_fix() -> None:
    with pytest.raises(
        SerializationError,
        match=r"^Cannot serialize the value at context\.scratchpad\['counts'\]: a defaultdict "
        r"whose default_factory is '.*<lambda>', which cannot be stored: only None or a class "
        r"\(list, int, set, dict, your own\) is stored by name\. Fix: build it as "
        r"defaultdict\(list\) \(a class\), or store dict\(d\)\.$",
    ):
        dump_typed({"counts": defaultdict(lambda: 0)}, path="context.scratchpad")


async def test_a_cache_hit_returns_the_same_container_types() -> None:
    calls: list[str] = []

    async def index(text: str) -> Any:
        calls.append(text)
        words: defaultdict[str, list[int]] = defaultdict(list)
        for i, w in enumerate(text.split()):
            words[w].append(i)
        return OrderedDict(words=words, counts=Counter(text.split()), last=deque([text], 1))

    runner = Flujo(Step.from_callable(index, cache=True), cache_backend=InMemoryLRUBackend())
    miss = await runner.run_async("a b a")
    hit = await runner.run_async("a b a")
    assert calls == ["a b a"] and hit.step_history[0].metadata["cache_hit"] is True
    assert same_shape(miss.output, hit.output)
    assert type(hit.output["words"]) is defaultdict and hit.output["words"].default_factory is list


@attrs.define
class TallyContext(PipelineContext):
    counts: Counter[str] = attrs.Factory(Counter)
    recent: deque[str] = attrs.Factory(lambda: deque(maxlen=2))


async def test_a_resumed_context_keeps_its_container_types() -> None:
    class Crash(BaseException):
        pass

    crash = [True]

    async def count(word: str, *, context: TallyContext) -> str:
        context.counts[word] += 1
        context.recent.append(word)
        context.scratchpad["seen"] = OrderedDict([(word, True)])
        return word

    async def boom(word: str) -> str:
        if crash[0]:
            crash[0] = False
            raise Crash
        return word

    backend = InMemoryStateBackend()
    runner = Flujo(
        Step.from_callable(count) >> Step.from_callable(boom, max_retries=0),
        context_model=TallyContext,
        state_backend=backend,
    )
    with pytest.raises(Crash):
        await runner.run_async("hi", run_id="r")
    result = await runner.resume_async("r")
    ctx = result.final_pipeline_context
    assert type(ctx.counts) is Counter and ctx.counts == Counter(hi=1)
    assert type(ctx.recent) is deque and ctx.recent.maxlen == 2 and list(ctx.recent) == ["hi"]
    assert type(ctx.scratchpad["seen"]) is OrderedDict


# -- deserializers that receive the target type ------------------------------------------


class Model:
    """Stands in for a pydantic BaseModel: one deserializer for every subclass."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]


class User(Model):
    pass


class Order(Model):
    pass


def test_a_base_class_deserializer_receives_the_subclass_to_build(
    serializer_registry: None,  # noqa: F811
) -> None:
    seen: list[type] = []

    def rebuild(value: dict[str, Any], cls: type[Model]) -> Model:
        seen.append(cls)
        return cls(**value)

    register_custom_serializer(Model, lambda m: dict(vars(m)))
    register_custom_deserializer(Model, rebuild)
    value = [User(name="ada"), Order(id=1)]
    assert through_json(value) == value
    assert seen == [User, Order]
    # The requested static type, for safe_deserialize.
    assert safe_deserialize(safe_serialize(User(name="b")), User) == User(name="b")
    assert seen[-1] is User


def test_one_argument_deserializers_and_classes_still_get_the_value_only(
    serializer_registry: None,  # noqa: F811
) -> None:
    class Money:
        def __init__(self, cents: int, currency: str = "EUR") -> None:
            self.cents, self.currency = cents, currency

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Money) and vars(self) == vars(other)

    register_custom_serializer(Money, lambda m: m.cents)
    register_custom_deserializer(Money, Money)  # a class: Money(value), never Money(value, type)
    assert through_json(Money(5)) == Money(5)

    def with_default(value: int, strict: bool = False) -> Money:
        assert strict is False  # an optional second parameter never receives the type
        return Money(value)

    register_custom_deserializer(Money, with_default)
    assert through_json(Money(7)) == Money(7)


def test_a_deserializer_of_the_wrong_shape_is_refused_when_registered() -> None:
    with pytest.raises(
        TypeError,
        match=r"^register_custom_deserializer: fn must take the serialized value, and "
        r"optionally the target type as a second argument: fn\(value\) or fn\(value, type_\); "
        r"got .* with the signature \(\)\.$",
    ):
        register_custom_deserializer(Model, lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=re.escape("with the signature (a, b, c).")):
        register_custom_deserializer(Model, lambda a, b, c: None)  # type: ignore[arg-type,return-value]


# -- property: nested values of every supported kind round-trip with their types ------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=4)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
    | st.dates()
    | st.datetimes()
    | st.uuids()
    | st.sampled_from(Color)
)
hashables = st.none() | st.integers() | st.text(max_size=3) | st.sampled_from(Color)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keyed = st.lists(st.tuples(hashables, children), max_size=3)
    return (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.lists(children, max_size=3).map(Tags)
        | st.dictionaries(st.text(max_size=3), children, max_size=3)
        | st.dictionaries(st.text(max_size=3), children, max_size=3).map(Config)
        | keyed.map(dict)
        | keyed.map(OrderedDict)
        | keyed.map(lambda kv: defaultdict(list, kv))
        | st.dictionaries(hashables, st.integers(), max_size=3).map(Counter)
        | st.tuples(st.lists(children, max_size=3), st.none() | st.integers(3, 5)).map(
            lambda a: deque(*a)
        )
        | st.frozensets(hashables, max_size=3)
        | st.sets(hashables, max_size=3)
        | st.frozensets(st.integers(), max_size=3).map(Ids)
        | st.tuples(st.integers(), st.integers()).map(lambda t: Point(*t))
        | st.lists(children, max_size=2).map(Box)
        | st.tuples(children, children).map(lambda t: Pair(*t))
    )


values = st.recursive(scalars, containers, max_leaves=12)


@given(values)
def test_nested_values_round_trip_with_their_types(value: Any) -> None:
    again = through_json(value)
    assert same_shape(value, again), (value, again)
