"""The SQL of :class:`~flujo_actors.backends.postgres.PostgresBackend` (worker-thread side).

Every function runs on a connection the caller took from the pool, inside
the caller's transaction, and is blocking. All SQL is parameterised.

A checkpoint is one statement: an upsert of the run row that returns the
run's new step count, and the insert of its new step rows at the indexes
before that count (``unnest ... WITH ORDINALITY``). The work per step does
not grow with the history.

Fencing: every write of a run this backend holds the lease of carries the
lease's epoch and applies only while the run's row still has that epoch, in
the same transaction, so a process whose lease was taken over cannot
overwrite the new owner's progress. A checkpoint of a held run is an
``UPDATE ... WHERE lease_epoch = epoch`` (never an insert: a held run whose
row is gone was deleted, and must not come back half-written). A run this
backend does not hold is written only if no other owner's name is on it.
Completed positions first lock the run rows they belong to (``FOR SHARE``,
so a concurrent claim waits for this transaction instead of slipping
between the check and the insert) and are written only if every run passes
the same test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg

    from .state import _EncodedCheckpoint

__all__ = [
    "delete_run",
    "insert_new_run",
    "list_run_ids",
    "prune_runs",
    "read_run",
    "write_batch",
    "write_checkpoint",
]

_LEASE: Final = "now() + make_interval(secs => %(lease_s)s)"

# The new step rows, at the indexes before the run's new step count.
_STEPS: Final = (
    " steps AS ("
    " INSERT INTO flujo_steps (run_id, idx, row)"
    " SELECT %(run_id)s, run.step_count - %(n)s + t.ord - 1, t.row"
    " FROM run, unnest(%(rows)s::json[]) WITH ORDINALITY AS t(row, ord))"
    " SELECT count(*) FROM run"
)

# A run this backend does not hold: inserted, or replaced unless another owner leases it.
_WRITE: Final = (
    "WITH run AS ("
    " INSERT INTO flujo_runs AS r (run_id, pipeline_name, status, next_step_index, context,"
    "  initial_input, output, total_cost_usd, total_tokens, updated_at, step_count, fingerprint,"
    "  owner, lease_expires_at, lease_epoch)"
    " VALUES (%(run_id)s, %(pipeline_name)s, %(status)s, %(next)s, %(context)s::json,"
    "  %(initial_input)s::json, %(output)s::json, %(cost)s, %(tokens)s, %(updated_at)s, %(n)s,"
    "  %(fingerprint)s, %(owner)s,"
    f"  CASE WHEN %(owner)s::text IS NULL THEN NULL ELSE {_LEASE} END, COALESCE(%(epoch)s, 0))"
    " ON CONFLICT (run_id) DO UPDATE SET"
    "  pipeline_name = excluded.pipeline_name, status = excluded.status,"
    "  next_step_index = excluded.next_step_index, context = excluded.context,"
    "  initial_input = excluded.initial_input, output = excluded.output,"
    "  total_cost_usd = excluded.total_cost_usd, total_tokens = excluded.total_tokens,"
    "  updated_at = excluded.updated_at, step_count = r.step_count + excluded.step_count,"
    "  fingerprint = COALESCE(excluded.fingerprint, r.fingerprint),"
    "  owner = excluded.owner, lease_expires_at = excluded.lease_expires_at"
    " WHERE r.owner IS NULL OR r.owner = %(me)s"
    " RETURNING r.step_count),"
    f"{_STEPS}"
)

# A run this backend holds: only while the row still has the held lease epoch.
_WRITE_HELD: Final = (
    "WITH run AS ("
    " UPDATE flujo_runs AS r SET"
    "  pipeline_name = %(pipeline_name)s, status = %(status)s, next_step_index = %(next)s,"
    "  context = %(context)s::json, initial_input = %(initial_input)s::json,"
    "  output = %(output)s::json, total_cost_usd = %(cost)s, total_tokens = %(tokens)s,"
    "  updated_at = %(updated_at)s, step_count = r.step_count + %(n)s,"
    "  fingerprint = COALESCE(%(fingerprint)s, r.fingerprint), owner = %(owner)s,"
    f"  lease_expires_at = CASE WHEN %(owner)s::text IS NULL THEN NULL ELSE {_LEASE} END"
    " WHERE r.run_id = %(run_id)s AND r.lease_epoch = %(epoch)s"
    " RETURNING r.step_count),"
    f"{_STEPS}"
)

_CREATE: Final = (
    "INSERT INTO flujo_runs (run_id, pipeline_name, status, next_step_index, context,"
    " initial_input, output, total_cost_usd, total_tokens, updated_at, step_count, fingerprint,"
    " owner, lease_expires_at, lease_epoch)"
    " VALUES (%(run_id)s, %(pipeline_name)s, %(status)s, %(next)s, %(context)s::json,"
    " %(initial_input)s::json, %(output)s::json, %(cost)s, %(tokens)s, %(updated_at)s, %(n)s,"
    " %(fingerprint)s, %(owner)s,"
    f" CASE WHEN %(owner)s::text IS NULL THEN NULL ELSE {_LEASE} END, 1)"
    " ON CONFLICT (run_id) DO NOTHING RETURNING lease_epoch"
)

_SELECT_RUN: Final = (
    # One statement, so the run row and its steps come from one snapshot.
    "SELECT pipeline_name, status, next_step_index, context::text, initial_input::text,"
    " output::text, total_cost_usd, total_tokens, updated_at, fingerprint,"
    " ARRAY(SELECT s.row::text FROM flujo_steps s WHERE s.run_id = r.run_id ORDER BY s.idx)"
    " FROM flujo_runs r WHERE run_id = %s"
)


def _params(
    item: _EncodedCheckpoint, owner: str | None, lease_s: float, epoch: int | None
) -> dict[str, Any]:
    # Only a running run has an owner: a finished or paused run is nobody's.
    running = item.status == "running"
    return {
        "run_id": item.run_id,
        "pipeline_name": item.pipeline_name,
        "status": item.status,
        "next": item.next_step_index,
        "context": item.context,
        "initial_input": item.initial_input,
        "output": item.output,
        "cost": item.total_cost_usd,
        "tokens": item.total_tokens,
        "updated_at": item.updated_at,
        "n": len(item.new_steps),
        "rows": list(item.new_steps),
        "fingerprint": item.pipeline_fingerprint,
        "owner": owner if running else None,
        "me": owner,
        "lease_s": lease_s,
        "epoch": epoch,
    }


def write_checkpoint(
    conn: psycopg.Connection[tuple[Any, ...]],
    item: _EncodedCheckpoint,
    owner: str | None,
    lease_s: float,
    epoch: int | None,
) -> bool:
    """Apply one checkpoint; False when fenced (the held run's lease epoch moved on, or its
    row is gone)."""
    statement = _WRITE if epoch is None else _WRITE_HELD
    row = conn.execute(statement, _params(item, owner, lease_s, epoch)).fetchone()
    return row is not None and row[0] == 1


def insert_new_run(
    conn: psycopg.Connection[tuple[Any, ...]],
    item: _EncodedCheckpoint,
    owner: str | None,
    lease_s: float,
) -> int | None:
    """Insert a new run with its steps; its lease epoch, or None if the id is taken."""
    found = conn.execute(_CREATE, _params(item, owner, lease_s, None)).fetchone()
    if found is None:
        return None
    if item.new_steps:
        conn.execute(
            "INSERT INTO flujo_steps (run_id, idx, row)"
            " SELECT %s, t.ord - 1, t.row FROM unnest(%s::json[]) WITH ORDINALITY AS t(row, ord)",
            (item.run_id, list(item.new_steps)),
        )
    epoch: int = found[0]
    return epoch


def read_run(conn: psycopg.Connection[tuple[Any, ...]], run_id: str) -> tuple[Any, ...] | None:
    """The run row, its step rows (JSON text) last; None if unknown."""
    return conn.execute(_SELECT_RUN, (run_id,)).fetchone()


def delete_run(conn: psycopg.Connection[tuple[Any, ...]], run_id: str) -> None:
    conn.execute("DELETE FROM flujo_steps WHERE run_id = %s", (run_id,))
    conn.execute("DELETE FROM flujo_positions WHERE run_id = %s", (run_id,))
    conn.execute("DELETE FROM flujo_runs WHERE run_id = %s", (run_id,))


def list_run_ids(conn: psycopg.Connection[tuple[Any, ...]], status: str | None) -> list[str]:
    if status is None:
        rows = conn.execute("SELECT run_id FROM flujo_runs ORDER BY seq").fetchall()
    else:
        rows = conn.execute(
            "SELECT run_id FROM flujo_runs WHERE status = %s ORDER BY seq", (status,)
        ).fetchall()
    return [row[0] for row in rows]


def prune_runs(
    conn: psycopg.Connection[tuple[Any, ...]],
    older_than_s: float | None,
    status: str | None,
    now: float,
) -> list[str]:
    """Delete the runs :func:`~.state.prune_matches` selects, with their steps; their ids."""
    rows = conn.execute(
        "WITH gone AS ("
        " DELETE FROM flujo_runs"
        " WHERE CASE WHEN %(status)s::text IS NULL THEN status <> 'running'"
        "  ELSE status = %(status)s END"
        " AND (%(older)s::float8 IS NULL OR updated_at <= %(now)s - %(older)s::float8)"
        " RETURNING run_id, seq),"
        " steps AS (DELETE FROM flujo_steps s USING gone WHERE s.run_id = gone.run_id),"
        " positions AS (DELETE FROM flujo_positions p USING gone WHERE p.run_id = gone.run_id)"
        " SELECT run_id FROM gone ORDER BY seq",
        {"status": status, "older": older_than_s, "now": now},
    ).fetchall()
    return [row[0] for row in rows]


def write_positions(
    conn: psycopg.Connection[tuple[Any, ...]],
    rows: Sequence[tuple[str, str, str]],
    owner: str,
    epochs: dict[str, int],
) -> list[str]:
    """Insert (or replace) completed positions: ``(run_id, position, record JSON text)``.

    The rows of the positions' runs are locked (``FOR SHARE``) and checked
    first: a run in ``epochs`` (held by ``owner``) must still have that lease
    epoch; any other stored run must not be leased by another owner. Nothing
    is written unless every run passes.

    Returns:
        The run ids that failed the check (nothing was written); empty when
        the positions were written.
    """
    run_ids = list(dict.fromkeys(row[0] for row in rows))
    found = conn.execute(
        "SELECT run_id, lease_epoch, owner FROM flujo_runs WHERE run_id = ANY(%s) FOR SHARE",
        (run_ids,),
    ).fetchall()
    current = {row[0]: (row[1], row[2]) for row in found}
    fenced = []
    for run_id in run_ids:
        epoch, holder = current.get(run_id, (None, None))
        if (epoch != epochs[run_id]) if run_id in epochs else (holder not in (None, owner)):
            fenced.append(run_id)
    if fenced:
        return fenced
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO flujo_positions (run_id, position, record) VALUES (%s, %s, %s::json)"
            " ON CONFLICT (run_id, position) DO UPDATE SET record = excluded.record",
            rows,
        )
    return []


def read_positions(conn: psycopg.Connection[tuple[Any, ...]], run_id: str) -> list[tuple[str, str]]:
    """``(position, record JSON text)`` of the run's completed positions."""
    rows = conn.execute(
        "SELECT position, record::text FROM flujo_positions WHERE run_id = %s", (run_id,)
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def write_batch(
    conn: psycopg.Connection[tuple[Any, ...]],
    batch: Sequence[_EncodedCheckpoint],
    owner: str | None,
    lease_s: float,
    epochs: dict[str, int],
) -> list[str]:
    """Apply ``batch`` in order; the run ids whose checkpoints were fenced (not applied)."""
    fenced: list[str] = []
    for item in batch:
        if not write_checkpoint(conn, item, owner, lease_s, epochs.get(item.run_id)):
            fenced.append(item.run_id)
    return fenced
