"""What an attempt's output must pass: validators, plugins, and a context update.

The checks the agent-step supervisor (:mod:`.agent`) runs on each attempt's
output once the agent returned: its validators, then its plugins (a
plugin's ``new_solution`` replaces the output), and, with
``updates_context=True``, writing the output onto the context's fields.
Rejections are raised as :class:`Rejection`; the supervisor turns them into
the attempt machine's events. No trio here beyond the awaits of async
validators and plugins: cancellation propagates from them unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs

from .._pydantic_compat import is_pydantic_model
from ..context import context_field_names
from ..policy.merge import IDENTITY_ORDER, IDENTITY_RULE
from ..steps.callables import LATE, settle
from ..steps.strategies import PluginOutcome
from .invoke import call, no_stream

if TYPE_CHECKING:
    from ..steps.agent import AgentStep

__all__ = ["Rejection", "apply_context_update", "check_output"]


class Rejection(Exception):
    """An attempt's output was rejected by a validator or a plugin (``by``)."""

    def __init__(self, by: Literal["validator", "plugin"], message: str) -> None:
        super().__init__(message)
        self.by: Literal["validator", "plugin"] = by
        self.message = message


async def check_output(step: AgentStep, output: Any, ctx: Any) -> Any:
    """Run the validators, then the plugins, on one attempt's output.

    Returns the output (a plugin's ``new_solution`` replaces it). Raises
    :class:`Rejection` when a validator rejects (raises ``ValueError`` or
    returns ``False``) or a plugin fails (``success=False``, a non-outcome,
    or any exception); other exceptions from a validator propagate and fail
    the attempt like an agent error.
    """
    for v in step.compiled_validators:
        try:
            ok = await call(v, output, ctx)
        except ValueError as exc:
            raise Rejection(
                "validator", str(exc) or f"validator {v.label} raised ValueError"
            ) from exc
        if ok is False:
            raise Rejection("validator", f"validator {v.label} returned False")
    for p in step.compiled_plugins:
        try:
            outcome = p.call(output, ctx)
            if p.is_async or isinstance(outcome, LATE):
                outcome = await settle(outcome, no_stream)
        except Exception as exc:
            raise Rejection(
                "plugin", str(exc) or f"plugin {p.label} raised {type(exc).__name__}"
            ) from exc
        if not isinstance(outcome, PluginOutcome):
            raise Rejection(
                "plugin", f"plugin {p.label} returned {outcome!r}, expected a PluginOutcome"
            )
        if not outcome.success:
            raise Rejection("plugin", outcome.feedback or f"plugin {p.label} rejected the output")
        if outcome.new_solution is not None:
            output = outcome.new_solution
    return output


def apply_context_update(step: AgentStep, output: Any, ctx: Any) -> str | None:
    """Write a mapping, attrs or pydantic output onto the context's fields.

    Nothing is written unless every key is a field, so a refused update
    leaves the context untouched. Returns an error message on bad output.
    """
    if isinstance(output, dict):
        values = output
    elif attrs.has(type(output)) or is_pydantic_model(type(output)):
        values = {name: getattr(output, name) for name in context_field_names(type(output))}
    else:
        return (
            f"Step {step.name!r} has updates_context=True but returned "
            f"{type(output).__name__} {output!r}; return a dict, an attrs instance or a "
            "pydantic model whose keys are context fields."
        )
    names = context_field_names(type(ctx))
    # Writing a field's current value is harmless (an attrs output of the context's
    # own model carries run_id); changing the run's identity is not.
    hijacked = [
        n for n in IDENTITY_ORDER if n in values and n in names and values[n] != getattr(ctx, n)
    ]
    if hijacked:
        return (
            f"Step {step.name!r} has updates_context=True but its output sets "
            f"{hijacked[0]}={values[hijacked[0]]!r} (the run's is "
            f"{getattr(ctx, hijacked[0])!r}): {IDENTITY_RULE}"
        )
    unknown = sorted(str(k) for k in values if k not in names)
    if unknown:
        return (
            f"Step {step.name!r} has updates_context=True but its output has "
            f"{unknown!r}, which {'is not a field' if len(unknown) == 1 else 'are not fields'} "
            f"of {type(ctx).__name__} (fields: {sorted(names)!r}). Add the field to the "
            "context model or drop the key."
        )
    for k, v in values.items():
        object.__setattr__(ctx, k, v)
    return None
