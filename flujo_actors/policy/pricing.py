"""Cost from tokens: the optional price table (extra ``prices``: genai-prices).

:func:`price_of` prices a :class:`~flujo_actors.Usage` that names a model and
splits its tokens into input and output; it returns None when it cannot (no
table installed, unknown model, no split). genai-prices is imported on the
first priced usage, never by ``import flujo_actors``.
"""

from __future__ import annotations

import decimal
import functools
import importlib.util
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..results import Usage

__all__ = ["price_of", "prices_installed"]

# genai-prices computes with Decimals in the ambient context; an application's
# getcontext().prec = 2 must not round a price. Pricing multiplies and divides
# by powers of ten: 60 digits hold any realistic price exactly.
_PRICING: Final = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)


@functools.cache
def prices_installed() -> bool:
    """Whether genai-prices can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("genai_prices") is not None


@functools.cache
def _table() -> Any:
    if not prices_installed():
        return None
    import genai_prices

    return genai_prices


@functools.lru_cache(maxsize=4096)
def _price(model: str, inp: int, out: int) -> Decimal | None:
    gp = _table()
    if gp is None:
        return None
    with decimal.localcontext(_PRICING):
        try:
            calc = gp.calc_price(gp.Usage(input_tokens=inp, output_tokens=out), model_ref=model)
        except LookupError:  # unknown model or provider
            return None
        total = calc.total_price
    return total if isinstance(total, Decimal) else Decimal(str(total))


def price_of(usage: Usage) -> Decimal | None:
    """The exact cost of ``usage`` from the price table, or None if it cannot be priced."""
    if usage.model is None or (usage.input_tokens is None and usage.output_tokens is None):
        return None
    return _price(usage.model, usage.input_tokens or 0, usage.output_tokens or 0)
