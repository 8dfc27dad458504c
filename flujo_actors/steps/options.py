"""Build-time checks of step options, and the read-only containers of built definitions.

Every numeric option is a finite number in range and every flag a real
``bool`` (``"no"`` is truthy, so a string flag is a bug, not a choice), the
same rules as :class:`~flujo_actors.UsageLimits`. Control-flow steps refuse
the agent options they do not honour, so no option is ever accepted and
then ignored. A built definition cannot be changed afterwards: steps and
pipelines are sealed, their branch maps read-only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import attrs

from ..errors import PipelineDefinitionError
from ..results import to_decimal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from decimal import Decimal

__all__ = [
    "ReadOnlyDict",
    "check_bool",
    "check_cost",
    "check_count",
    "check_seconds",
    "refuse_mutation",
    "refuse_unhonoured",
]

K = TypeVar("K")
V = TypeVar("V")


def check_bool(owner: str, arg: str, value: Any) -> bool:
    """``value`` if it is a ``bool``; else a PipelineDefinitionError naming ``arg``."""
    if type(value) is not bool:
        raise PipelineDefinitionError(f"{owner}: {arg} must be True or False, got {value!r}.")
    return value


def check_count(owner: str, arg: str, value: Any, *, minimum: int, hint: str = "") -> int:
    """``value`` if it is an ``int`` (not a bool) >= ``minimum``."""
    if type(value) is not int or value < minimum:
        raise PipelineDefinitionError(
            f"{owner}: {arg} must be an int >= {minimum}, got {value!r}.{hint}"
        )
    return value


def check_seconds(
    owner: str, arg: str, value: Any, *, positive: bool, none: str | None = None, hint: str = ""
) -> float:
    """``value`` if it is a finite ``int``/``float`` (not a bool), > 0 or >= 0.

    ``none`` (e.g. ``"None for no timeout"``) names the alternative None in the message.
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = value > 0 if positive else value >= 0
    if not ok:
        rule = "> 0" if positive else ">= 0"
        alt = f" or {none}" if none else ""
        raise PipelineDefinitionError(
            f"{owner}: {arg} must be a finite number {rule}{alt}, got {value!r}.{hint}"
        )
    return value  # type: ignore[no-any-return]


def check_cost(owner: str, arg: str, value: Any) -> Decimal:
    """``value`` as an exact Decimal: finite, >= 0 (int, float, Decimal or numeric str)."""
    try:
        cost = to_decimal(value)
        ok = cost.is_finite() and cost >= 0
    except (TypeError, ArithmeticError):
        ok = False
    if not ok:
        raise PipelineDefinitionError(
            f"{owner}: {arg} must be a finite number >= 0 (int, float, Decimal or numeric "
            f"str) or None, got {value!r}."
        )
    return cost


def refuse_mutation(owner: str, attr: str) -> NoReturn:
    """The error for changing a built step or pipeline."""
    raise PipelineDefinitionError(
        f"{owner} cannot be changed once built (tried to set {attr!r}): a pipeline that was "
        "validated must stay valid. Build a new one instead, e.g. "
        f"attrs.evolve(step, {attr}=...) or Step.from_callable(..., {attr}=...)."
    )


class ReadOnlyDict(dict[K, V]):
    """A read-only ``{key: Pipeline}`` of a built control-flow step.

    A ``dict`` (so code that reads dicts keeps working) whose mutators raise.
    """

    __slots__ = ("_owner", "_thing", "_what")

    def __init__(
        self, owner: str, data: Mapping[K, V], *, what: str = "branches", thing: str = "step"
    ) -> None:
        super().__init__(data)
        self._owner = owner
        self._what = what
        self._thing = thing

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._owner, dict(self), self._what, self._thing))

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise PipelineDefinitionError(
            f"{self._owner}: {self._what} cannot be changed once built; build a new "
            f"{self._thing} with the {self._what} you want."
        )

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse


def _rebuild(owner: str, data: dict[Any, Any], what: str, thing: str) -> ReadOnlyDict[Any, Any]:
    return ReadOnlyDict(owner, data, what=what, thing=thing)


_KIND_LABELS: Final = {
    "parallel": "Parallel step",
    "loop": "Loop step",
    "conditional": "Conditional step",
    "router": "Router step",
    "pipeline": "Nested pipeline step",
    "map": "Map step",
}


def _default(field: attrs.Attribute[Any]) -> Any:
    d = field.default
    if isinstance(d, attrs.Factory):  # type: ignore[arg-type]
        return d.factory()  # type: ignore[union-attr]
    return d


def _is_default(value: Any, default: Any) -> bool:
    if default is None or isinstance(default, bool):
        return value is default
    try:
        return bool(value == default)
    except Exception:  # an agent with an odd __eq__: it is set, whatever it says
        return False


def refuse_unhonoured(step: Any, options: Iterable[attrs.Attribute[Any]], config: Any) -> None:
    """Refuse every agent option a control-flow ``step`` was given but does not honour.

    Args:
        step: a control-flow step (``step.kind != "agent"``), being built.
        options: the fields of the base ``Step`` (the agent options).
        config: a default ``StepConfig``, to find the supervision settings that were set.

    Raises:
        PipelineDefinitionError: naming the step, the option and what to do instead.
    """
    label = f"{_KIND_LABELS.get(step.kind, 'Control-flow step')} {step.name!r}"
    honoured = step.honoured
    given: list[tuple[str, Any]] = []
    for f in options:
        if not f.init or f.name in ("name", "config") or f.name in honoured:
            continue
        value = getattr(step, f.name)
        if not _is_default(value, _default(f)):
            given.append((f.name, value))
    if "config" not in honoured:
        for f in attrs.fields(type(config)):
            if f.init:
                value = getattr(step.config, f.name)
                if not _is_default(value, getattr(config, f.name)):
                    given.append((f.name, value))
    if not given:
        return
    agent = [v for o, v in given if o == "agent"]
    if agent:
        raise PipelineDefinitionError(
            f"{label}: agent={agent[0]!r} is not used by a control-flow step; "
            "put the agent in a step inside it."
        )
    router = (
        " (a router step honours only its router agent's max_retries, timeout_s, backoff "
        "and placement)"
        if step.kind == "router"
        else ""
    )
    shown = ", ".join(f"{o}={v!r}" for o, v in given)
    verb, what = ("is", given[0][0]) if len(given) == 1 else ("are", "them")
    raise PipelineDefinitionError(
        f"{label}: {shown} {verb} not honoured by control-flow steps{router}. "
        f"Set {what} on the steps inside it, or wrap the control flow in an agent step "
        f"that has {'it' if len(given) == 1 else 'them'} (an async function that awaits "
        "Flujo(...).run_async)."
    )
