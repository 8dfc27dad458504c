"""The built-in logging hook: run events as records of the ``flujo_actors`` logger.

DEBUG: steps started/finished; INFO: runs, retries, fallbacks, failed steps,
breaches. No handler is installed; a run adds this hook only when the logger
is enabled for INFO at its start, so otherwise nothing is formatted or called.
"""

from __future__ import annotations

import logging
from typing import Final

from .hook_events import (
    FallbackTriggered,
    HookEvent,
    RunFinished,
    RunStarted,
    StepErrored,
    StepFinished,
    StepRetried,
    StepStarted,
    UsageLimitBreached,
)

__all__ = ["log_event", "logger"]

#: The library's logger. Silent by default: no handler, INFO/DEBUG records only.
logger: Final = logging.getLogger("flujo_actors")


def log_event(event: HookEvent) -> None:
    """The built-in logging hook (added to a run when the logger is enabled for INFO)."""
    debug = logger.isEnabledFor(logging.DEBUG)
    match event:
        case StepStarted() if debug:
            logger.debug("run %s: step %s started", event.run_id, "/".join(event.path))
        case StepFinished() if debug:
            logger.debug(
                "run %s: step %s finished (attempts=%d)",
                event.run_id,
                "/".join(event.path),
                event.result.attempts,
            )
        case StepErrored():
            logger.info(
                "run %s: step %s failed: %s",
                event.run_id,
                "/".join(event.path),
                event.result.feedback,
            )
        case StepRetried():
            logger.info(
                "run %s: step %s attempt %d failed, retrying in %.3fs: %s",
                event.run_id,
                "/".join(event.path),
                event.attempt,
                event.delay_s,
                event.feedback,
            )
        case FallbackTriggered():
            logger.info(
                "run %s: step %s falls back to %s: %s",
                event.run_id,
                "/".join(event.path),
                event.fallback,
                event.feedback,
            )
        case UsageLimitBreached():
            logger.info("run %s: usage limit breached: %s", event.run_id, event.message)
        case RunStarted():
            logger.info("run %s: pipeline %s started", event.run_id, event.pipeline)
        case RunFinished():
            logger.info(
                "run %s: finished, success=%s, cost=$%s, tokens=%d",
                event.run_id,
                event.success,
                event.result.total_cost_usd,
                event.result.total_tokens,
            )
        case _:
            pass
