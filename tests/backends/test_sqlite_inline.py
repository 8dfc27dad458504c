"""SQLiteBackend with synchronous="NORMAL": writes on the trio thread, fsyncs never there."""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from flujo_actors.backends import RunCheckpoint, SQLiteBackend
from flujo_actors.errors import StateBackendError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _cp(run_id: str, /, **changes: Any) -> RunCheckpoint:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "pipeline_name": "p",
        "status": "running",
        "next_step_index": 0,
        "context": {"n": 0},
        "initial_input": "in",
    }
    fields.update(changes)
    return RunCheckpoint(**fields)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every backend operation that went through ``trio.to_thread.run_sync``."""
    seen: list[str] = []
    original = trio.to_thread.run_sync

    async def counting(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(args[0] if args and isinstance(args[0], str) else "?")
        return await original(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    return seen


def _other_connection(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=0)


async def test_normal_writes_run_on_the_trio_thread_and_are_committed(
    tmp_path: Path, hops: list[str]
) -> None:
    path = tmp_path / "s.db"
    async with SQLiteBackend(path, synchronous="NORMAL") as backend:
        await backend.create_run(_cp("r"))  # opens the file: in the worker thread
        assert hops == ["create_run"]
        for i in range(1, 4):
            await backend.save_state("r", _cp("r", next_step_index=i, new_steps=({"s": i},)))
        await backend.save_states([_cp("q", new_steps=({"s": 0},))])
        assert hops == ["create_run"]  # no thread for any of them
        # Committed: another connection sees every row.
        other = _other_connection(path)
        try:
            rows = other.execute("SELECT run_id, idx FROM steps ORDER BY run_id, idx").fetchall()
        finally:
            other.close()
        assert rows == [("q", 0), ("r", 0), ("r", 1), ("r", 2)]
        snapshot = await backend.load_state("r")  # reads take the thread
        assert hops == ["create_run", "load_state"]
        assert snapshot is not None and snapshot.next_step_index == 3


async def test_full_writes_always_take_the_worker_thread(tmp_path: Path, hops: list[str]) -> None:
    async with SQLiteBackend(tmp_path / "s.db") as backend:
        await backend.create_run(_cp("r"))
        await backend.save_state("r", _cp("r", next_step_index=1, new_steps=({"s": 1},)))
        await backend.save_positions([])  # nothing to write: no thread
        assert hops == ["create_run", "save_state"]


async def test_a_write_waits_in_the_worker_thread_while_another_process_holds_the_lock(
    tmp_path: Path, hops: list[str]
) -> None:
    path = tmp_path / "s.db"
    async with SQLiteBackend(path, synchronous="NORMAL") as backend:
        await backend.create_run(_cp("r"))
        other = _other_connection(path)
        other.execute("BEGIN IMMEDIATE")  # SQLite's write lock, as another process would take it
        done = trio.Event()

        async def save() -> None:
            await backend.save_state("r", _cp("r", next_step_index=1, new_steps=({"s": 1},)))
            done.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(save)
                await trio.testing.wait_all_tasks_blocked()
                waited = not done.is_set()
                other.execute("COMMIT")
        finally:
            other.close()
        assert waited  # neither failed with "database is locked" nor blocked trio
        assert hops == ["create_run", "save_state"]  # the inline try rolled back, the thread wrote
        snapshot = await backend.load_state("r")
        assert snapshot is not None and snapshot.step_history == ({"s": 1},)
        # The lock is free again: the next write is inline (the busy timeout is back to 0).
        await backend.save_state("r", _cp("r", next_step_index=2, new_steps=({"s": 2},)))
        assert hops == ["create_run", "save_state", "load_state"]


async def test_a_lock_held_past_timeout_s_fails_the_write_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with SQLiteBackend(path, synchronous="NORMAL", timeout_s=0.05) as backend:
        await backend.create_run(_cp("r"))
        other = _other_connection(path)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(
                StateBackendError,
                match=rf"^SQLite state store {re.escape(repr(str(path)))}: save_state failed: "
                r"database is locked\.$",
            ):
                await backend.save_state("r", _cp("r", next_step_index=1, new_steps=({"s": 1},)))
        finally:
            other.execute("ROLLBACK")
            other.close()
        snapshot = await backend.load_state("r")
        assert snapshot is not None and snapshot.step_history == ()


async def test_a_write_cancelled_before_it_starts_writes_nothing(tmp_path: Path) -> None:
    async with SQLiteBackend(tmp_path / "s.db", synchronous="NORMAL") as backend:
        await backend.create_run(_cp("r"))
        with trio.CancelScope() as scope:
            scope.cancel()
            await backend.save_state("r", _cp("r", next_step_index=1, new_steps=({"s": 1},)))
        assert scope.cancelled_caught
        snapshot = await backend.load_state("r")
        assert snapshot is not None and snapshot.step_history == ()


async def test_the_wal_is_checkpointed_by_a_thread_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.db"
    where: list[str] = []
    original = SQLiteBackend._checkpoint
    writes_done = threading.Event()

    def checkpoint(self: SQLiteBackend) -> None:
        where.append(threading.current_thread().name)
        # The checkpoint waits until every write is done: the writes did not wait for it,
        # and it then copies the whole WAL (no commit racing it, whatever the load).
        assert writes_done.wait(timeout=60)
        original(self)

    monkeypatch.setattr(SQLiteBackend, "_checkpoint", checkpoint)
    async with SQLiteBackend(path, synchronous="NORMAL") as backend:
        await backend.create_run(_cp("first", new_steps=({"s": "first"},)))
        conn = backend._conn
        assert conn is not None
        # SQLite's own checkpoint would run inside a commit, on the trio thread.
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        for i in range(300):  # ~1,200 WAL pages: past the 1,000-page threshold
            await backend.save_state("r", _cp("r", next_step_index=i, new_steps=({"i": i},)))
        checkpointer = backend._checkpointer
        assert checkpointer is not None
        assert checkpointer.is_alive()  # started, and waiting: the writes went on without it
        writes_done.set()
        await trio.to_thread.run_sync(checkpointer.join)
        assert not backend._checkpoint_again  # nothing else held the WAL: all of it copied
        # The main database file alone (no WAL) now holds the first run: it was checkpointed
        # while the backend kept its connection open.
        copy = tmp_path / "main-file-only.db"
        shutil.copyfile(path, copy)
        alone = sqlite3.connect(copy)
        try:
            found = alone.execute("SELECT json FROM steps WHERE run_id = 'first'").fetchall()
        finally:
            alone.close()
        assert found == [('{"s":"first"}',)]
    assert where == [f"flujo-sqlite-checkpoint {path}"]
    assert threading.main_thread().name not in where


async def test_an_in_memory_database_writes_inline_and_never_checkpoints(
    hops: list[str],
) -> None:
    async with SQLiteBackend(":memory:") as backend:
        await backend.create_run(_cp("r"))
        for i in range(300):
            await backend.save_state("r", _cp("r", next_step_index=i, new_steps=({"i": i},)))
        assert hops == ["create_run"]
        assert backend._checkpointer is None
        snapshot = await backend.load_state("r")
        assert snapshot is not None and len(snapshot.step_history) == 300
