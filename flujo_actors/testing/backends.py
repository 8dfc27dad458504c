"""A conformance suite for :class:`~flujo_actors.backends.state.StateBackend` implementations.

Call it from your own tests, inside trio::

    async def test_my_backend(tmp_path):
        counter = itertools.count()
        await check_state_backend(lambda: MyBackend(tmp_path / f"{next(counter)}.db"))

Every check gets a fresh backend from ``factory`` and closes it afterwards.
A failed check raises AssertionError naming the check and what differed.

(Over 500 lines: one check function per protocol rule, in the order the
protocol lists them; lease checks are already in ``testing.leases``.)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import trio

from ..backends.state import PositionRecord, RunCheckpoint, RunSnapshot, StateBackend
from ..errors import RunExistsError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["StateBackendFactory", "check_state_backend"]

StateBackendFactory: TypeAlias = Callable[[], "StateBackend | Awaitable[StateBackend]"]
"""Makes a new, empty backend (sync or async)."""

# Awkward on purpose: quotes, unicode, an emoji, SQL-ish text.
_ODD_RUN_ID = "run 'quoted' \"double\" ; DROP TABLE runs; -- ünï ✓ 🎉"


def _checkpoint(run_id: str, **changes: Any) -> RunCheckpoint:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "pipeline_name": "pipe",
        "status": "running",
        "next_step_index": 0,
        "context": {"run_id": run_id, "scratchpad": {}},
        "initial_input": "go",
    }
    fields.update(changes)
    return RunCheckpoint(**fields)


def _expect(check: str, condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"check_state_backend[{check}]: {message}")


async def _load(check: str, backend: StateBackend, run_id: str) -> RunSnapshot:
    snapshot = await backend.load_state(run_id)
    _expect(check, snapshot is not None, f"load_state({run_id!r}) returned None after a save")
    assert snapshot is not None  # for the type checker; _expect raised otherwise
    return snapshot


async def _check_empty(backend: StateBackend) -> None:
    check = "empty"
    found = await backend.load_state("missing")
    _expect(check, found is None, f"load_state of an unknown run returned {found!r}")
    runs = await backend.list_runs()
    _expect(check, runs == [], f"a new backend lists runs {runs!r}")
    await backend.delete_state("missing")  # must be a no-op


async def _check_round_trip(backend: StateBackend) -> None:
    check = "round_trip"
    context = {
        "initial_prompt": "héllo \u2603 \"quotes\" 'single' \\ backslash",
        "scratchpad": {"nested": {"list": [1, 2.5, None, True, False, "x"]}, "empty": {}},
        "executed_branches": ["a", "b"],
        "big": 2**70,
        "float": 0.1,
    }
    # What is saved is what loads back, field for field.
    fields: dict[str, Any] = {
        "status": "paused",
        "next_step_index": 2,
        "context": context,
        "initial_input": {"question": "why?", "n": [1, 2, 3]},
        "output": ["out", {"k": 1}],
        "total_cost_usd": "0.30000000000000000001",
        "total_tokens": 42,
        "updated_at": 1234.5,
    }
    steps = ({"name": "first", "output": 1}, {"name": "second", "output": [2]})
    await backend.save_state(_ODD_RUN_ID, _checkpoint(_ODD_RUN_ID, new_steps=steps, **fields))
    snapshot = await _load(check, backend, _ODD_RUN_ID)
    expected = RunSnapshot(run_id=_ODD_RUN_ID, pipeline_name="pipe", step_history=steps, **fields)
    _expect(check, snapshot == expected, f"loaded {snapshot!r}, expected {expected!r}")
    _expect(
        check,
        type(snapshot.step_history) is tuple,
        f"step_history is a {type(snapshot.step_history).__name__}, expected a tuple",
    )


async def _check_append(backend: StateBackend) -> None:
    check = "append"
    run_id = "appending"
    await backend.save_state(run_id, _checkpoint(run_id, next_step_index=1, new_steps=({"i": 0},)))
    await backend.save_state(
        run_id,
        _checkpoint(run_id, next_step_index=3, new_steps=({"i": 1}, {"i": 2}), output="two"),
    )
    await backend.save_state(
        run_id,
        _checkpoint(run_id, status="completed", next_step_index=3, output="done"),
    )
    snapshot = await _load(check, backend, run_id)
    history = ({"i": 0}, {"i": 1}, {"i": 2})
    _expect(
        check,
        snapshot.step_history == history,
        f"history after three checkpoints is {snapshot.step_history!r}, expected {history!r} "
        "(new_steps must be appended, in order)",
    )
    _expect(
        check,
        (snapshot.status, snapshot.next_step_index, snapshot.output) == ("completed", 3, "done"),
        f"the run row was not updated by the last checkpoint: {snapshot!r}",
    )


async def _check_batch(backend: StateBackend) -> None:
    check = "save_states"
    batch: Sequence[RunCheckpoint] = [
        _checkpoint("a", new_steps=({"a": 0},)),
        _checkpoint("b", new_steps=({"b": 0},)),
        _checkpoint("a", next_step_index=2, new_steps=({"a": 1}, {"a": 2}), output="a2"),
        _checkpoint("b", status="failed", next_step_index=1),
    ]
    await backend.save_states(batch)
    await backend.save_states([])  # an empty batch is a no-op
    a = await _load(check, backend, "a")
    b = await _load(check, backend, "b")
    _expect(
        check,
        a.step_history == ({"a": 0}, {"a": 1}, {"a": 2}) and a.output == "a2",
        f"run 'a' after the batch: {a!r}",
    )
    _expect(
        check,
        b.step_history == ({"b": 0},) and b.status == "failed",
        f"run 'b' after the batch: {b!r}",
    )


async def _check_list_runs(backend: StateBackend) -> None:
    check = "list_runs"
    await backend.save_state("r1", _checkpoint("r1"))
    await backend.save_state("c1", _checkpoint("c1", status="completed"))
    await backend.save_state("r2", _checkpoint("r2"))
    await backend.save_state("f1", _checkpoint("f1", status="failed"))
    await backend.save_state("c1", _checkpoint("c1", status="completed"))  # no duplicate
    listed = sorted(await backend.list_runs())
    _expect(check, listed == ["c1", "f1", "r1", "r2"], f"list_runs() returned {listed!r}")
    running = sorted(await backend.list_runs("running"))
    _expect(check, running == ["r1", "r2"], f"list_runs('running') returned {running!r}")
    paused = await backend.list_runs("paused")
    _expect(check, paused == [], f"list_runs('paused') returned {paused!r}")
    await backend.save_state("r1", _checkpoint("r1", status="completed"))
    completed = sorted(await backend.list_runs("completed"))
    _expect(
        check,
        completed == ["c1", "r1"],
        f"after r1 completed, list_runs('completed') returned {completed!r}",
    )


async def _check_delete(backend: StateBackend) -> None:
    check = "delete"
    await backend.save_state("gone", _checkpoint("gone", new_steps=({"old": 1},)))
    await backend.save_state("kept", _checkpoint("kept", new_steps=({"kept": 1},)))
    await backend.delete_state("gone")
    found = await backend.load_state("gone")
    _expect(check, found is None, f"load_state after delete_state returned {found!r}")
    listed = await backend.list_runs()
    _expect(check, listed == ["kept"], f"list_runs() after delete returned {listed!r}")
    await backend.save_state("gone", _checkpoint("gone", new_steps=({"new": 1},)))
    again = await _load(check, backend, "gone")
    _expect(
        check,
        again.step_history == ({"new": 1},),
        f"a run saved again after delete_state has the history {again.step_history!r}; "
        "delete_state must drop the old steps",
    )
    kept = await _load(check, backend, "kept")
    _expect(check, kept.step_history == ({"kept": 1},), f"another run was affected: {kept!r}")


async def _check_prune(backend: StateBackend) -> None:
    check = "prune"
    old, now = 1_000.0, time.time()  # updated_at is wall-clock time.time()
    rows = {
        "old-done": ("completed", old),
        "old-failed": ("failed", old),
        "old-running": ("running", old),
        "new-done": ("completed", now),
    }
    for run_id, (status, at) in rows.items():
        await backend.save_state(
            run_id, _checkpoint(run_id, status=status, updated_at=at, new_steps=({"s": 1},))
        )
    for bad in ({}, {"older_than_s": -1}, {"older_than_s": True}, {"status": "nope"}):
        try:
            await backend.prune(**bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"check_state_backend[{check}]: prune(**{bad!r}) did not raise")
    left = sorted(await backend.list_runs())
    _expect(check, len(left) == 4, f"a refused prune deleted runs: {left!r} are left")
    gone = sorted(await backend.prune(older_than_s=3_600))
    _expect(
        check,
        gone == ["old-done", "old-failed"],
        f"prune(older_than_s=3600) returned {gone!r}; it must delete the finished runs not "
        "updated for an hour and keep running ones",
    )
    left = sorted(await backend.list_runs())
    _expect(check, left == ["new-done", "old-running"], f"after prune, list_runs() is {left!r}")
    await backend.save_state(
        "old-done",
        _checkpoint("old-done", status="failed", updated_at=now, new_steps=({"new": 1},)),
    )
    again = await _load(check, backend, "old-done")
    _expect(
        check,
        again.step_history == ({"new": 1},),
        f"a pruned run saved again has the history {again.step_history!r}",
    )
    gone = await backend.prune(status="running", older_than_s=3_600)
    _expect(check, gone == ["old-running"], f"prune(status='running', ...) returned {gone!r}")
    gone = sorted(await backend.prune(status="completed"))
    _expect(check, gone == ["new-done"], f"prune(status='completed') returned {gone!r}")
    left = await backend.list_runs()
    _expect(check, left == ["old-done"], f"after the last prune, list_runs() is {left!r}")


async def _check_isolation(backend: StateBackend) -> None:
    check = "isolation"
    await backend.save_state("x", _checkpoint("x", context={"who": "x"}, new_steps=({"x": 1},)))
    await backend.save_state("y", _checkpoint("y", context={"who": "y"}, new_steps=({"y": 1},)))
    await backend.save_state("x", _checkpoint("x", context={"who": "x2"}, new_steps=({"x": 2},)))
    x = await _load(check, backend, "x")
    y = await _load(check, backend, "y")
    _expect(
        check,
        x.step_history == ({"x": 1}, {"x": 2}) and x.context == {"who": "x2"},
        f"run 'x' mixed with another run: {x!r}",
    )
    _expect(
        check,
        y.step_history == ({"y": 1},) and y.context == {"who": "y"},
        f"run 'y' mixed with another run: {y!r}",
    )


async def _check_no_aliasing(backend: StateBackend) -> None:
    check = "no_aliasing"
    context: dict[str, Any] = {"scratchpad": {"items": [1]}}
    output: list[Any] = [{"v": 1}]
    row: dict[str, Any] = {"name": "s", "meta": {"k": [1]}}
    await backend.save_state(
        "alias", _checkpoint("alias", context=context, output=output, new_steps=(row,))
    )
    context["scratchpad"]["items"].append(2)
    output[0]["v"] = 99
    row["meta"]["k"].append(2)
    first = await _load(check, backend, "alias")
    _expect(
        check,
        first.context == {"scratchpad": {"items": [1]}}
        and first.output == [{"v": 1}]
        and first.step_history == ({"name": "s", "meta": {"k": [1]}},),
        f"mutating the caller's objects after save_state changed the stored run: {first!r}",
    )
    first.context["scratchpad"]["items"].append(3)
    first.step_history[0]["meta"]["k"].append(3)
    second = await _load(check, backend, "alias")
    _expect(
        check,
        second.context == {"scratchpad": {"items": [1]}}
        and second.step_history == ({"name": "s", "meta": {"k": [1]}},),
        f"mutating a loaded snapshot changed the stored run: {second!r}",
    )


async def _check_create_run(backend: StateBackend) -> None:
    check = "create_run"
    first = _checkpoint("nightly", context={"who": "first"}, pipeline_fingerprint="fp-first")
    await backend.create_run(first)
    await backend.save_state(
        "nightly", _checkpoint("nightly", next_step_index=1, new_steps=({"step": "a"},))
    )
    try:
        await backend.create_run(
            _checkpoint("nightly", context={"who": "second"}, pipeline_fingerprint="fp-second")
        )
    except RunExistsError as exc:
        _expect(check, exc.run_id == "nightly", f"RunExistsError.run_id is {exc.run_id!r}")
        _expect(
            check,
            "nightly" in str(exc) and "resume_async" in str(exc),
            f"the RunExistsError message does not name the run id and the fixes: {exc}",
        )
    else:
        _expect(check, False, "create_run of a stored run id did not raise RunExistsError")
    snapshot = await _load(check, backend, "nightly")
    _expect(
        check,
        snapshot.step_history == ({"step": "a"},)
        and snapshot.next_step_index == 1
        and snapshot.pipeline_fingerprint == "fp-first",
        f"a refused create_run changed the stored run: {snapshot!r}",
    )
    await backend.delete_state("nightly")
    await backend.create_run(_checkpoint("nightly", context={"who": "again"}))
    again = await _load(check, backend, "nightly")
    _expect(
        check,
        again.context == {"who": "again"} and again.step_history == (),
        f"create_run after delete_state did not start a new run: {again!r}",
    )


async def _check_concurrent_create(backend: StateBackend) -> None:
    check = "concurrent_create"
    winners: list[int] = []
    refused: list[int] = []

    async def start(i: int) -> None:
        try:
            await backend.create_run(
                _checkpoint("shared", context={"who": i}, new_steps=({"by": i},))
            )
        except RunExistsError:
            refused.append(i)
        else:
            winners.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(start, i)
    _expect(
        check,
        len(winners) == 1 and len(refused) == 4,
        f"of 5 concurrent create_run calls with one id, {sorted(winners)!r} succeeded and "
        f"{sorted(refused)!r} were refused; exactly one must succeed",
    )
    snapshot = await _load(check, backend, "shared")
    expected = ({"by": winners[0]},)
    _expect(
        check,
        snapshot.context == {"who": winners[0]} and snapshot.step_history == expected,
        f"the stored run is not the winner's ({winners[0]}): {snapshot!r}",
    )


async def _check_fingerprint(backend: StateBackend) -> None:
    check = "fingerprint"
    fingerprint = '{"pipeline":{"name":"p \u00fc","steps":[]}}'
    await backend.create_run(_checkpoint("fp", pipeline_fingerprint=fingerprint))
    snapshot = await _load(check, backend, "fp")
    _expect(
        check,
        snapshot.pipeline_fingerprint == fingerprint,
        f"create_run stored the fingerprint {snapshot.pipeline_fingerprint!r}, "
        f"expected {fingerprint!r}",
    )
    await backend.save_state("fp", _checkpoint("fp", next_step_index=1))
    kept = await _load(check, backend, "fp")
    _expect(
        check,
        kept.pipeline_fingerprint == fingerprint,
        f"a checkpoint without a fingerprint changed the stored one to "
        f"{kept.pipeline_fingerprint!r}; None must keep it",
    )
    await backend.save_states([_checkpoint("fp", next_step_index=2, pipeline_fingerprint="fp-2")])
    replaced = await _load(check, backend, "fp")
    _expect(
        check,
        replaced.pipeline_fingerprint == "fp-2",
        f"a checkpoint with a new fingerprint left {replaced.pipeline_fingerprint!r}",
    )
    await backend.save_state("legacy", _checkpoint("legacy"))
    legacy = await _load(check, backend, "legacy")
    _expect(
        check,
        legacy.pipeline_fingerprint is None,
        f"a run saved without a fingerprint loads with {legacy.pipeline_fingerprint!r}",
    )
    await backend.delete_state("fp")
    await backend.create_run(_checkpoint("fp"))
    fresh = await _load(check, backend, "fp")
    _expect(
        check,
        fresh.pipeline_fingerprint is None,
        f"delete_state kept the old fingerprint {fresh.pipeline_fingerprint!r}",
    )


async def _check_positions(backend: StateBackend) -> None:
    check = "positions"
    found = await backend.load_positions("p")
    _expect(check, found == {}, f"load_positions of an unknown run returned {found!r}")
    await backend.create_run(_checkpoint("p"))
    await backend.create_run(_checkpoint("other"))
    output: list[Any] = [1, "ü", None]
    record = {"result": {"output": output}, "changes": {"fields": {"n": 2**70}}}
    await backend.save_positions(
        [
            PositionRecord(run_id="p", position='["loop",1,"a"]', record=record),
            PositionRecord(run_id="p", position='["loop","1","a"]', record={"n": 1}),
            PositionRecord(run_id="other", position='["loop",1,"a"]', record={"n": 3}),
        ]
    )
    output.append("mutated after saving")
    loaded = await backend.load_positions("p")
    _expect(
        check,
        loaded
        == {
            '["loop",1,"a"]': {
                "result": {"output": [1, "ü", None]},
                "changes": {"fields": {"n": 2**70}},
            },
            '["loop","1","a"]': {"n": 1},
        },
        f"load_positions returned {loaded!r} (records must round-trip, keys stay distinct, "
        "runs stay apart, and the caller's objects are not aliased)",
    )
    loaded['["loop","1","a"]']["n"] = 99
    await backend.save_positions([PositionRecord(run_id="p", position='["x"]', record=None)])
    await backend.save_positions(
        [PositionRecord(run_id="p", position='["loop","1","a"]', record={"n": 2})]
    )
    again = await backend.load_positions("p")
    _expect(
        check,
        again.get('["loop","1","a"]') == {"n": 2} and len(again) == 3 and again['["x"]'] is None,
        f"saving a position again must replace its record; loaded {again!r}",
    )
    await backend.save_positions([])  # an empty batch is a no-op
    await backend.delete_state("p")
    gone = await backend.load_positions("p")
    _expect(check, gone == {}, f"delete_state kept the run's positions {gone!r}")
    kept = await backend.load_positions("other")
    _expect(check, kept == {'["loop",1,"a"]': {"n": 3}}, f"another run's positions: {kept!r}")


_CHECKS: tuple[Callable[[StateBackend], Awaitable[None]], ...] = (
    _check_empty,
    _check_round_trip,
    _check_append,
    _check_batch,
    _check_list_runs,
    _check_delete,
    _check_prune,
    _check_isolation,
    _check_no_aliasing,
    _check_create_run,
    _check_concurrent_create,
    _check_fingerprint,
    _check_positions,
)


async def check_state_backend(factory: StateBackendFactory) -> None:
    """Run the StateBackend conformance checks against backends made by ``factory``.

    Checks: unknown runs load as ``None``; a save/load round trip preserves
    every field (odd run ids, unicode, big ints, exact cost strings);
    ``new_steps`` of successive checkpoints are appended in order; a
    ``save_states`` batch applies in order; ``list_runs`` with and without a
    status filter; ``delete_state`` drops the run and its history; ``prune``
    follows its retention rules (filters checked, running runs kept unless
    asked for, history dropped); runs are
    isolated from each other; stored data is aliased neither to the caller's
    objects nor to loaded snapshots; ``create_run`` refuses a stored run id
    with :class:`~flujo_actors.errors.RunExistsError` and changes nothing; of
    five concurrent ``create_run`` calls with one id exactly one succeeds; the
    pipeline fingerprint round-trips (kept by checkpoints without one,
    replaced by one with one, dropped by ``delete_state``); completed
    positions round-trip per run (``save_positions`` replaces a position
    saved again, ``delete_state`` drops them); ``aclose`` is idempotent.

    Args:
        factory: Returns a new, empty backend each call (or an awaitable of
            one). It is called once per check.

    Raises:
        AssertionError: A check failed (the message names it).
    """
    for run_check in _CHECKS:
        made = factory()
        backend: StateBackend = await made if inspect.isawaitable(made) else made
        _expect(
            "protocol",
            isinstance(backend, StateBackend),
            f"factory() returned {backend!r}, which lacks StateBackend methods",
        )
        try:
            await run_check(backend)
        finally:
            await backend.aclose()
        await backend.aclose()  # idempotent
