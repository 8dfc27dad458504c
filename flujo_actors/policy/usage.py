"""Reading usage from agent outputs (pure: no trio, no I/O, no SDK import).

One rule for every placement: the inline path, the executors' workers and
the streaming collector all call :func:`usage_of` (and
:class:`~flujo_actors.policy.stream.StreamUsage` for chunks). In order, an output's usage is:

1. its explicit ``cost_usd`` / ``token_counts`` attributes (Flujo's way);
2. an extractor registered for its type (or a base class) with
   :func:`register_usage_extractor`;
3. a built-in reading, recognised by duck typing (no SDK is imported):
   openai chat completions, completions and responses, anthropic messages,
   LiteLLM responses (their ``_hidden_params["response_cost"]`` is the
   cost), pydantic-ai run results (``result.usage()``), and any object whose
   ``usage`` has ``total_tokens``, ``input_tokens``/``output_tokens`` or
   ``prompt_tokens``/``completion_tokens``.

Which of these applies is decided once per output type (a dict keyed by
type), so a plain output costs one dict lookup. An object that has a
``usage`` attribute no rule understands is :class:`UsageUnreadable`: zero
without limits, a clear failure under one (see :func:`charge_of`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from ..errors import PricingNotConfiguredError, UsageReportError
from ..results import COST_RULE, COUNT_RULE, ZERO, Usage, add_usd, usd_amount, whole_count

if TYPE_CHECKING:
    from ..limits import UsageLimits

__all__ = [
    "NO_USAGE",
    "UsageUnreadable",
    "charge_of",
    "counts_of",
    "make_usage",
    "register_usage_extractor",
    "usage_of",
]

# Outputs of these types cannot carry usage: no probing at all.
NO_USAGE: Final[frozenset[type]] = frozenset(
    {int, str, float, bool, type(None), bytes, dict, list, tuple, set, frozenset, Decimal}
)


@attrs.frozen
class UsageUnreadable:
    """An output that looks like it carries usage (it has ``usage``) but no rule reads it.

    Attributes:
        type_name: the output's type, qualified.
        detail: what was found (``"usage=None"``, ``"usage of type Foo"``).
    """

    type_name: str
    detail: str


Reading = Usage | UsageUnreadable | None
_Extractor = Callable[[Any], Reading]

_lock = threading.Lock()
_registered: dict[type, Callable[[Any], Usage]] = {}
# output type -> how to read it (filled lazily, cleared on registration).
_by_type: dict[type, _Extractor] = {}


#: The output type an extractor reads (``fn`` takes what ``type_`` is).
OutputT = TypeVar("OutputT")


def register_usage_extractor(type_: type[OutputT], fn: Callable[[OutputT], Usage]) -> None:
    """Teach flujo_actors to read the usage of outputs of ``type_`` (and its subclasses).

    ``fn(output)`` returns a :class:`~flujo_actors.Usage`. Explicit
    ``cost_usd`` / ``token_counts`` attributes on an output still win over
    it; it wins over the built-in SDK readings. Thread-safe; registering the
    same type again replaces its extractor.

    Raises:
        TypeError: ``type_`` is not a class or ``fn`` is not callable.
    """
    if not isinstance(type_, type):
        raise TypeError(
            f"register_usage_extractor: type_ must be a class, got {type_!r}; "
            "for example register_usage_extractor(MyReply, lambda r: Usage(tokens=r.n))."
        )
    if not callable(fn):
        raise TypeError(
            f"register_usage_extractor: fn must be a callable output -> Usage, got {fn!r}."
        )
    with _lock:
        _registered[type_] = fn
        _by_type.clear()


def usage_of(output: Any, *, step_name: str | None = None) -> Reading:
    """The usage ``output`` reports: a :class:`Usage`, :class:`UsageUnreadable`, or None.

    None means the output carries no usage at all (plain values). Decided
    once per output type, then one dict lookup per call.

    Raises:
        UsageReportError: the output reports an invalid cost or count, or a
            registered extractor failed or returned something else than a Usage
            (the message names the step when ``step_name`` is given).
    """
    t = type(output)
    if t in NO_USAGE:
        return None
    extract = _by_type.get(t)
    if extract is None:
        extract = _resolve(t, output)
        if t is not SimpleNamespace:  # a bag of attributes: its instances differ in shape
            _by_type[t] = extract  # a benign race: every thread computes the same value
    try:
        return extract(output)
    except UsageReportError as exc:
        if step_name is None:
            raise
        raise UsageReportError(f"Step {step_name!r}: {exc}") from None


def charge_of(
    readings: Reading | list[Usage | UsageUnreadable],
    *,
    step_name: str,
    limits: UsageLimits | None,
) -> tuple[Decimal, int]:
    """The exact ``(cost, tokens)`` to charge for one attempt's usage readings.

    A :class:`Usage` without a cost is priced from its model and tokens when
    a price table is installed (extra ``prices``). Nothing is ever a silent
    zero under a limit:

    Raises:
        PricingNotConfiguredError: a cost limit is set, the usage has tokens
            but no cost, and no price is known for its model.
        UsageReportError: a limit is set and the output's usage cannot be read.
    """
    if readings is None:
        return ZERO, 0
    if type(readings) is Usage and readings.cost_usd is not None:
        return readings.cost_usd, readings.tokens  # the common case, at once (a sum's form)
    if not isinstance(readings, list):
        readings = [readings]
    cost = ZERO
    tokens = 0
    for r in readings:
        if isinstance(r, UsageUnreadable):
            _refuse_unreadable(r, step_name, limits)
            continue
        tokens += r.tokens
        c = r.cost_usd
        if c is None and r.tokens:
            c = _price(r, step_name, limits)
        if c is not None:
            cost = add_usd(cost, c)
    return cost, tokens


def _refuse_unreadable(r: UsageUnreadable, step_name: str, limits: UsageLimits | None) -> None:
    if limits is None:
        return
    names = [
        n
        for n, v in (
            ("total_cost_usd_limit", limits.total_cost_usd_limit),
            ("total_tokens_limit", limits.total_tokens_limit),
        )
        if v is not None
    ]
    if not names:
        return
    short = r.type_name.rsplit(".", 1)[-1]
    raise UsageReportError(
        f"Step {step_name!r}: its output of type {r.type_name} has a usage attribute that no "
        f"usage extractor understands ({r.detail}), so its usage cannot be counted under "
        f"{' and '.join(names)}. Register one: register_usage_extractor({short}, "
        "lambda out: Usage(tokens=..., cost_usd=...))."
    )


def _price(r: Usage, step_name: str, limits: UsageLimits | None) -> Decimal | None:
    from .pricing import price_of, prices_installed  # genai-prices loads only when needed

    priced = price_of(r)
    if priced is not None or limits is None or limits.total_cost_usd_limit is None:
        return priced
    model = r.model
    if model is None:
        why = "it names no model to price them by"
    elif r.input_tokens is None and r.output_tokens is None:
        why = f"model {model!r} is named but the tokens have no input/output split"
    elif not prices_installed():
        why = f"no price table is installed for model {model!r}"
    else:
        why = f"the price table (genai-prices) knows no price for model {model!r}"
    raise PricingNotConfiguredError(
        f"Step {step_name!r}: its output reports {r.tokens} tokens but no cost, and "
        f"total_cost_usd_limit is set; {why}. Install the price table (pip install "
        "'flujo-actors[prices]'), report cost_usd from the agent, or register a usage "
        "extractor that returns cost_usd.",
        step=step_name,
        model=model,
    )


# -- deciding how to read a type ---------------------------------------------------


def _qualname(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _resolve(t: type, sample: Any) -> _Extractor:
    explicit = hasattr(sample, "cost_usd") or hasattr(sample, "token_counts")
    with _lock:
        registered = next((_registered[b] for b in t.__mro__ if b in _registered), None)
    rest: _Extractor
    rest = _call_registered(registered, t) if registered is not None else _builtin(sample, t)
    if explicit:
        return _explicit(rest)
    return rest


def _none(_output: Any) -> None:
    return None


#: Readings of explicit float costs by ``(cost_usd, token_counts)``: an agent
#: reports the same few values over and over, and a Usage is immutable, so the
#: conversion (``Decimal(repr(x))``, the checks) runs once per value. Keys
#: hold a nonzero float and None or an int, compared with their exact types
#: checked, so equal keys are equal inputs (0.0 and -0.0 would not be).
_FLOAT_READINGS: dict[tuple[float, int | None], Usage] = {}
_FLOAT_READINGS_MAX: Final = 1024


def _explicit(rest: _Extractor) -> _Extractor:
    def read(output: Any) -> Reading:
        cost = getattr(output, "cost_usd", None)
        tokens = getattr(output, "token_counts", None)
        key = None
        if type(cost) is float and cost and (tokens is None or type(tokens) is int):
            key = (cost, tokens)
            hit = _FLOAT_READINGS.get(key)
            if hit is not None:
                return hit
        elif cost is None and tokens is None:
            return rest(output)
        c = None if cost is None else usd_amount(cost)
        if cost is not None and c is None:
            raise UsageReportError(
                f"its output reports cost_usd={cost!r}; usage must be {COST_RULE}."
            )
        n = 0 if tokens is None else whole_count(tokens)
        if n is None:
            raise UsageReportError(
                f"its output reports token_counts={tokens!r}; token counts must be {COUNT_RULE}."
            )
        # No cost_usd (or None) with tokens is an unknown cost, priced or refused later.
        usage = Usage(cost_usd=c, tokens=n)
        if key is not None:
            if len(_FLOAT_READINGS) >= _FLOAT_READINGS_MAX:
                _FLOAT_READINGS.clear()  # a benign race between threads: a value is recomputed
            _FLOAT_READINGS[key] = usage
        return usage

    return read


def _call_registered(fn: Callable[[Any], Usage], t: type) -> _Extractor:
    label = getattr(fn, "__qualname__", repr(fn))

    def read(output: Any) -> Reading:
        try:
            usage = fn(output)
        except Exception as exc:
            raise UsageReportError(
                f"the usage extractor {label} registered for {_qualname(t)} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(usage, Usage):
            raise UsageReportError(
                f"the usage extractor {label} registered for {_qualname(t)} returned "
                f"{usage!r}; it must return a flujo_actors.Usage."
            )
        return usage

    return read


def _builtin(sample: Any, t: type) -> _Extractor:
    try:
        usage = getattr(sample, "usage", _MISSING)
    except Exception:  # a property that raises: nothing we can read
        usage = _MISSING
    if usage is _MISSING:
        return _none
    if callable(usage) and not _looks_likecounts_of(usage):
        return _method_usage(t)  # pydantic-ai: result.usage()
    return _attribute_usage(t)


_MISSING: Final = object()


def _method_usage(t: type) -> _Extractor:
    name = _qualname(t)

    def read(output: Any) -> Reading:
        try:
            usage = output.usage()
        except Exception as exc:
            return UsageUnreadable(name, f"usage() raised {type(exc).__name__}: {exc}")
        counts = counts_of(usage)
        if counts is None:
            return UsageUnreadable(name, f"usage() returned {type(usage).__qualname__}")
        return make_usage(counts, None, _pydantic_ai_model(output))

    return read


def _attribute_usage(t: type) -> _Extractor:
    name = _qualname(t)

    def read(output: Any) -> Reading:
        usage = getattr(output, "usage", None)
        if usage is None:
            return UsageUnreadable(name, "usage=None")
        counts = counts_of(usage)
        if counts is None:
            return UsageUnreadable(name, f"usage of type {type(usage).__qualname__}")
        model = getattr(output, "model", None)
        return make_usage(counts, _litellm_cost(output), model if isinstance(model, str) else None)

    return read


def _field(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _looks_likecounts_of(obj: Any) -> bool:
    return any(
        _field(obj, k) is not None
        for k in ("total_tokens", "input_tokens", "output_tokens", "prompt_tokens")
    )


def _num(obj: Any, key: str) -> int | None:
    v = _field(obj, key)
    if v is None:
        return None
    n = whole_count(v)
    if n is None:
        raise UsageReportError(f"its output reports usage.{key}={v!r}; it must be {COUNT_RULE}.")
    return n


def counts_of(usage: Any) -> tuple[int | None, int | None, int | None] | None:
    """``(input, output, total)`` from any of the SDKs' usage shapes, or None."""
    inp = _num(usage, "input_tokens")
    if inp is None:
        inp = _num(usage, "prompt_tokens")
    if inp is None:
        inp = _num(usage, "request_tokens")  # older pydantic-ai
    out = _num(usage, "output_tokens")
    if out is None:
        out = _num(usage, "completion_tokens")
    if out is None:
        out = _num(usage, "response_tokens")
    # anthropic counts cached prompt tokens apart from input_tokens: they were processed too.
    for key in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        extra = _num(usage, key)
        if extra:
            inp = (inp or 0) + extra
    total = _num(usage, "total_tokens")
    if inp is None and out is None and total is None:
        return None
    return inp, out, total


def make_usage(
    counts: tuple[int | None, int | None, int | None], cost: Decimal | None, model: str | None
) -> Usage:
    inp, out, total = counts
    if total is None:
        total = (inp or 0) + (out or 0)
    return Usage(cost_usd=cost, tokens=total, input_tokens=inp, output_tokens=out, model=model)


def _litellm_cost(output: Any) -> Decimal | None:
    hidden = getattr(output, "_hidden_params", None)
    if not isinstance(hidden, Mapping):
        return None
    cost = hidden.get("response_cost")
    if cost is None:
        return None
    c = usd_amount(cost)
    if c is None:
        raise UsageReportError(
            f"its output reports _hidden_params['response_cost']={cost!r}; it must be {COST_RULE}."
        )
    return c


def _pydantic_ai_model(output: Any) -> str | None:
    # The model of the last response of the run, for pricing; never required.
    try:
        messages = output.all_messages()
    except Exception:
        return None
    for m in reversed(list(messages) if messages is not None else []):
        name = getattr(m, "model_name", None)
        if isinstance(name, str):
            return name
    return None
