"""Run identity: pipeline fingerprints on resume, and one run per run id."""

from __future__ import annotations

import functools
import re
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from flujo_actors import (
    Flujo,
    FlujoError,
    InMemoryStateBackend,
    Pipeline,
    PipelineDefinitionError,
    RunExistsError,
    Step,
)
from flujo_actors.backends.sqlite import SQLiteBackend
from flujo_actors.testing import check_state_backend

if TYPE_CHECKING:
    from pathlib import Path

    from flujo_actors.backends.state import RunCheckpoint

M = __name__  # the module of the agents below, as fingerprints name it


class Crash(BaseException):
    """Stands in for the process dying mid-step."""


def validate_step(log: list[str]) -> Step:
    async def validate(order: str, *, context: Any) -> str:
        log.append("validate")
        return order

    return Step.from_callable(validate)


def checkout(log: list[str], crash_in_ship: list[bool]) -> Pipeline:
    async def charge_card(order: str) -> str:
        log.append("charge_card")
        return f"charged {order}"

    async def ship(receipt: str) -> str:
        if crash_in_ship[0]:
            crash_in_ship[0] = False
            raise Crash
        log.append("ship")
        return f"shipped after {receipt}"

    return (
        validate_step(log)
        >> Step.from_callable(charge_card, max_retries=0)
        >> Step.from_callable(ship, max_retries=0)
    )


def cleanup(log: list[str]) -> Pipeline:
    async def delete_account(user: str) -> str:
        log.append("delete_account")
        return f"deleted {user}"

    async def notify(msg: str) -> str:
        log.append("notify")
        return msg

    return validate_step(log) >> Step.from_callable(delete_account) >> Step.from_callable(notify)


async def crashed_checkout(backend: Any, log: list[str], run_id: str = "order-1") -> Flujo:
    runner = Flujo(checkout(log, [True]), state_backend=backend)
    with pytest.raises(Crash):
        await runner.run_async("order-1", run_id=run_id)
    assert log == ["validate", "charge_card"]
    return runner


# -- item 1: resume checks the pipeline's fingerprint ------------------------------------


async def test_resume_by_a_different_pipeline_is_refused_naming_the_first_difference() -> None:
    backend = InMemoryStateBackend()
    log: list[str] = []
    await crashed_checkout(backend, log)
    other = Flujo(cleanup(log), state_backend=backend)
    expected = (
        "Run 'order-1' was stored by pipeline 'pipeline', which differs from this runner's "
        "pipeline 'pipeline' at steps[1]: 'charge_card' (agent "
        f"{M}:checkout.<locals>.charge_card) vs 'delete_account' (agent "
        f"{M}:cleanup.<locals>.delete_account). Resume it with the runner that started it, "
        "or pass allow_changed_pipeline=True if the change is compatible."
    )
    with pytest.raises(PipelineDefinitionError, match=f"^{re.escape(expected)}$"):
        await other.resume_async("order-1")
    assert log == ["validate", "charge_card"]  # nothing of the other pipeline ran
    # The run is intact: its own pipeline still resumes it.
    result = await Flujo(checkout(log, [False]), state_backend=backend).resume_async("order-1")
    assert result.success and result.output == "shipped after charged order-1"
    assert log == ["validate", "charge_card", "ship"]


async def test_a_finished_run_is_not_returned_to_a_different_pipeline() -> None:
    backend = InMemoryStateBackend()
    log: list[str] = []
    await Flujo(checkout(log, [False]), state_backend=backend).run_async("o", run_id="done")
    with pytest.raises(PipelineDefinitionError, match=r"^Run 'done' was stored by pipeline "):
        await Flujo(cleanup(log), state_backend=backend).resume_async("done")
    stored = await Flujo(cleanup(log), state_backend=backend).resume_async(
        "done", allow_changed_pipeline=True
    )
    assert stored.output == "shipped after charged o"


