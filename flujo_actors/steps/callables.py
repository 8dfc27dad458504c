"""Build-time inspection of agents and user callbacks.

Everything about *how* to call a user's callable (sync or async, which
keywords it takes, whether it streams) is decided once, when the step is
built, and frozen into a small :class:`AgentSpec`/:class:`Callback`. The hot
path only calls what was compiled here: no per-call ``inspect``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from decimal import Decimal
from types import AsyncGeneratorType
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..errors import PipelineDefinitionError
from ..policy.idempotency import current_key

if TYPE_CHECKING:
    from ..policy.usage import UsageUnreadable
    from ..results import Usage

__all__ = [
    "LATE",
    "PLAIN",
    "AgentSpec",
    "Callback",
    "check_positional",
    "compile_agent",
    "compile_callback",
    "compile_optional",
    "compile_required",
    "drain_stream",
    "looks_async",
    "refuse_class",
    "settle",
]

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
    #: The agent declares ``idempotency_key`` (it gets the step position's key).
    accepts_idempotency_key: bool = False


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


def _declares_key(fn: Any) -> bool:
    """Whether ``fn`` names an ``idempotency_key`` parameter (``**kwargs`` does not count)."""
    sig = _signature(fn)
    return sig is not None and "idempotency_key" in sig.parameters


def _with_key(fn: Callable[..., Any]) -> Callable[..., Any]:
    # Only agents that declare the parameter pay for the key (a digest per call).
    def keyed(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, idempotency_key=current_key(), **kwargs)

    return keyed


def _binder(fn: Callable[..., Any], ctx: bool, res: bool) -> Callable[[Any, Any, Any], Any]:
    # One small closure per combination, chosen once: the hot path makes a
    # single call with exactly the keywords the agent declared.
    if _declares_key(fn):
        fn = _with_key(fn)
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


def looks_async(fn: Any) -> bool:
    """Whether ``fn`` is, or wraps (``functools.wraps``), an async function.

    For places that can only call synchronously (merge callables): a plain
    ``def`` decorator around an ``async def`` would hand back a coroutine.
    """
    try:
        inner = inspect.unwrap(fn)
    except ValueError:  # a __wrapped__ cycle
        inner = fn
    return _is_async_callable(fn) or _is_async_callable(inner) or inspect.isasyncgenfunction(inner)


#: What a call may hand back that is not a value yet: a sync wrapper around an
#: ``async def`` returns a coroutine, around an async generator function a
#: generator. Checked (cheaply) on the results of user callables at run time.
LATE: Final = (Awaitable, AsyncGeneratorType)

#: Result types that are certainly values: skips the ABC check on the hot path.
PLAIN: Final[frozenset[type]] = frozenset(
    {str, int, float, bool, bytes, type(None), dict, list, tuple, set, Decimal}
)

_SETTLE_DEPTH: Final = 8


async def drain_stream(
    iterator: Any, on_chunk: Callable[[Any], Awaitable[None]] | None = None
) -> tuple[Any, list[Usage | UsageUnreadable] | None]:
    """Drain a streaming agent: its output and its usage reports (None: it reported none).

    Every chunk goes through one :class:`~flujo_actors.policy.stream.ChunkCollector`
    (a ``Usage`` the agent yields is usage, not output); output chunks go to
    ``on_chunk`` as they arrive. Inline and in every executor's worker alike.
    Cancelled (or failing) mid-stream, the agent's generator is closed here,
    before the error propagates, rather than whenever it is garbage collected.
    """
    # Here, not at the top: usage reading (policy.usage) loads with the first streamed call,
    # not with every `from flujo_actors import Step`.
    from ..policy.stream import ChunkCollector

    collector = ChunkCollector()
    add = collector.add
    try:
        async for chunk in iterator:
            if add(chunk) and on_chunk is not None:
                await on_chunk(chunk)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    return collector.output(), collector.readings()


async def settle(value: Any, collect: Callable[[Any], Awaitable[Any]]) -> Any:
    """Await ``value`` (and what it resolves to) until it is a value.

    ``collect`` drains an async generator (a sync wrapper around a streaming
    agent). Awaitables are awaited in the caller's task, so cancellation
    reaches them like any other await.

    Raises:
        TypeError: the awaitables keep resolving to awaitables.
    """
    for _ in range(_SETTLE_DEPTH):
        if isinstance(value, AsyncGeneratorType):
            return await collect(value)
        if not isinstance(value, Awaitable):
            return value
        value = await value
    if inspect.iscoroutine(value):
        value.close()  # given up on: no "never awaited" warning
    raise TypeError(
        f"a callable's result kept resolving to awaitables ({_SETTLE_DEPTH} levels deep); "
        "return a value (await inside the function)."
    )


def refuse_class(step_name: str, what: str, obj: Any, methods: tuple[str, ...]) -> None:
    """Raise if ``obj`` is a class whose *instances* would be the callable (defines ``methods``)."""
    if _is_agent_class(obj, methods):
        raise _class_error(step_name, what, obj)


def check_positional(step_owner: str, what: str, fn: Any, n: int, shape: str) -> None:
    """Raise unless ``fn`` can be called with ``n`` positional arguments (and nothing else)."""
    sig = _signature(fn)
    if sig is None:
        return
    try:
        sig.bind(*range(n))
    except TypeError as exc:
        raise PipelineDefinitionError(
            f"Step {step_owner!r}: {what} {_label(fn)} cannot be called as {shape}: {exc}."
        ) from None


def _is_agent_class(obj: Any, methods: tuple[str, ...]) -> bool:
    """A class whose instances would be the agent (it defines one of ``methods``)."""
    if not inspect.isclass(obj):
        return False
    return any(m in vars(k) for k in obj.__mro__ if k is not object for m in methods)


def _class_error(step_name: str, what: str, cls: type) -> PipelineDefinitionError:
    name = cls.__qualname__
    return PipelineDefinitionError(
        f"Step {step_name!r}: {what} {name} is a class, not an instance; "
        f"pass an instance: {name}(...)."
    )


def compile_agent(step_name: str, agent: Any) -> AgentSpec:
    """Inspect ``agent`` once and return how to call it.

    Raises:
        PipelineDefinitionError: the agent is a coroutine object, a class
            instead of an instance, is not callable, takes no input parameter,
            or has parameters the runtime cannot fill.
    """
    if inspect.iscoroutine(agent) or inspect.isasyncgen(agent):
        fn_name = getattr(agent, "__name__", "agent")
        agent.close()  # type: ignore[union-attr]
        raise PipelineDefinitionError(
            f"Agent step {step_name!r} expected an async function but got a coroutine "
            f"object. Pass {fn_name}, not {fn_name}()."
        )
    if _is_agent_class(agent, ("run", "stream", "__call__")):
        raise _class_error(step_name, "agent", agent)
    label = _label(agent)
    run = getattr(agent, "run", None)
    stream = getattr(agent, "stream", None)
    if not inspect.isfunction(agent) and not inspect.ismethod(agent) and (run or stream):
        stream_call = None
        if stream is not None and callable(stream):
            _check_agent_params(step_name, f"{label}.stream", stream)
            c, r, _, _ = _keywords(stream)
            stream_call = _binder(stream, c, r)
        if run is not None and callable(run):
            _check_agent_params(step_name, f"{label}.run", run)
            c, r, _, _ = _keywords(run)
            kind = ASYNC if _is_async_callable(run) else SYNC
            return AgentSpec(kind, _binder(run, c, r), c, r, label, stream_call, _declares_key(run))
        if stream_call is not None and stream is not None:
            c, r, _, _ = _keywords(stream)
            return AgentSpec(STREAM, stream_call, c, r, label, None, _declares_key(stream))
    if not callable(agent):
        raise PipelineDefinitionError(
            f"Step {step_name!r}: agent must be an async function, a function, or an "
            f"object with an async run(data, **kwargs) method; got {agent!r}."
        )
    _check_agent_params(step_name, label, agent)
    c, r, _, _ = _keywords(agent)
    key = _declares_key(agent)
    if inspect.isasyncgenfunction(agent):
        return AgentSpec(STREAM, _binder(agent, c, r), c, r, label, None, key)
    # A sync callable (also a plain ``def`` wrapper around an async agent) is
    # "sync": whatever awaitable it hands back is awaited at run time.
    kind = ASYNC if _is_async_callable(agent) else SYNC
    return AgentSpec(kind, _binder(agent, c, r), c, r, label, None, key)


_INJECTED: Final = frozenset({"context", "resources", "idempotency_key"})


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin without metadata: trust it


def _check_agent_params(step_name: str, label: str, fn: Any) -> None:
    """Refuse signatures the runtime's call ``fn(data, context=?, resources=?)`` cannot fill."""
    sig = _signature(fn)
    if sig is None:
        return
    short = label.rsplit(".", 1)[-1]
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise PipelineDefinitionError(
            f"Step {step_name!r}: agent {label} takes no parameter for the step's input; "
            f"declare one, e.g. `async def {short}(data): ...`."
        )
    for i, p in enumerate(params):
        if p.name not in _INJECTED:
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise PipelineDefinitionError(
                f"Step {step_name!r}: agent {label} declares {p.name!r} positional-only, "
                f"but the runtime passes {p.name}= by keyword; declare it keyword-only: "
                f"`def {short}(data, *, {p.name}): ...`."
            )
        if i == 0 and p.kind is p.POSITIONAL_OR_KEYWORD:
            raise PipelineDefinitionError(
                f"Step {step_name!r}: agent {label}'s first parameter {p.name!r} would "
                f"receive the step's input; name the input parameter first: "
                f"`def {short}(data, *, {p.name}): ...`."
            )
    for p in [*positional[1:], *(q for q in params if q.kind is q.KEYWORD_ONLY)]:
        if p.default is p.empty and p.name not in _INJECTED:
            raise PipelineDefinitionError(
                f"Step {step_name!r}: agent {label} has a second required parameter "
                f"{p.name!r}; the runtime passes only the step's input (and context=/"
                f"resources= if declared). Give {p.name!r} a default or bind it first: "
                f"functools.partial({short}, {p.name}=...)."
            )


