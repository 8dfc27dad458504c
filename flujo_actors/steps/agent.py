"""The agent step kind: :class:`AgentStep`, one agent call with its supervision options.

Everything about an agent step is decided here, once, when it is built: the
agent's calling convention (:mod:`.callables`), its event loop, validators,
plugins, the fallback chain, the cache identity. The DSL's :class:`~.dsl.Step`
is this class with the factories of every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from ..errors import InfiniteFallbackError, PipelineDefinitionError
from .base import Pipeline, StepBase
from .callables import (
    AgentSpec,
    Callback,
    compile_agent,
    compile_callback,
    refuse_class,
)
from .config import StepConfig, check_config
from .event_loop import ASYNCIO, compile_pydantic_ai, is_pydantic_ai_agent, resolve_event_loop
from .options import check_bool, check_cost, check_count
from .placement import Placement

if TYPE_CHECKING:
    # Type-only: .kinds imports this module, and steps are never structured by cattrs.
    from .kinds import AnyStep  # noqa: TC004

__all__ = ["AgentStep", "Plugin", "check_fallback_chain"]


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
class AgentStep(StepBase):
    """The agent step kind: one agent call, supervised (retries, validators, plugins, fallback).

    Users build :class:`~.dsl.Step` (this class plus the DSL's factories);
    the runtime matches on ``AgentStep``. A router's agent call is an
    ``AgentStep`` of the router's name.

    Raises:
        PipelineDefinitionError: on any invalid argument, when built.
    """

    kind: ClassVar[str] = "agent"

    agent: Any = None
    config: StepConfig = attrs.Factory(StepConfig)
    validators: tuple[Any, ...] = attrs.field(default=(), kw_only=True)
    plugins: tuple[Any, ...] = attrs.field(default=(), kw_only=True)
    fallback: AnyStep | None = attrs.field(default=None, kw_only=True)
    updates_context: bool = attrs.field(default=False, kw_only=True)
    cache: bool = attrs.field(default=False, kw_only=True)
    cache_key: str | None = attrs.field(default=None, kw_only=True)
    expected_cost_usd: Decimal | None = attrs.field(default=None, kw_only=True)
    expected_tokens: int | None = attrs.field(default=None, kw_only=True)
    placement: Placement | None = attrs.field(default=None, kw_only=True)
    #: "trio", "asyncio", or None (asyncio for pydantic-ai agents, else trio); resolved at build
    event_loop: str | None = attrs.field(default=None, kw_only=True)
    # compiled at build time (never per call)
    spec: AgentSpec | None = attrs.field(init=False, default=None)
    on_asyncio: bool = attrs.field(init=False, default=False)
    compiled_validators: tuple[Callback, ...] = attrs.field(init=False, default=())
    compiled_plugins: tuple[Plugin, ...] = attrs.field(init=False, default=())
    # cache=True: the identity part of the cache key (agent + state, or cache_key)
    cache_identity: str | None = attrs.field(init=False, default=None)

    def _validate(self) -> None:
        name = self.name
        check_config(name, self.config)
        owner = f"Step {name!r}"
        check_bool(owner, "updates_context", self.updates_context)
        check_bool(owner, "cache", self.cache)
        self.validators = _as_tuple(self.validators, "validators", name)
        self.plugins = _as_tuple(self.plugins, "plugins", name)
        self.compiled_validators = tuple(
            compile_callback(v, what="validator", step_name=name, max_args=2)
            for v in self.validators
        )
        self.compiled_plugins = tuple(_compile_plugin(name, p) for p in self.plugins)
        if self.fallback is not None:
            if not isinstance(self.fallback, StepBase):
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

        self.cache_identity = step_cache_identity(self.name, self.agent, cache_key=self.cache_key)

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


def _refuse_nested_runtime(name: str, agent: Any) -> None:
    """A step, pipeline or runner is not an agent: say how to nest it instead."""
    if isinstance(agent, (StepBase, Pipeline)) or (
        hasattr(agent, "run_async") and hasattr(agent, "as_step") and not isinstance(agent, type)
    ):
        what = "a Flujo runner" if not isinstance(agent, (StepBase, Pipeline)) else repr(agent)
        fix = (
            "chain it with `>>` or put it in a Pipeline"
            if isinstance(agent, StepBase)
            else "nest it with .as_step(name)"
        )
        raise PipelineDefinitionError(f"Step {name!r}: the agent is {what}, not an agent; {fix}.")


def check_fallback_chain(first: AgentStep) -> None:
    """Raise InfiniteFallbackError if following ``fallback`` from ``first`` revisits a step."""
    seen: list[AnyStep] = [first]
    cur = first.fallback
    while cur is not None:
        if any(cur is s for s in seen):
            chain = " -> ".join(repr(s.name) for s in [*seen, cur])
            raise InfiniteFallbackError(
                f"Step {first.name!r}: the fallback chain {chain} revisits step "
                f"{cur.name!r}; a fallback must lead to a step without a fallback."
            )
        seen.append(cur)
        # Only agent steps have a fallback: a control-flow fallback ends the chain.
        cur = cur.fallback if isinstance(cur, AgentStep) else None
