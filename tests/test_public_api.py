"""The public surface: explicit re-exports and __all__ everywhere."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import flujo_actors


def test_every_public_module_has_dunder_all() -> None:
    missing = []
    for info in pkgutil.walk_packages(flujo_actors.__path__, "flujo_actors."):
        if info.name.startswith("flujo_actors.bench") or ".executors." in info.name:
            continue  # optional extras / the harness are checked by their own tests
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if not hasattr(module, "__all__"):
            missing.append(info.name)
    assert missing == []


def test_top_level_all_names_resolve_and_are_sorted() -> None:
    for name in flujo_actors.__all__:
        assert getattr(flujo_actors, name) is not None, name
    assert len(set(flujo_actors.__all__)) == len(flujo_actors.__all__)


def test_api_md_names_are_importable_from_the_top_level() -> None:
    for name in (
        "Step", "StepConfig", "Pipeline", "step", "Flujo", "PipelineContext", "StepResult",
        "PipelineResult", "MergeStrategy", "BranchFailureStrategy", "ParallelStep", "LoopStep",
        "ConditionalStep", "DynamicParallelRouterStep", "PluginOutcome", "UsageLimits",
        "UsageLimitExceededError", "PipelineDefinitionError", "InfiniteFallbackError",
        "ExecutionFrame", "Actor", "ActorRef", "MailboxFull", "ActorCrashed",
    ):  # fmt: skip
        assert name in flujo_actors.__all__, name


def test_import_does_not_pull_optional_or_heavy_modules() -> None:
    code = (
        "import sys, flujo_actors; "
        "bad = [m for m in ('ray', 'trio_parallel', 'cloudpickle', 'opentelemetry', 'rich', "
        "'sqlite3', 'flujo_actors.bench') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