async def test_the_same_structure_built_again_resumes_without_the_flag() -> None:
    backend = InMemoryStateBackend()
    log: list[str] = []
    await crashed_checkout(backend, log)
    # A new pipeline object (as after a restart): equal fingerprint, no flag needed.
    result = await Flujo(checkout(log, [False]), state_backend=backend).resume_async("order-1")
    assert result.success


async def test_allow_changed_pipeline_resumes_and_records_the_new_pipeline() -> None:
    backend = InMemoryStateBackend()
    log: list[str] = []
    await crashed_checkout(backend, log)

    async def ship_v2(receipt: str) -> str:
        log.append("ship_v2")
        return f"v2 {receipt}"

    async def archive(x: str) -> str:
        if crash[0]:
            crash[0] = False
            raise Crash
        log.append("archive")
        return x

    crash = [True]
    edited = [
        *checkout(log, [False]).steps[:2],
        Step.from_callable(ship_v2, name="ship"),
        Step.from_callable(archive, max_retries=0),
    ]
    runner = Flujo(Pipeline(steps=edited), state_backend=backend)
    with pytest.raises(Crash):
        await runner.resume_async("order-1", allow_changed_pipeline=True)
    assert log == ["validate", "charge_card", "ship_v2"]
    # The run now belongs to the edited pipeline: it resumes without the flag...
    result = await runner.resume_async("order-1")
    assert result.success and result.output == "v2 charged order-1"
    assert [r.name for r in result.step_history] == ["validate", "charge_card", "ship", "archive"]
    # ...and the original pipeline is the different one now.
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Run 'order-1' was stored by pipeline 'pipeline', which differs from this "
        r"runner's pipeline 'pipeline' at steps\[2\]: 'ship' \(agent .*ship_v2\) vs 'ship' "
        r"\(agent .*checkout\.<locals>\.ship\)\. ",
    ):
        await Flujo(checkout(log, [False]), state_backend=backend).resume_async("order-1")


async def test_allow_changed_pipeline_must_be_a_boolean() -> None:
    runner = Flujo(checkout([], [False]), state_backend=InMemoryStateBackend())
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Flujo\.resume_async: allow_changed_pipeline must be True or False, "
        r"got 'yes'\.$",
    ):
        await runner.resume_async("x", allow_changed_pipeline="yes")  # type: ignore[arg-type]


async def test_a_changed_pipeline_too_short_for_the_run_is_refused_even_when_allowed() -> None:
    backend = InMemoryStateBackend()
    log: list[str] = []
    runner = Flujo(checkout(log, [True]), state_backend=backend)
    with pytest.raises(Crash):
        await runner.run_async("o", run_id="r")

    async def only(x: str) -> str:
        return x

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Run 'r' was saved by pipeline 'pipeline' at step 2, which does not fit this "
        r"runner's pipeline 'pipeline' of 1 steps; resume it with the runner that started it\.$",
    ):
        await Flujo(Step.from_callable(only), state_backend=backend).resume_async(
            "r", allow_changed_pipeline=True
        )


