"""Which agent exceptions a step retries: ``StepConfig(retry_on=...)`` (pure).

The rest of the attempt rules (how many attempts, the backoff, what else is
retried, fallback) are the attempt machine's: :mod:`flujo_actors.policy.attempt`.
"""

from __future__ import annotations

__all__ = ["RETRY_ALL", "is_retried", "retry_on_types"]


#: What is retried when a step does not say (``StepConfig(retry_on=...)``): every Exception.
RETRY_ALL: tuple[type[Exception], ...] = (Exception,)


def retry_on_types(value: object) -> tuple[type[Exception], ...] | None:
    """``retry_on`` as a tuple of exception types, or None if it is not a valid value.

    Valid: an exception class (a subclass of ``Exception``; ``trio.Cancelled``
    and other ``BaseException``\\ s are never retried) or a tuple/list of them
    (empty: no exception is retried).
    """
    items = (value,) if isinstance(value, type) else value
    if not isinstance(items, (tuple, list)):
        return None
    out = tuple(items)
    for t in out:
        if not (isinstance(t, type) and issubclass(t, Exception)):
            return None
    return out


def is_retried(exc: BaseException, retry_on: tuple[type[Exception], ...]) -> bool:
    """Whether an agent's exception ``exc`` is one ``retry_on`` allows another attempt for."""
    return retry_on is RETRY_ALL or isinstance(exc, retry_on)
