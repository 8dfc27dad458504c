"""Usage limits of a run (checked by the run's governor; see :mod:`flujo_actors.governor`)."""

from __future__ import annotations

from decimal import Decimal

import attrs

from .errors import PipelineDefinitionError
from .results import COST_RULE, usd_amount

__all__ = ["UsageLimits"]


def _cost_limit(value: object) -> Decimal | None:
    if value is None:
        return None
    d = usd_amount(value)
    if d is None:
        raise PipelineDefinitionError(
            f"UsageLimits: total_cost_usd_limit must be {COST_RULE} or None for no limit, "
            f"got {value!r}; for example UsageLimits(total_cost_usd_limit=1.50)."
        )
    return d


def _token_limit(value: object) -> int | None:
    # bool is an int subclass, but True tokens is a bug, not a limit.
    if value is not None and (type(value) is not int or value < 0):
        raise PipelineDefinitionError(
            "UsageLimits: total_tokens_limit must be an int >= 0 or None for no limit, "
            f"got {value!r}; for example UsageLimits(total_tokens_limit=10_000)."
        )
    return value


@attrs.frozen
class UsageLimits:
    """Limits on a run's total usage; a run breaches when ``total > limit``.

    Reaching a limit exactly is allowed. A float limit ``x`` is taken as
    ``Decimal(repr(x))``, so ``1.0`` is exactly one dollar.

    Attributes:
        total_cost_usd_limit: the most the run may spend, in dollars (None: unlimited).
        total_tokens_limit: the most tokens the run may use (None: unlimited).

    Raises:
        PipelineDefinitionError: a limit is negative, not finite, or of the wrong type.
    """

    total_cost_usd_limit: Decimal | None = attrs.field(default=None, converter=_cost_limit)
    total_tokens_limit: int | None = attrs.field(default=None, converter=_token_limit)
