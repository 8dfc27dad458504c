"""A fan-out's branch records: group-committed, queued without waiting, ordered, never lost."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest
import trio

from flujo_actors import AnyStep, Flujo, Pipeline, Step
from flujo_actors.backends.state import InMemoryStateBackend

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flujo_actors.backends.state import PositionRecord, RunCheckpoint


class LoggingBackend(InMemoryStateBackend):
    """Logs every write call: ``("positions", [keys...])`` or ``("run", next_step_index)``."""

    def __init__(self, fail_positions_with: str | None = None) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.fail_positions_with = fail_positions_with

    async def save_positions(self, batch: Sequence[PositionRecord]) -> None:
        keys = [json.loads(item.position) for item in batch]
        self.calls.append(("positions", keys))
        marker = self.fail_positions_with
        if marker is not None and any(marker in key for key in keys):
            self.fail_positions_with = None
            await trio.lowlevel.checkpoint()
            raise RuntimeError(f"disk full while writing a batch with {marker!r}")
        await super().save_positions(batch)

    async def save_state(self, run_id: str, checkpoint: RunCheckpoint) -> None:
        self.calls.append(("run", checkpoint.next_step_index))
        await super().save_state(run_id, checkpoint)

    async def save_states(self, batch: Sequence[RunCheckpoint]) -> None:
        for checkpoint in batch:
            self.calls.append(("run", checkpoint.next_step_index))
        await super().save_states(batch)


async def inc(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return x + 1


def _fan(n: int, name: str = "fan") -> AnyStep:
    return Step.parallel(name, {f"b{i}": Step.from_callable(inc, name="inc") for i in range(n)})


async def test_branches_finishing_together_share_one_commit_before_the_run_row() -> None:
    backend = LoggingBackend()
    runner = Flujo(Pipeline.from_step(_fan(50)), state_backend=backend)
    result = await runner.run_async(0, run_id="r")
    assert result.success and result.output == {f"b{i}": 1 for i in range(50)}
    # One transaction for the fifty branch records, then the run row that refers to them.
    assert [kind for kind, _ in backend.calls] == ["positions", "run"]
    assert sorted(backend.calls[0][1]) == sorted(["fan", f"b{i}", "inc"] for i in range(50))
    assert backend.calls[1] == ("run", 1)
    # Nothing is lost: every branch's record is stored.
    stored = await backend.load_positions("r")
    assert sorted(json.loads(key) for key in stored) == sorted(
        ["fan", f"b{i}", "inc"] for i in range(50)
    )


async def test_a_nested_fan_out_is_committed_after_its_branches() -> None:
    # loop( fan(3) >> after ): the fan's record follows its branches' in the writer's order,
    # and the step after the fan starts only once all of them are committed.
    backend = LoggingBackend()
    seen: list[list[tuple[str, Any]]] = []

    async def after(x: Any) -> int:
        seen.append(list(backend.calls))  # what was written when this step started
        return 3

    body = Pipeline(steps=[_fan(3), Step.from_callable(after, name="after")])
    loop = Step.loop_until("loop", body, lambda out, ctx: True, max_loops=1)
    result = await Flujo(Pipeline.from_step(loop), state_backend=backend).run_async(0)
    assert result.success
    written = [key for kind, keys in seen[0] if kind == "positions" for key in keys]
    branches = [["loop", 1, "fan", f"b{i}", "inc"] for i in range(3)]
    assert sorted(written[:3]) == branches
    assert written[3:] == [["loop", 1, "fan"]]


async def test_a_failed_write_of_a_queued_branch_record_fails_the_run() -> None:
    backend = LoggingBackend(fail_positions_with="b1")
    runner = Flujo(
        Pipeline(steps=[_fan(3), Step.from_callable(inc, name="next")]), state_backend=backend
    )
    with pytest.raises(
        RuntimeError,
        match=rf"^{re.escape(repr('disk full while writing a batch with '))[1:-1]}'b1'$",
    ):
        await runner.run_async(0, run_id="r")
    snap = await backend.load_state("r")
    assert snap is not None
    # Stored as failed before the fan-out: no row claims the branch that was not stored.
    assert (snap.status, snap.next_step_index, snap.step_history) == ("failed", 0, ())
    assert ("run", 1) not in backend.calls
