"""The pipeline DSL: :class:`Step`, :class:`StepConfig`, :class:`Pipeline`, ``>>``, ``@step``.

Definitions are validated when they are built: a bad argument raises
:class:`PipelineDefinitionError` naming the step, the argument, the value and
the fix, long before anything runs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, TypeAlias, overload

import attrs

from ..errors import InfiniteFallbackError, PipelineDefinitionError
from ..policy.retry import RETRY_ALL, retry_on_types
from .callables import (
    AgentSpec,
    Callback,
    check_positional,
    compile_agent,
    compile_callback,
    looks_async,
    refuse_class,
)
from .event_loop import ASYNCIO, compile_pydantic_ai, is_pydantic_ai_agent, resolve_event_loop
from .options import (
    ReadOnlyDict,
    check_bool,
    check_cost,
    check_count,
    check_seconds,
    refuse_mutation,
    refuse_unhonoured,
)

__all__ = [
    "BranchFailureStrategy",
    "ConditionalStep",
    "DynamicParallelRouterStep",
    "LoopStep",
    "MergeStrategy",
    "ParallelStep",
    "Pipeline",
    "PipelineStep",
    "PluginOutcome",
    "Step",
    "StepConfig",
    "step",
]


class MergeStrategy(enum.Enum):
    """How a parallel step folds its branches' contexts back into the main one."""

    NO_MERGE = "no_merge"
    OVERWRITE = "overwrite"
    CONTEXT_UPDATE = "context_update"
    ERROR_ON_CONFLICT = "error_on_conflict"
    KEEP_FIRST = "keep_first"


class BranchFailureStrategy(enum.Enum):
    """What a failing parallel branch does to its step."""

    PROPAGATE = "propagate"
    IGNORE = "ignore"


MergeSpec: TypeAlias = MergeStrategy | Callable[[Any, Any], None]


@attrs.define
class PluginOutcome:
    """A plugin's verdict on an output; ``new_solution`` (if not None) replaces it."""

    success: bool
    feedback: str | None = None
    new_solution: Any = None


def _check_supervision(
    owner: str, max_retries: Any, timeout_s: Any, backoff_s: Any, backoff_factor: Any
) -> None:
    """The rules of StepConfig's numbers (shared by ``StepConfig`` and ``from_callable``)."""
    check_count(
        owner,
        "max_retries",
        max_retries,
        minimum=0,
        hint=" Use max_retries=0 for a single attempt.",
    )
    if timeout_s is not None:
        check_seconds(owner, "timeout_s", timeout_s, positive=True, none="None for no timeout")
    check_seconds(owner, "backoff_s", backoff_s, positive=False)
    check_seconds(owner, "backoff_factor", backoff_factor, positive=False)


