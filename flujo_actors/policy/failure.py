"""How a failed attempt is described on its :class:`~flujo_actors.StepResult` (pure).

A step that failed with an exception keeps it as plain strings, so they are
persisted with the run: ``metadata["exception_type"]`` (the qualified name of
the exception's type; builtins bare, ``"ValueError"``) and
``metadata["traceback"]`` (the formatted traceback, notes included). For an
exception that crossed a process boundary the traceback is the worker's.
"""

from __future__ import annotations

import traceback
from typing import Any

__all__ = ["exception_type_name", "failure_metadata", "format_traceback"]


def exception_type_name(exc: BaseException) -> str:
    """``module.QualName`` of ``exc``'s type (bare for builtins; the remote type for remote errors)."""
    remote = getattr(exc, "type_name", None)
    if isinstance(remote, str) and type(exc).__name__ == "RemoteAgentError":
        return remote
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def format_traceback(exc: BaseException) -> str:
    """The formatted traceback of ``exc`` (with its notes: an executor's remote traceback)."""
    text = "".join(traceback.format_exception(exc))
    remote = getattr(exc, "remote_traceback", None)
    if isinstance(remote, str) and remote and remote not in text:
        text += f"\nRemote traceback:\n{remote.rstrip()}\n"
    return text


def failure_metadata(exc: BaseException) -> dict[str, Any]:
    """``{"exception_type": ..., "traceback": ...}`` for a step that failed with ``exc``."""
    return {"exception_type": exception_type_name(exc), "traceback": format_traceback(exc)}
