"""``Step.human_input``: pause, resume with input, at every depth, and the run's status."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs
import pydantic
import pytest
import trio

from flujo_actors import (
    Flujo,
    HumanInputError,
    InMemoryStateBackend,
    PipelineContext,
    PipelineDefinitionError,
    RunNotFoundError,
    SQLiteBackend,
    Step,
)

if TYPE_CHECKING:
    from pathlib import Path


@attrs.define
class Ctx(PipelineContext):
    approvals: list[bool] = attrs.Factory(list)
    answer: Any = None
    notes: list[str] = attrs.Factory(list)


@attrs.define
class Approval:
    ok: bool
    note: str = ""


SCHEMA = {
    "title": "Approval",
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "note": {"type": "string"}},
    "required": ["ok"],
}

calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


def counted(name: str, fn: Any = None) -> Step:
    def agent(x: Any, *, context: Ctx) -> Any:
        calls[name] += 1
        context.notes.append(name)
        return fn(x, context) if fn is not None else x

    return Step.from_callable(agent, name=name)


def approval_loop() -> Any:
    def record(a: Approval, ctx: Ctx) -> int:
        ctx.approvals.append(a.ok)
        return len(ctx.approvals)

    body = (
        counted("draft", lambda x, c: x + 1)
        >> Step.human_input("approve", "Approve the draft?", input_model=Approval, sink_to="answer")
        >> counted("record", record)
    )
    loop = Step.loop_until("review", body, lambda out, ctx: out >= 2, max_loops=3)
    return counted("start") >> loop >> counted("publish")


async def test_a_pause_inside_a_loop_resumes_the_same_iteration() -> None:
    backend = InMemoryStateBackend()
    runner = Flujo(approval_loop(), context_model=Ctx, state_backend=backend)
    first = await runner.run_async(0, run_id="r")
    assert (first.status, first.success, first.output) == ("paused", False, None)
    assert first.paused is not None
    assert first.paused.path == ("review", "approve")
    assert first.paused.message == "Approve the draft?"
    assert first.paused.input_schema == SCHEMA
    assert [p.key for p in first.paused.pending] == ["review/1/approve"]
    snap = await backend.load_state("r")
    assert snap is not None and snap.status == "paused"
    assert await backend.list_runs("paused") == ["r"]

    second = await runner.resume_async("r", human_input={"ok": True})
    assert second.status == "paused" and second.paused is not None
    assert second.paused.pending[0].key == "review/2/approve"
    assert calls == Counter({"start": 1, "draft": 2, "record": 1})  # iteration 1's draft: once

    done = await runner.resume_async("r", human_input=Approval(ok=False, note="typo"))
    assert (done.status, done.success, done.paused) == ("completed", True, None)
    assert done.output == 2
    ctx = done.final_pipeline_context
    assert ctx.approvals == [True, False]
    assert ctx.answer == Approval(ok=False, note="typo")
    assert ctx.notes == ["start", "draft", "record", "draft", "record", "publish"]
    assert calls == Counter({"start": 1, "draft": 2, "record": 2, "publish": 1})
    assert [r.name for r in done.step_history] == ["start", "review", "publish"]
    assert done.step_history[1].metadata["iterations"] == 2
    snap = await backend.load_state("r")
    assert snap is not None and snap.status == "completed"
    assert await backend.list_runs("paused") == []


async def test_invalid_input_is_refused_and_the_run_stays_paused() -> None:
    backend = InMemoryStateBackend()
    runner = Flujo(approval_loop(), context_model=Ctx, state_backend=backend)
    await runner.run_async(0, run_id="r")
    before = (await backend.load_state("r"), await backend.load_positions("r"))
    with pytest.raises(
        HumanInputError,
        match=r"^Human input for step 'approve' at 'review/1/approve' of run 'r' is invalid "
        r"\(\{'ok': 'maybe'\}\): Approval refused it: ValueError: .*\. The run stays paused; "
        r"resume it with a value matching the schema .*\.$",
    ):
        await runner.resume_async("r", human_input={"ok": "maybe"})
    with pytest.raises(HumanInputError, match=r"expected a Approval or a mapping of its fields"):
        await runner.resume_async("r", human_input=42)
    assert (await backend.load_state("r"), await backend.load_positions("r")) == before
    assert calls == Counter({"start": 1, "draft": 1})
    resumed = await runner.resume_async("r", human_input={"ok": True})
    assert resumed.status == "paused" and calls["record"] == 1


async def test_without_a_backend_paused_runs_are_kept_in_memory_until_they_finish() -> None:
    runner = Flujo(Step.human_input("ask", "Name?") >> counted("greet"), context_model=Ctx)
    paused = await runner.run_async(None, run_id="m")
    assert paused.status == "paused" and paused.paused is not None
    assert paused.paused.input_schema == {}  # no input_model: any JSON value
    with pytest.raises(HumanInputError, match=r"^Human input for step 'ask' at 'ask' .* it is "):
        await runner.resume_async("m", human_input=object())
    done = await runner.resume_async("m", human_input="Ada")
    assert (done.status, done.output) == ("completed", "Ada")
    with pytest.raises(RunNotFoundError):
        await runner.resume_async("m")  # finished: no longer kept


def review_fan() -> Any:
    fan = Step.parallel(
        "fan",
        {
            "legal": Step.human_input("ok_legal", "Legal OK?") >> counted("legal_done"),
            "tech": counted("tech_check") >> Step.human_input("ok_tech", "Tech OK?"),
            "auto": counted("auto"),
        },
    )
    return fan >> counted("merge", lambda x, c: sorted(x))


async def test_parallel_branches_pause_after_their_siblings_finish() -> None:
    runner = Flujo(review_fan(), context_model=Ctx, state_backend=InMemoryStateBackend())
    first = await runner.run_async("doc", run_id="p")
    assert first.status == "paused" and first.paused is not None
    assert sorted(p.key for p in first.paused.pending) == ["fan/legal/ok_legal", "fan/tech/ok_tech"]
    assert calls == Counter({"tech_check": 1, "auto": 1})  # the siblings ran to their end
    with pytest.raises(
        HumanInputError,
        match=r"^Run 'p' waits for 2 human inputs \(\[.*\]\); pass human_input as a mapping of "
        r"those keys to their values \(one, several or all of them\), got 'yes'\.$",
    ):
        await runner.resume_async("p", human_input="yes")
    # One at a time: the other stays pending, completed work is not redone.
    one = await runner.resume_async("p", human_input={"fan/legal/ok_legal": "yes"})
    assert one.status == "paused" and one.paused is not None
    assert [p.key for p in one.paused.pending] == ["fan/tech/ok_tech"]
    done = await runner.resume_async("p", human_input="fine")
    assert done.status == "completed"
    assert done.output == ["auto", "legal", "tech"]
    assert done.step_history[0].output == {"legal": "yes", "tech": "fine", "auto": "doc"}
    assert calls == Counter({"tech_check": 1, "auto": 1, "legal_done": 1, "merge": 1})


async def test_several_pending_inputs_can_be_answered_together() -> None:
    runner = Flujo(review_fan(), context_model=Ctx)
    await runner.run_async("doc", run_id="p")
    done = await runner.resume_async(
        "p", human_input={"fan/legal/ok_legal": "a", "fan/tech/ok_tech": "b"}
    )
    assert done.status == "completed" and done.step_history[0].output["tech"] == "b"


class Verdict(pydantic.BaseModel):
    score: int


async def test_inside_a_nested_pipeline_and_a_conditional_after_a_restart(tmp_path: Path) -> None:
    def build() -> Any:
        ask = Step.human_input(
            "score",
            lambda data, ctx: f"Score {data!r} for run {ctx.run_id}",
            input_model=Verdict,
            sink_to="answer",
        )
        cond = Step.branch_on(
            "route",
            lambda data, ctx: "manual" if data == "hard" else "auto",
            {"manual": ask},
            default_branch_pipeline=counted("auto"),
        )
        inner = (counted("prep") >> cond >> counted("after", lambda v, c: v.score)).as_step("inner")
        return counted("first") >> inner

    db = tmp_path / "runs.db"
    async with SQLiteBackend(db) as backend:
        first = await Flujo(build(), context_model=Ctx, state_backend=backend).run_async(
            "hard", run_id="n"
        )
    assert first.status == "paused" and first.paused is not None
    assert first.paused.path == ("inner", "route", "score")
    assert first.paused.message == "Score 'hard' for run n"
    assert first.paused.input_schema == Verdict.model_json_schema()
    # A new process: a new backend object and a new runner on the same file.
    async with SQLiteBackend(db) as backend:
        assert await backend.list_runs("paused") == ["n"]
        runner = Flujo(build(), context_model=Ctx, state_backend=backend)
        with pytest.raises(HumanInputError, match=r"Verdict refused it"):
            await runner.resume_async("n", human_input={"score": "high"})
        done = await runner.resume_async("n", human_input={"score": 7})
        assert (done.status, done.output) == ("completed", 7)
        assert done.final_pipeline_context.answer == Verdict(score=7)
        assert (await backend.load_state("n")).status == "completed"  # type: ignore[union-attr]
    assert calls == Counter({"first": 1, "prep": 1, "after": 1})


def test_sink_to_must_be_a_context_field_and_bad_definitions_are_refused() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Human input step 'ask': sink_to='nope' is not a field of the context model Ctx "
        r"\(fields: \[.*\]\); add the field to the model or fix sink_to\.$",
    ):
        Flujo(Step.human_input("ask", "?", sink_to="nope"), context_model=Ctx)
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Human input step 'ask': message must be a non-empty string or a callable "
        r"\(data, context\) -> str, got ''\.$",
    ):
        Step.human_input("ask", "")
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Human input step 'ask': input_model must be an attrs class, a pydantic model "
        r"class, or None \(any JSON value\), got 3\.$",
    ):
        Step.human_input("ask", "?", input_model=3)  # type: ignore[arg-type]


async def test_human_input_for_a_run_that_is_not_paused_is_refused() -> None:
    backend = InMemoryStateBackend()
    runner = Flujo(counted("a"), context_model=Ctx, state_backend=backend)
    await runner.run_async(1, run_id="c")
    with pytest.raises(
        HumanInputError,
        match=r"^Run 'c' is completed, not paused: it waits for no human input\. Resume it "
        r"without human_input \(you get its stored result\)\.$",
    ):
        await runner.resume_async("c", human_input="x")


async def test_the_status_returned_is_the_status_stored() -> None:
    backend = InMemoryStateBackend()

    def boom(x: Any) -> Any:
        raise ValueError("no")

    ok = await Flujo(counted("a"), context_model=Ctx, state_backend=backend).run_async(
        1, run_id="ok"
    )
    bad = await Flujo(Step.from_callable(boom, max_retries=0), state_backend=backend).run_async(
        1, run_id="bad"
    )
    assert (ok.status, bad.status) == ("completed", "failed")
    for result in (ok, bad):
        snap = await backend.load_state(result.run_id)
        assert snap is not None and snap.status == result.status
    assert await backend.list_runs("failed") == ["bad"]
    assert await backend.list_runs("completed") == ["ok"]


async def test_a_cancelled_run_is_stored_as_cancelled_and_can_be_resumed(
    autojump_clock: trio.abc.Clock,
) -> None:
    backend = InMemoryStateBackend()
    started = trio.Event()

    async def slow(x: int) -> int:
        started.set()
        await trio.sleep(10)
        return x + 1

    runner = Flujo(
        counted("a") >> Step.from_callable(slow), context_model=Ctx, state_backend=backend
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run_async, 1)
        await started.wait()
        nursery.cancel_scope.cancel()
    ids = await backend.list_runs("cancelled")
    assert len(ids) == 1
    done = await runner.resume_async(ids[0])
    assert (done.status, done.output) == ("completed", 2)
    assert calls["a"] == 1


async def test_a_message_callable_that_raises_fails_the_step_without_pausing() -> None:
    def message(data: Any, context: Ctx) -> str:
        raise KeyError(data)

    result = await Flujo(Step.human_input("ask", message), context_model=Ctx).run_async("q")
    assert (result.status, result.success) == ("failed", False)
    [ask] = result.step_history
    assert (ask.name, ask.success, ask.output, ask.attempts) == ("ask", False, None, 1)
    assert ask.feedback == "Human input step 'ask': its message callable raised KeyError: 'q'"
