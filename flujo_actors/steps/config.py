"""``StepConfig``: a step's supervision settings, checked when built and frozen afterwards."""

from __future__ import annotations

from typing import Any

import attrs

from ..errors import PipelineDefinitionError
from ..policy.retry import RETRY_ALL, retry_on_types
from .options import check_count, check_seconds, refuse_mutation

__all__ = ["StepConfig", "check_config", "check_supervision"]


def check_supervision(
    owner: str, max_retries: Any, timeout_s: Any, backoff_s: Any, backoff_factor: Any
) -> None:
    """The rules of StepConfig's numbers (shared by ``StepConfig`` and ``from_callable``)."""
    check_count(
        owner,
        "max_retries",
        max_retries,
        minimum=0,
        hint=" Use max_retries=0 for a single attempt.",
    )
    if timeout_s is not None:
        check_seconds(owner, "timeout_s", timeout_s, positive=True, none="None for no timeout")
    check_seconds(owner, "backoff_s", backoff_s, positive=False)
    check_seconds(owner, "backoff_factor", backoff_factor, positive=False)


@attrs.define
class StepConfig:
    """Per-step supervision settings, validated when built and frozen afterwards.

    Attributes:
        max_retries: retries after the first attempt (``N`` -> at most ``N + 1`` attempts).
        timeout_s: per-attempt timeout in seconds (None: no timeout). Blocking code
            (a sync agent, ``time.sleep``) cannot be interrupted: an attempt that
            returns after its deadline has timed out all the same. Use
            ``placement="process"`` or ``trio.to_thread`` for blocking work.
        backoff_s: delay before the first retry; later ones grow by ``backoff_factor``.
        backoff_factor: growth of the delay between retries.
        retry_on: the agent exceptions that are retried: an exception type or
            a tuple of them (default: every ``Exception``). Others fail the
            step (or hand over to its fallback) at once. Timeouts
            (``timeout_s``), lost workers and validator/plugin rejections are
            always retried.

    Raises:
        PipelineDefinitionError: a value is of the wrong type, not finite or
            out of range, or an attribute is set after construction.
    """

    max_retries: int = 1
    timeout_s: float | None = None
    backoff_s: float = 0.0
    backoff_factor: float = 2.0
    retry_on: type[Exception] | tuple[type[Exception], ...] = RETRY_ALL
    _sealed: bool = attrs.field(init=False, default=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        check_supervision(
            "StepConfig", self.max_retries, self.timeout_s, self.backoff_s, self.backoff_factor
        )
        object.__setattr__(self, "_sealed", True)

    def __setattr__(self, attr: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            refuse_mutation("A StepConfig", attr)
        object.__setattr__(self, attr, value)


def check_config(name: str, cfg: Any) -> None:
    # Its values were checked (and frozen) when the StepConfig was built.
    if not isinstance(cfg, StepConfig):
        raise PipelineDefinitionError(f"Step {name!r}: config must be a StepConfig, got {cfg!r}.")
    retry_on = retry_on_types(cfg.retry_on)
    if retry_on is None:
        raise PipelineDefinitionError(
            f"Step {name!r}: retry_on must be an exception type (a subclass of Exception) or a "
            f"tuple of them, got {cfg.retry_on!r}; for example retry_on=(ConnectionError, "
            "TimeoutError)."
        )
    if cfg.retry_on is not RETRY_ALL:
        object.__setattr__(cfg, "retry_on", retry_on)  # one shape for the engine: a tuple
