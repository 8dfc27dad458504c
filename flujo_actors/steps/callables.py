"""Build-time inspection of agents and user callbacks.

Everything about *how* to call a user's callable (sync or async, which
keywords it takes, whether it streams) is decided once, when the step is
built, and frozen into a small :class:`AgentSpec`/:class:`Callback`. The hot
path only calls what was compiled here: no per-call ``inspect``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Final

import attrs

from ..errors import PipelineDefinitionError

__all__ = ["AgentSpec", "Callback", "compile_agent", "compile_callback"]

#: kinds of agent calls
ASYNC: Final = "async"
SYNC: Final = "sync"
STREAM: Final = "stream"


@attrs.frozen(slots=True)
class AgentSpec:
    """How to call an agent: ``call(data, context, resources)``.

    ``kind`` is ``"async"`` (the call returns an awaitable), ``"sync"`` (it
    returns the value) or ``"stream"`` (it returns an async iterator of chunks).
    ``stream_call`` is set for objects that can both ``run`` and ``stream``.
    """

    kind: str
    call: Callable[[Any, Any, Any], Any]
    accepts_context: bool
    accepts_resources: bool
    label: str
    stream_call: Callable[[Any, Any, Any], Any] | None = None


def _label(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


def _keywords(fn: Any) -> tuple[bool, bool, int, bool]:
    """(accepts context, accepts resources, positional params, has *args)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False, False, 1, True
    params = sig.parameters.values()
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    positional = sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    return ("context" in names or var_kw), ("resources" in names or var_kw), positional, var_pos


def _binder(fn: Callable[..., Any], ctx: bool, res: bool) -> Callable[[Any, Any, Any], Any]:
    # One small closure per combination, chosen once: the hot path makes a
    # single call with exactly the keywords the agent declared.
    if ctx and res:
        return lambda d, c, r: fn(d, context=c, resources=r)
    if ctx:
        return lambda d, c, r: fn(d, context=c)
    if res:
        return lambda d, c, r: fn(d, resources=r)
    return lambda d, c, r: fn(d)


def _is_async_callable(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - async __call__ on instances
    return call is not None and inspect.iscoroutinefunction(call)


def compile_agent(step_name: str, agent: Any) -> AgentSpec:
    """Inspect ``agent`` once and return how to call it.

    Raises:
        PipelineDefinitionError: the agent is a coroutine object, is not
            callable, or takes no input parameter.
    """
    if inspect.iscoroutine(agent) or inspect.isasyncgen(agent):
        fn_name = getattr(agent, "__name__", "agent")
        agent.close()  # type: ignore[union-attr]
        raise PipelineDefinitionError(
            f"Agent step {step_name!r} expected an async function but got a coroutine "
            f"object. Pass {fn_name}, not {fn_name}()."
        )
    label = _label(agent)
    run = getattr(agent, "run", None)
    stream = getattr(agent, "stream", None)
    if not inspect.isfunction(agent) and not inspect.ismethod(agent) and (run or stream):
        stream_call = None
        if stream is not None and callable(stream):
            c, r, _, _ = _keywords(stream)
            stream_call = _binder(stream, c, r)
        if run is not None and callable(run):
            c, r, npos, varpos = _keywords(run)
            _check_arity(step_name, f"{label}.run", npos, varpos)
            kind = ASYNC if _is_async_callable(run) else SYNC
            return AgentSpec(kind, _binder(run, c, r), c, r, label, stream_call)
        if stream_call is not None and stream is not None:
            c, r, _, _ = _keywords(stream)
            return AgentSpec(STREAM, stream_call, c, r, label)
    if not callable(agent):
        raise PipelineDefinitionError(
            f"Step {step_name!r}: agent must be an async function, a function, or an "
            f"object with an async run(data, **kwargs) method; got {agent!r}."
        )
    c, r, npos, varpos = _keywords(agent)
    _check_arity(step_name, label, npos, varpos)
    if inspect.isasyncgenfunction(agent):
        return AgentSpec(STREAM, _binder(agent, c, r), c, r, label)
    kind = ASYNC if _is_async_callable(agent) else SYNC
    return AgentSpec(kind, _binder(agent, c, r), c, r, label)


def _check_arity(step_name: str, label: str, npos: int, varpos: bool) -> None:
    if npos < 1 and not varpos:
        raise PipelineDefinitionError(
            f"Step {step_name!r}: agent {label} takes no parameter for the step's input; "
            f"declare one, e.g. `async def {label.rsplit('.', 1)[-1]}(data): ...`."
        )


@attrs.frozen(slots=True)
class Callback:
    """A user callback (validator, condition, mapper) compiled for fast calls.

    ``call(*args)`` receives the full argument list and passes as many as
    the callable declared; ``is_async`` says whether to await the result.
    """

    call: Callable[..., Any]
    is_async: bool
    label: str


def compile_callback(fn: Any, *, what: str, step_name: str, max_args: int) -> Callback:
    """Compile a callback that takes up to ``max_args`` positional arguments.

    Raises:
        PipelineDefinitionError: ``fn`` is not callable or is a coroutine object.
    """
    if inspect.iscoroutine(fn):
        fn.close()
        raise PipelineDefinitionError(
            f"Step {step_name!r}: {what} must be a function, got a coroutine object; "
            "pass the function itself, not its call."
        )
    if not callable(fn):
        raise PipelineDefinitionError(f"Step {step_name!r}: {what} must be callable, got {fn!r}.")
    ctx, _res, npos, varpos = _keywords(fn)
    n = max_args if varpos else min(npos, max_args)
    label = _label(fn)
    is_async = _is_async_callable(fn)
    call: Callable[..., Any]
    if n >= max_args:
        call = fn
    elif n == 1 and max_args >= 2 and ctx and "context" in _param_names(fn):
        call = lambda *a: fn(a[0], context=a[1])  # noqa: E731
    else:
        call = lambda *a: fn(*a[:n])  # noqa: E731
    return Callback(call, is_async, label)


def _param_names(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()
