# Over 500 lines on purpose: the Step/Pipeline classes and their build-time checks; kinds, config and strategies already live beside it.
"""The pipeline DSL: :class:`Step`, :class:`StepConfig`, :class:`Pipeline`, ``>>``, ``@step``.

Definitions are validated when they are built: a bad argument raises
:class:`PipelineDefinitionError` naming the step, the argument, the value and
the fix, long before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, overload

import attrs

from ..errors import InfiniteFallbackError, PipelineDefinitionError
from ..policy.retry import RETRY_ALL
from .callables import (
    AgentSpec,
    Callback,
    compile_agent,
    compile_callback,
    refuse_class,
)
from .config import StepConfig, check_config, check_supervision
from .event_loop import ASYNCIO, compile_pydantic_ai, is_pydantic_ai_agent, resolve_event_loop
from .options import (
    ReadOnlyDict,
    check_bool,
    check_cost,
    check_count,
    refuse_mutation,
    refuse_unhonoured,
)
from .strategies import BranchFailureStrategy, MergeSpec, MergeStrategy, PluginOutcome

if TYPE_CHECKING:
    from .control import (
        ConditionalStep,
        DynamicParallelRouterStep,
        LoopStep,
        ParallelStep,
        PipelineStep,
    )
    from .human import HumanInputStep
    from .map import MapStep

__all__ = [
    "BranchFailureStrategy",
    "ConditionalStep",
    "DynamicParallelRouterStep",
    "LoopStep",
    "MapStep",
    "MergeStrategy",
    "ParallelStep",
    "Pipeline",
    "PipelineStep",
    "PluginOutcome",
    "Step",
    "StepConfig",
    "step",
]


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
        check_config(name, self.config)
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
            # Imported only for placed steps (names and extras; no executor is imported).
            from .placement import check_placement

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
            check_supervision(
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
        from .control import ParallelStep

        return ParallelStep(
            name=name,
            branches=branches,  # type: ignore[arg-type]
            merge_strategy=merge_strategy,
            on_branch_failure=on_branch_failure,
            context_include_keys=context_include_keys,  # type: ignore[arg-type]
        )

    @staticmethod
    def human_input(
        name: str,
        message: str | Callable[..., Any],
        *,
        input_model: type[Any] | None = None,
        sink_to: str | None = None,
    ) -> HumanInputStep:
        """Pause the run here until ``resume_async(run_id, human_input=value)``."""
        from .human import HumanInputStep

        return HumanInputStep(name=name, message=message, input_model=input_model, sink_to=sink_to)

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
        from .control import LoopStep

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
        branch_input_mapper: Callable[..., Any] | None = None,
        branch_output_mapper: Callable[..., Any] | None = None,
    ) -> ConditionalStep:
        """Run the branch whose key ``condition_callable(data, context)`` returns.

        ``branch_input_mapper(data, context)`` maps the input before the chosen
        branch, ``branch_output_mapper(output, context)`` its output after it
        (each sync or async; ``context`` only if it takes two arguments).
        """
        from .control import ConditionalStep

        return ConditionalStep(
            name=name,
            condition=condition_callable,
            branches=branches,  # type: ignore[arg-type]
            default_branch=default_branch_pipeline,  # type: ignore[arg-type]
            branch_input_mapper=branch_input_mapper,
            branch_output_mapper=branch_output_mapper,
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
        from .control import DynamicParallelRouterStep

        return DynamicParallelRouterStep(
            name=name,
            agent=router_agent,
            branches=branches,  # type: ignore[arg-type]
            merge_strategy=merge_strategy,
            on_branch_failure=on_branch_failure,
        )

    @staticmethod
    def map(
        name: str,
        body: Step | Pipeline,
        *,
        items: Callable[..., Any] | None = None,
        max_concurrency: int | None = None,
        on_item_failure: BranchFailureStrategy = BranchFailureStrategy.PROPAGATE,
        merge_strategy: MergeSpec = MergeStrategy.NO_MERGE,
        reduce: Callable[..., Any] | None = None,
    ) -> MapStep:
        """Run ``body`` once per item, at most ``max_concurrency`` bodies at once.

        Items come from ``items(data, context)`` (an iterable or async
        iterable; sync or async), by default from the step's input itself,
        and are drawn lazily. Each body runs on its own context copy; the
        output is the outputs in item order, or ``reduce(outputs)``. See
        :class:`~flujo_actors.steps.map.MapStep`.
        """
        from .map import MapStep

        return MapStep(
            name=name,
            body=body,  # type: ignore[arg-type]
            items=items,
            max_concurrency=max_concurrency,
            on_item_failure=on_item_failure,
            merge_strategy=merge_strategy,
            reduce=reduce,
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
        from .control import PipelineStep

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


_CONTROL = frozenset(
    {"ConditionalStep", "DynamicParallelRouterStep", "LoopStep", "ParallelStep", "PipelineStep"}
)


def __getattr__(name: str) -> Any:
    # The control-flow kinds live in .control (which builds on Step and
    # Pipeline); they are re-exported here, loaded on first use.
    if name in _CONTROL:
        from . import control

        return getattr(control, name)
    if name == "MapStep":
        from .map import MapStep

        return MapStep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
