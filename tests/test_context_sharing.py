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


# -- identity fields (#21) -------------------------------------------------------------------

_RULE = (
    "run_id and initial_prompt identify the run and cannot be written by steps; "
    "keep the value in another field (or the scratchpad)."
)


async def _run(step: Step | Any, **kwargs: Any) -> Any:
    return await Flujo(step, context_model=Ctx, **kwargs).run_async("prompt", run_id="real")


@pytest.mark.parametrize(
    ("update", "shown"),
    [
        ({"run_id": "hijacked"}, "run_id='hijacked' (the run's is 'real')"),
        (
            {"initial_prompt": "other", "notes": ["x"]},
            "initial_prompt='other' (the run's is 'prompt')",
        ),
    ],
)
async def test_updates_context_cannot_change_an_identity_field(
    update: dict[str, Any], shown: str
) -> None:
    step = Step.from_callable(lambda data: update, name="hijack", updates_context=True)
    result = await _run(step)
    assert not result.success
    failed = result.step_history[-1]
    assert failed.feedback == (
        f"Step 'hijack' has updates_context=True but its output sets {shown}: {_RULE}"
    )
    assert failed.metadata["error_type"] == "ContextUpdateError"
    ctx = result.final_pipeline_context
    assert (result.run_id, ctx.run_id, ctx.initial_prompt, ctx.notes) == (
        "real",
        "real",
        "prompt",
        [],  # nothing of the refused update was written
    )


async def test_updates_context_may_repeat_the_identity_it_already_has() -> None:
    async def whole(data: str, *, context: Ctx) -> Ctx:
        return attrs.evolve(context, notes=["kept"])  # carries the same run_id

    result = await _run(Step.from_callable(whole, updates_context=True))
    assert result.success
    assert result.final_pipeline_context.notes == ["kept"]
    assert result.final_pipeline_context.run_id == "real"


async def test_an_agent_or_validator_writing_run_id_fails_and_is_rolled_back() -> None:
    async def agent(data: str, *, context: Ctx) -> str:
        context.run_id = "hijacked"
        context.notes.append("rolled back")
        return data

    result = await _run(Step.from_callable(agent, name="rogue", max_retries=2))
    failed = result.step_history[-1]
    assert (
        failed.feedback == f"Step 'rogue' changed context.run_id from 'real' to 'hijacked': {_RULE}"
    )
    assert failed.attempts == 1  # another attempt would do the same: no retry
    assert result.final_pipeline_context.run_id == "real"
    assert result.final_pipeline_context.notes == []

    def validator(output: str, context: Ctx) -> bool:
        context.initial_prompt = "rewritten"
        return True

    checked = Step.from_callable(lambda data: data, name="checked", validators=[validator])
    result = await _run(checked)
    assert result.step_history[-1].feedback == (
        f"Step 'checked' changed context.initial_prompt from 'prompt' to 'rewritten': {_RULE}"
    )
    assert result.final_pipeline_context.initial_prompt == "prompt"


@pytest.mark.parametrize(
    "merge", [MergeStrategy.CONTEXT_UPDATE, MergeStrategy.OVERWRITE, MergeStrategy.KEEP_FIRST]
)
async def test_a_branch_writing_run_id_fails_and_nothing_reaches_the_main_context(
    merge: MergeStrategy,
) -> None:
    hijack = Step.from_callable(
        lambda d: {"run_id": "hijacked"}, name="hijack", updates_context=True
    )
    fan = Step.parallel(
        "fan",
        {
            "ok": Step.from_callable(lambda d: {"notes": ["ok"]}, name="ok", updates_context=True),
            "bad": hijack,
        },
        merge_strategy=merge,
        on_branch_failure=BranchFailureStrategy.IGNORE,
    )
    result = await _run(fan)
    assert result.success  # IGNORE: 'ok' succeeded and merged; 'bad' failed
    bad = result.step_history[-1].output["bad"]
    assert bad.feedback == (
        "Step 'hijack' has updates_context=True but its output sets run_id='hijacked' "
        f"(the run's is 'real'): {_RULE}"
    )
    ctx = result.final_pipeline_context
    assert (ctx.run_id, ctx.notes) == ("real", ["ok"])


async def test_a_merge_callable_writing_run_id_fails_the_step_and_changes_nothing() -> None:
    def merge(main: Ctx, branch: Ctx) -> None:
        main.notes.append("merged")
        main.run_id = "hijacked"

    fan = Step.parallel(
        "fan", {"a": Step.from_callable(lambda d: d, name="a")}, merge_strategy=merge
    )
    result = await _run(fan)
    assert not result.success
    label = merge.__qualname__
    assert result.step_history[-1].feedback == (
        f"Step 'fan': merge_strategy {label} changed context.run_id from 'real' to "
        f"'hijacked': {_RULE} The context was left as it was before the branches ran."
    )
    ctx = result.final_pipeline_context
    assert (ctx.run_id, ctx.notes) == ("real", [])


async def test_loop_and_conditional_callbacks_cannot_change_the_runs_identity() -> None:
    def exit_condition(out: Any, ctx: Ctx) -> bool:
        ctx.run_id = "hijacked"
        ctx.notes.append("kept")  # other writes of a callback are fine
        return True

    loop = Step.loop_until("loop", Step.from_callable(lambda d: d, name="body"), exit_condition)
    result = await _run(loop)
    failed = result.step_history[-1]
    assert failed.feedback == (
        f"Loop 'loop': exit_condition_callable changed context.run_id from 'real' to "
        f"'hijacked': {_RULE}"
    )
    assert failed.metadata["exit_reason"] == "error"
    assert result.final_pipeline_context.run_id == "real"  # put back
    assert result.final_pipeline_context.notes == ["kept"]

    def condition(data: Any, ctx: Ctx) -> str:
        ctx.initial_prompt = "rewritten"
        return "a"

    cond = Step.branch_on("pick", condition, {"a": Step.from_callable(lambda d: d, name="a")})
    result = await _run(cond)
    assert result.step_history[-1].feedback == (
        "Conditional step 'pick': condition_callable changed context.initial_prompt from "
        f"'prompt' to 'rewritten': {_RULE}"
    )
    assert result.final_pipeline_context.initial_prompt == "prompt"


@pytest.mark.parametrize("what", ["initial", "iteration", "output"])
async def test_loop_mappers_cannot_change_the_run_id(what: str) -> None:
    def hijack(*args: Any) -> Any:
        args[1].run_id = "hijacked"  # (value, context, ...)
        return args[0]

    mappers = {
        "initial": "initial_input_to_loop_body_mapper",
        "iteration": "iteration_input_mapper",
        "output": "loop_output_mapper",
    }
    if what == "iteration":
        mapper: Any = lambda out, ctx, i: hijack(out, ctx)  # noqa: E731
    else:
        mapper = lambda value, ctx: hijack(value, ctx)  # noqa: E731
    loop = Step.loop_until(
        "loop",
        Step.from_callable(lambda d: d, name="body"),
        lambda out, ctx: what != "iteration",
        max_loops=2,
        **{mappers[what]: mapper},
    )
    result = await _run(loop)
    assert result.step_history[-1].feedback == (
        f"Loop 'loop': {mappers[what]} changed context.run_id from 'real' to 'hijacked': {_RULE}"
    )
    assert result.final_pipeline_context.run_id == "real"
