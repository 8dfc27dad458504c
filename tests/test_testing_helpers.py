"""``flujo_actors.testing`` outside pytest, and submodules used without being imported.

Under pytest, pytest-trio has already imported ``trio.testing``, so a helper that
forgets ``import trio.testing`` passes here and fails for a user's script. Each
helper therefore runs in a fresh interpreter, with pytest made unimportable.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import pathlib
import subprocess
import sys
import textwrap

import flujo_actors
import flujo_actors.testing

# Runs in a fresh interpreter where ``import pytest`` fails: the helpers must
# need neither pytest nor anything pytest imports as a side effect.
SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["pytest"] = None  # import pytest -> ImportError
    sys.modules["_pytest"] = None

    from decimal import Decimal
    import trio
    import flujo_actors.testing as t
    from flujo_actors import Flujo, InMemoryStateBackend, Step

    used = set()

    # run_with_mock_clock: virtual time, no real sleeping.
    sleeper = t.SleepAgent(3600.0)
    used.add("SleepAgent")

    async def slept():
        await sleeper.run("x")
        return trio.current_time()

    assert t.run_with_mock_clock(slept) == 3600.0
    assert sleeper.started == [0.0] and sleeper.finished == [3600.0]
    used.add("run_with_mock_clock")

    # StubAgent, FlakyAgent and UsageOutput inside a real pipeline run.
    stub = t.StubAgent([t.UsageOutput("a", cost_usd=0.25, token_counts=3)])
    flaky = t.FlakyAgent(failures=1, result="b")
    used.update({"StubAgent", "FlakyAgent", "UsageOutput"})
    runner = Flujo(
        Step.from_callable(stub.run, name="stub")
        >> Step.from_callable(flaky.run, name="flaky", max_retries=1)
    )

    async def run_pipeline():
        return await runner.run_async("go")

    result = t.run_with_mock_clock(run_pipeline)
    assert result.success, result
    assert result.output == "b"
    assert result.total_cost_usd == Decimal("0.25") and result.total_tokens == 3
    assert stub.inputs == ["go"] and flaky.calls == 2

    # check_state_backend against the in-memory backend (StateBackendFactory).
    factory: t.StateBackendFactory = InMemoryStateBackend
    t.run_with_mock_clock(t.check_state_backend, factory)
    used.update({"check_state_backend", "StateBackendFactory"})

    # The serializer helpers.
    with t.isolated_serializer_registry():
        t.assert_round_trips({"when": Decimal("1.5"), "items": (1, 2)})
    used.update({"isolated_serializer_registry", "assert_round_trips"})

    # The actor test kit: Probe, crash, crash_storm (and what they return).
    from flujo_actors import ChildSpec, Supervisor

    async def actor_kit():
        probe = t.Probe()
        sup = Supervisor([ChildSpec("p", probe.actor)], name="root")
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.ref("p").tell("x")
            assert await probe.expect_message(lambda m: m == "x") == "x"
            await probe.expect_no_message(within_s=3600)
            t.crash(sup.ref("p"))
            storm = await t.crash_storm(sup, [(1.0, "p"), "nope"])
            assert isinstance(storm, t.CrashStorm) and storm.crashed == ("p",), storm
            assert sup.ref("p").statistics().restarts == 2
            assert "CrashedOnPurpose" in sup.ref("p").statistics().last_error
            assert issubclass(t.CrashedOnPurpose, Exception)
            await sup.stop()
        return trio.current_time()

    assert t.run_with_mock_clock(actor_kit) == 3601.0
    used.update({"Probe", "crash", "crash_storm", "CrashStorm", "CrashedOnPurpose"})

    missing = sorted(set(t.__all__) - used)
    assert not missing, f"helpers not exercised outside pytest: {missing}"
    print("ok", len(used))
    """
)


def test_every_public_testing_helper_works_in_a_fresh_interpreter_without_pytest() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ok {len(flujo_actors.testing.__all__)}"


# -- the same root cause anywhere in the package --------------------------------------


def _submodule_exists(dotted: str) -> bool:
    """Whether ``dotted`` names a module, found on disk without importing anything."""
    top, *rest = dotted.split(".")
    spec = importlib.util.find_spec(top)  # a top-level lookup never imports
    if spec is None or spec.submodule_search_locations is None:
        return False
    locations = [pathlib.Path(p) for p in spec.submodule_search_locations]
    for index, part in enumerate(rest):
        found = [loc / part for loc in locations if (loc / part / "__init__.py").exists()]
        if index == len(rest) - 1:
            return bool(found) or any((loc / f"{part}.py").exists() for loc in locations)
        if not found:
            return False
        locations = found
    return False


@functools.cache
def _imported_by_its_parent(dotted: str) -> bool:
    """Whether a fresh ``import parent`` always imports ``dotted`` (trio.lowlevel: yes)."""
    parent = dotted.rsplit(".", 1)[0]
    code = f"import sys, {parent}; print({dotted!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() == "True"


def _unimported_submodules(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    names: dict[str, str] = {}  # local name -> module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                imported.update(".".join(parts[: i + 1]) for i in range(len(parts)))
                names[alias.asname or parts[0]] = alias.name if alias.asname else parts[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            chain.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name) or current.id not in names:
            continue
        chain = [names[current.id], *reversed(chain)]
        for end in range(2, len(chain) + 1):
            dotted = ".".join(chain[:end])
            if dotted in imported or not _submodule_exists(dotted):
                continue
            if not _imported_by_its_parent(dotted):
                problems.append(f"{path}:{node.lineno}: {dotted}")
    return sorted(set(problems))


def test_no_module_uses_a_submodule_it_does_not_import() -> None:
    package = pathlib.Path(flujo_actors.__file__).parent
    problems = [p for path in sorted(package.rglob("*.py")) for p in _unimported_submodules(path)]
    assert problems == []


def test_the_submodule_check_catches_the_original_bug(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import trio\n\nclock = trio.testing.MockClock()\nok = trio.lowlevel.checkpoint\n"
    )
    assert _unimported_submodules(bad) == [f"{bad}:3: trio.testing"]
    good = tmp_path / "good.py"
    good.write_text("import trio\nimport trio.testing\n\nclock = trio.testing.MockClock()\n")
    assert _unimported_submodules(good) == []
