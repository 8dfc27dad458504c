"""SQLiteBackend: durability, file handling, foreign files, SQL safety, cancellation."""

from __future__ import annotations

import os
import re
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from flujo_actors.backends import RunCheckpoint, SQLiteBackend
from flujo_actors.backends.sqlite import APPLICATION_ID, SCHEMA_VERSION
from flujo_actors.errors import StateBackendError

if TYPE_CHECKING:
    from pathlib import Path

    from tests.backends.backend_cases import checkpoint  # mypy names test modules by path
else:
    from backend_cases import checkpoint  # pytest puts tests/ on sys.path


def _cp(run_id: str, /, **changes: Any) -> RunCheckpoint:
    return checkpoint(run_id, **{"context": {"n": 0}, "initial_input": "in", **changes})


def _connection(backend: SQLiteBackend) -> sqlite3.Connection:
    conn = backend._conn
    assert conn is not None, "the backend has not opened its file yet"
    return conn


async def test_state_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SQLiteBackend(path) as first:
        await first.save_state("r", _cp("r", next_step_index=1, new_steps=({"s": 0},)))
        await first.save_state("r", _cp("r", next_step_index=2, new_steps=({"s": 1},)))
    async with SQLiteBackend(str(path)) as second:
        await second.save_state("r", _cp("r", next_step_index=3, new_steps=({"s": 2},)))
        snapshot = await second.load_state("r")
        assert snapshot is not None
        assert snapshot.step_history == ({"s": 0}, {"s": 1}, {"s": 2})
        assert snapshot.next_step_index == 3
        assert await second.list_runs("running") == ["r"]


async def test_the_file_is_a_versioned_wal_store(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SQLiteBackend(path) as backend:
        await backend.list_runs()
        assert _connection(backend).execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        assert meta == {"app": "flujo_actors", "schema_version": str(SCHEMA_VERSION)}
    conn.close()


async def test_synchronous_normal_is_available(tmp_path: Path) -> None:
    async with SQLiteBackend(tmp_path / "s.db", synchronous="NORMAL") as backend:
        await backend.list_runs()
        assert _connection(backend).execute("PRAGMA synchronous").fetchone()[0] == 1


async def test_a_checkpoint_writes_its_new_rows_only(tmp_path: Path) -> None:
    async with SQLiteBackend(tmp_path / "s.db") as backend:
        for step in range(50):
            await backend.save_state(
                "r", _cp("r", next_step_index=step + 1, new_steps=({"s": step},))
            )
        conn = _connection(backend)
        before = conn.total_changes
        await backend.save_state("r", _cp("r", next_step_index=51, new_steps=({"s": 50},)))
        # One step row inserted and one run row updated, however long the history.
        assert conn.total_changes - before == 2
        rows = conn.execute("SELECT idx FROM steps WHERE run_id = 'r' ORDER BY idx").fetchall()
        assert [row[0] for row in rows] == list(range(51))


async def test_run_ids_are_bound_parameters(tmp_path: Path) -> None:
    nasty = "x'); DROP TABLE runs; --"
    async with SQLiteBackend(tmp_path / "s.db") as backend:
        await backend.save_state(nasty, _cp(nasty, new_steps=({"q": "'\""},)))
        await backend.save_state("plain", _cp("plain"))
        assert await backend.list_runs() == [nasty, "plain"]
        snapshot = await backend.load_state(nasty)
        assert snapshot is not None
        assert snapshot.step_history == ({"q": "'\""},)
        await backend.delete_state(nasty)
        assert await backend.list_runs() == ["plain"]


async def test_a_failing_batch_rolls_back_entirely(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteBackend(path) as backend:
        await backend.list_runs()
        # A stray step row makes the second checkpoint's insert collide.
        _connection(backend).execute("INSERT INTO steps (run_id, idx, json) VALUES ('b', 0, '1')")
        with pytest.raises(
            StateBackendError,
            match=rf"^SQLite state store {re.escape(repr(str(path)))}: save_states failed: "
            r"UNIQUE constraint failed: steps\.run_id, steps\.idx\.$",
        ) as info:
            await backend.save_states([_cp("a", new_steps=({"a": 0},)), _cp("b", new_steps=(1,))])
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        assert await backend.list_runs() == []
        assert await backend.load_state("a") is None


# -- files that are not ours ----------------------------------------------------------------


def _refuse(path: Path, problem: str) -> str:
    return f"^{re.escape(repr(str(path)) + problem)}$"


async def _assert_refused(path: Path, message: str) -> None:
    file = trio.Path(path)
    before = await file.read_bytes()
    backend = SQLiteBackend(path)
    with pytest.raises(StateBackendError, match=message):
        await backend.list_runs()
    with pytest.raises(StateBackendError, match=message):  # still refused, not half-open
        await backend.save_state("r", _cp("r"))
    await backend.aclose()
    assert await file.read_bytes() == before
    assert not await trio.Path(f"{path}-wal").exists()
    assert not await trio.Path(f"{path}-journal").exists()


async def test_a_text_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 10)
    await _assert_refused(
        path,
        _refuse(
            path,
            " is not a SQLite database (no SQLite header); refusing to use or modify it. "
            "Pass the path of a new file or of a flujo_actors state store.",
        ),
    )


async def test_another_programs_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    await _assert_refused(
        path,
        _refuse(
            path,
            " is a SQLite database that is not a flujo_actors state store (tables: users); "
            "refusing to use or modify it.",
        ),
    )


async def test_a_database_with_another_application_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 1234")
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    await _assert_refused(
        path,
        _refuse(
            path,
            " is a SQLite database of another application (application_id 0x000004d2); "
            "refusing to use or modify it.",
        ),
    )


async def test_a_corrupt_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(84) + os.urandom(4000))
    await _assert_refused(
        path,
        _refuse(
            path,
            " is corrupt or not a SQLite database (file is not a database); refusing to use it.",
        ),
    )


