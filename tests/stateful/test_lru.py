"""LRUCache against a model (an OrderedDict), driven by a hypothesis state machine."""

from __future__ import annotations

import math
from collections import OrderedDict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from flujo_actors.backends.cache import CacheStatistics, LRUCache

_KEYS = st.sampled_from(["a", "b", "c", "d", "e"])


class LRUMachine(RuleBasedStateMachine):
    """Every operation is applied to the cache and to a transparent model."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: LRUCache[int] | None = None
        self.model: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.max_size = 0
        self.ttl_s: float | None = None
        self.now = 0.0
        self.hits = self.misses = self.evictions = self.expirations = 0

    @initialize(
        max_size=st.integers(min_value=1, max_value=4),
        ttl_s=st.none() | st.sampled_from([1.0, 2.5]),
    )
    def create(self, max_size: int, ttl_s: float | None) -> None:
        self.cache = LRUCache(max_size, ttl_s)
        self.max_size, self.ttl_s = max_size, ttl_s

    def _cache(self) -> LRUCache[int]:
        assert self.cache is not None
        return self.cache

    @rule(key=_KEYS, value=st.integers())
    def put(self, key: str, value: int) -> None:
        self._cache().put(key, value, self.now)
        expires_at = math.inf if self.ttl_s is None else self.now + self.ttl_s
        if key in self.model:
            self.model.move_to_end(key)
        self.model[key] = (value, expires_at)
        if len(self.model) > self.max_size:
            self.model.popitem(last=False)
            self.evictions += 1

    @rule(key=_KEYS)
    def get(self, key: str) -> None:
        got = self._cache().get(key, self.now)
        entry = self.model.get(key)
        if entry is None:
            self.misses += 1
            assert got == (False, None)
        elif self.now >= entry[1]:
            del self.model[key]
            self.misses += 1
            self.expirations += 1
            assert got == (False, None)
        else:
            self.model.move_to_end(key)
            self.hits += 1
            assert got == (True, entry[0])

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.5]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.cache is not None and len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        self._cache().clear()
        self.model.clear()

    @invariant()
    def matches_the_model(self) -> None:
        cache = self.cache
        if cache is None:
            return
        cache.check_invariants()
        assert cache.keys() == list(self.model)
        assert len(cache) == len(self.model)
        assert cache.statistics() == CacheStatistics(
            hits=self.hits,
            misses=self.misses,
            evictions=self.evictions,
            expirations=self.expirations,
            size=len(self.model),
            max_size=self.max_size,
        )


LRUMachine.TestCase.settings = settings(LRUMachine.TestCase.settings, stateful_step_count=40)
TestLRU = LRUMachine.TestCase
