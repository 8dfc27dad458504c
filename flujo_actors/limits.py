"""Usage limits for a run."""

from __future__ import annotations

from decimal import Decimal

import attrs

from .errors import PipelineDefinitionError
from .results import to_decimal

__all__ = ["UsageLimits"]


def _cost(value: object) -> Decimal | None:
    if value is None:
        return None
    try:
        d = to_decimal(value)
    except TypeError as exc:
        raise PipelineDefinitionError(f"UsageLimits: total_cost_usd_limit {exc}") from None
    if d < 0:
        raise PipelineDefinitionError(
            f"UsageLimits: total_cost_usd_limit must be >= 0, got {value!r}."
        )
    return d


def _tokens(_inst: object, _attr: object, value: object) -> None:
    if value is not None and (type(value) is not int or value < 0):
        raise PipelineDefinitionError(
            f"UsageLimits: total_tokens_limit must be an int >= 0 or None, got {value!r}."
        )


@attrs.frozen
class UsageLimits:
    """Limits on a run's total usage; a breach is ``total > limit``.

    A float limit ``x`` is taken as ``Decimal(repr(x))``, so ``1.0`` is exact.
    """

    total_cost_usd_limit: Decimal | None = attrs.field(default=None, converter=_cost)
    total_tokens_limit: int | None = attrs.field(default=None, validator=_tokens)  # type: ignore[assignment]
