"""Test configuration: hypothesis profiles (FLUJO_PROFILE: dev, fast, ci), a PostgreSQL server."""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from flujo_actors.testing.pg_server import PgServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("fast", max_examples=10, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("FLUJO_PROFILE", "dev"))


# -- a throwaway PostgreSQL server (tests marked `postgres`) ------------------------------

_pg_schemas = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the session, on a Unix socket; removed at the end."""
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Callable[[], str]:
    """Make a new, empty PostgreSQL schema (a namespace in the session's database); its DSN.

    A schema costs well under a millisecond where a database costs ~200 ms;
    the DSN puts it first on the ``search_path``, so the backend's tables
    are created there, as a user's own schema would be.
    """

    import psycopg

    def make() -> str:
        name = f"s{next(_pg_schemas)}"
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return f"{pg_server.dsn()} options='-csearch_path={name}'"

    return make
