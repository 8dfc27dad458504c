"""`python -m flujo_actors runs ...` on a postgresql:// store, against the real test server.

Every subcommand runs through the real entry point in a child process
(``python -m flujo_actors``, once the console script); bad stores are one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
import pytest
import trio

from flujo_actors import Flujo
from flujo_actors.backends.postgres import PostgresBackend

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from flujo_actors.testing.pg_server import PgServer
    from tests.cli.cli_support import cli, effects  # mypy names test modules by path
else:
    from cli_support import cli, effects  # pytest puts tests/cli on sys.path

pytestmark = pytest.mark.postgres


def _url(server: PgServer, dbname: str = "postgres", schema: str | None = None) -> str:
    """A postgresql:// URL of the test server (its Unix socket), optionally in ``schema``."""
    url = f"postgresql://flujo@/{dbname}?host={quote(server.socket_dir)}&port={server.port}"
    if schema is not None:
        url += "&options=" + quote(f"-csearch_path={schema}")
    return url


@pytest.fixture
def store(pg_server: PgServer, pg_dsn: Callable[[], str]) -> str:
    """The URL of a new, empty store (its own schema, tables created)."""
    dsn = pg_dsn()
    schema = re.search(r"search_path=(\w+)", dsn)
    assert schema is not None
    url = _url(pg_server, schema=schema[1])
    with psycopg.connect(url) as conn:  # the tables, as a runner's first connect makes them
        from flujo_actors.backends.postgres_schema import migrate

        migrate(conn, "test")
    return url


def _run(url: str, pipeline: str, inputs: list[int], **env: str) -> list[Any]:
    """Run ``cli_pipes.<pipeline>`` on each input, persisted to ``url``; the results."""
    import os

    cli_pipes = importlib.import_module("cli_pipes")

    async def main() -> list[Any]:
        out = []
        async with PostgresBackend(url) as backend:
            runner = Flujo(getattr(cli_pipes, pipeline), state_backend=backend)
            for value in inputs:
                out.append(await runner.run_async(value))
        return out

    os.environ.update(env)
    try:
        return trio.run(main)
    finally:
        for name in env:
            os.environ.pop(name, None)


