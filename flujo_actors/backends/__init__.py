"""State and cache backends.

State (``resume_async``): :class:`StateBackend` is the protocol;
:class:`InMemoryStateBackend` and :class:`SQLiteBackend` implement it.
Cache (``cache=True`` steps): :class:`CacheBackend` is the protocol;
:class:`InMemoryLRUBackend` implements it on the sync :class:`LRUCache` core.

:class:`SQLiteBackend` and :class:`PostgresBackend` (extra ``postgres``) are
imported on first use, so that code using only the in-memory backends never
loads ``sqlite3`` or psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cache import CacheBackend as CacheBackend
from .cache import CacheStatistics as CacheStatistics
from .cache import InMemoryLRUBackend as InMemoryLRUBackend
from .cache import LRUCache as LRUCache
from .state import RUN_STATUSES as RUN_STATUSES
from .state import InMemoryStateBackend as InMemoryStateBackend
from .state import RunCheckpoint as RunCheckpoint
from .state import RunSnapshot as RunSnapshot
from .state import StateBackend as StateBackend

if TYPE_CHECKING:
    from .postgres import PostgresBackend as PostgresBackend
    from .sqlite import SQLiteBackend as SQLiteBackend

__all__ = [
    "RUN_STATUSES",
    "CacheBackend",
    "CacheStatistics",
    "InMemoryLRUBackend",
    "InMemoryStateBackend",
    "LRUCache",
    "PostgresBackend",
    "RunCheckpoint",
    "RunSnapshot",
    "SQLiteBackend",
    "StateBackend",
]


def __getattr__(name: str) -> object:
    if name == "SQLiteBackend":
        from .sqlite import SQLiteBackend

        return SQLiteBackend
    if name == "PostgresBackend":
        from .postgres import PostgresBackend

        return PostgresBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
