"""The pipeline DSL: :class:`Step`, its factories, ``>>``, ``@step``.

``Step`` is the agent step (:class:`~.agent.AgentStep`) with the factories of
every kind (:meth:`Step.parallel`, :meth:`Step.loop_until`, ...). The
control-flow kinds are its siblings (:mod:`.control`, and
:class:`~.base.PipelineStep` from ``pipeline.as_step``), all built on
:class:`~.base.StepBase`; :data:`~.kinds.AnyStep` is their union.

Definitions are validated when they are built: a bad argument raises
:class:`PipelineDefinitionError` naming the step, the argument, the value and
the fix, long before anything runs.

The control-flow, map and human kinds load when their factory is first called
(or their name first read from this module): a pipeline of agent steps never
imports them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Literal, overload

import attrs

from ..policy.retry import RETRY_ALL
from .agent import AgentStep, check_fallback_chain
from .base import Pipeline, PipelineStep, StepBase
from .config import StepConfig, check_supervision
from .strategies import BranchFailureStrategy, MergeSpec, MergeStrategy, PluginOutcome

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from decimal import Decimal

    from .control import ConditionalStep, DynamicParallelRouterStep, LoopStep, ParallelStep
    from .human import HumanInputStep
    from .kinds import AnyStep
    from .map import MapStep
    from .placement import Placement

__all__ = [
    "AgentStep",
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
    "StepBase",
    "StepConfig",
    "check_fallback_chain",
    "step",
]

# Re-exported kinds that load on first access (PEP 562): name -> module of this package.
_LAZY_KINDS: dict[str, str] = {
    "ConditionalStep": "control",
    "DynamicParallelRouterStep": "control",
    "LoopStep": "control",
    "ParallelStep": "control",
    "HumanInputStep": "human",
    "MapStep": "map",
}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _LAZY_KINDS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        found = getattr(importlib.import_module(f".{module}", __package__), name)
        globals()[name] = found
        return found


@attrs.define(eq=False, repr=False)
class Step(AgentStep):
    """An agent step (one agent call, supervised), and the factories of every step kind.

    Build it with :meth:`from_callable`, ``@step`` or directly with
    ``Step(name=..., agent=...)``; the other kinds come from the factories
    here (:meth:`parallel`, :meth:`loop_until`, :meth:`branch_on`,
    :meth:`dynamic_parallel_branch`) and ``pipeline.as_step(name)``. Chain
    with ``>>``. ``isinstance(x, Step)`` is true of agent steps only; use
    :class:`~.base.StepBase` to ask whether ``x`` is a step of any kind.

    Raises:
        PipelineDefinitionError: on any invalid argument, when built.
    """

    # -- constructors ---------------------------------------------------------
    @classmethod
    def from_callable(
        cls,
        fn: Any,
        *,
        name: str | None = None,
        max_retries: int = 1,
        timeout_s: float | None = None,
        validators: Iterable[Callable[..., object]] = (),
        plugins: Iterable[Any] = (),
        fallback: AnyStep | None = None,
        updates_context: bool = False,
        cache: bool = False,
        cache_key: str | None = None,
        expected_cost_usd: Decimal | float | int | str | None = None,
        expected_tokens: int | None = None,
        placement: Placement | None = None,
        backoff_s: float = 0.0,
        backoff_factor: float = 2.0,
        event_loop: Literal["trio", "asyncio"] | None = None,
        retry_on: type[Exception] | tuple[type[Exception], ...] = RETRY_ALL,
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
            expected_cost_usd=expected_cost_usd,  # type: ignore[arg-type]  # a Decimal once built
            expected_tokens=expected_tokens,
            placement=placement,
            event_loop=event_loop,
        )

    @staticmethod
    def parallel(
        name: str,
        branches: Mapping[str, AnyStep | Pipeline],
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
        loop_body_pipeline: AnyStep | Pipeline,
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
        branches: Mapping[Any, AnyStep | Pipeline],
        *,
        default_branch_pipeline: AnyStep | Pipeline | None = None,
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
        branches: Mapping[str, AnyStep | Pipeline],
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
        body: AnyStep | Pipeline,
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


def _default_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None)
    if name is None:
        name = type(fn).__name__
    return str(name)


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
