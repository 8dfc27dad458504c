"""``Flujo(state_backend="...")``: a postgresql:// URL, another URL scheme, a plain path."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from flujo_actors import Flujo, PipelineDefinitionError, PostgresBackend, SQLiteBackend, Step
from flujo_actors.backends.named import url_scheme

if TYPE_CHECKING:
    from pathlib import Path

    from flujo_actors.testing.pg_server import PgServer


async def double(x: int) -> int:
    return 2 * x


STEP = Step.from_callable(double)


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize(
    ("value", "scheme"),
    [
        ("mysql://app:hunter2@db/flows", "mysql"),
        ("sqlite:///runs.db", "sqlite"),
        ("file:///tmp/runs.db", "file"),
        ("PostgresSQL://app:hunter2@db/flows", "postgressql"),
    ],
)
def test_another_url_scheme_is_refused_and_no_file_is_made(
    value: str, scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Flujo: state_backend: a {scheme}:// URL names no state backend flujo_actors has. "
            "Pass a postgresql:// (or postgres://) URL for PostgresBackend, a file path such as "
            "'runs.db' for SQLiteBackend, or a StateBackend object."
        ),
    ):
        Flujo(STEP, state_backend=value)
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_postgresql_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(PipelineDefinitionError) as caught:
        Flujo(STEP, state_backend="postgresql://app:hunter2@[::1/flows")
    message = str(caught.value)
    assert "hunter2" not in message
    assert re.fullmatch(
        r"Flujo: state_backend: PostgresBackend: dsn is not a valid libpq connection string "
        r"\(.*in URI: \"<the DSN>\"\)\. Use 'postgresql://user:password@host:5432/dbname' or "
        r"'host=\.\.\. dbname=\.\.\.'\.",
        message,
    ), message


def test_a_postgresql_url_without_the_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if psycopg were not installed: the backend's modules import again and fail.
    for name in ("psycopg", "psycopg_pool"):
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("flujo_actors.backends.postgres", "flujo_actors.backends.postgres_pool"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(PipelineDefinitionError) as caught:
        Flujo(STEP, state_backend="postgres://app:hunter2@db/flows")
    assert re.fullmatch(
        r"Flujo: state_backend: a postgresql:// URL needs the 'postgres' extra \(psycopg 3 and "
        r"psycopg_pool\), which is not installed \(.+\)\. Install it with: "
        r"pip install 'flujo-actors\[postgres\]'",
        str(caught.value),
    ), str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "value",
    ["runs.db", "C:\\runs\\state.db", "weird:name.db", "postgresql:runs.db", "dir/postgres.db"],
)
def test_a_string_without_a_url_scheme_is_a_sqlite_file(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert url_scheme(value) is None
    runner = Flujo(STEP, state_backend=value)
    assert isinstance(runner.state_backend, SQLiteBackend)
    assert runner.state_backend.path == value


def test_a_path_object_is_always_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "postgresql:" / "db"
    runner = Flujo(STEP, state_backend=path)
    assert isinstance(runner.state_backend, SQLiteBackend)
    assert runner.state_backend.path == os.fspath(path)


def _url(pg_server: PgServer, scheme: str, schema: str) -> str:
    """A URL for the session's server (Unix socket) with ``schema`` first on the search path."""
    from flujo_actors.testing.pg_server import SUPERUSER

    host = quote(pg_server.socket_dir, safe="")
    options = quote(f"-csearch_path={schema}", safe="")
    return f"{scheme}://{SUPERUSER}@/postgres?host={host}&port={pg_server.port}&options={options}"


def _new_schema(pg_server: PgServer, name: str) -> None:
    import psycopg

    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL"])
async def test_a_postgresql_url_persists_to_that_database(pg_server: PgServer, scheme: str) -> None:
    schema = f"named_{scheme.lower()}_{'upper' if scheme[0].isupper() else 'lower'}"
    _new_schema(pg_server, schema)
    url = _url(pg_server, scheme, schema)
    runner = Flujo(STEP, state_backend=url)
    backend = runner.state_backend
    assert isinstance(backend, PostgresBackend)
    try:
        result = await runner.run_async(21, run_id="by-url")
        assert result.output == 42
    finally:
        await backend.aclose()
    # Another backend on the same schema (a libpq key/value DSN) reads the run back.
    async with PostgresBackend(f"{pg_server.dsn()} options='-csearch_path={schema}'") as check:
        snap = await check.load_state("by-url")
        assert snap is not None and snap.status == "completed"
        assert await check.list_runs() == ["by-url"]
