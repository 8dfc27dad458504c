"""State and cache backends.

State (``resume_async``): :class:`StateBackend` is the protocol;
:class:`InMemoryStateBackend` and :class:`SQLiteBackend` implement it.
Cache (``cache=True`` steps): :class:`CacheBackend` is the protocol;
:class:`InMemoryLRUBackend` implements it on the sync :class:`LRUCache` core.
"""

from .cache import CacheBackend as CacheBackend
from .cache import CacheStatistics as CacheStatistics
from .cache import InMemoryLRUBackend as InMemoryLRUBackend
from .cache import LRUCache as LRUCache
from .sqlite import SQLiteBackend as SQLiteBackend
from .state import RUN_STATUSES as RUN_STATUSES
from .state import InMemoryStateBackend as InMemoryStateBackend
from .state import RunCheckpoint as RunCheckpoint
from .state import RunSnapshot as RunSnapshot
from .state import StateBackend as StateBackend

__all__ = [
    "RUN_STATUSES",
    "CacheBackend",
    "CacheStatistics",
    "InMemoryLRUBackend",
    "InMemoryStateBackend",
    "LRUCache",
    "RunCheckpoint",
    "RunSnapshot",
    "SQLiteBackend",
    "StateBackend",
]
