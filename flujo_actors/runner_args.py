"""Checks of ``Flujo(...)``'s arguments, made when the runner is built.

A wrong backend, resource or context value used to be accepted and to fail
mid-run with an ``AttributeError``/``TypeError``; each is reported here,
naming the argument, the value and the fix.

:func:`validate_tree` checks what only the whole pipeline tree shows
(cycles, fallback loops, nested pipelines' initial context data).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, assert_never, cast

import attrs

from .context import build_context
from .errors import PipelineDefinitionError
from .steps.dsl import AgentStep, Pipeline, PipelineStep, check_fallback_chain

if TYPE_CHECKING:
    from .backends.state import StateBackend
    from .steps.kinds import AnyStep

__all__ = [
    "check_backend",
    "check_executor",
    "check_initial_context_data",
    "check_resources",
    "resolve_state_backend",
    "validate_tree",
]

#: Fields the runner sets for every run: a user value would be overwritten or would
#: hijack the run's identity.
_IDENTITY: Final = {
    "run_id": "pass run_async(..., run_id=...) to choose a run's id",
    "initial_prompt": "it is set from each run's input",
}


def _async_methods(protocol: type) -> tuple[str, ...]:
    """The public methods a Protocol class declares, in declaration order."""
    return tuple(
        name
        for name, member in vars(protocol).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    )


def _is_async(method: Any) -> bool:
    try:
        inner = inspect.unwrap(method)
    except ValueError:
        inner = method
    if inspect.iscoroutinefunction(method) or inspect.iscoroutinefunction(inner):
        return True
    call = getattr(method, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def check_backend(arg: str, value: Any, protocol: type, example: str) -> None:
    """Raise unless ``value`` has every async method of ``protocol``.

    Raises:
        PipelineDefinitionError: naming the missing (or not async) methods.
    """
    methods = _async_methods(protocol)
    missing = [m for m in methods if not callable(getattr(value, m, None))]
    not_async = [m for m in methods if m not in missing and not _is_async(getattr(value, m))]
    if not missing and not not_async:
        return
    wanted = ", ".join(methods)
    problems = []
    if missing:
        problems.append(f"it lacks {', '.join(missing)}")
    if not_async:
        problems.append(
            f"{', '.join(not_async)} {'is' if len(not_async) == 1 else 'are'} not async"
        )
    problem = "; ".join(problems)
    raise PipelineDefinitionError(
        f"Flujo: {arg} must implement the {protocol.__name__} protocol (async {wanted}); "
        f"got {value!r}: {problem}. Pass e.g. {arg}={example}."
    )


def check_executor(value: object) -> None:
    """Check ``Flujo(executor=value)``: a placement name, or an ``Executor`` object.

    Raises:
        PipelineDefinitionError: an unknown name, a name whose extra is not
            installed, or an object without the protocol's async methods.
    """
    if value is None:
        return
    if isinstance(value, str):
        from .steps.placement import check_placement

        check_placement("", value, owner="Flujo", arg="executor")
        return
    from .executors.base import Executor

    check_backend("executor", value, Executor, "'process' or ProcessExecutor()")


def resolve_state_backend(value: object) -> StateBackend | None:
    """The state backend for ``Flujo(state_backend=value)``.

    A ``str`` or ``os.PathLike`` names one (opened on first use): a
    ``postgresql://`` / ``postgres://`` URL a ``PostgresBackend``, another URL
    scheme is refused, anything else is a SQLite file, ``SQLiteBackend(value)``
    (see :mod:`flujo_actors.backends.named`). Anything else must implement
    ``StateBackend``.
    """
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        from .backends.named import state_backend_named, url_scheme

        try:
            return state_backend_named(value)
        except (TypeError, ValueError, ImportError) as exc:
            # A URL is not repeated: it may hold a password.
            shown = "" if isinstance(value, str) and url_scheme(value) else f"={value!r}"
            raise PipelineDefinitionError(f"Flujo: state_backend{shown}: {exc}") from exc
    from .backends.state import StateBackend

    check_backend(
        "state_backend", value, StateBackend, "SQLiteBackend('runs.db') or InMemoryStateBackend()"
    )
    return cast("StateBackend", value)


def check_resources(value: Any) -> None:
    """Refuse what cannot be a resource: a coroutine object (an un-awaited factory)."""
    if inspect.iscoroutine(value):
        name = getattr(value, "__name__", "make_resources")
        value.close()  # refused: no "never awaited" warning on top of the error
        raise PipelineDefinitionError(
            f"Flujo: resources is a coroutine object ({name}() was not awaited); pass its "
            f"result: resources=await {name}(...)."
        )


def _field_names(model: Any) -> tuple[str, ...] | None:
    if attrs.has(model):
        return tuple(f.name for f in attrs.fields(model))
    fields = getattr(model, "model_fields", None)  # a pydantic model
    if isinstance(fields, Mapping):
        return tuple(fields)
    return None


def check_initial_context_data(owner: str, model: Any, data: Mapping[str, Any]) -> None:
    """Check ``initial_context_data`` against the context model it will build.

    Refused: keys that are not field names of ``model``, the identity fields
    (``run_id``, ``initial_prompt``), and values the model itself rejects (its
    validators, converters, missing required fields): the same construction a
    run makes is tried once, here.

    Raises:
        PipelineDefinitionError: naming the field, the model and its fields.
    """
    name = getattr(model, "__name__", repr(model))
    fields = _field_names(model)
    for key in data:
        if not isinstance(key, str):
            raise PipelineDefinitionError(
                f"{owner}: initial_context_data keys must be field names (str), got {key!r}."
            )
        if key in _IDENTITY:
            raise PipelineDefinitionError(
                f"{owner}: initial_context_data sets {key!r}, which identifies the run and is "
                f"set by the runner; drop it ({_IDENTITY[key]})."
            )
    if fields is not None:
        unknown = [k for k in data if k not in fields]
        if unknown:
            settable = [f for f in fields if f not in _IDENTITY]
            raise PipelineDefinitionError(
                f"{owner}: initial_context_data has field(s) {unknown!r} that the context model "
                f"{name} does not define; its fields are {settable!r}. Add them to the model "
                "(a subclass with @attrs.define) or drop them."
            )
    try:
        build_context(model, data, None, "flujo-build-check")
    except Exception as exc:  # the model refused: a validator, a converter, a missing field
        cause = exc.__cause__ if isinstance(exc, PipelineDefinitionError) else exc
        raise PipelineDefinitionError(
            f"{owner}: initial_context_data cannot build context {name}: {_reason(cause)}. "
            "Pass values the model accepts (and every field it requires)."
        ) from exc


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "it was refused"
    args = exc.args
    # attrs validators raise TypeError(message, attribute, type, value): show the message.
    message = args[0] if len(args) > 1 and isinstance(args[0], str) else str(exc)
    return f"{type(exc).__name__}: {message.rstrip('.')}"


def validate_tree(pipeline: Pipeline, active: list[int], path: tuple[str, ...], model: Any) -> None:
    """Check what can only be checked on the whole tree: cycles and fallback loops.

    Definitions are sealed once built, so a cycle can only come from bypassing
    the seal; it would otherwise start actors without end.
    """
    if id(pipeline) in active:
        raise PipelineDefinitionError(
            f"Pipeline {pipeline.name!r} contains itself (at {'/'.join(path)}); "
            "a pipeline tree must not be recursive."
        )
    active.append(id(pipeline))
    for s in pipeline.steps:
        _validate_step(s, active, (*path, s.name), model)
    active.pop()


def _validate_step(s: AnyStep, active: list[int], path: tuple[str, ...], model: Any) -> None:
    if isinstance(s, AgentStep):
        if s.fallback is not None:
            check_fallback_chain(s)
            _validate_step(s.fallback, active, (*path, s.fallback.name), model)
        return
    if isinstance(s, PipelineStep):
        if not s.inherit_context:
            # A fresh context of the step's model, or of the one it is nested in.
            model = s.context_model or model
            check_initial_context_data(
                f"Nested pipeline step {s.name!r}", model, s.initial_context_data or {}
            )
        validate_tree(s.pipeline, active, path, model)
        return
    # Imported only for a step of another kind, whose module is therefore loaded already:
    # a pipeline of agent steps never loads these kinds.
    from .steps.control import ConditionalStep, DynamicParallelRouterStep, LoopStep, ParallelStep
    from .steps.human import HumanInputStep
    from .steps.map import MapStep

    match s:
        case ParallelStep() | DynamicParallelRouterStep():
            for k, p in s.branches.items():
                validate_tree(p, active, (*path, str(k)), model)
        case LoopStep() | MapStep():
            validate_tree(s.body, active, path, model)
        case ConditionalStep():
            for k, p in s.branches.items():
                validate_tree(p, active, (*path, str(k)), model)
            if s.default_branch is not None:
                validate_tree(s.default_branch, active, (*path, "default"), model)
        case HumanInputStep():
            pass  # checked when it was built; its sink_to by the runner (runner_human)
        case _:
            assert_never(s)
