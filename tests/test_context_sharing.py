"""Context fields that cannot be copied are shared by reference (#13); identity fields (#21)."""

from __future__ import annotations

import threading
from typing import Any

import attrs
import pytest

from flujo_actors import (
    BranchFailureStrategy,
    Flujo,
    MergeStrategy,
    PipelineContext,
    Step,
)
from flujo_actors.context import copy_context, copy_value


class Client:
    """Stands for an SDK client: it holds a lock, so it cannot be deep-copied."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[str] = []


@attrs.define
class Ctx(PipelineContext):
    lock: Any = None
    client: Any = None
    notes: list[str] = attrs.Factory(list)


def test_copies_share_what_cannot_be_copied_and_copy_the_rest() -> None:
    lock = threading.Lock()
    client = Client()
    ctx = Ctx(lock=lock, client=client, notes=["a"], scratchpad={"rlock": threading.RLock()})
    copy = copy_context(ctx)
    assert copy.lock is lock and copy.client is client
    assert copy.scratchpad["rlock"] is ctx.scratchpad["rlock"]
    assert copy.notes == ["a"] and copy.notes is not ctx.notes
    assert copy.scratchpad is not ctx.scratchpad
    both = copy_value({"lock": lock, "items": [1, [2]]})
    assert both["lock"] is lock and both["items"] == [1, [2]]


@pytest.mark.parametrize(
    "merge", [MergeStrategy.CONTEXT_UPDATE, MergeStrategy.OVERWRITE, MergeStrategy.NO_MERGE]
)
async def test_a_parallel_step_over_a_context_with_a_lock_and_a_client_runs(
    merge: MergeStrategy,
) -> None:
    client = Client()
    lock = threading.Lock()

    def branch(name: str) -> Step:
        async def call(data: str, *, context: Ctx) -> str:
            with context.lock:  # the same lock in every branch
                context.client.calls.append(name)
            context.notes.append(name)
            return name

        return Step.from_callable(call, name=name)

    fan = Step.parallel(
        "fan",
        {"a": branch("a"), "b": branch("b")},
        merge_strategy=merge,
        on_branch_failure=BranchFailureStrategy.PROPAGATE,
    )
    runner = Flujo(fan, context_model=Ctx, initial_context_data={"lock": lock, "client": client})
    result = await runner.run_async("go")
    assert result.success, result.step_history[-1].feedback
    assert result.output == {"a": "a", "b": "b"}
    assert sorted(client.calls) == ["a", "b"]  # both branches used the one client
    ctx = result.final_pipeline_context
    assert ctx.lock is lock and ctx.client is client
    expected = {
        MergeStrategy.CONTEXT_UPDATE: ["b"],  # the later-declared branch wins the field
        MergeStrategy.OVERWRITE: ["b"],
        MergeStrategy.NO_MERGE: [],
    }[merge]
    assert ctx.notes == expected


async def test_a_loop_and_retries_over_a_context_with_a_lock() -> None:
    lock = threading.Lock()
    attempts: list[int] = []

    async def flaky(data: int, *, context: Ctx) -> int:
        attempts.append(data)
        assert context.lock is lock
        if len(attempts) == 1:
            raise RuntimeError("once")
        return data + 1

    loop = Step.loop_until(
        "loop",
        Step.from_callable(flaky, name="flaky", max_retries=1),
        lambda out, ctx: out >= 2,
        max_loops=3,
    )
    runner = Flujo(loop, context_model=Ctx, initial_context_data={"lock": lock})
    result = await runner.run_async(0)
    assert result.success and result.output == 2
    assert result.final_pipeline_context.lock is lock
