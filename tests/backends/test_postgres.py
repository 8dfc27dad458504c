"""PostgresBackend against a real server: conformance, schema, payloads, group commit, errors."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from flujo_actors import Flujo, Pipeline, RunExistsError, StateBackendError, Step
from flujo_actors.backends.postgres import PostgresBackend
from flujo_actors.backends.postgres_schema import SCHEMA_VERSION, migrate
from flujo_actors.testing.backends import check_state_backend

if TYPE_CHECKING:
    from collections.abc import Callable

    from flujo_actors.testing.pg_server import PgServer
    from tests.backends.backend_cases import checkpoint as _cp  # mypy names test modules by path
    from tests.backends.backend_cases import waiting_on_lock
else:
    from backend_cases import checkpoint as _cp  # pytest puts tests/ on sys.path
    from backend_cases import waiting_on_lock

pytestmark = pytest.mark.postgres


async def test_postgres_backend_passes_the_conformance_suite(pg_dsn: Callable[[], str]) -> None:
    await check_state_backend(lambda: PostgresBackend(pg_dsn()))


async def test_payloads_round_trip_exactly_where_jsonb_would_change_them(
    pg_dsn: Callable[[], str],
) -> None:
    # jsonb would sort the keys, turn 1e16 into an int and -0.0 into 0.0, and
    # refuse NUL and lone surrogates: json keeps the text dumps_json wrote.
    value = {"zz": 1e16, "a": -0.0, "m": [1.5e300, 1, 1.0], "s": "nul\x00 lone\ud800 ü 🎉"}
    async with PostgresBackend(pg_dsn()) as backend:
        await backend.save_state("exact", _cp("exact", context=value, output=value))
        snap = await backend.load_state("exact")
    assert snap is not None
    for loaded in (snap.context, snap.output):
        assert loaded == value
        assert list(loaded) == ["zz", "a", "m", "s"]
        assert type(loaded["zz"]) is float and str(loaded["a"]) == "-0.0"
        assert [type(x) for x in loaded["m"]] == [float, int, float]


async def test_payloads_are_json_columns_the_server_can_query(pg_dsn: Callable[[], str]) -> None:
    dsn = pg_dsn()
    async with PostgresBackend(dsn) as backend:
        await backend.save_state(
            "q", _cp("q", context={"user": "ada"}, new_steps=({"name": "first"},))
        )
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT r.context->>'user', s.row->>'name', pg_typeof(r.context)::text"
            " FROM flujo_runs r JOIN flujo_steps s USING (run_id) WHERE run_id = 'q'"
        ).fetchone()
    assert row == ("ada", "first", "json")


async def test_an_older_schema_is_migrated_at_connect_and_keeps_its_runs(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    with psycopg.connect(dsn) as conn:
        assert migrate(conn, "test", to=1) == 0
        # A run written by a version-1 flujo_actors (no lease columns yet).
        conn.execute(
            "INSERT INTO flujo_runs (run_id, pipeline_name, status, next_step_index, context,"
            " initial_input, output, total_cost_usd, total_tokens, updated_at, step_count)"
            " VALUES ('old', 'p', 'paused', 1, '{\"k\": 1}', '\"in\"', '\"out\"', '0.5', 3, 1.0, 1)"
        )
        conn.execute("INSERT INTO flujo_steps VALUES ('old', 0, '{\"name\": \"s\"}')")
        conn.commit()
    async with PostgresBackend(dsn) as backend:
        snap = await backend.load_state("old")
        await backend.create_run(_cp("new"))
    assert snap is not None
    assert (snap.status, snap.context, snap.output, snap.step_history) == (
        "paused",
        {"k": 1},
        "out",
        ({"name": "s"},),
    )
    with psycopg.connect(dsn) as conn:
        versions = conn.execute("SELECT version FROM flujo_schema ORDER BY version").fetchall()
        owner = conn.execute("SELECT owner FROM flujo_runs WHERE run_id = 'new'").fetchone()
    assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1)) == [1, 2, 3]
    assert owner is not None and owner[0] is not None  # the v2 lease column is in use


async def test_a_newer_schema_is_refused(pg_dsn: Callable[[], str]) -> None:
    dsn = pg_dsn()
    with psycopg.connect(dsn) as conn:
        migrate(conn, "test")
        conn.execute("INSERT INTO flujo_schema (version) VALUES (99)")
        conn.commit()
    backend = PostgresBackend(dsn)
    with pytest.raises(
        StateBackendError,
        match=rf"^{re.escape(repr(backend))}: the database has state schema version 99; this "
        rf"flujo_actors reads version {SCHEMA_VERSION}\. Upgrade flujo_actors to use it\.$",
    ):
        await backend.list_runs()
    await backend.aclose()


async def test_backends_connecting_together_migrate_once(pg_dsn: Callable[[], str]) -> None:
    dsn = pg_dsn()
    backends = [PostgresBackend(dsn) for _ in range(4)]
    async with trio.open_nursery() as nursery:
        for backend in backends:
            nursery.start_soon(backend.list_runs)
    for backend in backends:
        await backend.aclose()
    with psycopg.connect(dsn) as conn:
        versions = conn.execute("SELECT version FROM flujo_schema ORDER BY version").fetchall()
    assert [v for (v,) in versions] == [1, 2, 3]


async def test_concurrent_creates_across_backend_objects_have_one_winner(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    backends = [PostgresBackend(dsn) for _ in range(6)]
    winners: list[int] = []
    refused: list[str] = []

    async def start(i: int) -> None:
        try:
            await backends[i].create_run(_cp("shared", context={"who": i}))
        except RunExistsError as exc:
            refused.append(exc.run_id)
        else:
            winners.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(len(backends)):
            nursery.start_soon(start, i)
    assert len(winners) == 1 and refused == ["shared"] * 5
    snap = await backends[0].load_state("shared")
    assert snap is not None and snap.context == {"who": winners[0]}
    for backend in backends:
        await backend.aclose()


async def test_concurrent_writers_share_one_transaction(pg_dsn: Callable[[], str]) -> None:
    dsn = pg_dsn()
    async with PostgresBackend(dsn, max_size=2) as backend:
        for i in range(9):
            await backend.create_run(_cp(f"r{i}"))
        before = backend.statistics().commits
        # Another client locks run r0's row: the first write (r0's) waits inside
        # its transaction, and the eight writes made meanwhile queue behind it.
        blocker = psycopg.connect(dsn)
        blocker.execute("SELECT 1 FROM flujo_runs WHERE run_id = 'r0' FOR UPDATE")

        async def save(i: int) -> None:
            await backend.save_state(
                f"r{i}", _cp(f"r{i}", next_step_index=1, new_steps=({"i": i},))
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(save, 0)
            while backend.statistics().commits == before and not waiting_on_lock(dsn):
                await trio.sleep(0.01)  # until r0's write waits on the row lock
            for i in range(1, 9):
                nursery.start_soon(save, i)
            while backend.statistics().queued_writes < 8:
                await trio.sleep(0.01)  # until all eight are queued
            blocker.rollback()
            blocker.close()
        stats = backend.statistics()
        assert stats.commits - before == 2  # r0 alone, then the eight together
        assert stats.grouped_commits == 1
        for i in range(9):
            snap = await backend.load_state(f"r{i}")
            assert snap is not None and snap.step_history == ({"i": i},)


async def test_one_refused_write_in_a_shared_transaction_does_not_fail_the_others(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    async with PostgresBackend(dsn) as backend, PostgresBackend(dsn) as other:
        await backend.create_run(_cp("lost"))
        await backend.create_run(_cp("kept"))
        # Another owner takes "lost" over (as recovery does after an expired lease).
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "UPDATE flujo_runs SET owner = %s, lease_epoch = lease_epoch + 1"
                " WHERE run_id = 'lost'",
                (other.owner_id,),
            )
        blocker = psycopg.connect(dsn)
        blocker.execute("SELECT 1 FROM flujo_runs WHERE run_id = 'kept' FOR UPDATE")
        errors: list[BaseException] = []

        async def save(run_id: str) -> None:
            try:
                await backend.save_state(run_id, _cp(run_id, next_step_index=1))
            except StateBackendError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(save, "kept")
            while not waiting_on_lock(dsn):
                await trio.sleep(0.01)
            nursery.start_soon(save, "lost")
            nursery.start_soon(save, "kept")
            while backend.statistics().queued_writes < 2:
                await trio.sleep(0.01)
            blocker.rollback()
            blocker.close()
        assert [type(e).__name__ for e in errors] == ["LeaseLostError"]
        assert str(errors[0]) == (
            f"{backend!r}: save_states of run 'lost' was refused: this process "
            f"({backend.owner_id}) no longer holds the run's lease (it was not renewed within "
            f"lease_s=30.0 s and another process took the run over; {other.owner_id!r} holds "
            "it now). Nothing was written; the run stops here and the other process's "
            "progress stands."
        )
        kept = await backend.load_state("kept")
        lost = await backend.load_state("lost")
        assert kept is not None and kept.next_step_index == 1
        assert lost is not None and lost.next_step_index == 0
        assert backend.statistics().grouped_commits == 1


# -- errors --------------------------------------------------------------------------


def test_a_malformed_dsn_is_refused_when_the_backend_is_built() -> None:
    with pytest.raises(
        ValueError,
        match=r"^PostgresBackend: dsn is not a valid libpq connection string \(.+\)\. Use "
        r"'postgresql://user:password@host:5432/dbname' or 'host=\.\.\. dbname=\.\.\.'\.$",
    ):
        PostgresBackend("host=x dbname")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dsn": ""}, "dsn must be a non-empty libpq connection string such as "
         "'postgresql://user@localhost/flows', got ''."),
        ({"min_size": 0}, "min_size must be an int >= 1, got 0."),
        ({"max_size": True}, "max_size must be an int >= 1, got True."),
        ({"min_size": 3, "max_size": 2}, "max_size (2) must be >= min_size (3)."),
        ({"lease_s": 0}, "lease_s must be a number > 0, got 0."),
        ({"timeout_s": "5"}, "timeout_s must be a number > 0, got '5'."),
        ({"owner_id": ""}, "owner_id must be a non-empty str or None, got ''."),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_with_their_value(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"dsn": "host=/tmp dbname=x", **kwargs}
    with pytest.raises(ValueError, match=rf"^PostgresBackend: {re.escape(message)}$"):
        PostgresBackend(**args)


async def test_a_missing_database_names_the_fix(pg_server: PgServer) -> None:
    backend = PostgresBackend(pg_server.dsn("no_such_db"), timeout_s=2)
    with pytest.raises(
        StateBackendError,
        match=rf"^{re.escape(repr(backend))}: cannot connect to PostgreSQL: .*database "
        r"\"no_such_db\" does not exist\. Create the database first \(`createdb NAME`, or "
        r"CREATE DATABASE\); the backend creates its tables, not the database\.$",
    ):
        await backend.load_state("x")
    await backend.aclose()


async def test_an_unreachable_server_is_a_clear_error(tmp_path: Any) -> None:
    backend = PostgresBackend(f"host={tmp_path} port=1 dbname=x password=hunter2", timeout_s=1)
    assert "hunter2" not in repr(backend)
    with pytest.raises(StateBackendError) as caught:
        await backend.create_run(_cp("r"))
    # One line (libpq's hint lines joined), the server's words ending as a sentence.
    assert re.fullmatch(
        rf"{re.escape(repr(backend))}: cannot connect to PostgreSQL: .*[.?] Check the DSN "
        r"and that the server is running and reachable\.",
        str(caught.value),
    )
    assert "hunter2" not in str(caught.value)
    await backend.aclose()


async def test_a_closed_backend_refuses_calls(pg_dsn: Callable[[], str]) -> None:
    backend = PostgresBackend(pg_dsn())
    await backend.list_runs()
    await backend.aclose()
    await backend.aclose()  # idempotent
    with pytest.raises(
        StateBackendError,
        match=rf"^{re.escape(repr(backend))} is closed; create a new backend to reconnect\.$",
    ):
        await backend.list_runs()


def test_import_flujo_actors_does_not_import_psycopg() -> None:
    code = (
        "import sys, flujo_actors; assert flujo_actors.PostgresBackend.__name__; "
        "import flujo_actors.backends as b; assert b.PostgresBackend is flujo_actors.PostgresBackend"
    )
    lazy = (
        "import sys, flujo_actors, flujo_actors.backends; "
        "print([m for m in ('psycopg', 'psycopg_pool') if m in sys.modules])"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- with the runner -------------------------------------------------------------------


def _counting_pipeline(calls: list[int]) -> Pipeline:
    def make(i: int) -> Step:
        async def work(x: int) -> int:
            calls.append(i)
            return x + i

        return Step.from_callable(work, name=f"s{i}", max_retries=0)

    return Pipeline(steps=[make(i) for i in range(4)], name="count")


async def test_a_runner_persists_resumes_and_refuses_a_reused_run_id(
    pg_dsn: Callable[[], str],
) -> None:
    calls: list[int] = []
    async with PostgresBackend(pg_dsn()) as backend:
        runner = Flujo(_counting_pipeline(calls), state_backend=backend)
        result = await runner.run_async(10, run_id="first")
        assert result.success and result.output == 16
        with pytest.raises(RunExistsError):
            await runner.run_async(1, run_id="first")
        again = await runner.resume_async("first")
        assert again.output == 16 and calls == [0, 1, 2, 3]
        assert await backend.list_runs("completed") == ["first"]
        assert backend.statistics().held_leases == 0


async def test_a_loop_resumes_at_its_iteration_from_postgres(pg_dsn: Callable[[], str]) -> None:
    calls: list[int] = []
    crash = {"at": 3}

    class Crash(BaseException):
        pass

    def body(x: int) -> int:
        calls.append(x)
        if len(calls) == crash["at"]:
            raise Crash()
        return x + 1

    def pipeline() -> Pipeline:
        return Pipeline.from_step(
            Step.loop_until("L", Step.from_callable(body), lambda out, ctx: out >= 5, max_loops=9)
        )

    dsn = pg_dsn()
    async with PostgresBackend(dsn) as backend:
        with pytest.raises(Crash):
            await Flujo(pipeline(), state_backend=backend).run_async(0, run_id="deep")
    crash["at"] = 0
    async with PostgresBackend(dsn) as backend:
        result = await Flujo(pipeline(), state_backend=backend).resume_async("deep")
    assert result.output == 5
    assert calls == [0, 1, 2, 2, 3, 4]  # iterations 1 and 2 replayed, the third ran again


def test_create_tables_must_be_a_bool() -> None:
    with pytest.raises(
        ValueError, match=r"^PostgresBackend: create_tables must be True or False, got 'no'\.$"
    ):
        PostgresBackend("dbname=x", create_tables="no")  # type: ignore[arg-type]


async def test_without_create_tables_a_store_is_used_and_an_empty_database_refused(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    async with PostgresBackend(dsn, create_tables=False) as reader:
        with pytest.raises(
            StateBackendError,
            match=rf"^{re.escape(repr(reader))}: no flujo_actors state store there \(the "
            r"database has no flujo_schema table on its search_path\)\. Point the DSN at the "
            r"database \(and schema\) the runners use as their state_backend\.$",
        ):
            await reader.list_runs()
        async with PostgresBackend(dsn) as writer:
            await writer.save_state("r", _cp("r", status="completed"))
        assert await reader.list_runs() == ["r"]
