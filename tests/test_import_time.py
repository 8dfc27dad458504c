"""What ``import flujo_actors`` (and the pipeline core) import: nothing optional, nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

NEVER_AT_IMPORT = (
    "cattrs",
    "asyncio",
    "trio_asyncio",
    "pydantic",
    "sqlite3",
    "psycopg",
    "ray",
    "rich",
    "genai_prices",
    "openai",
    "anthropic",
)


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_flujo_actors_imports_no_submodule_and_no_optional_dependency() -> None:
    loaded = _modules_after("import flujo_actors")
    assert sorted(m for m in loaded if m.split(".")[0] in NEVER_AT_IMPORT) == []
    assert sorted(m for m in loaded if m.startswith("flujo_actors.")) == []
    assert "trio" not in loaded


def test_the_pipeline_core_and_a_run_import_no_optional_dependency() -> None:
    loaded = _modules_after(
        "import trio\n"
        "from flujo_actors import Flujo, Pipeline, Step\n"
        "pipeline = Pipeline([Step.from_callable(lambda x: x + 1, name='a')])\n"
        "assert trio.run(Flujo(pipeline).run_async, 1).output == 2"
    )
    assert sorted(m for m in loaded if m.split(".")[0] in NEVER_AT_IMPORT) == []
    assert "trio.testing" not in loaded


#: The run machinery: it loads with the first runner, not with ``Flujo`` itself.
RUN_MACHINERY = (
    "flujo_actors.run",
    "flujo_actors.governor",
    "flujo_actors.actors",
    "flujo_actors.runner_run",
    "flujo_actors.policy.attempt",
)


def test_the_pipeline_core_names_load_no_run_machinery() -> None:
    loaded = _modules_after("from flujo_actors import Flujo, Pipeline, Step")
    machinery = [
        m
        for m in loaded
        if m in RUN_MACHINERY or m.startswith(tuple(f"{p}." for p in RUN_MACHINERY))
    ]
    assert sorted(machinery) == []
    assert "uuid" not in loaded


def test_the_run_machinery_loads_when_a_runner_is_built() -> None:
    loaded = _modules_after(
        "from flujo_actors import Flujo, Step\n"
        "runner = Flujo(Step.from_callable(lambda x: x, name='a'))"
    )
    assert {"flujo_actors.run.core", "flujo_actors.governor", "flujo_actors.runner_run"} <= loaded


def test_public_names_load_on_first_use() -> None:
    loaded = _modules_after(
        "import flujo_actors\n"
        "assert flujo_actors.Step.__module__ == 'flujo_actors.steps.dsl'\n"
        "assert 'Flujo' in dir(flujo_actors)"
    )
    assert "flujo_actors.steps.dsl" in loaded
    assert "cattrs" not in loaded


def test_stored_package_types_load_in_a_process_that_only_imported_flujo_actors() -> None:
    loaded = _modules_after(
        "from flujo_actors.serialization import load_typed\n"
        "ctx = load_typed({'__flujo_type__': 'flujo_actors.context:PipelineContext',\n"
        "                  'value': {'initial_prompt': 'p', 'run_id': 'r'}})\n"
        "assert type(ctx).__name__ == 'PipelineContext' and ctx.run_id == 'r'"
    )
    assert "flujo_actors.context" in loaded


#: Step kinds and code a pipeline of agent steps never needs: they load on first use.
ON_FIRST_USE = (
    "flujo_actors.steps.control",
    "flujo_actors.steps.human",
    "flujo_actors.steps.map",
    "flujo_actors.policy.stream",
    "flujo_actors.policy.usage",
    "flujo_actors.runner_checkpoints",
    "flujo_actors.runner_recovery",
)


def test_the_pipeline_core_loads_no_other_step_kind_nor_resume_code() -> None:
    loaded = _modules_after("from flujo_actors import Flujo, Pipeline, Step")
    assert sorted(m for m in loaded if m in ON_FIRST_USE) == []


def test_the_other_kinds_load_with_their_names_and_factories() -> None:
    loaded = _modules_after(
        "from flujo_actors import AnyStep, Step\n"
        "from flujo_actors.steps.control import LoopStep, ParallelStep\n"
        "from flujo_actors.steps.dsl import MapStep as dsl_map\n"
        "from flujo_actors.steps.map import MapStep\n"
        "assert dsl_map is MapStep and MapStep in AnyStep.__args__\n"
        "a = Step.from_callable(lambda x: x, name='a')\n"
        "assert type(Step.loop_until('l', a, lambda o, c: True)) is LoopStep\n"
        "assert type(Step.parallel('p', {'x': a})) is ParallelStep"
    )
    assert {"flujo_actors.steps.control", "flujo_actors.steps.map"} <= loaded
