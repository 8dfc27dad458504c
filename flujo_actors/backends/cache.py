"""Cache backends: the protocol, a pure LRU core, and the in-memory LRU backend.

The runner caches a step's output (``cache=True`` on the step plus a
``cache_backend``) under :func:`flujo_actors.policy.cache_key.cache_key` of the
step and its input, storing :func:`~flujo_actors.serialization.dump_typed` of
the output. A hit is rebuilt with
:func:`~flujo_actors.serialization.load_typed`, so callers get a new object of
the original type and can never mutate what the cache holds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar, runtime_checkable

import attrs
import trio

from ..serialization import dumps_json, loads_json

if TYPE_CHECKING:
    from ..serialization import JSONValue

__all__ = ["CacheBackend", "CacheStatistics", "InMemoryLRUBackend", "LRUCache"]

V = TypeVar("V")

_NEVER: Final = math.inf


@runtime_checkable
class CacheBackend(Protocol):
    """Where step outputs are cached.

    Keys are the 64-character hex strings of
    :func:`~flujo_actors.policy.cache_key.cache_key`; values are JSON data from
    :func:`~flujo_actors.serialization.dump_typed`. A backend must store a copy
    (the caller may mutate ``value`` afterwards) and may forget any entry at
    any time. Both methods are trio checkpoints.
    """

    async def get(self, key: str) -> tuple[bool, JSONValue]:
        """Return ``(True, value)`` on a hit, ``(False, None)`` on a miss."""
        ...

    async def put(self, key: str, value: JSONValue) -> None:
        """Store ``value`` (JSON data) under ``key``, replacing any previous value."""
        ...


@attrs.frozen(kw_only=True)
class CacheStatistics:
    """A snapshot of an LRU cache's counters.

    Attributes:
        hits: ``get`` calls that found a live entry.
        misses: ``get`` calls that found nothing (expired entries included).
        evictions: Entries dropped to make room (least recently used first).
        expirations: Entries dropped because their TTL had passed.
        size: Entries stored now (expired ones still count until touched).
        max_size: The capacity.
    """

    hits: int
    misses: int
    evictions: int
    expirations: int
    size: int
    max_size: int


def _validate(owner: str, max_size: object, ttl_s: object) -> tuple[int, float | None]:
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"{owner}: max_size must be an int >= 1, got {max_size!r}.")
    if ttl_s is None:
        return max_size, None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not ttl_s > 0:
        raise ValueError(
            f"{owner}: ttl_s must be a number of seconds > 0, or None for no expiry, got {ttl_s!r}."
        )
    return max_size, float(ttl_s)


class LRUCache(Generic[V]):
    """A least-recently-used map with an optional time-to-live (sync, no I/O).

    The caller passes the current time to every call, which keeps the core
    deterministic (the async backend feeds it trio's clock). ``get`` and
    ``put`` are O(1): an ``OrderedDict`` in recency order, oldest first.
    An entry expires ``ttl_s`` seconds after it was last *put* (reads do not
    extend it); expired entries are dropped when read, or evicted as usual.
    Not thread-safe by itself.

    Args:
        max_size: Capacity (>= 1).
        ttl_s: Seconds an entry lives (> 0), or ``None`` for no expiry.

    Raises:
        ValueError: Invalid ``max_size`` or ``ttl_s``.
    """

    def __init__(self, max_size: int = 1024, ttl_s: float | None = None) -> None:
        self._max_size, self._ttl_s = _validate("LRUCache", max_size, ttl_s)
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()
        self._hits = self._misses = self._evictions = self._expirations = 0

    @property
    def max_size(self) -> int:
        """The capacity."""
        return self._max_size

    @property
    def ttl_s(self) -> float | None:
        """The time-to-live in seconds, or ``None``."""
        return self._ttl_s

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """The stored keys, least recently used first (no side effects)."""
        return list(self._entries)

    def get(self, key: str, now: float = 0.0) -> tuple[bool, V | None]:
        """Look ``key`` up at time ``now``; a hit becomes the most recently used.

        Returns:
            ``(True, value)`` on a hit, ``(False, None)`` on a miss.
        """
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return False, None
        value, expires_at = entry
        if now >= expires_at:
            del self._entries[key]
            self._expirations += 1
            self._misses += 1
            return False, None
        self._entries.move_to_end(key)
        self._hits += 1
        return True, value

    def put(self, key: str, value: V, now: float = 0.0) -> None:
        """Store ``value`` at time ``now`` as the most recently used entry.

        Evicts the least recently used entry when the cache is over capacity.
        """
        expires_at = _NEVER if self._ttl_s is None else now + self._ttl_s
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
        entries[key] = (value, expires_at)
        if len(entries) > self._max_size:
            entries.popitem(last=False)
            self._evictions += 1

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        self._entries.clear()

    def statistics(self) -> CacheStatistics:
        """Return the counters as a frozen snapshot."""
        return CacheStatistics(
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
            size=len(self._entries),
            max_size=self._max_size,
        )

    def check_invariants(self) -> None:
        """Raise AssertionError if the internal state is inconsistent (for tests)."""
        entries = self._entries
        if len(entries) > self._max_size:
            raise AssertionError(f"{len(entries)} entries exceed max_size {self._max_size}")
        counters = (self._hits, self._misses, self._evictions, self._expirations)
        if min(counters) < 0:
            raise AssertionError(f"negative counter in {counters}")
        for key, (_, expires_at) in entries.items():
            if not isinstance(key, str):
                raise AssertionError(f"non-str key {key!r}")
            if (self._ttl_s is None) != (expires_at == _NEVER):
                raise AssertionError(f"expiry {expires_at!r} of {key!r} contradicts ttl_s")


class _Timeline:
    """Seconds on trio's clock inside a trio run, on ``time.monotonic()`` outside.

    Each ``trio.run`` has its own clock with its own origin (the default clock
    has a random offset; a ``MockClock`` runs virtual time), so readings from
    two runs are not comparable. The timeline stays continuous instead: when
    the clock changes, it resumes from its last reading plus the real time
    elapsed since. Within one run it is exactly that run's clock, from the
    first reading the backend takes in that run.
    """

    def __init__(self) -> None:
        self._clock: object = None
        self._shift = 0.0
        self._last = 0.0
        self._last_monotonic = 0.0

    def now(self) -> float:
        monotonic = time.monotonic()
        clock: object
        try:
            trio_clock = trio.lowlevel.current_clock()
        except RuntimeError:  # not inside trio
            clock, raw = _Timeline, monotonic
        else:
            clock, raw = trio_clock, trio_clock.current_time()
        if clock is not self._clock:
            if self._clock is not None:
                self._shift = self._last + (monotonic - self._last_monotonic) - raw
            self._clock = clock
        self._last, self._last_monotonic = raw + self._shift, monotonic
        return self._last


class InMemoryLRUBackend:
    """An in-process :class:`CacheBackend`: LRU eviction, optional TTL.

    Values are stored as JSON text: ``put`` checks and copies in one step, and
    every ``get`` returns new objects, so neither side can mutate the stored
    value. TTL runs on trio's clock inside trio (so ``MockClock`` tests are
    exact) and on ``time.monotonic()`` outside. Thread-safe.

    Cancellation: both methods checkpoint before doing anything and then
    complete without yielding, so a cancelled call had no effect.

    Args:
        max_size: Capacity in entries (>= 1).
        ttl_s: Seconds an entry lives after it is put (> 0), or ``None``.

    Raises:
        ValueError: Invalid ``max_size`` or ``ttl_s``.
    """

    def __init__(self, max_size: int = 1024, ttl_s: float | None = None) -> None:
        max_size, ttl = _validate("InMemoryLRUBackend", max_size, ttl_s)
        self._core: LRUCache[str] = LRUCache(max_size, ttl)
        self._timeline = _Timeline() if ttl is not None else None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InMemoryLRUBackend(max_size={self._core.max_size}, ttl_s={self._core.ttl_s})"

    def _now(self) -> float:
        return 0.0 if self._timeline is None else self._timeline.now()

    async def get(self, key: str) -> tuple[bool, JSONValue]:
        """Return ``(True, value)`` (a new copy) on a hit, ``(False, None)`` on a miss.

        Raises:
            TypeError: ``key`` is not a ``str``.
        """
        await trio.lowlevel.checkpoint()
        _check_key(key)
        with self._lock:
            found, text = self._core.get(key, self._now())
        if text is None:
            return False, None
        return found, loads_json(text)

    async def put(self, key: str, value: object) -> None:
        """Store a copy of ``value`` under ``key``, evicting the least recently used entry.

        Raises:
            TypeError: ``key`` is not a ``str``.
            SerializationError: ``value`` is not JSON data (nothing is stored).
        """
        await trio.lowlevel.checkpoint()
        _check_key(key)
        text = dumps_json(value, path=f"cache[{key!r}]")
        with self._lock:
            self._core.put(key, text, self._now())

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        with self._lock:
            self._core.clear()

    def statistics(self) -> CacheStatistics:
        """Return hits, misses, evictions, expirations, size and max_size."""
        with self._lock:
            return self._core.statistics()


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"cache keys must be str, got {type(key).__name__} {key!r}.")
