"""A PostgreSQL server that goes away mid-run: the run fails clearly, nothing committed is lost."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import psycopg
import pytest
import trio

from flujo_actors import Flujo, Pipeline, StateBackendError, Step
from flujo_actors.backends.postgres import PostgresBackend
from flujo_actors.testing.pg_server import PgServer

if TYPE_CHECKING:
    from collections.abc import Iterator


pytestmark = pytest.mark.postgres


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A server of this test's own (the test stops and restarts it)."""
    server = PgServer()
    server.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE flows")
        yield server
    finally:
        server.destroy()


async def test_the_server_going_away_fails_the_run_and_resume_continues_after_restart(
    own_server: PgServer,
) -> None:
    calls: list[int] = []

    def make(i: int) -> Step:
        async def work(x: int) -> int:
            calls.append(i)
            if i == 2 and len(calls) == 3:
                # The server stops while step 2 runs: its checkpoint cannot be written.
                await trio.to_thread.run_sync(own_server.stop)
            return x * 10 + i

        return Step.from_callable(work, name=f"s{i}", max_retries=0)

    pipeline = Pipeline(steps=[make(i) for i in range(5)], name="outage")
    async with PostgresBackend(own_server.dsn("flows"), timeout_s=3) as backend:
        runner = Flujo(pipeline, state_backend=backend)
        with pytest.raises(StateBackendError) as caught:
            await runner.run_async(1, run_id="r")
        assert re.fullmatch(
            rf"{re.escape(repr(backend))}: save_states failed: (the connection to the server "
            r"was lost \(.+\); nothing of it was written\. What was committed before is kept: "
            r"once the server is back, continue with `await runner\.resume_async\(run_id\)`\."
            r"|no connection to the server within 3\.0 s \(is the server down\?\); nothing was "
            r"written\.)",
            str(caught.value),
            flags=re.DOTALL,
        )
        assert calls == [0, 1, 2]

        await trio.to_thread.run_sync(own_server.start)
        # Steps 0 and 1 were committed before the outage: the resume starts at step 2.
        snap = await backend.load_state("r")
        assert snap is not None and snap.next_step_index == 2 and snap.output == 101
        result = await runner.resume_async("r")
        assert result.success and result.output == 1012 * 100 + 34
        assert calls == [0, 1, 2, 2, 3, 4]
        assert [s.name for s in result.step_history] == ["s0", "s1", "s2", "s3", "s4"]