@attrs.frozen(slots=True)
class Callback:
    """A user callback (validator, condition, mapper) compiled for fast calls.

    ``call(*args)`` receives the full argument list and passes as many as
    the callable declared; ``is_async`` says whether to await the result (a
    sync callable's result is still awaited when it is awaitable).
    """

    call: Callable[..., Any]
    is_async: bool
    label: str


_ARGS: Final = {1: "(value)", 2: "(value, context)", 3: "(output, context, iteration)"}


def compile_optional(fn: Any, *, what: str, step_name: str, max_args: int) -> Callback | None:
    """:func:`compile_callback` for an optional callback: None (not given) stays None."""
    if fn is None:
        return None
    return compile_callback(fn, what=what, step_name=step_name, max_args=max_args)


def compile_required(
    fn: Any, *, what: str, step_name: str, max_args: int, kind: str, shape: str
) -> Callback:
    """:func:`compile_callback` for a callback the step cannot do without.

    ``kind`` and ``shape`` only word the error: ``"Loop"`` and
    ``"(output, context) -> bool"`` say "Loop step 'x': <what> is required
    (a function (output, context) -> bool)."

    Raises:
        PipelineDefinitionError: ``fn`` is None, or as :func:`compile_callback`.
    """
    if fn is None:
        raise PipelineDefinitionError(
            f"{kind} step {step_name!r}: {what} is required (a function {shape})."
        )
    return compile_callback(fn, what=what, step_name=step_name, max_args=max_args)