def _downgrade_to_schema_1(path: Path) -> None:
    """Turn a store into what flujo_actors wrote before fingerprints (schema 1)."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TABLE fingerprints")
        conn.execute("DROP TABLE positions")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"meta", "runs", "steps"}  # exactly the version-1 layout
    conn.close()


async def test_a_schema_1_store_is_migrated_and_its_runs_need_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    log: list[str] = []
    async with SQLiteBackend(path) as backend:
        await crashed_checkout(backend, log)
    _downgrade_to_schema_1(path)

    async with SQLiteBackend(path) as backend:
        runner = Flujo(checkout(log, [False]), state_backend=backend)
        with pytest.raises(
            PipelineDefinitionError,
            match=r"^Run 'order-1' was stored without a pipeline fingerprint \(by a flujo_actors "
            r"version before fingerprints\), so this runner cannot check that its pipeline "
            r"'pipeline' is the pipeline 'pipeline' that started the run\. If it is, resume "
            r"with allow_changed_pipeline=True\.$",
        ):
            await runner.resume_async("order-1")
        assert log == ["validate", "charge_card"]
        result = await runner.resume_async("order-1", allow_changed_pipeline=True)
        assert result.success and log == ["validate", "charge_card", "ship"]
        # A new run in the migrated file stores its fingerprint like any other.
        await runner.run_async("o2", run_id="order-2")
        snap = await backend.load_state("order-2")
        assert snap is not None and snap.pipeline_fingerprint is not None
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    conn.close()


# -- item 2: one run per run id ------------------------------------------------------------


def two_steps(log: list[str]) -> Pipeline:
    async def a(x: int) -> int:
        log.append("a")
        return x + 1

    async def b(x: int) -> int:
        log.append("b")
        return x * 2

    return Step.from_callable(a) >> Step.from_callable(b)


def exists_message(backend: str) -> str:
    return re.escape(
        f"Run id 'nightly' already names a run in the state backend {backend}; a run id names "
        "one run. Pass a new run_id (or none, for a generated one), continue the stored run "
        "with `await runner.resume_async('nightly')`, or delete it first with "
        "`await backend.delete_state('nightly')`."
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_reusing_a_run_id_is_refused_and_keeps_the_stored_history(
    kind: str, tmp_path: Path
) -> None:
    backend: Any = InMemoryStateBackend() if kind == "memory" else SQLiteBackend(tmp_path / "s.db")
    log: list[str] = []
    events: list[object] = []
    runner = Flujo(two_steps(log), state_backend=backend, hooks=[lambda e: events.append(e)])
    first = await runner.run_async(1, run_id="nightly")
    assert first.output == 4
    started = len(events)
    with pytest.raises(RunExistsError, match=f"^{exists_message(type(backend).__name__)}$") as info:
        await runner.run_async(5, run_id="nightly")
    assert isinstance(info.value, FlujoError) and info.value.run_id == "nightly"
    assert log == ["a", "b"]  # the second run never started
    assert len(events) == started  # not even a RunStarted event
    snap = await backend.load_state("nightly")
    assert snap is not None
    assert [row["value"]["name"] for row in snap.step_history] == ["a", "b"]
    # The fixes the message names work: resume returns the stored run...
    assert (await runner.resume_async("nightly")).output == 4
    # ...and after delete_state the id starts a new run.
    await backend.delete_state("nightly")
    assert (await runner.run_async(5, run_id="nightly")).output == 12
    await backend.aclose()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_of_concurrent_runs_with_one_id_exactly_one_runs(kind: str, tmp_path: Path) -> None:
    backend: Any = InMemoryStateBackend() if kind == "memory" else SQLiteBackend(tmp_path / "s.db")
    log: list[str] = []
    outcomes: list[str] = []

    async def start(i: int) -> None:
        # Separate runners, one shared backend (as separate processes would).
        runner = Flujo(two_steps(log), state_backend=backend)
        try:
            await runner.run_async(i, run_id="nightly")
        except RunExistsError:
            outcomes.append("refused")
        else:
            outcomes.append("ran")

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(start, i)
    assert sorted(outcomes) == ["ran", "refused", "refused"]
    assert log == ["a", "b"]
    snap = await backend.load_state("nightly")
    assert snap is not None and len(snap.step_history) == 2 and snap.status == "completed"
    await backend.aclose()


async def test_sqlite_create_is_atomic_across_backends_sharing_a_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    backends = [SQLiteBackend(path) for _ in range(3)]
    outcomes: list[str] = []

    async def start(backend: SQLiteBackend) -> None:
        try:
            await Flujo(two_steps([]), state_backend=backend).run_async(1, run_id="nightly")
        except RunExistsError:
            outcomes.append("refused")
        else:
            outcomes.append("ran")

    async with trio.open_nursery() as nursery:
        for backend in backends:
            nursery.start_soon(start, backend)
    assert sorted(outcomes) == ["ran", "refused", "refused"]
    for backend in backends:
        await backend.aclose()


async def test_concurrent_runs_with_one_id_in_one_runner_without_a_backend() -> None:
    log: list[str] = []
    gate = trio.Event()

    async def slow(x: int) -> int:
        log.append(f"slow {x}")
        await gate.wait()
        return x

    runner = Flujo(Step.from_callable(slow))
    results: list[Any] = []
    errors: list[str] = []

    async def start(i: int) -> None:
        try:
            results.append((await runner.run_async(i, run_id="nightly")).output)
        except RunExistsError as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start, 0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(start, 1)
        nursery.start_soon(start, 2)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert results == [0] and log == ["slow 0"]
    assert (
        errors
        == [
            "Run id 'nightly' is already running in this runner; a run id names one run. Pass a "
            "new run_id (or none, for a generated one), or wait for that run to finish."
        ]
        * 2
    )
    # Without a state backend nothing is stored: the id is free again once the run ended.
    assert (await runner.run_async(7, run_id="nightly")).output == 7


async def test_stream_async_refuses_a_stored_run_id_too() -> None:
    backend = InMemoryStateBackend()
    runner = Flujo(two_steps([]), state_backend=backend)
    await runner.run_async(1, run_id="nightly")
    with pytest.raises(RunExistsError, match=f"^{exists_message('InMemoryStateBackend')}$"):
        async for _ in runner.stream_async(1, run_id="nightly"):
            pass


# -- the conformance suite catches a backend without an atomic create ----------------------


class _RacyBackend(InMemoryStateBackend):
    """Broken on purpose: checks, then writes, with a checkpoint in between."""

    async def create_run(self, checkpoint: RunCheckpoint) -> None:
        if await self.load_state(checkpoint.run_id) is not None:
            from flujo_actors.backends.state import run_exists_error

            raise run_exists_error(checkpoint.run_id, self)
        await self.save_state(checkpoint.run_id, checkpoint)


class _OverwritingCreateBackend(InMemoryStateBackend):
    """Broken on purpose: create_run replaces a stored run."""

    async def create_run(self, checkpoint: RunCheckpoint) -> None:
        await self.delete_state(checkpoint.run_id)
        await self.save_state(checkpoint.run_id, checkpoint)


class _FingerprintLosingBackend(InMemoryStateBackend):
    """Broken on purpose: every checkpoint replaces the fingerprint, None included."""

    async def save_state(self, run_id: str, checkpoint: RunCheckpoint) -> None:
        await super().save_state(run_id, checkpoint)
        stored = self._runs[run_id]
        stored.fingerprint = checkpoint.pipeline_fingerprint


async def test_the_suite_catches_a_racy_create() -> None:
    with pytest.raises(
        AssertionError,
        match=r"^check_state_backend\[concurrent_create\]: of 5 concurrent create_run calls "
        r"with one id, \[0, 1, 2, 3, 4\] succeeded and \[\] were refused; exactly one must "
        r"succeed$",
    ):
        await check_state_backend(_RacyBackend)


async def test_the_suite_catches_a_create_that_overwrites() -> None:
    with pytest.raises(
        AssertionError,
        match=r"^check_state_backend\[create_run\]: create_run of a stored run id did not "
        r"raise RunExistsError$",
    ):
        await check_state_backend(_OverwritingCreateBackend)


async def test_the_suite_catches_a_backend_that_loses_the_fingerprint() -> None:
    with pytest.raises(
        AssertionError,
        match=r"^check_state_backend\[create_run\]: a refused create_run changed the stored "
        r"run: ",
    ):
        await check_state_backend(_FingerprintLosingBackend)


async def test_resuming_a_run_still_running_in_this_runner_is_refused() -> None:
    gate = trio.Event()
    ran: list[str] = []

    async def slow(x: int) -> int:
        ran.append("slow")
        await gate.wait()
        return x

    backend = InMemoryStateBackend()
    runner = Flujo(Step.from_callable(slow), state_backend=backend)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(runner.run_async, 1, run_id="live"))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(
            RunExistsError, match=r"^Run id 'live' is already running in this runner; "
        ):
            await runner.resume_async("live")
        gate.set()
    assert ran == ["slow"]  # the resume did not run the step a second time