async def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    async with SQLiteBackend(path) as backend:
        await backend.list_runs()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.close()
    await _assert_refused(
        path,
        _refuse(
            path,
            " has state schema version '4'; this flujo_actors reads version 3. "
            "Upgrade flujo_actors to read it.",
        ),
    )


async def test_a_directory_is_refused(tmp_path: Path) -> None:
    async with SQLiteBackend(tmp_path) as backend:
        with pytest.raises(
            StateBackendError,
            match=_refuse(tmp_path, " is a directory, not a SQLite state store file."),
        ):
            await backend.load_state("r")


async def test_an_empty_file_becomes_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    async with SQLiteBackend(path) as backend:
        await backend.save_state("r", _cp("r"))
        assert await backend.list_runs() == ["r"]


async def test_a_missing_directory_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "state.db"
    async with SQLiteBackend(path) as backend:
        with pytest.raises(
            StateBackendError,
            match=_refuse(path, ": unable to open database file.").replace(
                "^", "^Cannot open the SQLite state store ", 1
            ),
        ):
            await backend.list_runs()


# -- construction and lifecycle ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((42,), {}, TypeError, "SQLiteBackend: path must be a str or os.PathLike, got int 42."),
        (
            (b"state.db",),
            {},
            TypeError,
            "SQLiteBackend: path must be a str or os.PathLike, got bytes b'state.db'.",
        ),
        (("",), {}, ValueError, "SQLiteBackend: path must be a file name (or ':memory:'), got ''."),
        (
            ("s.db",),
            {"synchronous": "OFF"},
            ValueError,
            "SQLiteBackend: synchronous must be 'FULL' or 'NORMAL', got 'OFF'.",
        ),
        (
            ("s.db",),
            {"timeout_s": -1},
            ValueError,
            "SQLiteBackend: timeout_s must be a number >= 0, got -1.",
        ),
    ],
)
def test_bad_arguments_fail_at_construction(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        SQLiteBackend(*args, **kwargs)


def test_construction_does_not_touch_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lazy.db"
    backend = SQLiteBackend(path)
    assert backend.path == str(path)
    assert repr(backend) == f"SQLiteBackend({str(path)!r})"
    assert not path.exists()


async def test_a_closed_backend_refuses_calls_and_closing_twice_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    backend = SQLiteBackend(path)
    await backend.save_state("r", _cp("r"))
    await backend.aclose()
    await backend.aclose()
    with pytest.raises(
        StateBackendError,
        match=rf"^SQLiteBackend\({re.escape(repr(str(path)))}\) is closed; create a new "
        r"backend to reopen it\.$",
    ):
        await backend.load_state("r")


async def test_aclose_closes_even_when_cancelled(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "s.db")
    await backend.list_runs()
    with trio.CancelScope() as scope:
        scope.cancel()
        await backend.aclose()
    assert backend._conn is None
    with pytest.raises(StateBackendError, match=r"is closed"):
        await backend.list_runs()


def test_a_backend_serves_successive_trio_runs(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "s.db")

    async def save() -> None:
        await backend.save_state("r", _cp("r", new_steps=({"s": 0},)))

    async def load_and_close() -> tuple[Any, ...]:
        snapshot = await backend.load_state("r")
        await backend.aclose()
        assert snapshot is not None
        return snapshot.step_history

    trio.run(save)
    assert trio.run(load_and_close) == ({"s": 0},)


# -- cancellation ------------------------------------------------------------------------------


async def test_a_cancelled_write_in_flight_completes_and_returns(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "s.db")
    await backend.list_runs()
    finished = trio.Event()
    scope = trio.CancelScope()
    returned = []

    async def save() -> None:
        with scope:
            await backend.save_state("r", _cp("r", new_steps=({"s": 0},)))
            returned.append(True)  # the caller learns that the write committed
        finished.set()

    async with trio.open_nursery() as nursery:
        backend._lock.acquire()  # the worker thread will wait for it
        try:
            nursery.start_soon(save)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            waited_for_the_write = not finished.is_set()
        finally:
            backend._lock.release()
    assert waited_for_the_write  # not abandoned: the write ran once the lock was free
    assert scope.cancel_called
    assert returned == [True]
    snapshot = await backend.load_state("r")
    assert snapshot is not None
    assert snapshot.step_history == ({"s": 0},)
    await backend.aclose()


async def test_a_cancelled_read_returns_at_once(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "s.db")
    await backend.save_state("r", _cp("r"))
    scope = trio.CancelScope()
    finished = trio.Event()

    async def load() -> None:
        with scope:
            await backend.load_state("r")
        finished.set()

    async with trio.open_nursery() as nursery:
        backend._lock.acquire()  # the worker thread will wait for it
        try:
            nursery.start_soon(load)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            returned_while_blocked = finished.is_set()
        finally:
            backend._lock.release()
    assert returned_while_blocked
    assert scope.cancelled_caught
    await backend.aclose()  # waits for the abandoned read to finish


async def test_backends_opening_one_new_file_together_all_succeed(tmp_path: Path) -> None:
    # Regression: the "is it ours?" check read the application id and the table
    # list in two statements, so a backend that created the store between them
    # made the other look at "a database that is not a flujo_actors state store".
    # The interleaving is up to the threads; 100 new files made it happen ~2 times
    # in 100 before the fix, and never since.
    for i in range(100):
        path = tmp_path / f"new-{i}.db"
        backends = [SQLiteBackend(path) for _ in range(4)]
        try:
            async with trio.open_nursery() as nursery:
                for backend in backends:
                    nursery.start_soon(backend.list_runs)
        finally:
            for backend in backends:
                await backend.aclose()
