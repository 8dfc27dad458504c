"""Both state backends: the conformance suite, validation, atomicity, cancellation."""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from flujo_actors.backends import (
    InMemoryStateBackend,
    RunCheckpoint,
    SQLiteBackend,
    StateBackend,
)
from flujo_actors.errors import SerializationError
from flujo_actors.serialization import safe_serialize
from flujo_actors.testing.backends import check_state_backend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from flujo_actors.backends.state import _EncodedCheckpoint
    from tests.backends.backend_cases import checkpoint as _cp  # mypy names test modules by path
else:
    from backend_cases import checkpoint as _cp  # pytest puts tests/ on sys.path


@pytest.fixture(params=["memory", "sqlite"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], StateBackend]:
    counter = itertools.count()
    if request.param == "memory":
        return InMemoryStateBackend
    return lambda: SQLiteBackend(tmp_path / f"state-{next(counter)}.db")


@pytest.fixture
async def backend(make_backend: Callable[[], StateBackend]) -> AsyncIterator[StateBackend]:
    made = make_backend()
    try:
        yield made
    finally:
        await made.aclose()


# -- conformance ---------------------------------------------------------------------


async def test_in_memory_backend_passes_the_conformance_suite() -> None:
    await check_state_backend(InMemoryStateBackend)


async def test_sqlite_backend_passes_the_conformance_suite(tmp_path: Path) -> None:
    counter = itertools.count()
    await check_state_backend(lambda: SQLiteBackend(tmp_path / f"{next(counter)}.db"))


async def test_sqlite_in_memory_database_passes_the_conformance_suite() -> None:
    await check_state_backend(lambda: SQLiteBackend(":memory:"))


async def test_the_suite_accepts_async_factories(tmp_path: Path) -> None:
    counter = itertools.count()

    async def factory() -> StateBackend:
        await trio.lowlevel.checkpoint()
        return SQLiteBackend(str(tmp_path / f"{next(counter)}.db"), synchronous="NORMAL")

    await check_state_backend(factory)


class _OverwritingBackend(InMemoryStateBackend):
    """Broken on purpose: replaces the history instead of appending to it."""

    def _apply(self, encoded: _EncodedCheckpoint) -> None:
        self._runs.pop(encoded.run_id, None)
        super()._apply(encoded)