@attrs.define
class StepConfig:
    """Per-step supervision settings, validated when built and frozen afterwards.

    Attributes:
        max_retries: retries after the first attempt (``N`` -> at most ``N + 1`` attempts).
        timeout_s: per-attempt timeout in seconds (None: no timeout). Blocking code
            (a sync agent, ``time.sleep``) cannot be interrupted: an attempt that
            returns after its deadline has timed out all the same. Use
            ``placement="process"`` or ``trio.to_thread`` for blocking work.
        backoff_s: delay before the first retry; later ones grow by ``backoff_factor``.
        backoff_factor: growth of the delay between retries.
        retry_on: the agent exceptions that are retried: an exception type or
            a tuple of them (default: every ``Exception``). Others fail the
            step (or hand over to its fallback) at once. Timeouts
            (``timeout_s``), lost workers and validator/plugin rejections are
            always retried.

    Raises:
        PipelineDefinitionError: a value is of the wrong type, not finite or
            out of range, or an attribute is set after construction.
    """

    max_retries: int = 1
    timeout_s: float | None = None
    backoff_s: float = 0.0
    backoff_factor: float = 2.0
    retry_on: Any = RETRY_ALL
    _sealed: bool = attrs.field(init=False, default=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        _check_supervision(
            "StepConfig", self.max_retries, self.timeout_s, self.backoff_s, self.backoff_factor
        )
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, attr: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            refuse_mutation("A StepConfig", attr)
        object.__setattr__(self, attr, value)


def _check_config(name: str, cfg: Any) -> None:
    # Its values were checked (and frozen) when the StepConfig was built.
    if not isinstance(cfg, StepConfig):
        raise PipelineDefinitionError(f"Step {name!r}: config must be a StepConfig, got {cfg!r}.")
    retry_on = retry_on_types(cfg.retry_on)
    if retry_on is None:
        raise PipelineDefinitionError(
            f"Step {name!r}: retry_on must be an exception type (a subclass of Exception) or a "
            f"tuple of them, got {cfg.retry_on!r}; for example retry_on=(ConnectionError, "
            "TimeoutError)."
        )
    if cfg.retry_on is not RETRY_ALL:
        object.__setattr__(cfg, "retry_on", retry_on)  # one shape for the engine: a tuple


@attrs.frozen(slots=True)
class Plugin:
    """A compiled plugin: ``validate(output, context)`` returning a PluginOutcome."""

    call: Callable[[Any, Any], Any]
    is_async: bool
    label: str


def _compile_plugin(name: str, plugin: Any) -> Plugin:
    refuse_class(name, "plugin", plugin, ("validate", "__call__"))
    validate = getattr(plugin, "validate", None)
    if validate is not None and callable(validate):
        cb = compile_callback(validate, what="plugin.validate", step_name=name, max_args=2)
    else:
        cb = compile_callback(plugin, what="plugin", step_name=name, max_args=2)
    return Plugin(cb.call, cb.is_async, cb.label)


def _as_tuple(value: Any, what: str, name: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if callable(value) and not isinstance(value, (list, tuple)):
        raise PipelineDefinitionError(
            f"Step {name!r}: {what} must be a list of callables, got a single {value!r}; "
            f"wrap it: {what}=[...]."
        )
    try:
        return tuple(value)
    except TypeError:
        raise PipelineDefinitionError(
            f"Step {name!r}: {what} must be a list, got {value!r}."
        ) from None


@attrs.define(eq=False, repr=False)
class Step:
    """One unit of a pipeline: an agent call, supervised (or a control-flow step).

    Build it with :meth:`from_callable`, ``@step``, the control-flow
    constructors (:meth:`parallel`, :meth:`loop_until`, :meth:`branch_on`,
    :meth:`dynamic_parallel_branch`) or directly with ``Step(name=..., agent=...)``.
    Chain with ``>>``.

    Raises:
        PipelineDefinitionError: on any invalid argument, when built.
    """

    kind: ClassVar[str] = "agent"

    name: str
    agent: Any = None
    config: StepConfig = attrs.Factory(StepConfig)
    validators: tuple[Any, ...] = attrs.field(default=(), kw_only=True)
    plugins: tuple[Any, ...] = attrs.field(default=(), kw_only=True)
    fallback: Step | None = attrs.field(default=None, kw_only=True)
    updates_context: bool = attrs.field(default=False, kw_only=True)
    cache: bool = attrs.field(default=False, kw_only=True)
    cache_key: str | None = attrs.field(default=None, kw_only=True)
    expected_cost_usd: Decimal | None = attrs.field(default=None, kw_only=True)
    expected_tokens: int | None = attrs.field(default=None, kw_only=True)
    placement: Any = attrs.field(default=None, kw_only=True)
    #: "trio", "asyncio", or None (asyncio for pydantic-ai agents, else trio); resolved at build
    event_loop: Any = attrs.field(default=None, kw_only=True)
    # compiled at build time (never per call)
    spec: AgentSpec | None = attrs.field(init=False, default=None)
    on_asyncio: bool = attrs.field(init=False, default=False)
    compiled_validators: tuple[Callback, ...] = attrs.field(init=False, default=())
    compiled_plugins: tuple[Plugin, ...] = attrs.field(init=False, default=())
    # cache=True: the identity part of the cache key (agent + state, or cache_key)
    cache_identity: str | None = attrs.field(init=False, default=None)
    _sealed: bool = attrs.field(init=False, default=False, repr=False)

    #: The Step options a control-flow kind honours (all others are refused).
    honoured: ClassVar[frozenset[str]] = frozenset()

    def __setattr__(self, attr: str, value: Any) -> None:
        # Sealed at the end of __attrs_post_init__: a validated definition
        # (no cycles, no ignored options) cannot be made invalid afterwards.
        if getattr(self, "_sealed", False):
            refuse_mutation(f"Step {self.name!r}", attr)
        object.__setattr__(self, attr, value)

    def __attrs_post_init__(self) -> None:
        self._validate()
        object.__setattr__(self, "_sealed", True)

    def _validate(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip():
            raise PipelineDefinitionError(
                f"Step name must be a non-empty string, got {name!r}. "
                "Pass name='...' (e.g. the agent's purpose)."
            )
        _check_config(name, self.config)
        owner = f"Step {name!r}"
        check_bool(owner, "updates_context", self.updates_context)
        check_bool(owner, "cache", self.cache)
        self.validators = _as_tuple(self.validators, "validators", name)
        self.plugins = _as_tuple(self.plugins, "plugins", name)
        if self.kind != "agent":
            # Before anything else is compiled: the option is the problem.
            refuse_unhonoured(self, attrs.fields(Step), StepConfig())
        self.compiled_validators = tuple(
            compile_callback(v, what="validator", step_name=name, max_args=2)
            for v in self.validators
        )
        self.compiled_plugins = tuple(_compile_plugin(name, p) for p in self.plugins)
        if self.fallback is not None:
            if not isinstance(self.fallback, Step):
                raise PipelineDefinitionError(
                    f"Step {name!r}: fallback must be a Step, got {self.fallback!r}."
                )
            check_fallback_chain(self)
        if self.expected_cost_usd is not None:
            self.expected_cost_usd = check_cost(owner, "expected_cost_usd", self.expected_cost_usd)
        if self.expected_tokens is not None:
            check_count(owner, "expected_tokens", self.expected_tokens, minimum=0)
        if self.placement is not None:
            # Imported only for placed steps: executors are an optional boundary.
            from ..executors import check_placement

            check_placement(name, self.placement)
        self._compile()
        if self.cache or self.cache_key is not None:
            self._compile_cache()

    def _compile_cache(self) -> None:
        if not self.cache:
            raise PipelineDefinitionError(
                f"Step {self.name!r}: cache_key={self.cache_key!r} has no effect without "
                "cache=True; pass cache=True as well (or drop cache_key)."
            )
        # Imported for cached steps only; the fingerprint is taken once, here.
        from ..policy.cache_key import step_cache_identity

        if self.agent is not None:
            self.cache_identity = step_cache_identity(
                self.name, self.agent, cache_key=self.cache_key
            )

    def _compile(self) -> None:
        if self.agent is None:
            raise PipelineDefinitionError(
                f"Step {self.name!r}: agent is required; pass agent=<async function or "
                "object with async run(data)>."
            )
        _refuse_nested_runtime(self.name, self.agent)
        self.event_loop = resolve_event_loop(self.name, self.agent, self.event_loop, self.placement)
        self.on_asyncio = self.event_loop == ASYNCIO
        if is_pydantic_ai_agent(self.agent):
            self.spec = compile_pydantic_ai(self.agent)
        else:
            self.spec = compile_agent(self.name, self.agent)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- composition --------------------------------------------------------
    def __rshift__(self, other: Step | Pipeline) -> Pipeline:
        return Pipeline(steps=[self, *_steps_of(other, self.name)])

    # -- constructors ---------------------------------------------------------
    @classmethod
    def from_callable(
        cls,
        fn: Any,
        *,
        name: str | None = None,
        max_retries: int = 1,
        timeout_s: float | None = None,
        validators: Iterable[Any] = (),
        plugins: Iterable[Any] = (),
        fallback: Step | None = None,
        updates_context: bool = False,
        cache: bool = False,
        cache_key: str | None = None,
        expected_cost_usd: Any = None,
        expected_tokens: int | None = None,
        placement: Any = None,
        backoff_s: float = 0.0,
        backoff_factor: float = 2.0,
        event_loop: str | None = None,
        retry_on: Any = RETRY_ALL,
    ) -> Step:
        """Make an agent step from a function or an object with ``run``.

        The name defaults to the function's ``__name__``. ``event_loop="asyncio"``
        runs the agent on the run's asyncio loop (extra ``flujo-actors[asyncio]``);
        ``None`` (the default) means trio, or asyncio for a pydantic-ai ``Agent``.
        With ``cache=True`` the cache key covers the step name, the agent's
        identity and a fingerprint of its state (taken now); ``cache_key=``
        replaces that fingerprint with a name for the configuration that you
        vouch for (required when the state cannot be fingerprinted).
        ``retry_on``: see :class:`StepConfig`.
        """
        step_name = name if name is not None else _default_name(fn)
        if isinstance(step_name, str) and step_name.strip():
            # Named after the step, not "StepConfig": the user never wrote one.
            _check_supervision(
                f"Step {step_name!r}", max_retries, timeout_s, backoff_s, backoff_factor
            )
        return Step(
            name=step_name,
            agent=fn,
            config=StepConfig(
                max_retries=max_retries,
                timeout_s=timeout_s,
                backoff_s=backoff_s,
                backoff_factor=backoff_factor,
                retry_on=retry_on,
            ),
            validators=validators,  # type: ignore[arg-type]
            plugins=plugins,  # type: ignore[arg-type]
            fallback=fallback,
            updates_context=updates_context,
            cache=cache,
            cache_key=cache_key,
            expected_cost_usd=expected_cost_usd,
            expected_tokens=expected_tokens,
            placement=placement,
            event_loop=event_loop,
        )

    @staticmethod
    def parallel(
        name: str,
        branches: Mapping[str, Step | Pipeline],
        *,
        merge_strategy: MergeSpec = MergeStrategy.CONTEXT_UPDATE,
        on_branch_failure: BranchFailureStrategy = BranchFailureStrategy.PROPAGATE,
        context_include_keys: Iterable[str] | None = None,
    ) -> ParallelStep:
        """Run every branch concurrently on the same input and its own context copy."""
        return ParallelStep(
            name=name,
            branches=branches,  # type: ignore[arg-type]
            merge_strategy=merge_strategy,
            on_branch_failure=on_branch_failure,
            context_include_keys=context_include_keys,  # type: ignore[arg-type]
        )

    @staticmethod
    def loop_until(
        name: str,
        loop_body_pipeline: Step | Pipeline,
        exit_condition_callable: Callable[..., Any],
        *,
        max_loops: int = 5,
        initial_input_to_loop_body_mapper: Callable[..., Any] | None = None,
        iteration_input_mapper: Callable[..., Any] | None = None,
        loop_output_mapper: Callable[..., Any] | None = None,
    ) -> LoopStep:
        """Run the body until ``exit_condition_callable(output, context)`` is true."""
        return LoopStep(
            name=name,
            body=loop_body_pipeline,  # type: ignore[arg-type]
            exit_condition=exit_condition_callable,
            max_loops=max_loops,
            initial_input_mapper=initial_input_to_loop_body_mapper,
            iteration_input_mapper=iteration_input_mapper,
            output_mapper=loop_output_mapper,
        )

    @staticmethod
    def branch_on(
        name: str,
        condition_callable: Callable[..., Any],
        branches: Mapping[Any, Step | Pipeline],
        *,
        default_branch_pipeline: Step | Pipeline | None = None,
    ) -> ConditionalStep:
        """Run the branch whose key ``condition_callable(data, context)`` returns."""
        return ConditionalStep(
            name=name,
            condition=condition_callable,
            branches=branches,  # type: ignore[arg-type]
            default_branch=default_branch_pipeline,  # type: ignore[arg-type]
        )

    @staticmethod
    def dynamic_parallel_branch(
        name: str,
        router_agent: Any,
        branches: Mapping[str, Step | Pipeline],
        *,
        merge_strategy: MergeSpec = MergeStrategy.CONTEXT_UPDATE,
        on_branch_failure: BranchFailureStrategy = BranchFailureStrategy.PROPAGATE,
    ) -> DynamicParallelRouterStep:
        """Ask ``router_agent`` which branches to run, then run those in parallel."""
        return DynamicParallelRouterStep(
            name=name,
            agent=router_agent,
            branches=branches,  # type: ignore[arg-type]
            merge_strategy=merge_strategy,
            on_branch_failure=on_branch_failure,
        )


def _refuse_nested_runtime(name: str, agent: Any) -> None:
    """A step, pipeline or runner is not an agent: say how to nest it instead."""
    if isinstance(agent, (Step, Pipeline)) or (
        hasattr(agent, "run_async") and hasattr(agent, "as_step") and not isinstance(agent, type)
    ):
        what = "a Flujo runner" if not isinstance(agent, (Step, Pipeline)) else repr(agent)
        fix = (
            "chain it with `>>` or put it in a Pipeline"
            if isinstance(agent, Step)
            else "nest it with .as_step(name)"
        )
        raise PipelineDefinitionError(f"Step {name!r}: the agent is {what}, not an agent; {fix}.")


def _default_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None)
    if name is None:
        name = type(fn).__name__
    return str(name)


def _steps_of(other: Any, left: str) -> list[Step]:
    if isinstance(other, Step):
        return [other]
    if isinstance(other, Pipeline):
        return list(other.steps)
    raise PipelineDefinitionError(
        f"Cannot chain step {left!r} with {other!r}: `>>` takes a Step or a Pipeline."
    )


def check_fallback_chain(first: Step) -> None:
    """Raise InfiniteFallbackError if following ``fallback`` from ``first`` revisits a step."""
    seen: list[Step] = [first]
    cur = first.fallback
    while cur is not None:
        if any(cur is s for s in seen):
            chain = " -> ".join(repr(s.name) for s in [*seen, cur])
            raise InfiniteFallbackError(
                f"Step {first.name!r}: the fallback chain {chain} revisits step "
                f"{cur.name!r}; a fallback must lead to a step without a fallback."
            )
        seen.append(cur)
        cur = cur.fallback


def _as_pipeline(value: Any, *, owner: str, what: str) -> Pipeline:
    if isinstance(value, Pipeline):
        return value
    if isinstance(value, Step):
        return Pipeline(steps=[value])
    raise PipelineDefinitionError(
        f"Step {owner!r}: {what} must be a Step or a Pipeline, got {value!r}."
    )


def _branch_map(value: Any, owner: str, *, allow_empty: bool = False) -> Mapping[Any, Pipeline]:
    if not isinstance(value, Mapping):
        raise PipelineDefinitionError(
            f"Step {owner!r}: branches must be a mapping of name -> Step | Pipeline, got {value!r}."
        )
    if not value and not allow_empty:
        raise PipelineDefinitionError(
            f"Step {owner!r}: branches must not be empty; give at least one branch."
        )
    return ReadOnlyDict(
        f"Step {owner!r}",
        {k: _as_pipeline(v, owner=owner, what=f"branch {k!r}") for k, v in value.items()},
    )


def _enum_arg(enum_cls: Any, value: Any, owner: str, arg: str) -> Any:
    """``value`` as a member of ``enum_cls``; its value string (any case) is accepted too."""
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        try:
            return enum_cls(value.lower())
        except ValueError:
            pass
    choices = ", ".join(f"{enum_cls.__name__}.{m.name}" for m in enum_cls)
    return PipelineDefinitionError(
        f"Step {owner!r}: {arg} must be a {enum_cls.__name__} ({choices})"
        + (" or a callable (main_ctx, branch_ctx) -> None" if enum_cls is MergeStrategy else "")
        + f", got {value!r}."
    )


def _check_merge(owner: str, merge: Any, failure: Any) -> tuple[MergeSpec, BranchFailureStrategy]:
    """Validate (and normalise) ``merge_strategy`` and ``on_branch_failure``."""
    if callable(merge) and not isinstance(merge, (str, MergeStrategy)):
        if looks_async(merge):
            raise PipelineDefinitionError(
                f"Step {owner!r}: merge_strategy must be a plain function "
                f"(main_ctx, branch_ctx) -> None, got the async function {merge!r}; "
                "merging runs synchronously, so drop `async`."
            )
        refuse_class(owner, "merge_strategy", merge, ("__call__",))
        check_positional(owner, "merge_strategy", merge, 2, "(main_ctx, branch_ctx)")
        m: Any = merge
    else:
        m = _enum_arg(MergeStrategy, merge, owner, "merge_strategy")
    f = _enum_arg(BranchFailureStrategy, failure, owner, "on_branch_failure")
    for value in (m, f):
        if isinstance(value, PipelineDefinitionError):
            raise value
    return m, f


def _include_keys(owner: str, keys: Any) -> frozenset[str] | None:
    """Validate ``context_include_keys``: None or an iterable of field names."""
    if keys is None:
        return None
    if isinstance(keys, str):
        raise PipelineDefinitionError(
            f"Step {owner!r}: context_include_keys must be a list of field "
            f"names, got the string {keys!r}; write [{keys!r}]."
        )
    try:
        names = frozenset(keys)
    except TypeError:
        raise PipelineDefinitionError(
            f"Step {owner!r}: context_include_keys must be a list of context field "
            f"names or None, got {keys!r}."
        ) from None
    bad = sorted(repr(k) for k in names if not isinstance(k, str) or not k)
    if bad:
        raise PipelineDefinitionError(
            f"Step {owner!r}: context_include_keys must hold context field names "
            f"(non-empty strings), got {', '.join(bad)}."
        )
    return names


def _check_branch_names(owner: str, branches: Mapping[Any, Any]) -> None:
    for k in branches:
        if not isinstance(k, str) or not k:
            raise PipelineDefinitionError(
                f"Step {owner!r}: branch names must be non-empty strings, got {k!r}."
            )


@attrs.define(eq=False, repr=False)
class ParallelStep(Step):
    """Branches run concurrently; output ``{branch_name: branch_output}``."""

    kind: ClassVar[str] = "parallel"

    branches: Mapping[str, Pipeline] = attrs.field(factory=dict, kw_only=True)
    merge_strategy: MergeSpec = attrs.field(default=MergeStrategy.CONTEXT_UPDATE, kw_only=True)
    on_branch_failure: BranchFailureStrategy = attrs.field(
        default=BranchFailureStrategy.PROPAGATE, kw_only=True
    )
    context_include_keys: frozenset[str] | None = attrs.field(default=None, kw_only=True)

    def _compile(self) -> None:
        _compile_fan_out(self)


def _compile_fan_out(step: ParallelStep | DynamicParallelRouterStep) -> None:
    """Validate and normalise what parallel and router steps share."""
    step.branches = _branch_map(step.branches, step.name)
    _check_branch_names(step.name, step.branches)
    step.merge_strategy, step.on_branch_failure = _check_merge(
        step.name, step.merge_strategy, step.on_branch_failure
    )
    step.context_include_keys = _include_keys(step.name, step.context_include_keys)


@attrs.define(eq=False, repr=False)
class LoopStep(Step):
    """Runs its body until the exit condition holds or ``max_loops`` is reached."""

    kind: ClassVar[str] = "loop"

    body: Pipeline = attrs.field(default=None, kw_only=True)
    exit_condition: Any = attrs.field(default=None, kw_only=True)
    max_loops: int = attrs.field(default=5, kw_only=True)
    initial_input_mapper: Any = attrs.field(default=None, kw_only=True)
    iteration_input_mapper: Any = attrs.field(default=None, kw_only=True)
    output_mapper: Any = attrs.field(default=None, kw_only=True)
    compiled_exit: Callback | None = attrs.field(init=False, default=None)
    compiled_initial: Callback | None = attrs.field(init=False, default=None)
    compiled_iteration: Callback | None = attrs.field(init=False, default=None)
    compiled_output: Callback | None = attrs.field(init=False, default=None)

    def _compile(self) -> None:
        n = self.name
        self.body = _as_pipeline(self.body, owner=n, what="loop_body_pipeline")
        ml = self.max_loops
        if type(ml) is not int or ml < 1:
            raise PipelineDefinitionError(f"Loop step {n!r}: max_loops must be >= 1, got {ml!r}.")
        if self.exit_condition is None:
            raise PipelineDefinitionError(
                f"Loop step {n!r}: exit_condition_callable is required "
                "(a function (output, context) -> bool)."
            )
        self.compiled_exit = compile_callback(
            self.exit_condition, what="exit_condition_callable", step_name=n, max_args=2
        )
        if self.initial_input_mapper is not None:
            self.compiled_initial = compile_callback(
                self.initial_input_mapper,
                what="initial_input_to_loop_body_mapper",
                step_name=n,
                max_args=2,
            )
        if self.iteration_input_mapper is not None:
            self.compiled_iteration = compile_callback(
                self.iteration_input_mapper, what="iteration_input_mapper", step_name=n, max_args=3
            )
        if self.output_mapper is not None:
            self.compiled_output = compile_callback(
                self.output_mapper, what="loop_output_mapper", step_name=n, max_args=2
            )


@attrs.define(eq=False, repr=False)
class ConditionalStep(Step):
    """Runs the branch selected by ``condition(data, context)``."""

    kind: ClassVar[str] = "conditional"

    condition: Any = attrs.field(default=None, kw_only=True)
    branches: Mapping[Any, Pipeline] = attrs.field(factory=dict, kw_only=True)
    default_branch: Pipeline | None = attrs.field(default=None, kw_only=True)
    compiled_condition: Callback | None = attrs.field(init=False, default=None)

    def _compile(self) -> None:
        n = self.name
        if self.condition is None:
            raise PipelineDefinitionError(
                f"Conditional step {n!r}: condition_callable is required "
                "(a function (data, context) -> branch key)."
            )
        self.compiled_condition = compile_callback(
            self.condition, what="condition_callable", step_name=n, max_args=2
        )
        self.branches = _branch_map(self.branches, n, allow_empty=self.default_branch is not None)
        if self.default_branch is not None:
            self.default_branch = _as_pipeline(
                self.default_branch, owner=n, what="default_branch_pipeline"
            )


@attrs.define(eq=False, repr=False)
class DynamicParallelRouterStep(Step):
    """The router agent picks branch names; those run as a parallel step."""

    kind: ClassVar[str] = "router"
    # The router agent's call is supervised like an agent step.
    honoured: ClassVar[frozenset[str]] = frozenset({"agent", "config", "placement", "event_loop"})

    branches: Mapping[str, Pipeline] = attrs.field(factory=dict, kw_only=True)
    merge_strategy: MergeSpec = attrs.field(default=MergeStrategy.CONTEXT_UPDATE, kw_only=True)
    on_branch_failure: BranchFailureStrategy = attrs.field(
        default=BranchFailureStrategy.PROPAGATE, kw_only=True
    )
    context_include_keys: frozenset[str] | None = attrs.field(default=None, kw_only=True)

    def _compile(self) -> None:
        if self.agent is None:
            raise PipelineDefinitionError(
                f"Router step {self.name!r}: router_agent is required; pass a function or "
                "agent returning the name (or list of names) of the branches to run."
            )
        super()._compile()  # the router agent
        _compile_fan_out(self)


@attrs.define(eq=False, repr=False)
class PipelineStep(Step):
    """A nested pipeline run as one step (``pipeline.as_step(name)``)."""

    kind: ClassVar[str] = "pipeline"

    pipeline: Pipeline = attrs.field(default=None, kw_only=True)
    inherit_context: bool = attrs.field(default=True, kw_only=True)
    context_model: Any = attrs.field(default=None, kw_only=True)
    initial_context_data: Mapping[str, Any] | None = attrs.field(default=None, kw_only=True)

    def _compile(self) -> None:
        self.pipeline = _as_pipeline(self.pipeline, owner=self.name, what="pipeline")
        if not isinstance(self.inherit_context, bool):
            raise PipelineDefinitionError(
                f"Step {self.name!r}: inherit_context must be True or False, "
                f"got {self.inherit_context!r}."
            )
        data = self.initial_context_data
        if data is not None and not isinstance(data, Mapping):
            raise PipelineDefinitionError(
                f"Step {self.name!r}: initial_context_data must be a mapping of "
                f"field -> value, got {data!r}."
            )
        if self.inherit_context and (data or self.context_model is not None):
            # The parent's context is used as it is: these would be ignored.
            given = "initial_context_data" if data else "context_model"
            raise PipelineDefinitionError(
                f"Step {self.name!r}: {given} has no effect with inherit_context=True (the "
                "nested pipeline shares the parent's context); pass inherit_context=False "
                "for a fresh context built from it."
            )
        if self.context_model is not None:
            from ..context import check_context_model

            check_context_model(self.context_model)
        if data is not None:
            # A copy the caller's dict cannot change after the step was validated.
            self.initial_context_data = ReadOnlyDict(
                f"Step {self.name!r}", data, what="initial_context_data"
            )


@attrs.define(eq=False, repr=False)
class Pipeline:
    """An ordered, immutable sequence of steps; each step's output is the next step's input.

    ``steps`` is a tuple once built; ``>>`` builds a new pipeline.
    """

    steps: Sequence[Step] = attrs.field(factory=tuple)
    name: str = attrs.field(default="pipeline", kw_only=True)
    _sealed: bool = attrs.field(init=False, default=False, repr=False)

    def __setattr__(self, attr: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            refuse_mutation(f"Pipeline {self.name!r}", attr)
        object.__setattr__(self, attr, value)

    def __attrs_post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip():
            raise PipelineDefinitionError(
                f"Pipeline name must be a non-empty string, got {name!r}; "
                "pass name='...' or leave the default."
            )
        steps = self.steps
        if isinstance(steps, Step) or not isinstance(steps, Iterable):
            raise PipelineDefinitionError(
                f"Pipeline {self.name!r}: steps must be a list of Step, got {steps!r}."
            )
        steps = list(steps)
        if not steps:
            raise PipelineDefinitionError(
                f"Pipeline {self.name!r}: steps must not be empty; add at least one Step."
            )
        for i, s in enumerate(steps):
            if isinstance(s, Pipeline):
                raise PipelineDefinitionError(
                    f"Pipeline {self.name!r}: steps[{i}] is a Pipeline; chain it with `>>` "
                    "or nest it with pipeline.as_step(name)."
                )
            if not isinstance(s, Step):
                raise PipelineDefinitionError(
                    f"Pipeline {self.name!r}: steps[{i}] must be a Step, got {s!r}; "
                    "wrap functions with Step.from_callable(fn) or @step."
                )
        # A tuple: a pipeline cannot grow (or come to contain itself) after it was built.
        self.steps = tuple(steps)
        object.__setattr__(self, "_sealed", True)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r} [{', '.join(s.name for s in self.steps)}]>"

    def __rshift__(self, other: Step | Pipeline) -> Pipeline:
        return Pipeline(steps=[*self.steps, *_steps_of(other, self.name)], name=self.name)

    @classmethod
    def from_step(cls, s: Step) -> Pipeline:
        """A one-step pipeline."""
        return cls(steps=[s])

    def as_step(self, name: str, inherit_context: bool = True) -> PipelineStep:
        """This pipeline as one step of another.

        With ``inherit_context`` it reads and writes the parent's context;
        otherwise it gets a fresh context built like the runner builds one.
        """
        return PipelineStep(name=name, pipeline=self, inherit_context=inherit_context)


@overload
def step(fn: Callable[..., Any], /) -> Step: ...
@overload
def step(fn: None = None, /, **kwargs: Any) -> Callable[[Callable[..., Any]], Step]: ...
def step(
    fn: Callable[..., Any] | None = None, /, **kwargs: Any
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Decorator form of :meth:`Step.from_callable`: ``@step`` or ``@step(name=...)``."""
    if fn is not None:
        return Step.from_callable(fn, **kwargs)

    def wrap(f: Callable[..., Any]) -> Step:
        return Step.from_callable(f, **kwargs)

    return wrap
