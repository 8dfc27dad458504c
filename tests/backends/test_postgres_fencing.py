"""Lease fencing on PostgreSQL: every write of a leased run checks the lease in its transaction.

Two backend objects on one real server are two runner processes. "A
stalls past its lease" is a backend whose renewals do not happen (what a
stopped or starved process looks like to the server): its lease expires
while its run is still going, B recovers the run, and every write A makes
afterwards (step rows, status, context, completed positions, the paused
run's pending inputs) is refused with LeaseLostError, leaving B's rows as
they were.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from flujo_actors import Flujo, Pipeline, Step
from flujo_actors.backends import RunCheckpoint
from flujo_actors.backends import postgres_sql as sql
from flujo_actors.backends.postgres import PostgresBackend
from flujo_actors.backends.state import PositionRecord
from flujo_actors.errors import LeaseLostError
from flujo_actors.runner_human import PAUSED_KEY

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Write = Callable[[], Awaitable[None]]

    from tests.backends.backend_cases import (  # mypy names test modules by path
        checkpoint,
        waiting_on_lock,
    )
else:
    from backend_cases import checkpoint, waiting_on_lock  # pytest puts tests/ on sys.path

pytestmark = pytest.mark.postgres


class _StalledBackend(PostgresBackend):
    """A process that stalls: its lease renewals never reach the server."""

    async def renew_lease(self, run_id: str) -> None:
        await trio.lowlevel.checkpoint()


def _cp(run_id: str, /, **changes: Any) -> RunCheckpoint:
    return checkpoint(run_id, **{"pipeline_fingerprint": "fp", **changes})


def _expire(dsn: str) -> None:
    """Every lease ends now (as time passing without renewals would end it)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE flujo_runs SET lease_expires_at = now() - interval '1 s'")


def _lost(backend: PostgresBackend, what: str, holder: str | None) -> str:
    now = "nobody holds it now" if holder is None else f"{holder!r} holds it now"
    return (
        f"{backend!r}: {what} of run 'r' was refused: this process ({backend.owner_id}) no "
        f"longer holds the run's lease (it was not renewed within lease_s={backend.lease_s} s "
        f"and another process took the run over; {now}). Nothing was written; the run stops "
        "here and the other process's progress stands."
    )


def _rows(dsn: str) -> list[tuple[Any, ...]]:
    """Everything stored about every run, for before/after comparisons."""
    with psycopg.connect(dsn) as conn:
        runs = conn.execute(
            "SELECT run_id, status, next_step_index, context::text, output::text, step_count,"
            " owner, lease_epoch FROM flujo_runs ORDER BY run_id"
        ).fetchall()
        steps = conn.execute(
            "SELECT run_id, idx, row::text FROM flujo_steps ORDER BY run_id, idx"
        ).fetchall()
        positions = conn.execute(
            "SELECT run_id, position, record::text FROM flujo_positions ORDER BY run_id, position"
        ).fetchall()
    return [*runs, *steps, *positions]


