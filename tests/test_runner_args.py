"""``Flujo(...)`` checks its arguments when it is built, not mid-run.

Backends are checked against their protocols (a path string means a SQLite
file), resources against what cannot be one, ``trace`` is a real boolean, and
``initial_context_data`` is checked against the context model: unknown fields,
values the model refuses and the identity fields a user must not set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from flujo_actors import (
    Flujo,
    InMemoryLRUBackend,
    InMemoryStateBackend,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    SQLiteBackend,
    Step,
)
from flujo_actors.steps.dsl import PipelineStep


@attrs.define
class Ctx(PipelineContext):
    notes: list[str] = attrs.Factory(list)
    count: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))


@attrs.define
class Needs(PipelineContext):
    tenant: str = attrs.field(kw_only=True)


async def note(data: str, *, context: Ctx) -> str:
    context.notes.append(data)
    return data


STEP = Step.from_callable(note)


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


STATE = (
    "Flujo: state_backend must implement the StateBackend protocol (async create_run, "
    "save_state, save_states, load_state, delete_state, list_runs, prune, save_positions, "
    "load_positions, aclose); got {value}: "
    "{problem}. Pass e.g. state_backend=SQLiteBackend('runs.db') or InMemoryStateBackend()."
)


# -- item 18: backends, resources, trace ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            {},
            "it lacks create_run, save_state, save_states, load_state, delete_state, "
            "list_runs, prune, save_positions, load_positions, aclose",
        ),
        (42, "it lacks create_run, save_state, save_states, load_state, delete_state, list_runs, prune, save_positions, load_positions, aclose"),
        (InMemoryLRUBackend(), "it lacks create_run, save_state, save_states, load_state, delete_state, list_runs, prune, save_positions, load_positions, aclose"),
    ],
    ids=["dict", "int", "a-cache-backend"],
)  # fmt: skip
def test_a_state_backend_without_the_protocol_is_refused(value: Any, problem: str) -> None:
    with pytest.raises(
        PipelineDefinitionError, match=_exact(STATE.format(value=repr(value), problem=problem))
    ):
        Flujo(STEP, context_model=Ctx, state_backend=value)


class SyncState(InMemoryStateBackend):
    def load_state(self, run_id: str) -> Any:
        return None


def test_a_state_backend_with_sync_methods_is_refused() -> None:
    backend = SyncState()
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(STATE.format(value=repr(backend), problem="load_state is not async")),
    ):
        Flujo(STEP, context_model=Ctx, state_backend=backend)


@pytest.mark.parametrize("kind", [str, Path])
async def test_a_path_means_a_sqlite_file(tmp_path: Path, kind: type) -> None:
    path = tmp_path / "runs.db"
    runner = Flujo(STEP, context_model=Ctx, state_backend=kind(path))
    assert isinstance(runner.state_backend, SQLiteBackend)
    assert runner.state_backend.path == str(path)
    result = await runner.run_async("hi", run_id="r1")
    assert result.success
    resumed = await runner.resume_async("r1")
    assert resumed.output == "hi"
    await runner.state_backend.aclose()


def test_a_bad_path_is_refused_naming_it() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: state_backend='': SQLiteBackend: path must be a file name (or ':memory:'), "
            "got ''."
        ),
    ):
        Flujo(STEP, context_model=Ctx, state_backend="")


@pytest.mark.parametrize(
    ("value", "problem"),
    [({}, "it lacks put; get is not async"), ("cache", "it lacks get, put"), (InMemoryStateBackend(), "it lacks get, put")],
    ids=["dict", "str", "a-state-backend"],
)  # fmt: skip
def test_a_cache_backend_without_the_protocol_is_refused(value: Any, problem: str) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: cache_backend must implement the CacheBackend protocol (async get, put); "
            f"got {value!r}: {problem}. Pass e.g. cache_backend=InMemoryLRUBackend()."
        ),
    ):
        Flujo(STEP, context_model=Ctx, cache_backend=value)


def test_real_backends_are_accepted() -> None:
    runner = Flujo(
        STEP,
        context_model=Ctx,
        state_backend=InMemoryStateBackend(),
        cache_backend=InMemoryLRUBackend(),
    )
    assert isinstance(runner.state_backend, InMemoryStateBackend)
    assert isinstance(runner.cache_backend, InMemoryLRUBackend)


def test_a_coroutine_object_as_resources_is_refused() -> None:
    async def make_client() -> dict[str, str]:
        return {}

    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: resources is a coroutine object (make_client() was not awaited); pass its "
            "result: resources=await make_client(...)."
        ),
    ):
        Flujo(STEP, context_model=Ctx, resources=make_client())


@pytest.mark.parametrize("value", ["no", 1, None])
def test_trace_must_be_a_boolean(value: Any) -> None:
    with pytest.raises(
        PipelineDefinitionError, match=_exact(f"Flujo: trace must be True or False, got {value!r}.")
    ):
        Flujo(STEP, context_model=Ctx, trace=value)


def test_other_wrong_arguments_are_still_refused() -> None:
    with pytest.raises(
        PipelineDefinitionError, match=r"^Flujo: usage_limits must be a UsageLimits"
    ):
        Flujo(STEP, context_model=Ctx, usage_limits={"total_cost_usd_limit": 1})  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match=r"^Flujo: hooks must be a list of callables"):
        Flujo(STEP, context_model=Ctx, hooks=print)  # type: ignore[arg-type]


# -- item 19: initial_context_data ------------------------------------------------------------


def test_unknown_fields_are_reported_when_the_runner_is_built() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: initial_context_data has field(s) ['nope', 'other'] that the context model "
            "Ctx does not define; its fields are ['scratchpad', 'executed_branches', 'notes', "
            "'count']. Add them to the model (a subclass with @attrs.define) or drop them."
        ),
    ):
        Flujo(STEP, context_model=Ctx, initial_context_data={"nope": 1, "count": 2, "other": 3})


def test_values_the_model_refuses_are_reported_when_the_runner_is_built() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: initial_context_data cannot build context Ctx: TypeError: 'count' must be "
            "<class 'int'> (got 'x' that is a <class 'str'>). Pass values the model accepts "
            "(and every field it requires)."
        ),
    ):
        Flujo(STEP, context_model=Ctx, initial_context_data={"count": "x"})


def test_a_required_field_missing_from_the_data_is_reported_when_built() -> None:
    echo = Step.from_callable(lambda data: data, name="echo")
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Flujo: initial_context_data cannot build context Needs: TypeError: .*'tenant'",
    ):
        Flujo(echo, context_model=Needs)
    assert Flujo(echo, context_model=Needs, initial_context_data={"tenant": "t"}).run("x").success


@pytest.mark.parametrize(
    ("field", "hint"),
    [
        ("run_id", "pass run_async(..., run_id=...) to choose a run's id"),
        ("initial_prompt", "it is set from each run's input"),
    ],
)
def test_identity_fields_cannot_be_set(field: str, hint: str) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Flujo: initial_context_data sets {field!r}, which identifies the run and is set "
            f"by the runner; drop it ({hint})."
        ),
    ):
        Flujo(STEP, context_model=Ctx, initial_context_data={field: "x"})


def test_keys_must_be_field_names() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact("Flujo: initial_context_data keys must be field names (str), got 1."),
    ):
        Flujo(STEP, context_model=Ctx, initial_context_data={1: "x"})  # type: ignore[dict-item]


async def test_each_run_starts_from_its_own_copy_of_the_data() -> None:
    data = {"notes": ["seed"]}
    runner = Flujo(STEP, context_model=Ctx, initial_context_data=data)
    first = await runner.run_async("a")
    second = await runner.run_async("b")
    assert first.final_pipeline_context.notes == ["seed", "a"]
    assert second.final_pipeline_context.notes == ["seed", "b"]
    assert data == {"notes": ["seed"]}


def test_nested_pipeline_context_data_is_checked_against_its_model() -> None:
    inner = Pipeline.from_step(Step.from_callable(note, name="inner"))
    nested = Flujo(inner, context_model=Ctx, initial_context_data={"count": 1}).as_step("n")
    assert Flujo(nested).run("x").success
    bad = PipelineStep(
        name="n",
        pipeline=inner,
        inherit_context=False,
        context_model=Ctx,
        initial_context_data={"nope": 1},
    )
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Nested pipeline step 'n': initial_context_data has field\(s\) \['nope'\] that "
        r"the context model Ctx does not define",
    ):
        Flujo(bad)
    # Without its own model it gets the runner's: checked against that one.
    fresh = PipelineStep(
        name="n", pipeline=inner, inherit_context=False, initial_context_data={"count": "x"}
    )
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Nested pipeline step 'n': initial_context_data cannot build context Ctx: ",
    ):
        Flujo(fresh, context_model=Ctx)


def test_context_options_of_a_nested_pipeline_sharing_the_parent_context_are_refused() -> None:
    inner = Pipeline.from_step(Step.from_callable(note))
    cases: list[tuple[str, dict[str, Any]]] = [
        ("initial_context_data", {"initial_context_data": {"count": 1}}),
        ("context_model", {"context_model": Ctx}),
    ]
    for option, kwargs in cases:
        with pytest.raises(
            PipelineDefinitionError,
            match=_exact(
                f"Step 'n': {option} has no effect with inherit_context=True (the nested "
                "pipeline shares the parent's context); pass inherit_context=False for a fresh "
                "context built from it."
            ),
        ):
            PipelineStep(name="n", pipeline=inner, **kwargs)
    with pytest.raises(PipelineDefinitionError, match=r"context_model must be an attrs class"):
        PipelineStep(name="n", pipeline=inner, inherit_context=False, context_model=dict)


def test_a_built_runner_keeps_the_settings_it_checked() -> None:
    runner = Flujo(STEP, context_model=Ctx, initial_context_data={"count": 1})
    for attr, value in [("state_backend", "x.db"), ("cache_backend", {}), ("pipeline", None)]:
        with pytest.raises(
            PipelineDefinitionError,
            match=_exact(
                f"Flujo: {attr} cannot be changed once the runner is built (it was checked "
                f"then); build a new runner: Flujo(..., {attr}=...)."
            ),
        ):
            setattr(runner, attr, value)
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Flujo: initial_context_data cannot be changed once built; build a new runner "
            "with the initial_context_data you want."
        ),
    ):
        runner.initial_context_data["nope"] = 2  # type: ignore[index]
    assert runner.state_backend is None
    assert runner.run("x").final_pipeline_context.count == 1
