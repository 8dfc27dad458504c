"""Which event loop a step's agent runs on, decided once when the step is built.

Agents run on trio by default. ``event_loop="asyncio"`` runs one on an asyncio
loop bridged into the run (trio-asyncio, extra ``flujo-actors[asyncio]``); a
pydantic-ai ``Agent`` is recognised by duck typing (its class comes from the
``pydantic_ai`` package and it has ``run`` and ``run_stream``) and runs there
without being told. Nothing here imports pydantic-ai or trio-asyncio.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Final

from ..errors import AsyncioInTrioError, PipelineDefinitionError
from ..results import Usage
from .callables import ASYNC, AgentSpec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .agent import AgentStep

__all__ = [
    "ASYNCIO",
    "EVENT_LOOPS",
    "TRIO",
    "asyncio_in_trio",
    "check_no_placed_asyncio_steps",
    "compile_pydantic_ai",
    "is_pydantic_ai_agent",
    "pipeline_uses_asyncio",
    "resolve_event_loop",
]

TRIO: Final = "trio"
ASYNCIO: Final = "asyncio"
EVENT_LOOPS: Final = (TRIO, ASYNCIO)


def is_pydantic_ai_agent(agent: Any) -> bool:
    """Whether ``agent`` is a pydantic-ai agent (duck typing; pydantic-ai is not imported)."""
    if not (callable(getattr(agent, "run", None)) and callable(getattr(agent, "run_stream", None))):
        return False
    # A user's subclass of Agent lives in the user's module: look along the MRO.
    return any(
        (getattr(c, "__module__", "") or "").partition(".")[0] == "pydantic_ai"
        for c in type(agent).__mro__
    )


def asyncio_extra_missing() -> bool:
    """Whether trio-asyncio (the ``asyncio`` extra) is not installed (nothing imported)."""
    return importlib.util.find_spec("trio_asyncio") is None


def resolve_event_loop(step_name: str, agent: Any, event_loop: Any, placement: Any) -> str:
    """The event loop the step's agent runs on: ``"trio"`` or ``"asyncio"``.

    ``None`` means: asyncio for a pydantic-ai agent, else trio.

    Raises:
        PipelineDefinitionError: an unknown value, asyncio without the
            ``asyncio`` extra installed, or asyncio combined with a placement
            other than inline (process and Ray workers run their own loops).
    """
    if event_loop is None:
        event_loop = ASYNCIO if is_pydantic_ai_agent(agent) else TRIO
    elif not isinstance(event_loop, str) or event_loop not in EVENT_LOOPS:
        raise PipelineDefinitionError(
            f"Step {step_name!r}: event_loop must be 'trio' or 'asyncio', got {event_loop!r}. "
            "Use event_loop='asyncio' for agents built on asyncio libraries."
        )
    if event_loop == TRIO:
        return TRIO
    if asyncio_extra_missing():
        raise PipelineDefinitionError(
            f"Step {step_name!r} runs on asyncio (event_loop='asyncio'), which needs the "
            "'asyncio' extra, and trio-asyncio is not installed. Install it with: "
            "pip install 'flujo-actors[asyncio]'"
        )
    if placement is not None and placement != "inline":
        raise PipelineDefinitionError(
            f"Step {step_name!r}: event_loop='asyncio' runs the agent on the run's asyncio "
            f"loop, in this process; it cannot be combined with placement={placement!r}. "
            "Drop the placement (or use placement='inline')."
        )
    return ASYNCIO


def _prompt(data: Any) -> Any:
    # A pydantic-ai run result handed on by a previous pydantic-ai step: its
    # output is the prompt (a chain of agents reads like one).
    if is_run_result(data):
        return data.output
    return data


def is_run_result(value: Any) -> bool:
    """Whether ``value`` is a pydantic-ai run result (``AgentRunResult``; duck typing)."""
    t = type(value)
    return (getattr(t, "__module__", "") or "").partition(".")[0] == "pydantic_ai" and hasattr(
        value, "output"
    )


async def _stream_text(agent: Any, data: Any) -> Any:
    async with agent.run_stream(_prompt(data)) as streamed:
        # No debouncing: each delta reaches the consumer as the model sends it.
        async for delta in streamed.stream_text(delta=True, debounce_by=None):
            yield delta
        usage = streamed.usage
        if not hasattr(usage, "input_tokens") and callable(usage):
            usage = usage()  # a method in older pydantic-ai (newer ones warn when called)
        # The run's usage, as a Usage item: counted, and not part of the output.
        yield Usage(
            input_tokens=getattr(usage, "input_tokens", None) or 0,
            output_tokens=getattr(usage, "output_tokens", None) or 0,
            model=_model_name(streamed),
        )


def _model_name(run: Any) -> str | None:
    try:
        messages = list(run.all_messages())
    except Exception:  # no messages to look at: the usage has no model (not priced)
        return None
    for message in reversed(messages):
        name = getattr(message, "model_name", None)
        if isinstance(name, str):
            return name
    return None


def compile_pydantic_ai(agent: Any) -> AgentSpec:
    """How to call a pydantic-ai agent: ``agent.run(prompt)``; the run result is the output.

    When the step streams (the pipeline's last step under ``stream_async``)
    and the agent's output type is ``str``, ``agent.run_stream`` is used and
    the text deltas are the chunks (the output is then the whole text).
    """
    run = agent.run
    label = getattr(agent, "name", None) or type(agent).__qualname__
    stream_call = None
    if getattr(agent, "output_type", None) is str:
        stream_call = lambda d, c, r: _stream_text(agent, d)  # noqa: E731
    return AgentSpec(
        ASYNC,
        lambda d, c, r: run(_prompt(d)),
        False,
        False,
        str(label),
        stream_call,
    )


# What asyncio code raises when it runs in a trio task: no running loop (plain
# trio), or an asyncio future yielded to trio's scheduler (a trio-asyncio loop is
# open for the run, so asyncio finds a loop, but the caller is a trio task).
_NO_LOOP: Final = ("no running event loop", "There is no current event loop")
_FUTURE_TO_TRIO: Final = "trio.run received unrecognized yield message"


def asyncio_in_trio(step_name: str, exc: BaseException) -> AsyncioInTrioError | None:
    """The :class:`AsyncioInTrioError` for ``exc`` if it says asyncio ran on trio, else None.

    Only called on a failed attempt of a trio step (never on the hot path).
    """
    text = str(exc)
    if type(exc) is RuntimeError and text.startswith(_NO_LOOP):
        what = f"RuntimeError: {text}"
    elif type(exc) is TypeError and text.startswith(_FUTURE_TO_TRIO):
        what = "an asyncio future was awaited in a trio task"
    else:
        return None
    return AsyncioInTrioError(
        f"Step {step_name!r} runs on trio, but its agent used asyncio ({what}). Run it on asyncio: "
        "Step.from_callable(agent, event_loop='asyncio') or @step(event_loop='asyncio') "
        "(needs pip install 'flujo-actors[asyncio]')."
    )


def pipeline_uses_asyncio(agent_steps: Iterable[AgentStep]) -> bool:
    """Whether any of a tree's agent steps (``steps.kinds.agent_steps``) is on asyncio.

    Called once when a runner is built (the tree was checked for cycles first).
    """
    return any(step.on_asyncio for step in agent_steps)


def check_no_placed_asyncio_steps(agent_steps: Iterable[AgentStep], executor: Any) -> None:
    """Refuse ``Flujo(executor=...)`` when it would place an asyncio step on that executor.

    Args:
        agent_steps: the tree's agent steps (``steps.kinds.agent_steps``).
        executor: the runner's default executor.

    Raises:
        PipelineDefinitionError: naming the first asyncio step without its own
            placement, and the fix (``placement="inline"`` on that step).
    """
    for step in agent_steps:
        if step.on_asyncio and step.placement is None:
            raise PipelineDefinitionError(
                f"Flujo(executor={executor!r}): step {step.name!r} runs on asyncio "
                "(event_loop='asyncio'), in this process, and cannot run on an executor. "
                "Give it placement='inline'."
            )
