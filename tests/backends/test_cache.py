"""InMemoryLRUBackend and cache_key: LRU order, TTL on trio's clock, isolation, keys."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from flujo_actors.backends import CacheBackend, CacheStatistics, InMemoryLRUBackend, LRUCache
from flujo_actors.backends.cache import _Timeline
from flujo_actors.errors import SerializationError
from flujo_actors.policy.cache_key import cache_key
from flujo_actors.serialization import dump_typed, load_typed


def _stats(**counts: int) -> CacheStatistics:
    fields = {"hits": 0, "misses": 0, "evictions": 0, "expirations": 0, "size": 0, "max_size": 2}
    fields.update(counts)
    return CacheStatistics(**fields)


async def test_the_backend_satisfies_the_protocol() -> None:
    assert isinstance(InMemoryLRUBackend(), CacheBackend)


async def test_put_then_get_and_misses() -> None:
    cache = InMemoryLRUBackend(max_size=2)
    assert await cache.get("k") == (False, None)
    await cache.put("k", {"v": [1, 2.5, None, "x"]})
    assert await cache.get("k") == (True, {"v": [1, 2.5, None, "x"]})
    await cache.put("none", None)
    assert await cache.get("none") == (True, None)
    assert cache.statistics() == _stats(hits=2, misses=1, size=2)


async def test_least_recently_used_entries_are_evicted_first() -> None:
    cache = InMemoryLRUBackend(max_size=2)
    await cache.put("a", 1)
    await cache.put("b", 2)
    assert await cache.get("a") == (True, 1)  # "b" is now the least recently used
    await cache.put("c", 3)
    assert await cache.get("b") == (False, None)
    assert await cache.get("a") == (True, 1)
    assert await cache.get("c") == (True, 3)
    await cache.put("a", 10)  # replacing refreshes too
    await cache.put("d", 4)
    assert await cache.get("c") == (False, None)
    assert await cache.get("a") == (True, 10)
    assert cache.statistics() == _stats(hits=4, misses=2, evictions=2, size=2)


async def test_stored_values_are_isolated_from_callers() -> None:
    cache = InMemoryLRUBackend()
    value: dict[str, Any] = {"items": [1]}
    await cache.put("k", value)
    value["items"].append(2)
    found, first = await cache.get("k")
    assert (found, first) == (True, {"items": [1]})
    assert isinstance(first, dict)
    items = first["items"]
    assert isinstance(items, list)
    items.append(3)
    assert await cache.get("k") == (True, {"items": [1]})


async def test_typed_outputs_come_back_as_new_objects_of_the_same_type() -> None:
    @attrs.define
    class Answer:
        text: str
        cost: Decimal
        sources: list[str]

    cache = InMemoryLRUBackend()
    answer = Answer("42", Decimal("0.10"), ["a"])
    await cache.put("k", dump_typed(answer))
    answer.sources.append("mutated after put")
    found, stored = await cache.get("k")
    hit = load_typed(stored)
    assert found
    assert type(hit) is Answer
    assert hit == Answer("42", Decimal("0.10"), ["a"])
    assert hit is not answer


async def test_non_json_values_and_bad_keys_are_refused() -> None:
    cache = InMemoryLRUBackend()
    with pytest.raises(
        SerializationError,
        match=r"^Cannot encode an object of type 'decimal\.Decimal' at cache\['k'\]\['cost'\]: "
        r"state and cache backends store JSON data only\. Pass the value through "
        r"safe_serialize\(\) or dump_typed\(\) first\.$",
    ):
        await cache.put("k", {"cost": Decimal(1)})
    with pytest.raises(TypeError, match=r"^cache keys must be str, got int 1\.$"):
        await cache.put(1, "v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^cache keys must be str, got bytes b'k'\.$"):
        await cache.get(b"k")  # type: ignore[arg-type]
    assert cache.statistics().size == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_size": 0}, "InMemoryLRUBackend: max_size must be an int >= 1, got 0."),
        ({"max_size": 2.5}, "InMemoryLRUBackend: max_size must be an int >= 1, got 2.5."),
        ({"max_size": True}, "InMemoryLRUBackend: max_size must be an int >= 1, got True."),
        (
            {"ttl_s": 0},
            "InMemoryLRUBackend: ttl_s must be a number of seconds > 0, or None for no "
            "expiry, got 0.",
        ),
        (
            {"ttl_s": float("nan")},
            "InMemoryLRUBackend: ttl_s must be a number of seconds > 0, or None for no "
            "expiry, got nan.",
        ),
        (
            {"ttl_s": "10"},
            "InMemoryLRUBackend: ttl_s must be a number of seconds > 0, or None for no "
            "expiry, got '10'.",
        ),
    ],
)
def test_arguments_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        InMemoryLRUBackend(**kwargs)


def test_the_core_validates_with_its_own_name() -> None:
    with pytest.raises(ValueError, match=r"^LRUCache: max_size must be an int >= 1, got -1\.$"):
        LRUCache(-1)


async def test_a_cancelled_put_stores_nothing() -> None:
    cache = InMemoryLRUBackend()
    with trio.CancelScope() as scope:
        scope.cancel()
        await cache.put("k", 1)
    assert scope.cancelled_caught
    assert cache.statistics().size == 0


# -- TTL on trio's clock -------------------------------------------------------------------


async def test_entries_expire_exactly_ttl_after_their_put(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache = InMemoryLRUBackend(max_size=4, ttl_s=10)
    start = trio.current_time()
    await cache.put("k", "v")
    await trio.sleep(9.5)
    assert await cache.get("k") == (True, "v")  # reading does not extend the TTL
    await trio.sleep(0.5)
    assert trio.current_time() - start == 10.0
    assert await cache.get("k") == (False, None)
    assert cache.statistics() == _stats(hits=1, misses=1, expirations=1, max_size=4)


async def test_putting_again_restarts_the_ttl(autojump_clock: trio.testing.MockClock) -> None:
    cache = InMemoryLRUBackend(ttl_s=2.5)
    await cache.put("k", 1)
    await trio.sleep(2)
    await cache.put("k", 2)
    await trio.sleep(2)
    assert await cache.get("k") == (True, 2)
    await trio.sleep(0.5)
    assert await cache.get("k") == (False, None)


async def test_without_ttl_entries_never_expire(autojump_clock: trio.testing.MockClock) -> None:
    cache = InMemoryLRUBackend()
    await cache.put("k", 1)
    await trio.sleep(10**9)
    assert await cache.get("k") == (True, 1)


def test_ttl_stays_consistent_across_trio_runs_with_different_clocks() -> None:
    cache = InMemoryLRUBackend(ttl_s=60)

    async def put() -> None:
        await cache.put("k", 1)

    async def get() -> tuple[bool, Any]:
        return await cache.get("k")

    async def get_wait_get() -> list[tuple[bool, Any]]:
        first = await cache.get("k")
        await trio.sleep(60)
        return [first, await cache.get("k")]

    trio.run(put, clock=trio.testing.MockClock())
    # A new run whose clock reads far later: no real time passed, so still a hit.
    later = trio.testing.MockClock()
    later.jump(10_000)
    assert trio.run(get, clock=later) == (True, 1)
    # Within one run, that run's clock counts.
    assert trio.run(get_wait_get, clock=trio.testing.MockClock(autojump_threshold=0)) == [
        (True, 1),
        (False, None),
    ]


def test_the_timeline_uses_monotonic_time_outside_trio() -> None:
    timeline = _Timeline()
    first = timeline.now()
    second = timeline.now()
    assert first <= second

    async def inside() -> tuple[float, float]:
        return timeline.now(), trio.current_time()

    inside_now, trio_now = trio.run(inside, clock=trio.testing.MockClock())
    assert trio_now == 0.0
    assert second <= inside_now  # continuous: it does not jump back to the new clock's 0


# -- cache keys --------------------------------------------------------------------------------


def test_cache_keys_are_stable_sha256_hex() -> None:
    key = cache_key("summarise|app.agents.summarise", {"text": "hello", "n": 3})
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    # A golden value: persistent caches depend on keys not changing between releases.
    assert key == cache_key("summarise|app.agents.summarise", {"n": 3, "text": "hello"})
    document = b'["summarise|app.agents.summarise",{"n":3,"text":"hello"}]'
    assert key == hashlib.sha256(document).hexdigest()
    assert key == "30b3ddcd0944b641a9d5d260e32e92b26b65bec5943a41e1528122b248a4357a"


def test_cache_keys_distinguish_types_and_identities() -> None:
    inputs: list[Any] = [1, 1.0, "1", Decimal(1), True, [1], (1,), {1}, {"1": 1}, {1: 1}, None]
    keys = {cache_key("step", value) for value in inputs}
    assert len(keys) == len(inputs)
    assert cache_key("a", "x") != cache_key("b", "x")
    # No ambiguity between the identity and the data.
    assert cache_key("a|b", "c") != cache_key("a", "b|c")


def test_equal_sets_get_equal_keys_whatever_their_order() -> None:
    one = {"b", "a", 3, 1}
    two: set[Any] = set()
    for item in [1, 3, "a", "b"]:
        two.add(item)
    assert cache_key("s", one) == cache_key("s", two)
    assert cache_key("s", frozenset(one)) != cache_key("s", one)


def test_unserializable_input_names_the_step() -> None:
    class Opaque:
        pass

    with pytest.raises(
        SerializationError,
        match=r"^Cannot compute the cache key of step 'lookup\|app\.lookup': Cannot serialize an "
        r"object of type 'test_cache\.test_unserializable_input_names_the_step\.<locals>\.Opaque' "
        r"at input\['q'\]: it is not JSON-compatible and no serializer is registered for it\. "
        r"Fix: register_custom_serializer\(test_unserializable_input_names_the_step\.<locals>"
        r"\.Opaque, lambda obj: \.\.\.\) \(and register_custom_deserializer\("
        r"test_unserializable_input_names_the_step\.<locals>\.Opaque, lambda value: \.\.\.\) "
        r"to rebuild it\)\.$",
    ) as info:
        cache_key("lookup|app.lookup", {"q": Opaque()})
    assert isinstance(info.value.__cause__, SerializationError)
