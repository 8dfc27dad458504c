"""Step options are checked when the step is built, and none is accepted then ignored.

Numbers are finite and in range, flags are real booleans (``"no"`` is truthy),
callables have a shape the runtime can call, and control-flow steps refuse
the agent options they do not honour.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from flujo_actors import (
    Flujo,
    Pipeline,
    PipelineContext,
    PipelineDefinitionError,
    PluginOutcome,
    Step,
    StepBase,
    StepConfig,
)
from flujo_actors.steps.agent import AgentStep
from flujo_actors.steps.dsl import (
    ConditionalStep,
    DynamicParallelRouterStep,
    LoopStep,
    ParallelStep,
    PipelineStep,
)
from flujo_actors.steps.map import MapStep
from flujo_actors.steps.options import AGENT_OPTIONS as REFUSED

if TYPE_CHECKING:
    from flujo_actors.steps.kinds import AnyStep


async def echo(data: Any) -> Any:
    return data


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


# -- item 16: numbers and booleans ----------------------------------------------------------

COST = (
    "Step 'echo': expected_cost_usd must be a finite number >= 0 (int, float, Decimal or "
    "numeric str) or None, got {!r}."
)


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        "abc",
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        "inf",
        -0.01,
        True,
        [1],
    ],
)
def test_expected_cost_must_be_finite_and_not_negative(value: Any) -> None:
    with pytest.raises(PipelineDefinitionError, match=_exact(COST.format(value))):
        Step.from_callable(echo, expected_cost_usd=value)


@pytest.mark.parametrize(
    ("value", "exact"), [(0, Decimal(0)), (0.1, Decimal("0.1")), ("0.25", Decimal("0.25"))]
)
def test_expected_cost_accepts_numbers_exactly(value: Any, exact: Decimal) -> None:
    assert Step.from_callable(echo, expected_cost_usd=value).expected_cost_usd == exact


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout_s": math.inf}, "timeout_s must be a finite number > 0 or None for no timeout, got inf."),
        ({"timeout_s": math.nan}, "timeout_s must be a finite number > 0 or None for no timeout, got nan."),
        ({"timeout_s": True}, "timeout_s must be a finite number > 0 or None for no timeout, got True."),
        ({"timeout_s": "5"}, "timeout_s must be a finite number > 0 or None for no timeout, got '5'."),
        ({"backoff_s": math.inf}, "backoff_s must be a finite number >= 0, got inf."),
        ({"backoff_s": math.nan}, "backoff_s must be a finite number >= 0, got nan."),
        ({"backoff_s": True}, "backoff_s must be a finite number >= 0, got True."),
        ({"backoff_factor": math.inf}, "backoff_factor must be a finite number >= 0, got inf."),
        ({"backoff_factor": -2.0}, "backoff_factor must be a finite number >= 0, got -2.0."),
        ({"max_retries": True}, "max_retries must be an int >= 0, got True. Use max_retries=0 for a single attempt."),
        ({"max_retries": 2.0}, "max_retries must be an int >= 0, got 2.0. Use max_retries=0 for a single attempt."),
        ({"expected_tokens": True}, "expected_tokens must be an int >= 0, got True."),
        ({"expected_tokens": 10.0}, "expected_tokens must be an int >= 0, got 10.0."),
        ({"cache": "yes"}, "cache must be True or False, got 'yes'."),
        ({"cache": 1}, "cache must be True or False, got 1."),
        ({"updates_context": "no"}, "updates_context must be True or False, got 'no'."),
        ({"updates_context": None}, "updates_context must be True or False, got None."),
    ],
)  # fmt: skip
def test_bad_numbers_and_flags_are_refused_naming_the_step(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(PipelineDefinitionError, match=_exact(f"Step 'echo': {message}")):
        Step.from_callable(echo, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries must be an int >= 0, got -1. Use max_retries=0 for a single attempt."),
        ({"timeout_s": math.inf}, "timeout_s must be a finite number > 0 or None for no timeout, got inf."),
        ({"backoff_s": math.inf}, "backoff_s must be a finite number >= 0, got inf."),
        ({"backoff_factor": math.nan}, "backoff_factor must be a finite number >= 0, got nan."),
    ],
)  # fmt: skip
def test_step_config_checks_its_values_when_built(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=_exact(f"StepConfig: {message}")):
        StepConfig(**kwargs)


def test_the_same_rules_apply_to_direct_step_construction() -> None:
    with pytest.raises(PipelineDefinitionError, match=_exact(COST.format(math.inf))):
        Step(name="echo", agent=echo, expected_cost_usd=math.inf)  # type: ignore[arg-type]
    with pytest.raises(
        PipelineDefinitionError, match=_exact("Step 'echo': cache must be True or False, got 'no'.")
    ):
        Step(name="echo", agent=echo, cache="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 1.5, True, None])
def test_max_loops_must_be_an_int_of_at_least_one(value: Any) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(f"Loop step 'l': max_loops must be >= 1, got {value!r}."),
    ):
        Step.loop_until("l", Step.from_callable(echo), lambda o, c: True, max_loops=value)


def test_inherit_context_and_trace_must_be_booleans() -> None:
    p = Pipeline.from_step(Step.from_callable(echo))
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact("Step 'n': inherit_context must be True or False, got 'no'."),
    ):
        p.as_step("n", inherit_context="no")  # type: ignore[arg-type]


# -- item 17: callable shapes -----------------------------------------------------------------


class RunAgent:
    async def run(self, data: str) -> str:
        return data


class CallAgent:
    async def __call__(self, data: str) -> str:
        return data + "!"


class StreamAgent:
    async def stream(self, data: str) -> Any:
        yield data


@pytest.mark.parametrize("cls", [RunAgent, CallAgent, StreamAgent])
def test_a_class_instead_of_an_instance_is_refused(cls: type) -> None:
    name = cls.__qualname__
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Step 'a': agent {name} is a class, not an instance; pass an instance: {name}(...)."
        ),
    ):
        Step.from_callable(cls, name="a")


def test_a_plain_class_is_a_converter_and_stays_allowed() -> None:
    result = Flujo(Step.from_callable(int, name="to_int")).run("42")
    assert result.output == 42


async def test_an_object_with_an_async_call_is_an_async_agent() -> None:
    step = Step.from_callable(CallAgent(), name="c")
    assert step.spec is not None and step.spec.kind == "async"
    assert (await Flujo(step).run_async("hi")).output == "hi!"


def test_a_positional_only_context_is_refused() -> None:
    def agent(data: str, context: Any, /) -> str:
        return data

    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Step 'a': agent test_a_positional_only_context_is_refused.<locals>.agent declares "
            "'context' positional-only, but the runtime passes context= by keyword; declare it "
            "keyword-only: `def agent(data, *, context): ...`."
        ),
    ):
        Step.from_callable(agent, name="a")


def test_an_input_parameter_named_context_is_refused() -> None:
    def agent(context: Any) -> str:
        return "x"

    with pytest.raises(PipelineDefinitionError, match=r"first parameter 'context' would receive"):
        Step.from_callable(agent, name="a")


@pytest.mark.parametrize("keyword_only", [False, True])
def test_a_second_required_parameter_is_refused(keyword_only: bool) -> None:
    if keyword_only:

        def agent(data: str, *, other: int) -> str:
            return data
    else:

        def agent(data: str, other: int) -> str:  # type: ignore[misc]
            return data

    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Step 'a': agent {agent.__qualname__} has a second required parameter 'other'; "
            "the runtime passes only the step's input (and context=/resources= if declared). "
            "Give 'other' a default or bind it first: functools.partial(agent, other=...)."
        ),
    ):
        Step.from_callable(agent, name="a")


def test_parameters_the_runtime_fills_or_that_have_defaults_are_fine() -> None:
    def agent(
        data: str, other: int = 1, *, context: Any, resources: Any, flag: bool = False
    ) -> str:
        return data

    spec = Step.from_callable(agent, name="a").spec
    assert spec is not None and spec.accepts_context and spec.accepts_resources


def test_a_run_method_with_a_second_required_parameter_is_refused() -> None:
    class Agent:
        async def run(self, data: str, other: int) -> str:
            return data

    with pytest.raises(PipelineDefinitionError, match=r"agent .*Agent\.run has a second required"):
        Step.from_callable(Agent(), name="a")


class Check:
    def __call__(self, output: Any) -> bool:
        return False


class Judge:
    async def validate(self, output: Any, context: Any) -> PluginOutcome:
        return PluginOutcome(success=False)


def test_classes_instead_of_validator_or_plugin_instances_are_refused() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Step 'a': validator Check is a class, not an instance; pass an instance: Check(...)."
        ),
    ):
        Step.from_callable(echo, name="a", validators=[Check])
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Step 'a': plugin Judge is a class, not an instance; pass an instance: Judge(...)."
        ),
    ):
        Step.from_callable(echo, name="a", plugins=[Judge])


def test_callbacks_with_parameters_their_call_cannot_fill_are_refused() -> None:
    def needs_three(output: Any, context: Any, extra: Any) -> bool:
        return True

    def needs_keyword(output: Any, *, strict: bool) -> bool:
        return True

    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Step 'a': validator {needs_three.__qualname__} has a required parameter 'extra' "
            "that its call (value, context) cannot fill; give it a default or bind it first "
            "with functools.partial."
        ),
    ):
        Step.from_callable(echo, name="a", validators=[needs_three])
    with pytest.raises(PipelineDefinitionError, match=r"required parameter 'strict'"):
        Step.loop_until("l", Step.from_callable(echo), needs_keyword)
    with pytest.raises(PipelineDefinitionError, match=r"condition_callable .* 'extra'"):
        Step.branch_on("c", needs_three, {"a": Step.from_callable(echo)})
    with pytest.raises(PipelineDefinitionError, match=r"iteration_input_mapper .*Check"):
        Step.loop_until(
            "l", Step.from_callable(echo), lambda o, c: True, iteration_input_mapper=Check
        )


async def test_a_callback_taking_context_by_keyword_only_gets_it() -> None:
    seen: list[Any] = []

    def done(*, context: PipelineContext) -> bool:
        seen.append(context.initial_prompt)
        return True

    result = await Flujo(Step.loop_until("l", Step.from_callable(echo), done)).run_async("in")
    assert result.success and seen == ["in"]


# -- item 20: control-flow steps refuse what they do not honour ---------------------------


def _body() -> Pipeline:
    return Pipeline.from_step(Step.from_callable(echo))


def _control_flow(kind: str, **options: Any) -> AnyStep:
    body = _body()
    if kind == "parallel":
        return ParallelStep(name="cf", branches={"a": body}, **options)
    if kind == "loop":
        return LoopStep(name="cf", body=body, exit_condition=lambda o, c: True, **options)
    if kind == "conditional":
        return ConditionalStep(
            name="cf", condition=lambda d, c: "a", branches={"a": body}, **options
        )
    if kind == "router":
        options.setdefault("agent", lambda d: ["a"])
        return DynamicParallelRouterStep(name="cf", branches={"a": body}, **options)
    if kind == "map":
        return MapStep(name="cf", body=body, **options)
    return PipelineStep(name="cf", pipeline=body, **options)


LABELS = {
    "parallel": "Parallel step",
    "loop": "Loop step",
    "conditional": "Conditional step",
    "router": "Router step",
    "pipeline": "Nested pipeline step",
    "map": "Map step",
}
KINDS = list(LABELS)
ROUTER_NOTE = (
    " (a router step honours only its router agent's max_retries, timeout_s, backoff and placement)"
)


def _refusal(kind: str, option: str, value: Any) -> str:
    note = ROUTER_NOTE if kind == "router" else ""
    return _exact(
        f"{LABELS[kind]} 'cf': {option}={value!r} is not honoured by control-flow steps{note}. "
        f"Set {option} on the steps inside it, or wrap the control flow in an agent step "
        "that has it (an async function that awaits Flujo(...).run_async)."
    )


FALLBACK = Step.from_callable(echo, name="fb")


def _never(output: Any) -> bool:
    return False


OPTIONS: list[tuple[str, Any, str, Any]] = [
    ("fallback", FALLBACK, "fallback", FALLBACK),
    ("validators", [_never], "validators", (_never,)),
    ("plugins", [_never], "plugins", (_never,)),
    ("cache", True, "cache", True),
    ("updates_context", True, "updates_context", True),
    ("expected_cost_usd", 0.5, "expected_cost_usd", 0.5),
    ("expected_tokens", 10, "expected_tokens", 10),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("arg", "value", "option", "shown"), OPTIONS, ids=[o[0] for o in OPTIONS])
def test_control_flow_steps_refuse_agent_options(
    kind: str, arg: str, value: Any, option: str, shown: Any
) -> None:
    with pytest.raises(PipelineDefinitionError, match=_refusal(kind, option, shown)):
        _control_flow(kind, **{arg: value})


@pytest.mark.parametrize("kind", ["parallel", "loop", "conditional", "pipeline", "map"])
@pytest.mark.parametrize(
    ("cfg", "option", "value"),
    [
        (StepConfig(max_retries=3), "max_retries", 3),
        (StepConfig(timeout_s=5.0), "timeout_s", 5.0),
        (StepConfig(backoff_s=1.0), "backoff_s", 1.0),
        (StepConfig(backoff_factor=3.0), "backoff_factor", 3.0),
    ],
)
def test_control_flow_steps_refuse_supervision_settings(
    kind: str, cfg: StepConfig, option: str, value: Any
) -> None:
    with pytest.raises(PipelineDefinitionError, match=_refusal(kind, option, value)):
        _control_flow(kind, config=cfg)


@pytest.mark.parametrize("kind", ["parallel", "loop", "conditional", "pipeline", "map"])
def test_control_flow_steps_refuse_placement_and_an_agent(kind: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=_refusal(kind, "placement", "process")):
        _control_flow(kind, placement="process")
    with pytest.raises(
        PipelineDefinitionError,
        match=rf"^{LABELS[kind]} 'cf': agent=<function echo at .*> is not used by a control-flow "
        r"step; put the agent in a step inside it\.$",
    ):
        _control_flow(kind, agent=echo)


async def test_a_router_honours_its_agents_supervision_settings() -> None:
    calls: list[int] = []

    def flaky_router(data: Any) -> list[str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("router hiccup")
        return ["a"]

    step = _control_flow(
        "router", agent=flaky_router, config=StepConfig(max_retries=1), placement="inline"
    )
    result = await Flujo(step).run_async("x")
    assert result.success and result.output == {"a": "x"}
    assert len(calls) == 2


def test_default_options_are_accepted_on_every_control_flow_step() -> None:
    for kind in KINDS:
        step = _control_flow(kind, config=StepConfig(), validators=[], cache=False)
        assert step.kind == kind


@pytest.mark.parametrize("kind", KINDS)
def test_assigning_an_option_after_building_is_refused(kind: str) -> None:
    step = _control_flow(kind)
    with pytest.raises(PipelineDefinitionError, match=r"^Step 'cf' cannot be changed once built"):
        step.fallback = FALLBACK
    with pytest.raises(PipelineDefinitionError, match=_refusal(kind, "cache", True)):
        attrs.evolve(step, cache=True)  # type: ignore[arg-type]


AGENT_OPTIONS = (
    "fallback",
    "validators",
    "plugins",
    "cache",
    "cache_key",
    "updates_context",
    "expected_cost_usd",
    "expected_tokens",
    "spec",
)


@pytest.mark.parametrize("kind", KINDS)
def test_control_flow_kinds_are_siblings_without_the_agent_options(kind: str) -> None:
    step = _control_flow(kind)
    assert isinstance(step, StepBase) and not isinstance(step, Step)
    assert [o for o in AGENT_OPTIONS if hasattr(step, o)] == []
    own = {"agent", "config", "placement", "event_loop"}
    assert {o for o in own if hasattr(step, o)} == (own if kind == "router" else set())
    with pytest.raises(PipelineDefinitionError, match=r"^Step 'cf' cannot be changed once built"):
        step.name = "other"
    with pytest.raises(PipelineDefinitionError, match=r"^Step 'cf' cannot be changed once built"):
        del step.name


def test_the_refused_options_are_exactly_the_agent_steps_options() -> None:
    fields = [f for f in attrs.fields(AgentStep) if f.init and f.name != "name"]
    assert list(REFUSED) == [f.name for f in fields]
    for f in fields:
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()  # type: ignore[union-attr]
        expected = StepConfig() if f.name == "config" else REFUSED[f.name]
        assert default == expected, f.name


def test_an_unknown_option_is_still_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'branchez'"):
        ParallelStep(name="cf", branchez={"a": _body()})  # type: ignore[call-arg]


def test_the_router_runs_its_agent_as_an_agent_step_of_its_name() -> None:
    step = _control_flow("router", config=StepConfig(max_retries=2), placement="inline")
    assert isinstance(step, DynamicParallelRouterStep)
    router = step.router
    assert type(router) is AgentStep and router.name == "cf"
    assert (router.config.max_retries, router.placement, router.event_loop) == (2, "inline", "trio")
    assert step.event_loop == "trio"


async def test_the_reported_loop_is_now_refused_instead_of_running_once() -> None:
    # Before: the body ran once, the validator and the fallback were ignored.
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Loop step 'cf': validators={(_never,)!r}, fallback={FALLBACK!r}, max_retries=3 "
            "are not honoured by control-flow steps. Set them on the steps inside it, or wrap "
            "the control flow in an agent step that has them (an async function that awaits "
            "Flujo(...).run_async)."
        ),
    ):
        LoopStep(  # type: ignore[call-arg]
            name="cf",
            body=_body(),
            exit_condition=lambda o, c: True,
            fallback=FALLBACK,
            config=StepConfig(max_retries=3),
            validators=[_never],
        )


# -- siblings: other shapes decided at build time ---------------------------------------------


def test_a_merge_callable_that_cannot_take_two_contexts_is_refused() -> None:
    def merge(main: Any) -> None:
        return None

    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Step 'p': merge_strategy {merge.__qualname__} cannot be called as "
            "(main_ctx, branch_ctx): too many positional arguments."
        ),
    ):
        Step.parallel("p", {"a": Step.from_callable(echo)}, merge_strategy=merge)  # type: ignore[arg-type]


@pytest.mark.parametrize("what", ["step", "pipeline", "runner"])
def test_a_step_pipeline_or_runner_is_not_an_agent(what: str) -> None:
    s = Step.from_callable(echo)
    agent: Any = {"step": s, "pipeline": Pipeline.from_step(s), "runner": Flujo(s)}[what]
    shown = {"step": "<Step 'echo'>", "pipeline": "<Pipeline 'pipeline' [echo]>"}.get(
        what, "a Flujo runner"
    )
    fix = (
        "chain it with `>>` or put it in a Pipeline"
        if what == "step"
        else ("nest it with .as_step(name)")
    )
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(f"Step 'n': the agent is {shown}, not an agent; {fix}."),
    ):
        Step.from_callable(agent, name="n")


@pytest.mark.parametrize("name", ["", "  ", 3])
def test_a_pipeline_name_must_be_a_non_empty_string(name: Any) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Pipeline name must be a non-empty string, got {name!r}; pass name='...' or "
            "leave the default."
        ),
    ):
        Pipeline(steps=[Step.from_callable(echo)], name=name)


def test_a_hook_that_cannot_take_the_event_is_refused() -> None:
    def no_args() -> None:
        return None

    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            f"Flujo: hooks[0] {no_args.__qualname__} must take one argument (the event); it "
            "cannot be called as hook(event): too many positional arguments."
        ),
    ):
        Flujo(Step.from_callable(echo), hooks=[no_args])  # type: ignore[list-item]


def test_nested_initial_context_data_is_a_copy_that_cannot_change() -> None:
    data = {"count": 1}
    nested = PipelineStep(
        name="n", pipeline=_body(), inherit_context=False, initial_context_data=data
    )
    data["count"] = 2
    assert nested.initial_context_data == {"count": 1}
    with pytest.raises(
        PipelineDefinitionError,
        match=_exact(
            "Step 'n': initial_context_data cannot be changed once built; build a new step "
            "with the initial_context_data you want."
        ),
    ):
        nested.initial_context_data["count"] = 3  # type: ignore[index]
