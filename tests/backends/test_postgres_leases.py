"""Run leases on PostgreSQL: ownership, renewal, takeover fencing, recover_async in one process.

A "dead" process is a backend whose renewals and releases do nothing (what
SIGKILL leaves: the rows as they were, no more renewals); the real-process
version is tests/backends/test_postgres_recovery.py. Waiting for a lease to
expire takes real time: the tests wait on the database's state (a claim
succeeding), never on a tight sleep.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio

from flujo_actors import (
    Flujo,
    InMemoryStateBackend,
    Pipeline,
    PipelineDefinitionError,
    SQLiteBackend,
    Step,
    UsageLimitExceededError,
    UsageLimits,
)
from flujo_actors.backends.postgres import PostgresBackend
from flujo_actors.errors import LeaseLostError, RunLeasedError
from flujo_actors.testing.leases import check_leases

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.postgres


class _Dead(BaseException):
    """Stops a run the way a crash does: nothing after it runs."""


class _DyingBackend(PostgresBackend):
    """A backend whose process 'dies' mid-run: no more renewals, no release."""

    async def renew_lease(self, run_id: str) -> None:
        await trio.lowlevel.checkpoint()

    async def release_run(self, run_id: str) -> None:
        await trio.lowlevel.checkpoint()


def _pipeline(calls: list[tuple[str, int]], *, die_at: int | None = None, n: int = 4) -> Pipeline:
    def make(i: int) -> Step:
        async def work(x: int, *, context: Any) -> int:
            calls.append((context.run_id, i))
            if i == die_at and len([c for c in calls if c == (context.run_id, i)]) == 1:
                raise _Dead
            return x * 10 + i

        return Step.from_callable(work, name=f"s{i}", max_retries=0)

    return Pipeline(steps=[make(i) for i in range(n)], name="leased")


async def _recover_when_expired(runner: Flujo, want: int) -> list[Any]:
    """recover_async until ``want`` runs came back (leases expire on the server's clock)."""
    results: list[Any] = []
    with trio.fail_after(60):  # a hang guard, not a timing assertion
        while len(results) < want:
            results += await runner.recover_async()
            await trio.sleep(0.05)
    return results


async def test_postgres_backend_passes_the_lease_checks(pg_dsn: Callable[[], str]) -> None:
    def new_store() -> Callable[[float], PostgresBackend]:
        dsn = pg_dsn()
        return lambda lease_s: PostgresBackend(dsn, lease_s=lease_s)

    await check_leases(new_store)


async def test_recover_async_resumes_a_dead_owners_run_after_its_last_step(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    calls: list[tuple[str, int]] = []
    async with _DyingBackend(dsn, lease_s=0.5) as dying, PostgresBackend(dsn) as survivor:
        with pytest.raises(_Dead):
            await Flujo(_pipeline(calls, die_at=2), state_backend=dying).run_async(1, run_id="r")
        runner = Flujo(_pipeline(calls), state_backend=survivor)
        # The lease is still live right after the crash: nothing to recover yet.
        assert await runner.recover_async() == []
        [result] = await _recover_when_expired(runner, 1)
        assert result.success and result.run_id == "r" and result.output == 1012 * 10 + 3
        # Steps 0 and 1 were checkpointed by the dead owner: only 2 (running at the
        # crash) runs again.
        assert calls == [("r", 0), ("r", 1), ("r", 2), ("r", 2), ("r", 3)]
        assert await runner.recover_async() == []
        assert survivor.statistics().held_leases == 0


async def test_two_recoverers_never_resume_the_same_run(pg_dsn: Callable[[], str]) -> None:
    dsn = pg_dsn()
    calls: list[tuple[str, int]] = []
    async with _DyingBackend(dsn, lease_s=0.5) as dying:
        dead = Flujo(_pipeline(calls, die_at=1), state_backend=dying)
        for i in range(12):
            with pytest.raises(_Dead):
                await dead.run_async(i, run_id=f"r{i}")
    got: dict[str, list[str]] = {}

    async def recoverer(name: str) -> None:
        async with PostgresBackend(dsn) as backend:
            runner = Flujo(_pipeline(calls), state_backend=backend)
            await _recover_when_expired(runner, 0)
            with trio.fail_after(60):
                while not got or sum(len(v) for v in got.values()) < 12:
                    got.setdefault(name, []).extend(r.run_id for r in await runner.recover_async())
                    await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        for name in ("b", "c", "d"):
            nursery.start_soon(recoverer, name)
    recovered = [run_id for ids in got.values() for run_id in ids]
    assert sorted(recovered) == sorted(f"r{i}" for i in range(12))  # each exactly once
    for i in range(12):
        assert [s for r, s in calls if r == f"r{i}"] == [0, 1, 1, 2, 3]


async def test_a_paused_run_is_not_recovered(pg_dsn: Callable[[], str]) -> None:
    dsn = pg_dsn()
    calls: list[tuple[str, int]] = []
    async with PostgresBackend(dsn, lease_s=0.2) as backend:
        runner = Flujo(_pipeline(calls), state_backend=backend)
        await runner.run_async(1, run_id="p")
        with psycopg.connect(dsn) as conn:  # as a human-input step leaves it
            conn.execute("UPDATE flujo_runs SET status = 'paused', next_step_index = 2")
        for _ in range(3):
            await trio.sleep(0.2)  # longer than the lease: still nothing to recover
            assert await runner.recover_async() == []


async def test_recover_async_takes_only_runs_of_its_own_pipeline(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    calls: list[tuple[str, int]] = []
    async with _DyingBackend(dsn, lease_s=0.3) as dying, PostgresBackend(dsn) as survivor:
        with pytest.raises(_Dead):
            await Flujo(_pipeline(calls, die_at=1), state_backend=dying).run_async(1, run_id="a")
        with pytest.raises(_Dead):
            await Flujo(_pipeline(calls, die_at=1, n=5), state_backend=dying).run_async(
                1, run_id="b"
            )
        [result] = await _recover_when_expired(Flujo(_pipeline(calls), state_backend=survivor), 1)
        assert result.run_id == "a"
        [other] = await _recover_when_expired(
            Flujo(_pipeline(calls, n=5), state_backend=survivor), 1
        )
        assert other.run_id == "b" and other.success


async def test_a_live_run_keeps_its_lease_and_cannot_be_resumed_elsewhere(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    release = trio.Event()
    running = trio.Event()

    async def slow(x: int) -> int:
        running.set()
        await release.wait()
        return x

    pipeline = Pipeline(steps=[Step.from_callable(slow, name="slow")], name="slow")
    async with PostgresBackend(dsn, lease_s=1.5) as owner, PostgresBackend(dsn) as other:
        result: list[Any] = []

        async def run() -> None:
            result.append(await Flujo(pipeline, state_backend=owner).run_async(5, run_id="live"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await running.wait()
            elsewhere = Flujo(pipeline, state_backend=other)
            # Twice the lease: the owner's renewals keep it live the whole time.
            for _ in range(6):
                assert await elsewhere.recover_async() == []
                await trio.sleep(0.5)
            with pytest.raises(RunLeasedError) as caught:
                await elsewhere.resume_async("live")
            release.set()
        assert re.fullmatch(
            rf"{re.escape(repr(other))}: run 'live' is running in another process \(its lease "
            rf"is held by {re.escape(repr(owner.owner_id))} for another \d+\.\d s\)\. If that "
            r"process died, `await runner\.recover_async\(\)` takes the run over once the "
            r"lease expires\.",
            str(caught.value),
        )
        assert result[0].success and result[0].output == 5


async def test_a_run_whose_lease_was_taken_over_stops_with_lease_lost(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()
    gate = trio.Event()
    calls: list[str] = []

    async def first(x: int, *, context: Any) -> int:
        calls.append(f"first:{context.run_id}")
        return x + 1

    async def wait(x: int) -> int:
        calls.append("wait")
        if len(calls) == 2:
            await gate.wait()  # the stalled owner: its lease is taken over meanwhile
        return x * 2

    pipeline = Pipeline(
        steps=[Step.from_callable(first, name="first"), Step.from_callable(wait, name="wait")],
        name="takeover",
    )
    async with PostgresBackend(dsn, lease_s=0.6) as stalled, PostgresBackend(dsn) as other:
        errors: list[BaseException] = []

        async def run() -> None:
            try:
                await Flujo(pipeline, state_backend=stalled).run_async(1, run_id="t")
            except LeaseLostError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            with trio.fail_after(30):
                while calls != ["first:t", "wait"]:
                    await trio.sleep(0.01)
            with psycopg.connect(dsn) as conn:  # as if its renewals had stopped
                conn.execute("UPDATE flujo_runs SET lease_expires_at = now() - interval '1 s'")
            [recovered] = await Flujo(pipeline, state_backend=other).recover_async()
        assert recovered.success and recovered.output == 4
        assert calls == ["first:t", "wait", "wait"]
        assert len(errors) == 1
        assert re.fullmatch(
            rf"{re.escape(repr(stalled))}: lost the lease of run 't': it was not renewed "
            r"within lease_s=0\.6 s and another process recovered it; the run stops here "
            r"\(the other process continues it\)\.",
            str(errors[0]),
        )
        gate.set()


async def test_a_run_that_stops_with_an_error_is_released_not_recovered(
    pg_dsn: Callable[[], str],
) -> None:
    dsn = pg_dsn()

    async def costly(x: int) -> Any:
        class Out:
            cost_usd = 2.0

        return Out()

    pipeline = Pipeline(steps=[Step.from_callable(costly, name="costly")], name="costly")
    async with PostgresBackend(dsn, lease_s=0.2) as backend:
        runner = Flujo(
            pipeline,
            state_backend=backend,
            usage_limits=UsageLimits(total_cost_usd_limit=Decimal("1")),
        )
        with pytest.raises(UsageLimitExceededError):
            await runner.run_async(1, run_id="breach")
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT status, owner FROM flujo_runs").fetchone()
        assert row == ("failed", None)  # stored as it ended (the breach), nobody's
        await trio.sleep(0.3)
        assert await runner.recover_async() == []


@pytest.mark.parametrize("kind", ["none", "memory", "sqlite"])
async def test_recover_async_needs_a_leasing_backend(kind: str, tmp_path: Path) -> None:
    backend: Any = {
        "none": None,
        "memory": InMemoryStateBackend(),
        "sqlite": SQLiteBackend(tmp_path / "s.db"),
    }[kind]
    what = {"none": "no state backend", "memory": "InMemoryStateBackend", "sqlite": "SQLiteBackend"}
    runner = Flujo(_pipeline([]), state_backend=backend)
    with pytest.raises(
        PipelineDefinitionError,
        match=rf"^Flujo\.recover_async needs a state backend with run leases, shared by the "
        rf"runner processes, but this runner has {what[kind]}, which does not lease runs \(a "
        r"run's owner cannot be told apart from a dead one\)\. Use a shared backend such as "
        r"Flujo\(\.\.\., state_backend=PostgresBackend\(dsn\)\); with SQLite or in-memory "
        r"state, continue a stopped run with `await runner\.resume_async\(run_id\)`\.$",
    ):
        await runner.recover_async()