async def test_every_write_of_the_owner_that_lost_the_lease_is_refused(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    async with PostgresBackend(dsn) as a, PostgresBackend(dsn) as b:
        await a.create_run(_cp("r"))
        await a.save_positions([PositionRecord(run_id="r", position='["l",0]', record="a")])
        _expire(dsn)
        assert await b.claim_expired("fp") == ["r"]
        await b.claim_run("r")  # the resume recovery makes of it
        await b.save_positions([PositionRecord(run_id="r", position='["l",0]', record="b")])
        await b.save_state("r", _cp("r", next_step_index=1, new_steps=({"by": "b"},)))
        before = _rows(dsn)
        writes: list[tuple[str, Write]] = [
            (
                "save_positions",
                lambda: a.save_positions(
                    [PositionRecord(run_id="r", position='["l",1]', record="a")]
                ),
            ),
            # The pending inputs of a pause, then the paused status, as a pause writes them.
            (
                "save_positions",
                lambda: a.save_positions(
                    [PositionRecord(run_id="r", position=PAUSED_KEY, record=[{"key": "ok"}])]
                ),
            ),
            ("save_states", lambda: a.save_state("r", _cp("r", status="paused"))),
            (
                "save_states",
                lambda: a.save_states(
                    [_cp("r", next_step_index=2, context={"by": "a"}, new_steps=({"by": "a"},))]
                ),
            ),
        ]
        for what, write in writes:
            with pytest.raises(LeaseLostError) as caught:
                await write()
            assert str(caught.value) == _lost(a, what, b.owner_id)
        assert _rows(dsn) == before
        assert await b.load_positions("r") == {'["l",0]': "b"}


async def test_recovery_skips_a_run_whose_position_write_is_in_flight(
    pg_dsn: Callable[[], str],
) -> None:
    # The lease check of a position write locks the run row (FOR SHARE) until
    # its transaction ends, so the run cannot change hands between the check
    # and the insert: claim_expired skips the locked row (SKIP LOCKED) and
    # takes the run once the write committed; A's next write is then refused.
    dsn = pg_dsn()
    async with PostgresBackend(dsn) as a, PostgresBackend(dsn) as b:
        await a.create_run(_cp("r"))
        rows = [("r", '["l",0]', json.dumps("a"))]
        _expire(dsn)
        writer = psycopg.connect(dsn)  # A's write, its transaction still open
        assert sql.write_positions(writer, rows, a.owner_id, a._epochs(["r"])) == []
        assert await b.claim_expired("fp") == []
        writer.commit()
        writer.close()
        assert await b.claim_expired("fp") == ["r"]
        assert await b.load_positions("r") == {'["l",0]': "a"}
        with pytest.raises(LeaseLostError):
            await a.save_positions([PositionRecord(run_id="r", position='["l",1]', record="a")])


async def test_claim_run_waits_for_a_position_write_in_flight(pg_dsn: Callable[[], str]) -> None:
    dsn = pg_dsn()
    async with PostgresBackend(dsn) as a, PostgresBackend(dsn) as b:
        await a.create_run(_cp("r"))
        rows = [("r", '["l",0]', json.dumps("a"))]
        _expire(dsn)
        writer = psycopg.connect(dsn)
        assert sql.write_positions(writer, rows, a.owner_id, a._epochs(["r"])) == []
        done = trio.Event()

        async def claim() -> None:
            await b.claim_run("r")
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(claim)
            with trio.fail_after(30):
                while not waiting_on_lock(dsn):
                    await trio.sleep(0.01)
            assert not done.is_set()
            writer.commit()
            writer.close()
        assert await b.load_positions("r") == {'["l",0]': "a"}
        with pytest.raises(LeaseLostError):
            await a.save_positions([PositionRecord(run_id="r", position='["l",1]', record="a")])


async def test_a_run_leased_by_another_owner_is_not_written_by_one_that_never_claimed_it(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    async with PostgresBackend(dsn) as a, PostgresBackend(dsn) as b:
        await a.create_run(_cp("r"))
        before = _rows(dsn)
        refused: list[tuple[str, Write]] = [
            ("save_states", lambda: b.save_state("r", _cp("r", status="completed"))),
            (
                "save_positions",
                lambda: b.save_positions([PositionRecord(run_id="r", position="x", record=1)]),
            ),
        ]
        for what, write in refused:
            with pytest.raises(LeaseLostError) as caught:
                await write()
            assert str(caught.value) == (
                f"{b!r}: {what} of run 'r' was refused: the run is leased by {a.owner_id!r}, "
                f"not by this process ({b.owner_id}). Nothing was written; claim the run first "
                "(`resume_async`, or `recover_async` once its owner's lease expired)."
            )
        assert _rows(dsn) == before


async def test_a_run_deleted_while_it_runs_is_not_written_back(pg_dsn: Callable[[], str]) -> None:
    dsn = pg_dsn()
    async with PostgresBackend(dsn) as a:
        await a.create_run(_cp("r", new_steps=({"i": 0},)))
        with psycopg.connect(dsn) as conn:  # `runs delete r` from another machine
            conn.execute("DELETE FROM flujo_steps")
            conn.execute("DELETE FROM flujo_runs")
        refused: list[tuple[str, Write]] = [
            ("save_states", lambda: a.save_state("r", _cp("r", new_steps=({"i": 1},)))),
            (
                "save_positions",
                lambda: a.save_positions([PositionRecord(run_id="r", position="x", record=1)]),
            ),
        ]
        for what, write in refused:
            with pytest.raises(LeaseLostError) as caught:
                await write()
            assert str(caught.value) == (
                f"{a!r}: {what} of run 'r' was refused: the run was deleted from the store "
                f"while this process ({a.owner_id}) ran it. Nothing was written; the run stops "
                "here."
            )
        assert _rows(dsn) == []


def _looping(stall: trio.Event | None, calls: list[int]) -> Pipeline:
    """A loop of 3 iterations; with ``stall``, iteration 1 waits for it (A's copy)."""

    async def inc(x: int) -> int:
        calls.append(x)
        if stall is not None and x == 1:
            await stall.wait()
        return x + 1

    body = Step.from_callable(inc, name="inc", max_retries=0)
    loop = Step.loop_until("count", body, lambda out, ctx: out >= 3, max_loops=5)
    return Pipeline(steps=[loop], name="looping")


async def test_an_owner_that_stalled_past_its_lease_stops_at_its_next_position_write(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    stall = trio.Event()
    calls_a: list[int] = []
    calls_b: list[int] = []
    async with (
        _StalledBackend(dsn, lease_s=0.5) as a,
        PostgresBackend(dsn) as b,
    ):
        errors: list[BaseException] = []

        async def run_a() -> None:
            try:
                await Flujo(_looping(stall, calls_a), state_backend=a).run_async(0, run_id="r")
            except LeaseLostError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_a)
            with trio.fail_after(30):  # a hang guard
                while calls_a != [0, 1]:
                    await trio.sleep(0.01)
            _expire(dsn)  # A is stalled in iteration 1: its lease ran out meanwhile
            [result] = await Flujo(_looping(None, calls_b), state_backend=b).recover_async()
            assert result.success and result.output == 3
            # B replayed iteration 0 from A's position and ran the rest itself.
            assert calls_b == [1, 2]
            before = _rows(dsn)
            stall.set()  # A wakes up; its iteration 1 completes: a position write
        assert calls_a == [0, 1]  # A stopped there: it ran no iteration 2
        assert [str(e) for e in errors] == [_lost(a, "save_positions", None)]
        assert _rows(dsn) == before
        snap = await b.load_state("r")
        assert snap is not None and snap.status == "completed" and snap.output == 3
