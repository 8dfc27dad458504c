"""Events are named in the past tense and never share a name with an exception.

STYLE.md: "Events are past tense and are not exceptions: an event class and an
error class never share a name". The events are the members of the event
unions (hooks, supervisors, the attempt machine); the exceptions are every
class in ``flujo_actors`` that derives from an exception, found in the source
(so modules of optional extras are covered without importing them).
"""

from __future__ import annotations

import ast
import builtins
import pathlib
from typing import Final, get_args

import flujo_actors
from flujo_actors.actors import ActorDown
from flujo_actors.actors.events import SupervisorEvent
from flujo_actors.hook_events import HookEvent
from flujo_actors.policy.attempt_messages import AttemptEvent

PACKAGE_DIR: Final = pathlib.Path(flujo_actors.__file__).parent

BUILTIN_EXCEPTIONS: Final = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)

# Past tense in their own way: "timed out", "hit" (its own past tense); ActorDown's
# name is fixed by API.md ("an actor is down": a state reached, like a past event).
NOT_ENDING_IN_ED: Final = frozenset({"TimedOut", "CacheHit", "ActorDown"})


def _events() -> dict[str, type]:
    members = [*get_args(HookEvent), *get_args(SupervisorEvent), *get_args(AttemptEvent)]
    return {cls.__name__: cls for cls in (*members, ActorDown)}


def _exception_classes() -> dict[str, str]:
    """``{class name: where}`` of every exception class defined in flujo_actors."""
    bases: dict[str, tuple[set[str], str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                names = {
                    b.id if isinstance(b, ast.Name) else b.attr
                    for b in node.bases
                    if isinstance(b, ast.Name | ast.Attribute)
                }
                where = f"{path.relative_to(PACKAGE_DIR)}:{node.lineno}"
                bases[node.name] = (names, where)
    found: dict[str, str] = {}
    changed = True
    while changed:  # a class deriving from an exception class found so far is one too
        changed = False
        for name, (parents, where) in bases.items():
            if name not in found and parents & (BUILTIN_EXCEPTIONS | set(found)):
                found[name] = where
                changed = True
    return found


def test_the_exception_scan_finds_the_error_tree() -> None:
    found = _exception_classes()
    assert {"FlujoError", "StepFailed", "ActorCrashed", "ActorExit", "HookError"} <= set(found)
    assert "StepErrored" not in found


def test_events_are_named_in_the_past_tense() -> None:
    events = _events()
    assert len(events) >= 20
    present = sorted(n for n in events if not n.endswith("ed") and n not in NOT_ENDING_IN_ED)
    assert present == [], f"events not named in the past tense: {present}"


def test_no_event_shares_a_name_with_an_exception() -> None:
    exceptions = {name.lstrip("_"): where for name, where in _exception_classes().items()}
    clashes = sorted(
        f"{name} (event {cls.__module__}) ~ exception at {exceptions[name]}"
        for name, cls in _events().items()
        if name in exceptions
    )
    assert clashes == []
