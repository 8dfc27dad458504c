"""The state a run stores is O(completed steps), at any depth: never the history rewritten.

Counted in the real SQLite file (rows and bytes of text), not timed: each
completed step adds one row and the same number of bytes whatever its depth
(only its position key grows, by a level's name); before children were stored
by reference, every enclosing level stored the whole subtree again (x depth).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from flujo_actors import Flujo, SQLiteBackend
from flujo_actors.testing.footprint import Footprint, nested_loops, sqlite_footprint

if TYPE_CHECKING:
    from pathlib import Path

SIZES = (10, 20, 40)


async def _footprint(path: Path, depth: int, iterations: int) -> Footprint:
    async with SQLiteBackend(path, synchronous="NORMAL") as backend:
        result = await Flujo(nested_loops(depth, iterations), state_backend=backend).run_async(0)
        assert result.success
    return sqlite_footprint(path)


async def _growth(tmp_path: Path, depth: int) -> list[tuple[float, float]]:
    """(rows, bytes) added per completed step, between neighbouring sizes."""
    prints = [await _footprint(tmp_path / f"d{depth}-{n}.db", depth, n) for n in SIZES]
    return [
        ((b.rows - a.rows) / (m - n), (b.bytes - a.bytes) / (m - n))
        for (n, a), (m, b) in zip(
            zip(SIZES, prints, strict=True), zip(SIZES[1:], prints[1:], strict=True), strict=False
        )
    ]


@pytest.mark.parametrize("depth", [1, 3, 5])
async def test_the_stored_state_grows_linearly_with_completed_steps(
    tmp_path: Path, depth: int
) -> None:
    (rows_a, bytes_a), (rows_b, bytes_b) = await _growth(tmp_path, depth)
    assert rows_a == rows_b == 1.0  # one row per completed step
    assert abs(bytes_b - bytes_a) <= 0.02 * bytes_a  # the same bytes for each new step


async def test_the_bytes_per_completed_step_do_not_grow_with_depth(tmp_path: Path) -> None:
    per_step = {depth: (await _growth(tmp_path, depth))[-1][1] for depth in (1, 3, 5)}
    # Only the position keys are longer (a level name each): within 25%, not x depth.
    assert per_step[5] <= 1.25 * per_step[1], per_step
    assert per_step[1] < 450, per_step


def test_nested_loops_refuses_a_depth_below_one() -> None:
    with pytest.raises(
        ValueError, match=r"^nested_loops: depth and iterations must be >= 1, got 0, 3\.$"
    ):
        nested_loops(0, 3)
