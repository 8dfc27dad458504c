"""The layer order of DESIGN.md, enforced on every module's imports.

Every module of ``flujo_actors`` gets a layer from :data:`LAYERS` (by dotted
prefix, the longest one wins, so a new module in an existing package lands in
its package's layer without an edit here). An import may point to the same
layer or a lower one, never up. Three kinds of import are read from the AST:

* ``eager``: at module level, run when the module is imported;
* ``lazy``: inside a function, run when the function is first called (still a
  dependency: it is checked exactly like an eager one);
* ``typing``: under ``if TYPE_CHECKING:``, never run. One pointing up is
  allowed only when :data:`TYPE_ONLY_UPWARD` lists it with the reason.

Runtime imports (eager and lazy) must also form no cycle: a module that
imports its own package's ``__init__`` while that ``__init__`` imports it is
a cycle too.
"""

from __future__ import annotations

import ast
import functools
import pathlib
from typing import TYPE_CHECKING, Final

import attrs

import flujo_actors

if TYPE_CHECKING:
    from collections.abc import Iterator

PACKAGE_DIR: Final = pathlib.Path(flujo_actors.__file__).parent

# The layers, bottom up. DESIGN.md "Layers" names six; the test splits the
# sixth in two, as the code does: the runner composes the edges it is given
# (state and cache backends, executors, serialization), so those adapters sit
# below it, and only the entry points (the package root, the CLI, the bench
# harness, the demo, the testing helpers) sit above the runner.
VALUES: Final = 1  # attrs value types and the error tree
POLICY: Final = 2  # pure, sync rules (no trio)
KERNEL: Final = 3  # actors: mailboxes, actor loop, supervision, the governor actor
STEPS: Final = 4  # step kinds and their executors (the run package)
EDGES: Final = 5  # serialization, backends, executors, bridges, telemetry
RUNNER: Final = 6  # Flujo: run / stream / resume, hooks, persistence, introspection
ENTRY: Final = 7  # the package root, CLI, bench harness, demo, testing helpers

LAYER_NAMES: Final = {
    VALUES: "values",
    POLICY: "policy",
    KERNEL: "kernel",
    STEPS: "steps",
    EDGES: "edges",
    RUNNER: "runner",
    ENTRY: "entry",
}

# Dotted prefix (relative to flujo_actors) -> layer; the longest matching prefix wins.
LAYERS: Final[dict[str, int]] = {
    "errors": VALUES,
    "frames": VALUES,
    "results": VALUES,
    "spans": VALUES,
    "limits": VALUES,
    "context": VALUES,
    "_pydantic_compat": VALUES,
    # The one codec of value types: it imports only errors and _pydantic_compat, and cache
    # keys (policy) and cache entries (step kinds) are digests and documents of its typed
    # encoding, so it sits with the values it encodes rather than at the edges.
    "serialization": VALUES,
    "policy": POLICY,
    "actors": KERNEL,
    "governor": KERNEL,
    "governor_messages": KERNEL,
    "steps": STEPS,
    "run": STEPS,
    "partial": STEPS,
    "step_cache": STEPS,
    "backends": EDGES,
    "executors": EDGES,
    "bridge": EDGES,
    "call_sites": EDGES,
    "telemetry": EDGES,
    "tracing": EDGES,
    "pydantic": EDGES,
    "runner": RUNNER,
    "runner_args": RUNNER,
    "runner_checkpoints": RUNNER,
    "runner_human": RUNNER,
    "runner_fork": RUNNER,
    "runner_recovery": RUNNER,
    "runner_run": RUNNER,
    "hooks": RUNNER,
    "hook_events": RUNNER,
    "hook_logging": RUNNER,
    "introspection": RUNNER,
    "persistence": RUNNER,
    "step_rows": RUNNER,
    "": ENTRY,  # the package root: flujo_actors/__init__.py
    "bench": ENTRY,
    "cli": ENTRY,
    "__main__": ENTRY,
    "demo": ENTRY,
    "testing": ENTRY,
}

# (importer, imported) -> why a type-only import may point up.
TYPE_ONLY_UPWARD: Final[dict[tuple[str, str], str]] = {
    ("frames", "steps.kinds"): (
        "a frame names the step it carries (any kind); only the annotation needs the union"
    ),
    ("frames", "run.core"): (
        "a frame names the run's services it carries; only the annotation needs RunState"
    ),
    ("errors", "policy.intensity"): (
        "RestartIntensityExceeded carries the restart records; only the annotation names them"
    ),
    ("steps.placement", "executors.base"): (
        "placement= takes an executor object; only the Placement annotation names its protocol"
    ),
}


