"""Idempotency keys: one per step position, stable across attempts and resumes.

An agent that declares an ``idempotency_key`` parameter receives
:func:`current_key`: a digest of the run id and the step's *position* (its
path plus the loop iterations and branches on the way down, see
:attr:`flujo_actors.frames.ExecutionFrame.position`). Every attempt of the
step, its fallback, and every re-execution after a resume of the same
position get the same key; two positions never share one. So a side effect
keyed by it can be deduplicated downstream: the runtime runs a step that was
running at a crash again (at least once), and the key lets the receiver
notice.

The step actor sets :data:`POSITION` (a cheap tuple) for each step; the key
is only computed when an agent asks for it.
"""

from __future__ import annotations

import contextvars
import hashlib
from typing import Any, Final

__all__ = ["POSITION", "current_key", "idempotency_key"]

#: ``(run_id, position)`` of the step running in this task (set by its step actor).
POSITION: Final[contextvars.ContextVar[tuple[str, tuple[Any, ...]]]] = contextvars.ContextVar(
    "flujo_actors_position"
)


def idempotency_key(run_id: str, position: tuple[Any, ...]) -> str:
    """The key of ``position`` in run ``run_id`` (64 hex characters)."""
    # Here, not at the top: only keyed agents need it, and json is not loaded by trio.
    import json

    text = json.dumps([run_id, list(position)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def current_key() -> str:
    """The key of the step running in this task.

    Raises:
        LookupError: called outside a step (no position is set).
    """
    run_id, position = POSITION.get()
    return idempotency_key(run_id, position)
