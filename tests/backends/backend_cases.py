"""What the state-backend tests share: a checkpoint with defaults, PostgreSQL's lock waits."""

from __future__ import annotations

from typing import Any

from flujo_actors.backends import RunCheckpoint

__all__ = ["checkpoint", "waiting_on_lock"]


def checkpoint(run_id: str, /, **changes: Any) -> RunCheckpoint:
    """A checkpoint of a running run at its first step (empty context, no input), changed."""
    fields: dict[str, Any] = {
        "run_id": run_id,
        "pipeline_name": "p",
        "status": "running",
        "next_step_index": 0,
        "context": {},
        "initial_input": None,
    }
    fields.update(changes)
    return RunCheckpoint(**fields)


def waiting_on_lock(dsn: str) -> bool:
    """Whether any session of the server at ``dsn`` waits on a lock now."""
    import psycopg  # only the PostgreSQL tests need it

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and row[0] > 0
