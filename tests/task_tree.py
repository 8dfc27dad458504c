"""The tasks alive in the current trio run (for tests that check nothing is left behind)."""

from __future__ import annotations

import trio


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task alive in this trio run (walked from the root task)."""
    found: set[trio.lowlevel.Task] = set()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found
