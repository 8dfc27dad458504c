"""Pipeline fingerprints: a stable description of a pipeline's structure (pure, no I/O).

Every run stores the fingerprint of the pipeline that started it, so that
``resume_async`` can refuse to continue the run with a different pipeline
(a crashed run resumed by an unrelated runner must never run its steps).

The fingerprint covers what decides *which code runs where*: step kinds,
names, order, nesting (branches with their keys, loop bodies, conditional
defaults, nested pipelines, fallbacks), pipeline names, and each agent's
identity as ``module:qualname`` (a partial by its function, a bound method by
its function, an object by its class). It never contains memory addresses or
``hash()`` values, so it is equal across processes and Python runs. Retries,
timeouts, validators, plugins, mappers and agent *state* are not part of it:
changing them is a compatible edit.

The fingerprint is canonical JSON text (sorted keys, ASCII), so two
fingerprints are compared as strings; :func:`first_difference` explains a
mismatch as a path such as
``steps[1]: 'charge_card' (agent billing:charge) vs 'delete_account' (agent users:delete)``.

Steps are read by duck typing (``kind``, ``name``, ``agent``, ``fallback``,
``branches``, ``body``, ``default_branch``, ``pipeline``): this module sits
below the DSL in the layer order and does not import it.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "FINGERPRINT_VERSION",
    "agent_identity",
    "first_difference",
    "pipeline_fingerprint",
    "prefix_difference",
]

FINGERPRINT_VERSION: Final = 1
"""The format version recorded in every fingerprint."""


def _qualified(obj: Any) -> str:
    """``module:qualname`` of a function, class or builtin (never an address)."""
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    module = getattr(obj, "__module__", None)
    if module is None:
        owner = getattr(obj, "__self__", None)
        module = type(owner).__module__ if owner is not None else "builtins"
    if not isinstance(qualname, str):
        qualname = type(obj).__qualname__
        module = type(obj).__module__
    return f"{module}:{qualname}"


def agent_identity(agent: Any) -> str:
    """The stable identity of an agent: ``module:qualname`` of the code it runs.

    A function (closures and lambdas included) is named by its definition, a
    bound method by its function, a ``functools.partial`` by the function it
    wraps (``partial(module:qualname)``), a class by itself and any other
    object (an agent with ``run``, a callable instance) by its class.
    """
    if isinstance(agent, functools.partial):
        return f"partial({agent_identity(agent.func)})"
    if inspect.ismethod(agent):
        return _qualified(agent.__func__)
    if isinstance(agent, type) or inspect.isfunction(agent) or inspect.isbuiltin(agent):
        return _qualified(agent)
    if inspect.ismethoddescriptor(agent) or inspect.ismethodwrapper(agent):
        return _qualified(agent)
    return _qualified(type(agent))


def _describe_pipeline(pipeline: Any) -> dict[str, Any]:
    return {"name": pipeline.name, "steps": [_describe_step(s) for s in pipeline.steps]}


def _describe_step(step: Any) -> dict[str, Any]:
    kind = getattr(step, "kind", type(step).__name__)
    out: dict[str, Any] = {"kind": kind, "name": step.name}
    agent = getattr(step, "agent", None)
    if agent is not None:
        out["agent"] = agent_identity(agent)
    fallback = getattr(step, "fallback", None)
    if fallback is not None:
        out["fallback"] = _describe_step(fallback)
    branches = getattr(step, "branches", None)
    if isinstance(branches, Mapping):
        # Declaration order matters (merge order), so branches stay a list.
        out["branches"] = [[_key_label(k), _describe_pipeline(p)] for k, p in branches.items()]
    for attr, label in (("body", "body"), ("default_branch", "default"), ("pipeline", "pipeline")):
        child = getattr(step, attr, None)
        if child is not None and hasattr(child, "steps"):
            out[label] = _describe_pipeline(child)
    return out


def _key_label(key: object) -> str:
    # Branch keys of conditional steps may be any hashable: repr() keeps 1 and
    # "1" apart and is stable for str, int, bool, None and enum members.
    return repr(key)


def pipeline_fingerprint(pipeline: Any) -> str:
    """Return the fingerprint of ``pipeline``: canonical JSON text of its structure.

    Pure and deterministic: equal structures give equal strings in any
    process. Compute it once per runner (it walks the whole tree).
    """
    document = {"fingerprint": FINGERPRINT_VERSION, "pipeline": _describe_pipeline(pipeline)}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def first_difference(stored: str, current: str) -> str | None:
    """Explain where two fingerprints differ, or return ``None`` if they are equal.

    Returns:
        ``"<path>: <stored> vs <current>"``, e.g.
        ``"steps[1]: 'charge_card' (agent billing:charge) vs 'delete_account'
        (agent users:delete)"``; the path is relative to the top-level pipeline.
    """
    if stored == current:
        return None
    try:
        old = json.loads(stored)
        new = json.loads(current)
    except ValueError:
        return "the stored fingerprint is not valid JSON (the run's record is damaged)"
    if not isinstance(old, dict) or old.get("fingerprint") != new.get("fingerprint"):
        version = old.get("fingerprint") if isinstance(old, dict) else None
        return (
            f"fingerprint format {version!r} vs {new.get('fingerprint')!r} "
            "(stored by another flujo_actors version)"
        )
    try:
        found = _diff_pipeline("", old.get("pipeline"), new.get("pipeline"))
    except (AttributeError, TypeError, ValueError):  # not the shape we write
        return "the stored fingerprint is damaged (not a pipeline description)"
    # Equal documents always have equal canonical text; a difference exists.
    return found if found is not None else "the fingerprints differ in their encoding"


def prefix_difference(stored: str, current: str, n_steps: int) -> str | None:
    """Where the first ``n_steps`` top-level steps of two fingerprints differ, or ``None``.

    A fork reuses the results of the steps before its fork point, so those
    steps must be the same; what follows may change freely. Pipeline names
    and later steps are ignored.

    Returns:
        A path and both sides, as :func:`first_difference` explains them.
    """
    try:
        old, new = json.loads(stored), json.loads(current)
        if old.get("fingerprint") != new.get("fingerprint"):
            return first_difference(stored, current)
        old_pipe, new_pipe = old["pipeline"], new["pipeline"]
        heads = [
            {"name": "", "steps": list(p.get("steps", []))[:n_steps]} for p in (old_pipe, new_pipe)
        ]
        return _diff_pipeline("", heads[0], heads[1])
    except (AttributeError, KeyError, TypeError, ValueError):
        return "the stored fingerprint is damaged (not a pipeline description)"


def _show(step: Any) -> str:
    if not isinstance(step, dict):
        return "nothing"
    kind, agent = step.get("kind"), step.get("agent")
    if kind == "agent":
        what = f"agent {agent}"
    elif agent is not None:
        what = f"{kind}, agent {agent}"
    else:
        what = str(kind)
    return f"{step.get('name')!r} ({what})"


def _diff_pipeline(path: str, old: Any, new: Any) -> str | None:
    dot = f"{path}." if path else ""
    if old.get("name") != new.get("name"):
        return f"{dot}name: {old.get('name')!r} vs {new.get('name')!r}"
    old_steps, new_steps = old.get("steps", []), new.get("steps", [])
    for i in range(max(len(old_steps), len(new_steps))):
        a = old_steps[i] if i < len(old_steps) else None
        b = new_steps[i] if i < len(new_steps) else None
        found = _diff_step(f"{dot}steps[{i}]", a, b)
        if found is not None:
            return found
    return None


def _diff_step(path: str, a: Any, b: Any) -> str | None:
    if a is None or b is None or any(a.get(k) != b.get(k) for k in ("kind", "name", "agent")):
        return f"{path}: {_show(a)} vs {_show(b)}"
    if a.get("fallback") != b.get("fallback"):
        fa, fb = a.get("fallback"), b.get("fallback")
        if fa is None or fb is None:
            return f"{path}.fallback: {_show(fa)} vs {_show(fb)}"
        return _diff_step(f"{path}.fallback", fa, fb)
    old_branches, new_branches = a.get("branches"), b.get("branches")
    if old_branches != new_branches:
        old_keys = [k for k, _ in old_branches or ()]
        new_keys = [k for k, _ in new_branches or ()]
        if old_keys != new_keys:
            return f"{path}.branches: [{', '.join(old_keys)}] vs [{', '.join(new_keys)}]"
        for (key, pa), (_, pb) in zip(old_branches, new_branches, strict=True):
            found = _diff_pipeline(f"{path}.branches[{key}]", pa, pb)
            if found is not None:
                return found
    for label in ("body", "default", "pipeline"):
        pa, pb = a.get(label), b.get(label)
        if pa == pb:
            continue
        if pa is None or pb is None:
            return f"{path}.{label}: {'a pipeline' if pa else 'none'} vs {'a pipeline' if pb else 'none'}"
        found = _diff_pipeline(f"{path}.{label}", pa, pb)
        if found is not None:
            return found
    return None