@attrs.frozen
class Import:
    importer: str
    imported: str
    kind: str  # "eager" | "lazy" | "typing"
    line: int


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module = module
        self.is_package = is_package
        self.known = known
        self.functions = 0
        self.typing = 0
        self.found: list[Import] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.typing += 1
        for child in node.body:
            self.visit(child)
        self.typing -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".") if self.module else []
            if not self.is_package:
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(["flujo_actors", *base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        for alias in node.names:
            # `from .pkg import sub` imports the submodule `sub` when there is one.
            candidate = f"{prefix}.{alias.name}"
            self._add(candidate if candidate in self.known else prefix, node.lineno)

    def _add(self, target: str, line: int) -> None:
        if target != "flujo_actors" and not target.startswith("flujo_actors."):
            return
        kind = "typing" if self.typing else ("lazy" if self.functions else "eager")
        imported = target.removeprefix("flujo_actors").removeprefix(".")
        self.found.append(Import(self.module, imported, kind, line))


@functools.cache
def collect_imports() -> tuple[Import, ...]:
    """Every import of a flujo_actors module by a flujo_actors module."""
    modules = _modules()
    known = {f"flujo_actors.{name}" if name else "flujo_actors" for name in modules}
    found: list[Import] = []
    for name, path in modules.items():
        collector = _Collector(name, path.name == "__init__.py", known)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found.extend(collector.found)
    return tuple(found)


def layer_of(module: str) -> int | None:
    """The layer of ``module`` (relative dotted name), by its longest prefix in LAYERS."""
    parts = module.split(".") if module else []
    for end in range(len(parts), -1, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None and (end > 0 or not module):
            return layer
    return None


def _describe(imp: Import) -> str:
    low, high = layer_of(imp.importer), layer_of(imp.imported)
    assert low is not None and high is not None
    return (
        f"flujo_actors/{imp.importer or '__init__'} (layer {low}, {LAYER_NAMES[low]}) imports "
        f"flujo_actors.{imp.imported} (layer {high}, {LAYER_NAMES[high]}) "
        f"[{imp.kind}, line {imp.line}]"
    )


def test_every_module_has_a_layer() -> None:
    missing = sorted(name for name in _modules() if layer_of(name) is None)
    assert not missing, (
        f"No layer for the module(s) {missing!r}. Add the module (or its package) to LAYERS "
        "in tests/test_layers.py, with the layer DESIGN.md 'Layers' gives it."
    )


def test_no_import_points_up() -> None:
    upward: list[str] = []
    used_type_only = set()
    for imp in collect_imports():
        low, high = layer_of(imp.importer), layer_of(imp.imported)
        if low is None or high is None or high <= low:
            continue
        pair = (imp.importer, imp.imported)
        if imp.kind == "typing" and pair in TYPE_ONLY_UPWARD:
            used_type_only.add(pair)
            continue
        if _describe(imp) not in upward:
            upward.append(_describe(imp))
    assert not upward, "Imports pointing up the layer order:\n" + "\n".join(upward)
    stale = sorted(set(TYPE_ONLY_UPWARD) - used_type_only)
    assert not stale, f"Entries allowing imports that no longer exist (remove them): {stale!r}"


def _cycles(edges: dict[str, set[str]]) -> Iterator[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0

    def visit(node: str) -> Iterator[list[str]]:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                yield from visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                yield sorted(component)

    for node in sorted(edges):
        if node not in index:
            yield from visit(node)


def test_no_cycle_among_runtime_imports() -> None:
    edges: dict[str, set[str]] = {}
    for imp in collect_imports():
        if imp.kind != "typing" and imp.imported != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.imported)
    cycles = [" -> ".join(component) for component in sorted(_cycles(edges))]
    assert not cycles, "Import cycles (runtime imports, eager or lazy):\n" + "\n".join(cycles)


def test_the_collector_sees_every_kind_of_import(tmp_path: pathlib.Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import frames\n"
        "from .steps import dsl\n"
        "if TYPE_CHECKING:\n"
        "    from .runner import Flujo\n"
        "def f():\n"
        "    from .executors import process\n"
    )
    modules = {"flujo_actors.frames", "flujo_actors.steps.dsl", "flujo_actors.executors.process"}
    collector = _Collector("results", False, modules)
    collector.visit(ast.parse(source))
    assert [(i.imported, i.kind) for i in collector.found] == [
        ("frames", "eager"),
        ("steps.dsl", "eager"),
        ("runner", "typing"),
        ("executors.process", "lazy"),
    ]


def test_layer_of_uses_the_longest_prefix() -> None:
    assert layer_of("run.checkpoint_store") == STEPS
    assert layer_of("backends.postgres_pool") == EDGES
    assert layer_of("actors.mailbox") == KERNEL
    assert layer_of("policy.attempt") == POLICY
    assert layer_of("") == ENTRY
    assert layer_of("runner_checkpoints") == RUNNER
    assert layer_of("no_such_module") is None


def test_a_cycle_is_found() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert list(_cycles(edges)) == [["a", "b", "c"]]
