"""How much a run leaves in a SQLite state file: rows and bytes, for size checks.

:func:`nested_loops` builds the pipeline the size checks and the
``persistence.depth`` bench figures use: a loop of ``iterations`` trivial
steps wrapped in ``depth - 1`` levels of nested pipelines and one-branch
parallel steps, alternately. :func:`sqlite_footprint` counts what a SQLite
state file holds. With every completed child stored once and referred to
by its parents (see :mod:`flujo_actors.step_rows`), the bytes per completed
step do not grow with the depth (only the position keys, a few bytes per
level), and the total grows linearly with the steps.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import attrs

from ..steps.dsl import Pipeline, Step

__all__ = ["Footprint", "nested_loops", "sqlite_footprint"]

#: The tables of a SQLite state file that grow with a run, and their JSON columns.
_TABLES = {
    "runs": "length(context) + length(initial_input) + length(output) + length(run_id)",
    "steps": "length(json) + length(run_id)",
    "positions": "length(json) + length(position) + length(run_id)",
    "fingerprints": "length(fingerprint) + length(run_id)",
}


@attrs.frozen
class Footprint:
    """What a SQLite state file holds: ``rows`` of run data and their ``bytes`` of text."""

    rows: int
    bytes: int


def sqlite_footprint(path: str | os.PathLike[str]) -> Footprint:
    """Count the rows and the bytes of text (JSON, keys, ids) of every run in the file.

    Reads the file with its own connection (close or flush the backend first).
    """
    conn = sqlite3.connect(os.fspath(path))
    try:
        rows = size = 0
        for table, length in _TABLES.items():
            n, total = conn.execute(
                f"SELECT count(*), coalesce(sum({length}), 0) FROM {table}"
            ).fetchone()
            rows += n
            size += total
    finally:
        conn.close()
    return Footprint(rows, size)


def _inc(value: int) -> int:
    return value + 1


def _reached(total: int) -> Any:
    def done(output: int, _ctx: Any) -> bool:
        return output >= total

    return done


def nested_loops(depth: int, iterations: int) -> Pipeline:
    """A loop of ``iterations`` steps ``+1`` under ``depth - 1`` nesting levels.

    Levels alternate between a nested pipeline (``as_step``) and a parallel
    step of one branch; the run's output is ``iterations`` (input 0) wrapped
    in one ``{"b": ...}`` per parallel level.
    """
    if depth < 1 or iterations < 1:
        raise ValueError(
            f"nested_loops: depth and iterations must be >= 1, got {depth}, {iterations}."
        )
    step: Any = Step.loop_until(
        "loop", Step.from_callable(_inc, name="inc"), _reached(iterations), max_loops=iterations
    )
    for level in range(1, depth):
        if level % 2:
            step = Pipeline.from_step(step).as_step(f"nested{level}")
        else:
            step = Step.parallel(f"fan{level}", {"b": step})
    return Pipeline.from_step(step)
