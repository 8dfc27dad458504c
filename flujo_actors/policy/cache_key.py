"""Cache keys: a stable hash of a step's identity and its input (pure, no I/O).

A step's identity (:func:`step_cache_identity`) is decided once, when a
``cache=True`` step is built: its name, its agent's ``module:qualname`` and a
fingerprint of the agent's state (or the user's ``cache_key=``), so that
``Translator("fr")`` and ``Translator("de")``, closures ``make(2)`` and
``make(3)``, or two ``functools.partial`` objects never share entries.

The key is a digest of the input's typed encoding, so this policy imports the
codec (:mod:`flujo_actors.serialization`), which sits below it with the value
types it encodes: the import points down.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import types
from typing import Any, Final

import attrs

from ..errors import SerializationError
from ..serialization import dump_typed

__all__ = ["AgentStateError", "agent_state_digest", "cache_key", "step_cache_identity"]


def cache_key(step_identity: str, data: object) -> str:
    """Return the cache key of running the step ``step_identity`` on ``data``.

    The key is the SHA-256 hex digest of a canonical JSON document holding the
    identity string and ``dump_typed(data)`` with sorted keys, so it is stable
    across processes and Python runs (no ``hash()`` randomisation, no ids).
    Type tags are part of the document: ``Decimal("1")``, ``"1"`` and ``1``,
    or a tuple and a list, get different keys. Equal sets and equal
    string-keyed dicts get equal keys whatever their insertion order; dicts
    with non-string keys keep their order (a different order only costs a
    cache miss, never a wrong hit).

    Args:
        step_identity: What identifies the step's behaviour (name, agent).
        data: The step's input.

    Returns:
        64 lowercase hex characters.

    Raises:
        SerializationError: ``data`` cannot be serialized; the message names
            the step, the offending type and its path under ``input``.
    """
    try:
        payload = dump_typed(data, path="input")
    except SerializationError as exc:
        raise SerializationError(
            f"Cannot compute the cache key of step {step_identity!r}: {exc}"
        ) from exc
    # ensure_ascii: lone surrogates in strings stay encodable, and the text
    # (hence the key) does not depend on any locale or encoding setting.
    document = json.dumps(
        [step_identity, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(document.encode("ascii")).hexdigest()


# -- the step's identity: agent identity + a fingerprint of the agent's state ------------

_MAX_VALUES: Final = 10_000
_MAX_DEPTH: Final = 32
_SCALARS: Final = (str, int, float, bool, type(None))


class AgentStateError(Exception):
    """The agent's state cannot be fingerprinted (internal; the DSL reports it)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where} is {reason}")
        self.where = where
        self.reason = reason