class _AliasingBackend(InMemoryStateBackend):
    """Broken on purpose: keeps the caller's objects."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[str, RunCheckpoint] = {}

    async def save_state(self, run_id: str, checkpoint: RunCheckpoint) -> None:
        await super().save_state(run_id, checkpoint)
        self.kept[run_id] = checkpoint

    async def load_state(self, run_id: str) -> Any:
        snapshot = await super().load_state(run_id)
        kept = self.kept.get(run_id)
        if snapshot is None or kept is None:
            return snapshot
        import attrs

        return attrs.evolve(snapshot, context=kept.context, output=kept.output)


async def test_the_suite_catches_a_backend_that_rewrites_history() -> None:
    with pytest.raises(
        AssertionError,
        match=r"^check_state_backend\[append\]: history after three checkpoints is "
        r"\(\), expected \(\{'i': 0\}, \{'i': 1\}, \{'i': 2\}\) "
        r"\(new_steps must be appended, in order\)$",
    ):
        await check_state_backend(_OverwritingBackend)


async def test_the_suite_catches_a_backend_that_aliases_caller_objects() -> None:
    with pytest.raises(
        AssertionError,
        match=r"^check_state_backend\[no_aliasing\]: mutating the caller's objects after "
        r"save_state changed the stored run: ",
    ):
        await check_state_backend(_AliasingBackend)


async def test_the_suite_rejects_objects_that_are_not_backends() -> None:
    with pytest.raises(
        AssertionError,
        match=r"^check_state_backend\[protocol\]: factory\(\) returned 'nope', which lacks "
        r"StateBackend methods$",
    ):
        await check_state_backend(lambda: "nope")  # type: ignore[arg-type,return-value]


# -- behaviour shared by both backends --------------------------------------------------


async def test_backends_satisfy_the_protocol(backend: StateBackend) -> None:
    assert isinstance(backend, StateBackend)


async def test_save_state_rejects_a_mismatched_run_id(backend: StateBackend) -> None:
    with pytest.raises(
        ValueError,
        match=r"^save_state: run_id 'a' does not match checkpoint\.run_id 'b'\. Pass the "
        r"checkpoint's own run id\.$",
    ):
        await backend.save_state("a", _cp("b"))
    assert await backend.list_runs() == []


async def test_non_json_values_are_refused_with_their_path(backend: StateBackend) -> None:
    from decimal import Decimal

    with pytest.raises(
        SerializationError,
        match=r"^Cannot encode an object of type 'decimal\.Decimal' at "
        r"checkpoint\['r'\]\.new_steps\[1\]\['cost'\]: state and cache backends store JSON "
        r"data only\. Pass the value through safe_serialize\(\) or dump_typed\(\) first\.$",
    ):
        await backend.save_state("r", _cp("r", new_steps=({}, {"cost": Decimal(1)})))
    assert await backend.load_state("r") is None


async def test_a_batch_with_a_bad_checkpoint_saves_nothing(backend: StateBackend) -> None:
    batch = [_cp("ok", new_steps=({"s": 1},)), _cp("bad", context={"x": object()})]
    with pytest.raises(SerializationError, match=r"^Cannot encode an object of type 'object' at "):
        await backend.save_states(batch)
    assert await backend.list_runs() == []


async def test_list_runs_rejects_unknown_statuses(backend: StateBackend) -> None:
    with pytest.raises(
        ValueError,
        match=r"^list_runs: status must be None or one of \('running', 'completed', 'failed', "
        r"'paused', 'cancelled'\), got 'done'\.$",
    ):
        await backend.list_runs("done")


async def test_list_runs_keeps_first_save_order(backend: StateBackend) -> None:
    for run_id in ["c", "a", "b"]:
        await backend.save_state(run_id, _cp(run_id))
    await backend.save_state("a", _cp("a", status="completed"))
    assert await backend.list_runs() == ["c", "a", "b"]


async def test_safe_serialize_output_round_trips(backend: StateBackend) -> None:
    from datetime import date
    from decimal import Decimal

    context = safe_serialize(
        {"when": date(2024, 1, 2), "cost": Decimal("0.10"), "tags": {"b", "a"}}
    )
    await backend.save_state("r", _cp("r", context=context))
    snapshot = await backend.load_state("r")
    assert snapshot is not None
    assert snapshot.context == {"when": "2024-01-02", "cost": "0.10", "tags": ["a", "b"]}


async def test_a_cancelled_call_that_never_started_has_no_effect(backend: StateBackend) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await backend.save_state("r", _cp("r"))
    assert scope.cancelled_caught
    assert await backend.list_runs() == []


async def test_concurrent_saves_from_many_tasks(backend: StateBackend) -> None:
    async def save(i: int) -> None:
        for step in range(3):
            await backend.save_state(
                f"run-{i}", _cp(f"run-{i}", next_step_index=step + 1, new_steps=({"s": step},))
            )

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(save, i)
    assert sorted(await backend.list_runs()) == sorted(f"run-{i}" for i in range(10))
    for i in range(10):
        snapshot = await backend.load_state(f"run-{i}")
        assert snapshot is not None
        assert snapshot.step_history == ({"s": 0}, {"s": 1}, {"s": 2})


# -- the data model -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (
            {"status": "done"},
            ValueError,
            "RunCheckpoint.status must be one of ('running', 'completed', 'failed', 'paused', 'cancelled'), "
            "got 'done'.",
        ),
        (
            {"next_step_index": -1},
            ValueError,
            "RunCheckpoint.next_step_index must be an int >= 0, got -1.",
        ),
        (
            {"total_tokens": True},
            ValueError,
            "RunCheckpoint.total_tokens must be an int >= 0, got True.",
        ),
        ({"run_id": ""}, ValueError, "RunCheckpoint.run_id must not be empty."),
        (
            {"total_cost_usd": "1,5"},
            ValueError,
            "RunCheckpoint.total_cost_usd must be a decimal string such as '0.25', got '1,5'.",
        ),
    ],
)
def test_run_checkpoint_validates_its_fields(
    changes: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        _cp("r", **changes)


def test_run_checkpoint_normalises_new_steps_to_a_tuple() -> None:
    assert _cp("r", new_steps=[{"a": 1}]).new_steps == ({"a": 1},)