def _ids(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT run_id FROM flujo_runs ORDER BY seq")]


def test_list_and_show(env: dict[str, str], store: str) -> None:
    ok1, ok2 = (r.run_id for r in _run(store, "pipeline", [1, 2]))
    [bad] = (r.run_id for r in _run(store, "pipeline", [3], CLI_FAIL="1"))
    [fanned] = (r.run_id for r in _run(store, "fanned", [5]))
    done = cli(env, "runs", "--backend", store, "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["RUN", "ID", "STATUS"]
    assert [line.split()[:2] for line in lines[1:]] == [
        [fanned, "completed"],
        [bad, "failed"],
        [ok2, "completed"],
        [ok1, "completed"],
    ]
    failed = cli(env, "runs", "--backend", store, "list", "--status", "failed", "--json")
    assert failed.returncode == 0, failed.stderr
    assert [(r["run_id"], r["steps"]) for r in json.loads(failed.stdout)] == [(bad, 2)]

    shown = cli(env, "runs", "--backend", store, "show", fanned)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout.splitlines()
    assert out[0] == f"run {fanned}: completed, pipeline pipeline"
    assert [line.split()[0] for line in out[3:]] == ["first", "fan", "l", "left", "r", "right"]
    as_json = cli(env, "runs", "--backend", store, "show", fanned, "--json")
    assert as_json.returncode == 0, as_json.stderr
    stored = json.loads(as_json.stdout)
    assert (stored["run_id"], stored["status"], len(stored["step_history"])) == (
        fanned,
        "completed",
        2,
    )


def _run_killed(env: dict[str, str], url: str) -> subprocess.CompletedProcess[str]:
    """A runner process SIGKILLed inside step ``second`` (its lease left live)."""
    code = (
        "import cli_pipes, trio\n"
        "from flujo_actors import Flujo\n"
        "from flujo_actors.backends.postgres import PostgresBackend\n"
        "async def main():\n"
        f"    async with PostgresBackend({url!r}) as backend:\n"
        "        await Flujo(cli_pipes.pipeline, state_backend=backend).run_async(1, run_id='k')\n"
        "trio.run(main)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "CLI_KILL": "second"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_resume_waits_for_a_dead_owners_lease_then_continues_the_run(
    env: dict[str, str], store: str
) -> None:
    killed = _run_killed(env, store)
    assert killed.returncode == -9, killed.stderr
    assert effects(env) == ["first"]
    listed = cli(env, "runs", "--backend", store, "list")
    assert listed.stdout.splitlines()[1].split()[:2] == ["k", "running"]
    resume = ["runs", "--backend", store, "resume", "k", "--pipeline", "cli_pipes:runner"]
    early = cli(env, *resume)
    # The dead process's lease is still live: the CLI says so and changes nothing.
    assert early.returncode == 2
    assert re.fullmatch(
        r"flujo-actors: error: PostgresBackend\('[^']*'\): run 'k' is running in another "
        r"process \(its lease is held by '[^']+' for another \d+\.\d s\)\. If that process "
        r"died, `await runner\.recover_async\(\)` takes the run over once the lease "
        r"expires\.\n",
        early.stderr,
    )
    with psycopg.connect(store) as conn:  # the lease runs out
        conn.execute("UPDATE flujo_runs SET lease_expires_at = now() - interval '1 s'")
    done = cli(env, *resume, "--json", script=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["run_id"], result["status"], result["output"]) == ("k", "completed", 23)
    assert effects(env) == ["first", "second", "third"]  # first ran once
    with psycopg.connect(store) as conn:
        assert conn.execute("SELECT status, owner FROM flujo_runs").fetchall() == [
            ("completed", None)
        ]


def test_fork_delete_and_prune(env: dict[str, str], store: str) -> None:
    [ok] = (r.run_id for r in _run(store, "pipeline", [1]))
    [bad] = (r.run_id for r in _run(store, "pipeline", [2], CLI_FAIL="1"))
    forked = cli(
        env,
        *("runs", "--backend", store, "fork", ok, "--pipeline", "cli_pipes:pipeline"),
        *("--at", "third", "--run-id", "forked", "--json"),
    )
    assert forked.returncode == 0, forked.stderr
    result = json.loads(forked.stdout)
    assert (result["run_id"], result["status"], result["output"]) == ("forked", "completed", 23)
    assert effects(env) == ["first", "second", "third", "first", "third"]
    assert _ids(store) == [ok, bad, "forked"]

    deleted = cli(env, "runs", "--backend", store, "delete", "forked")
    assert (deleted.returncode, deleted.stdout) == (0, "deleted forked\n")
    again = cli(env, "runs", "--backend", store, "delete", "forked")
    assert (again.returncode, again.stderr) == (
        2,
        "flujo-actors: error: run 'forked' is not in the store (`runs list` lists the runs).\n",
    )
    kept = cli(env, "runs", "--backend", store, "prune", "--older-than", "1h")
    assert (kept.returncode, kept.stdout) == (0, "0 run(s) pruned\n")
    pruned = cli(env, "runs", "--backend", store, "prune", "--status", "failed")
    assert (pruned.returncode, pruned.stdout) == (0, f"pruned {bad}\n1 run(s) pruned\n")
    assert _ids(store) == [ok]


def test_a_paused_run_shows_its_question_and_resumes_with_input(
    env: dict[str, str], store: str
) -> None:
    [paused] = _run(store, "approval", [1])
    assert paused.status == "paused"
    shown = cli(env, "runs", "--backend", store, "show", paused.run_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[-1].startswith("waiting for input at approve: Ship it?")
    resume = ["runs", "--backend", store, "resume", paused.run_id, "--pipeline"]
    invalid = cli(env, *resume, "cli_pipes:approval", "--input", '{"ok": "maybe"}')
    assert invalid.returncode == 2 and invalid.stderr.startswith("flujo-actors: error: ")
    assert len(invalid.stderr.splitlines()) == 1
    done = cli(env, *resume, "cli_pipes:approval", "--input", '{"ok": true}', "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == "shipped"
    assert effects(env) == ["first", "ship"]


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("flujo-actors: error: ") and done.stderr.endswith("\n")
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr[len("flujo-actors: error: ") : -1]


def test_a_missing_database_is_one_line_naming_the_fix(
    env: dict[str, str], pg_server: PgServer
) -> None:
    message = _one_line_error(cli(env, "runs", "--backend", _url(pg_server, "no_such_db"), "list"))
    assert re.fullmatch(
        r"PostgresBackend\('[^']*dbname=no_such_db[^']*'\): cannot connect to PostgreSQL: "
        r".*database \"no_such_db\" does not exist\. Create the database first \(`createdb "
        r"NAME`, or CREATE DATABASE\); the backend creates its tables, not the database\.",
        message,
    )


def test_a_server_that_is_not_there_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    url = f"postgresql://flujo:hunter2@/db?host={quote(str(tmp_path))}&port=1"
    message = _one_line_error(cli(env, "runs", "--backend", url, "show", "r"))
    assert "hunter2" not in message
    assert re.fullmatch(
        r"PostgresBackend\('[^']*password=\*\*\*[^']*'\): cannot connect to PostgreSQL: "
        r".*No such file or directory.* Check the DSN and that the server is running and "
        r"reachable\.",
        message,
    )


def test_a_malformed_url_is_one_line(env: dict[str, str]) -> None:
    message = _one_line_error(
        cli(env, "runs", "--backend", "postgresql://u:hunter2@/db?bogus=1", "list")
    )
    assert message == (
        "--backend: PostgresBackend: dsn is not a valid libpq connection string (invalid URI "
        "query parameter: \"bogus\"). Use 'postgresql://user:password@host:5432/dbname' or "
        "'host=... dbname=...'."
    )


def test_a_database_without_a_store_is_an_error_and_gets_no_tables(
    env: dict[str, str], pg_server: PgServer, pg_dsn: Callable[[], str]
) -> None:
    schema = re.search(r"search_path=(\w+)", pg_dsn())
    assert schema is not None
    url = _url(pg_server, schema=schema[1])
    message = _one_line_error(cli(env, "runs", "--backend", url, "list"))
    assert re.fullmatch(
        r"PostgresBackend\('[^']*'\): no flujo_actors state store there \(the database has "
        r"no flujo_schema table on its search_path\)\. Point the DSN at the database \(and "
        r"schema\) the runners use as their state_backend\.",
        message,
    )
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('flujo_schema')").fetchone()
    assert row == (None,)