def compile_callback(fn: Any, *, what: str, step_name: str, max_args: int) -> Callback:
    """Compile a callback that takes up to ``max_args`` positional arguments.

    Raises:
        PipelineDefinitionError: ``fn`` is not callable, is a coroutine object
            or a class instead of an instance, or has a required parameter the
            call cannot fill.
    """
    if inspect.iscoroutine(fn):
        fn.close()
        raise PipelineDefinitionError(
            f"Step {step_name!r}: {what} must be a function, got a coroutine object; "
            "pass the function itself, not its call."
        )
    if _is_agent_class(fn, ("__call__", "validate")):
        raise _class_error(step_name, what, fn)
    if not callable(fn):
        raise PipelineDefinitionError(f"Step {step_name!r}: {what} must be callable, got {fn!r}.")
    ctx, _res, npos, varpos = _keywords(fn)
    n = max_args if varpos else min(npos, max_args)
    label = _label(fn)
    _check_callback_params(fn, what=what, step_name=step_name, label=label, max_args=max_args)
    is_async = _is_async_callable(fn)
    call: Callable[..., Any]
    if n >= max_args:
        call = fn
    elif n == 1 and max_args >= 2 and ctx and "context" in _param_names(fn):
        call = lambda *a: fn(a[0], context=a[1])  # noqa: E731
    elif n == 0 and max_args >= 2 and ctx and "context" in _param_names(fn):
        call = lambda *a: fn(context=a[1])  # noqa: E731
    else:
        call = lambda *a: fn(*a[:n])  # noqa: E731
    return Callback(call, is_async, label)


def _check_callback_params(
    fn: Any, *, what: str, step_name: str, label: str, max_args: int
) -> None:
    sig = _signature(fn)
    if sig is None:
        return
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # Only a single-positional callable gets context= by keyword.
    by_keyword = {"context"} if len(positional) <= 1 and max_args >= 2 else set()
    extra = [
        *(p for p in positional[max_args:] if p.default is p.empty),
        *(
            p
            for p in params
            if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in by_keyword
        ),
    ]
    if extra:
        p = extra[0]
        raise PipelineDefinitionError(
            f"Step {step_name!r}: {what} {label} has a required parameter {p.name!r} "
            f"that its call {_ARGS.get(max_args, '(...)')} cannot fill; give it a default "
            "or bind it first with functools.partial."
        )


def _param_names(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()