def agent_state_digest(agent: object) -> str:
    """A SHA-256 digest of ``agent``'s identity and state, for cache keys.

    The state is what makes two agents of the same code answer differently:
    instance fields (``vars()``, slots, attrs/dataclass fields), closure cell
    values and default arguments of functions, ``functools.partial``
    arguments, a bound method's ``__self__``, recursively (callables inside
    the state by their own identity and state). Values are fingerprinted with
    :func:`~flujo_actors.serialization.dump_typed` where it handles them.
    Module globals and the code itself are not part of it.

    Raises:
        AgentStateError: a value in the state can neither be serialized nor
            walked (a lock, a socket, a client), or the state holds more than
            10,000 values or nests deeper than 32 levels.
    """
    from .fingerprint import agent_identity

    walker = _StateWalker()
    root = agent_identity(agent).rpartition(":")[2]
    document = walker.value(agent, root, 0)
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class _StateWalker:
    def __init__(self) -> None:
        self.count = 0
        self.active: dict[int, str] = {}

    def value(self, v: object, where: str, depth: int) -> Any:
        self.count += 1
        if self.count > _MAX_VALUES:
            raise AgentStateError(where, f"past {_MAX_VALUES:,} values: the state is too large")
        if depth > _MAX_DEPTH:
            raise AgentStateError(where, f"nested deeper than {_MAX_DEPTH} levels")
        tp = type(v)
        if tp in _SCALARS:
            return v
        key = id(v)
        if key in self.active:  # a reference cycle: name the back edge, deterministically
            return {"cycle": self.active[key]}
        self.active[key] = where
        try:
            return self._compound(v, tp, where, depth + 1)
        finally:
            del self.active[key]

    def _compound(self, v: Any, tp: type, where: str, depth: int) -> Any:
        from .fingerprint import agent_identity

        if tp is list or tp is tuple:
            return {tp.__name__: [self.value(x, f"{where}[{i}]", depth) for i, x in enumerate(v)]}
        if tp is dict:
            return {
                "dict": [
                    [
                        self.value(k, f"{where}[<key>]", depth),
                        self.value(x, f"{where}[{k!r}]", depth),
                    ]
                    for k, x in v.items()
                ]
            }
        if isinstance(v, types.ModuleType):
            return {"module": v.__name__}
        if isinstance(v, type):
            return {"class": agent_identity(v)}
        if isinstance(v, functools.partial):
            return {
                "partial": self.value(v.func, f"{where}.func", depth),
                "args": [self.value(a, f"{where}.args[{i}]", depth) for i, a in enumerate(v.args)],
                "keywords": {
                    k: self.value(a, f"{where}.keywords[{k!r}]", depth)
                    for k, a in v.keywords.items()
                },
            }
        if inspect.ismethod(v) or (inspect.isbuiltin(v) and not _module_level(v)):
            owner = v.__self__
            return {
                "method": agent_identity(v),
                "self": self.value(owner, f"{where}.__self__", depth),
            }
        if inspect.isfunction(v):
            return self._function(v, where, depth)
        if inspect.isbuiltin(v) or inspect.ismethoddescriptor(v):
            return {"builtin": agent_identity(v)}
        try:
            return {"data": dump_typed(v, path=where)}
        except SerializationError:
            pass
        fields = _instance_fields(v)
        if fields is None:
            raise AgentStateError(
                where, f"a {type(v).__module__}.{type(v).__qualname__} (not serializable)"
            )
        return {
            "object": agent_identity(v),
            "fields": {name: self.value(x, f"{where}.{name}", depth) for name, x in fields},
        }

    def _function(self, fn: types.FunctionType, where: str, depth: int) -> Any:
        from .fingerprint import agent_identity

        out: dict[str, Any] = {"function": agent_identity(fn)}
        if fn.__defaults__:
            out["defaults"] = self.value(fn.__defaults__, f"{where}.__defaults__", depth)
        if fn.__kwdefaults__:
            out["kwdefaults"] = self.value(fn.__kwdefaults__, f"{where}.__kwdefaults__", depth)
        if fn.__closure__:
            cells: dict[str, Any] = {}
            for name, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=True):
                try:
                    contents = cell.cell_contents
                except ValueError:  # a cell not assigned yet
                    cells[name] = {"empty": True}
                    continue
                cells[name] = self.value(contents, f"{where} closure variable {name!r}", depth)
            out["closure"] = cells
        return out


def _module_level(fn: Any) -> bool:
    owner = getattr(fn, "__self__", None)
    return owner is None or isinstance(owner, types.ModuleType)


def _instance_fields(obj: object) -> list[tuple[str, object]] | None:
    """An object's fields, sorted by name, or None if it has no walkable state."""
    names: dict[str, object] = {}
    cls: Any = type(obj)
    if attrs.has(cls):
        for a in attrs.fields(cls):
            names[a.name] = getattr(obj, a.name, None)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            names[f.name] = getattr(obj, f.name, None)
    found = getattr(obj, "__dict__", None)
    if isinstance(found, dict):
        names.update(found)
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                names[slot] = getattr(obj, slot)
    if not names and not isinstance(found, dict):
        return None
    return sorted(names.items())


def step_cache_identity(name: str, agent: object, *, cache_key: object = None) -> str:
    """The identity part of a ``cache=True`` step's keys, decided when the step is built.

    ``{step name}|{agent module:qualname}|`` followed by ``state:{digest}`` of
    :func:`agent_state_digest`, or ``key:{cache_key}`` when the user named
    the agent's configuration (``cache_key=``, which replaces the state
    fingerprint; the step name and agent identity stay in the key).

    Raises:
        PipelineDefinitionError: ``cache_key`` is not a non-empty string, or
            the agent's state cannot be fingerprinted and no ``cache_key`` was
            given (the message names the step, the value and the fix).
    """
    from ..errors import PipelineDefinitionError
    from .fingerprint import agent_identity

    identity = agent_identity(agent)
    if cache_key is not None:
        if not isinstance(cache_key, str) or not cache_key.strip():
            raise PipelineDefinitionError(
                f"Step {name!r}: cache_key must be a non-empty string naming the agent's "
                f"configuration (e.g. 'translate-fr-v1'), got {cache_key!r}."
            )
        return f"{name}|{identity}|key:{cache_key}"
    try:
        digest = agent_state_digest(agent)
    except AgentStateError as exc:
        raise PipelineDefinitionError(
            f"Step {name!r}: cache=True must tell this agent's configuration apart from "
            f"others, but its state cannot be fingerprinted: {exc}. Pass cache_key='...' "
            "(a name for the configuration that you vouch for: steps of the same name and "
            "agent with equal cache_key share cache entries), or drop cache=True."
        ) from None
    return f"{name}|{identity}|state:{digest}"
