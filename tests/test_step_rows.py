"""Stored step rows: children stored once, by reference; the fast encoder equals the walk."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from flujo_actors import (
    Flujo,
    PipelineContext,
    SQLiteBackend,
    Step,
    StepResult,
    dump_typed,
    register_custom_serializer,
)
from flujo_actors.step_rows import BRANCH, REF, expand_row, row_from_step, step_from_stored_row
from flujo_actors.testing.serializers import isolated_serializer_registry

if TYPE_CHECKING:
    from pathlib import Path


@attrs.define
class Note:
    text: str


def _results() -> list[StepResult]:
    ctx = PipelineContext(initial_prompt="p", run_id="r")
    ctx.scratchpad["k"] = [1, Decimal("2.5")]
    leaf = StepResult("leaf", Note("hi"), True, 2, 0.25, Decimal("0.10"), 7, None)
    failed = StepResult(
        "bad",
        None,
        False,
        3,
        1e-9,
        Decimal("1E+2"),
        0,
        "ValueError: no",
        ctx,
        metadata={"traceback": "T", "error_type": "ValueError", "n": (1, 2)},
    )
    return [
        leaf,
        failed,
        StepResult(
            "parent", {"a": 1}, True, 1, 0.5, Decimal(0), 0, None, step_history=[leaf, failed]
        ),
        StepResult("nan", float("nan"), True, 1, float("inf"), Decimal("-0"), 0, None),
    ]


@pytest.mark.parametrize("result", _results(), ids=lambda r: r.name)
def test_the_fast_row_is_what_dump_typed_writes(result: StepResult) -> None:
    output, row = row_from_step(result)
    assert repr(output) == repr(dump_typed(result.output))
    assert repr(row) == repr(dump_typed(result))  # nan != nan: compared as text


def test_a_registered_step_result_serializer_keeps_its_own_format() -> None:
    with isolated_serializer_registry():
        register_custom_serializer(StepResult, lambda r: {"mine": r.name})
        _output, row = row_from_step(_results()[2])
        assert row == dump_typed(_results()[2])
        assert row["value"] == {"mine": "parent"}


class Label(str):
    """A str subclass (the walk tags it)."""


def test_a_result_holding_other_types_is_written_as_the_walk_writes_it() -> None:
    odd = StepResult(Label("odd"), 1, True, 1, 2, Decimal("0.5"), 3, Label("why"))
    _output, row = row_from_step(odd)
    assert row == dump_typed(odd)
    assert row["value"]["name"] != "odd"  # tagged: the subclass comes back


def test_a_registered_decimal_serializer_still_writes_the_rows_cost() -> None:
    leaf = StepResult("leaf", 1, True, 1, 0.25, Decimal("0.10"), 7, None)
    with isolated_serializer_registry():
        register_custom_serializer(Decimal, lambda d: {"cents": int(d * 100)})
        _output, row = row_from_step(leaf)
        assert row == dump_typed(leaf)
        assert row["value"]["cost_usd"]["value"] == {"cents": 10}
    _output, row = row_from_step(leaf)
    assert row["value"]["cost_usd"] == {"__flujo_type__": "decimal:Decimal", "value": "0.10"}


def _tree() -> tuple[StepResult, dict[int, Any], dict[tuple[Any, ...], Any]]:
    """A parallel step at ("fan",) of branches b0, b1 whose steps are stored positions."""
    saved: dict[int, Any] = {}
    stored: dict[tuple[Any, ...], Any] = {}
    branches = []
    for b in ("b0", "b1"):
        inner = StepResult("inc", 1, True, 1, 0.1, Decimal("0.5"), 1, None)
        position = ("fan", b, "inc")
        saved[id(inner)] = (inner, position)
        stored[position] = row_from_step(inner, position, saved)[1]
        branches.append(
            StepResult(b, 1, True, 1, 0.1, Decimal("0.5"), 1, None, step_history=[inner])
        )
    fan = StepResult(
        "fan", {"b0": 1, "b1": 1}, True, 1, 0.2, Decimal(1), 2, None, step_history=branches
    )
    return fan, saved, stored


def test_children_stored_as_positions_are_references_and_read_back_equal() -> None:
    fan, saved, stored = _tree()
    _output, row = row_from_step(fan, ("fan",), saved)
    # One-step branches: their stored step plus their context, nothing it holds again.
    assert row["value"]["step_history"] == [
        {BRANCH: ["b0", "inc"], "branch_context": None},
        {BRANCH: ["b1", "inc"], "branch_context": None},
    ]
    back = step_from_stored_row(row, "row", ("fan",), stored.get)
    assert back == fan
    # Expanded, the row is what it was before references: every child inline.
    assert expand_row(row, ("fan",), stored.get) == row_from_step(fan)[1]


def _branch(name: str, inner: StepResult, **changes: Any) -> StepResult:
    fields: dict[str, Any] = {
        "output": inner.output if inner.success else None,
        "success": inner.success,
        "attempts": 1,
        "latency_s": inner.latency_s,
        "cost_usd": inner.cost_usd,
        "token_counts": inner.token_counts,
        "feedback": None if inner.success else inner.feedback,
        "branch_context": PipelineContext(initial_prompt="p", run_id="r"),
        "metadata": {},
        "step_history": [inner],
    }
    fields.update(changes)
    return StepResult(name, **fields)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"latency_s": 0.5},
        {"cost_usd": Decimal("0.50")},
        {"token_counts": 2},
        {"attempts": 2},
        {"metadata": {"k": 1}},
        {"feedback": "f"},
        {"output": 2},
        {"success": False, "output": None},
        {"branch_context": None},
    ],
)
def test_a_branch_derived_from_its_stored_step_reads_back_equal(changes: dict[str, Any]) -> None:
    inner = StepResult("inc", 1, True, 1, 0.1, Decimal("0.5"), 1, None)
    position = ("fan", "b0", "inc")
    saved: dict[int, Any] = {id(inner): (inner, position)}
    stored = {position: row_from_step(inner, position, saved)[1]}
    branch = _branch("b0", inner, **changes)
    fan = StepResult("fan", {}, True, 1, 0.2, Decimal(1), 2, None, step_history=[branch])
    _output, row = row_from_step(fan, ("fan",), saved)
    (entry,) = row["value"]["step_history"]
    derived = set(changes) <= {"branch_context"}
    assert (BRANCH in entry) is derived
    assert step_from_stored_row(row, "row", ("fan",), stored.get) == fan
    assert expand_row(row, ("fan",), stored.get) == row_from_step(fan)[1]


def test_a_derived_branch_whose_step_is_missing_names_it() -> None:
    fan, saved, stored = _tree()
    _output, row = row_from_step(fan, ("fan",), saved)
    del stored[("fan", "b0", "inc")]
    with pytest.raises(KeyError, match=r"\['fan', 'b0', 'inc'\]"):
        step_from_stored_row(row, "row", ("fan",), stored.get)
    with pytest.raises(KeyError, match=r"\['fan', 'b0', 'inc'\]"):
        expand_row(row, ("fan",), stored.get)


def test_a_reference_to_a_missing_position_names_it() -> None:
    fan, saved, stored = _tree()
    _output, row = row_from_step(fan, ("fan",), saved)
    del stored[("fan", "b1", "inc")]
    with pytest.raises(KeyError, match=r"\['fan', 'b1', 'inc'\]"):
        step_from_stored_row(row, "row", ("fan",), stored.get)


def test_a_row_without_references_reads_back_without_positions() -> None:
    fan, _saved, _stored = _tree()
    _output, row = row_from_step(fan)
    assert step_from_stored_row(row, "row") == fan


async def test_a_fork_copies_the_steps_before_it_whole(tmp_path: Path) -> None:
    def inc(x: int) -> int:
        return x + 1

    fan = Step.parallel(
        "fan", {"a": Step.from_callable(inc, name="a1"), "b": Step.from_callable(inc, name="b1")}
    )
    pipeline = fan >> Step.from_callable(lambda d: d["a"] + d["b"], name="last")
    async with SQLiteBackend(tmp_path / "runs.db") as backend:
        runner = Flujo(pipeline, state_backend=backend)
        first = await runner.run_async(1, run_id="r")
        snap = await backend.load_state("r")
        assert snap is not None
        assert snap.step_history[0]["value"]["step_history"][0][BRANCH] == ["a", "a1"]
        forked = await runner.fork_async("r", at="last", run_id="f")
        # The fork has no positions of its own: its copy of "fan" holds the children.
        assert await backend.load_positions("f") == {}
        copied = await backend.load_state("f")
        assert copied is not None
        assert REF not in json.dumps(copied.step_history)
        again = await runner.resume_async("f")
        assert forked.output == again.output == first.output == 4
        assert again.step_history == forked.step_history
        assert [c.name for c in again.step_history[0].step_history] == ["a", "b"]
        assert again.step_history[0].step_history[0].step_history[0].name == "a1"


async def test_a_row_ending_with_the_checkpoints_context_is_stored_as_written() -> None:
    from flujo_actors import InMemoryStateBackend
    from flujo_actors.backends.state import RunCheckpoint

    context = dump_typed(PipelineContext(initial_prompt="é", run_id="r"))
    rows = ({"a": [1.5, None], "after": context}, {"after": context}, {"after": context, "z": 1})
    backend = InMemoryStateBackend()
    await backend.save_state(
        "r",
        RunCheckpoint(
            run_id="r",
            pipeline_name="p",
            status="running",
            next_step_index=1,
            context=context,
            initial_input=None,
            new_steps=rows,
        ),
    )
    snap = await backend.load_state("r")
    assert snap is not None
    assert snap.step_history == rows
    assert snap.context == context
