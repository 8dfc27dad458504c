"""Build-time checks of step options, and the read-only containers of built definitions.

Every numeric option is a finite number in range and every flag a real
``bool`` (``"no"`` is truthy, so a string flag is a bug, not a choice), the
same rules as :class:`~flujo_actors.UsageLimits`. Control-flow steps refuse
the agent options they do not honour, so no option is ever accepted and
then ignored. A built definition cannot be changed afterwards: steps and
pipelines are sealed, their branch maps read-only.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import attrs

from ..errors import PipelineDefinitionError
from ..results import COST_RULE, usd_amount

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
S = TypeVar("S")
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
    cost = usd_amount(value)
    if cost is None:
        raise PipelineDefinitionError(f"{owner}: {arg} must be {COST_RULE} or None, got {value!r}.")
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


#: The agent step's options (``AgentStep``'s init fields after ``name``) and their
#: defaults, in declaration order; ``config`` is a StepConfig, compared by its fields.
#: Kept here, below the kinds, so each control-flow kind can refuse them by name
#: without importing the agent kind (tests/steps/test_options.py checks they match).
AGENT_OPTIONS: Final[Mapping[str, Any]] = {
    "agent": None,
    "config": "<a default StepConfig>",
    "validators": (),
    "plugins": (),
    "fallback": None,
    "updates_context": False,
    "cache": False,
    "cache_key": None,
    "expected_cost_usd": None,
    "expected_tokens": None,
    "placement": None,
    "event_loop": None,
}


def _is_default(value: Any, default: Any) -> bool:
    if default is None or isinstance(default, bool):
        return value is default
    try:
        return bool(value == default)
    except Exception:  # an agent with an odd __eq__: it is set, whatever it says
        return False


def _shown(value: Any) -> Any:
    # validators=[f] is stored (and shown) as the tuple (f,), as on an agent step.
    return tuple(value) if isinstance(value, list) else value


def _unhonoured(kwargs: Mapping[str, Any], foreign: Iterable[str]) -> list[tuple[str, Any]]:
    given: list[tuple[str, Any]] = []
    settings: list[tuple[str, Any]] = []
    for option in foreign:
        if option not in kwargs:
            continue
        value = _shown(kwargs[option])
        if option == "config" and attrs.has(type(value)):
            # Name the supervision settings that were set (last), not "config=StepConfig(...)".
            default = type(value)()
            for c in attrs.fields(type(value)):
                if c.init and not _is_default(getattr(value, c.name), getattr(default, c.name)):
                    settings.append((c.name, getattr(value, c.name)))
        elif not _is_default(value, AGENT_OPTIONS[option]):
            given.append((option, value))
    return given + settings


def refuse_unhonoured(cls: type[S]) -> type[S]:
    """Make a control-flow kind refuse the agent options (:data:`AGENT_OPTIONS`) it lacks.

    A control-flow class has exactly the options it honours. Given one of the
    agent step's others (say ``LoopStep(..., fallback=f)`` or
    ``attrs.evolve(loop, cache=True)``), the kind raises a
    PipelineDefinitionError naming the step, the option and what to do
    instead, rather than a bare ``TypeError``; an option left at its default
    (``config=StepConfig()``) is accepted, as it changes nothing. Applied on
    top of ``attrs.define``.
    """
    own = {a.alias for a in attrs.fields(cls) if a.init}  # type: ignore[arg-type]
    foreign = tuple(o for o in AGENT_OPTIONS if o not in own)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not kwargs.keys().isdisjoint(foreign):
            given = _unhonoured(kwargs, foreign)
            if given:
                name = kwargs.get("name", args[0] if args else None)
                _refuse(cls.kind, name, given)  # type: ignore[attr-defined]
            kwargs = {k: v for k, v in kwargs.items() if k not in foreign}
        init(self, *args, **kwargs)

    setattr(cls, "__init__", __init__)  # noqa: B010 - mypy refuses assigning a method
    return cls


def _refuse(kind: str, name: Any, given: list[tuple[str, Any]]) -> NoReturn:
    label = f"{_KIND_LABELS.get(kind, 'Control-flow step')} {name!r}"
    agent = [v for o, v in given if o == "agent"]
    if agent:
        raise PipelineDefinitionError(
            f"{label}: agent={agent[0]!r} is not used by a control-flow step; "
            "put the agent in a step inside it."
        )
    router = (
        " (a router step honours only its router agent's max_retries, timeout_s, backoff "
        "and placement)"
        if kind == "router"
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
