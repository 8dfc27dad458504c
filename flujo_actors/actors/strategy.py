"""Restart types and supervision strategies: when a child restarts, and which siblings with it.

Their own module, below :mod:`.management` and :mod:`.spec` (which both name
them), so that :mod:`.spec` may import :mod:`.management` without a cycle.
"""

from __future__ import annotations

import enum

__all__ = ["Restart", "Strategy"]


class Restart(enum.Enum):
    """When a child is restarted after it exits."""

    #: Always: after a crash and after a normal exit.
    PERMANENT = "permanent"
    #: Only after a crash.
    TRANSIENT = "transient"
    #: Never.
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one of them must restart."""

    #: Only the child that exited.
    ONE_FOR_ONE = "one_for_one"
    #: All children: the others are stopped in reverse start order, then all
    #: are restarted in start order.
    ONE_FOR_ALL = "one_for_all"
    #: The child that exited and every child started after it.
    REST_FOR_ONE = "rest_for_one"
