"""How ``flujo-actors runs`` prints: plain text, ``rich`` on a terminal, or JSON.

Plain text is the format for pipes and scripts (stable columns, no colour);
with the ``rich`` extra installed and a terminal on stdout, the same rows
are drawn as a rich table or tree. ``--json`` prints JSON data only.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..backends.state import RunSnapshot
    from ..results import PendingInput, PipelineResult, StepResult

__all__ = ["print_json", "run_list", "run_result", "run_tree", "snapshot_json", "use_rich"]

_LIST_COLUMNS = ("RUN ID", "STATUS", "PIPELINE", "STEPS", "COST USD", "TOKENS", "UPDATED")
_TREE_COLUMNS = ("STEP", "STATUS", "ATTEMPTS", "COST USD", "TOKENS", "LATENCY")


def use_rich() -> bool:
    """Whether to draw with rich: installed, and stdout is a terminal."""
    if not sys.stdout.isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def print_json(value: Any) -> None:
    """Print JSON data, indented, keys in their order."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _when(updated_at: float, now: float) -> str:
    stamp = _dt.datetime.fromtimestamp(updated_at, _dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({_age(now - updated_at)} ago)"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _table(
    columns: Sequence[str], rows: Sequence[tuple[str, ...]], title: str | None = None
) -> None:
    if use_rich():
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    if title:
        print(title)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in (tuple(columns), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _pending_json(item: PendingInput) -> dict[str, Any]:
    return {
        "key": item.key,
        "step": item.step,
        "message": item.message,
        "input_schema": item.input_schema,
    }


def snapshot_json(snap: RunSnapshot, pending: Sequence[PendingInput] = ()) -> dict[str, Any]:
    """A stored run as JSON data (the stored values, never decoded into objects).

    ``pending`` (a paused run's human inputs) is listed under ``"pending"``.
    """
    import attrs

    return attrs.asdict(snap, recurse=False, value_serializer=None) | {
        "step_history": list(snap.step_history),
        "pending": [_pending_json(item) for item in pending],
    }


def _print_pending(pending: Sequence[PendingInput]) -> None:
    for item in pending:
        schema = json.dumps(item.input_schema, ensure_ascii=False) if item.input_schema else "any"
        print(f"waiting for input at {item.key}: {item.message} (input schema: {schema})")


def run_list(runs: Sequence[RunSnapshot], now: float, *, as_json: bool) -> None:
    """Print the runs (already filtered and sorted newest first)."""
    if as_json:
        print_json(
            [
                {
                    "run_id": s.run_id,
                    "status": s.status,
                    "pipeline": s.pipeline_name,
                    "steps": len(s.step_history),
                    "total_cost_usd": s.total_cost_usd,
                    "total_tokens": s.total_tokens,
                    "updated_at": s.updated_at,
                }
                for s in runs
            ]
        )
        return
    if not runs:
        print("no runs")
        return
    rows = [
        (
            s.run_id,
            s.status,
            s.pipeline_name,
            str(len(s.step_history)),
            s.total_cost_usd,
            str(s.total_tokens),
            _when(s.updated_at, now),
        )
        for s in runs
    ]
    _table(_LIST_COLUMNS, rows)


def _step_rows(steps: Sequence[StepResult], depth: int, rows: list[tuple[str, ...]]) -> None:
    for step in steps:
        status = "ok" if step.success else "FAILED"
        if step.metadata.get("fallback_triggered"):
            status += " (fallback)"
        rows.append(
            (
                "  " * depth + step.name,
                status,
                str(step.attempts),
                str(step.cost_usd),
                str(step.token_counts),
                f"{step.latency_s * 1000:.1f} ms",
            )
        )
        _step_rows(step.step_history, depth + 1, rows)


def run_tree(
    snap: RunSnapshot, result: PipelineResult, pending: Sequence[PendingInput] = ()
) -> None:
    """Print one run: its header, its step tree, its failure or pause."""
    print(f"run {snap.run_id}: {snap.status}, pipeline {snap.pipeline_name}")
    print(f"total cost {result.total_cost_usd} USD, {result.total_tokens} tokens")
    rows: list[tuple[str, ...]] = []
    _step_rows(result.step_history, 0, rows)
    if rows:
        _table(_TREE_COLUMNS, rows)
    else:
        print("no step completed yet")
    failed = [s for s in result.step_history if not s.success]
    if failed and failed[-1].feedback:
        print(f"failed at {failed[-1].name}: {failed[-1].feedback}")
    _print_pending(pending)


def run_result(result: PipelineResult, *, as_json: bool) -> None:
    """Print the outcome of a resumed or forked run."""
    status = result.status
    pending = result.paused.pending if result.paused is not None else ()
    if as_json:
        from ..serialization import safe_serialize

        print_json(
            {
                "run_id": result.run_id,
                "status": status,
                "success": result.success,
                "output": safe_serialize(result.output),
                "total_cost_usd": str(result.total_cost_usd),
                "total_tokens": result.total_tokens,
                "pending": [_pending_json(item) for item in pending],
            }
        )
        return
    print(f"run {result.run_id}: {status}")
    rows: list[tuple[str, ...]] = []
    _step_rows(result.step_history, 0, rows)
    if rows:
        _table(_TREE_COLUMNS, rows)
    _print_pending(pending)
    if result.success:
        print(f"output: {result.output!r}")
