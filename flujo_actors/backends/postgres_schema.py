"""The PostgreSQL state schema: its versions and the migrations applied at connect.

Tables (schema version 3)::

    flujo_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)  -- one row per migration
    flujo_runs   (seq IDENTITY, run_id TEXT PRIMARY KEY, pipeline_name, status,
                  next_step_index, context JSON, initial_input JSON, output JSON,
                  total_cost_usd TEXT, total_tokens BIGINT, updated_at DOUBLE PRECISION,
                  step_count INTEGER, fingerprint TEXT,
                  owner TEXT, lease_expires_at TIMESTAMPTZ, lease_epoch BIGINT)   -- (v2)
    flujo_steps  (run_id, idx, row JSON, PRIMARY KEY (run_id, idx))
    flujo_positions (run_id, position TEXT, record JSON,
                     PRIMARY KEY (run_id, position))  -- completed steps below the top (v3)

Payloads are ``json``, not ``jsonb``: ``jsonb`` re-normalises what it stores
(it sorts object keys, turns the float ``1e16`` into the integer
``10000000000000000`` and ``-0.0`` into ``0.0``, and refuses ``\\u0000`` and
lone surrogates, which :func:`~flujo_actors.serialization.dumps_json` writes),
so a resumed run would not see the values it saved. ``json`` keeps the exact
text the serialization package wrote, is validated by the server, and can be
queried with ``->``/``->>`` or cast with ``::jsonb`` (an expression index
makes such queries fast).

:func:`migrate` brings a database to :data:`SCHEMA_VERSION` in one
transaction under a transaction-level advisory lock, so backends connecting
together never race, and an empty database gets the whole schema. A database
whose schema is newer than this flujo_actors is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..errors import StateBackendError

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

# "FJAC" (as in the SQLite backend's application id): the advisory lock key.
_LOCK_KEY: Final = 0x464A4143

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # Version 1: runs, their step rows and the pipeline fingerprint.
    (
        "CREATE TABLE flujo_runs ("
        " seq BIGINT GENERATED ALWAYS AS IDENTITY,"
        " run_id TEXT PRIMARY KEY, pipeline_name TEXT NOT NULL, status TEXT NOT NULL,"
        " next_step_index INTEGER NOT NULL, context JSON NOT NULL,"
        " initial_input JSON NOT NULL, output JSON NOT NULL, total_cost_usd TEXT NOT NULL,"
        " total_tokens BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,"
        " step_count INTEGER NOT NULL, fingerprint TEXT)",
        "CREATE INDEX flujo_runs_by_status ON flujo_runs (status, seq)",
        "CREATE TABLE flujo_steps ("
        " run_id TEXT NOT NULL, idx INTEGER NOT NULL, row JSON NOT NULL,"
        " PRIMARY KEY (run_id, idx))",
    ),
    # Version 2: run leases (which process runs a run, until when).
    (
        "ALTER TABLE flujo_runs ADD COLUMN owner TEXT,"
        " ADD COLUMN lease_expires_at TIMESTAMPTZ,"
        " ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0",
        "CREATE INDEX flujo_runs_by_lease ON flujo_runs (lease_expires_at)"
        " WHERE status = 'running' AND owner IS NOT NULL",
    ),
    # Version 3: completed positions below the top level (checkpoints at every depth).
    (
        "CREATE TABLE flujo_positions ("
        " run_id TEXT NOT NULL, position TEXT NOT NULL, record JSON NOT NULL,"
        " PRIMARY KEY (run_id, position))",
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The schema version this module reads and writes."""


def migrate(
    conn: psycopg.Connection[tuple[object, ...]],
    where: str,
    *,
    to: int = SCHEMA_VERSION,
    create: bool = True,
) -> int:
    """Apply the missing migrations up to version ``to``, in one transaction.

    Args:
        conn: A connection outside any transaction.
        where: The backend's name in error messages.
        to: The version to stop at (tests build older schemas with it).
        create: Whether a database without the tables gets them; when
            False it is an error (an older schema is still migrated).

    Returns:
        The version the database had before.

    Raises:
        StateBackendError: The database's schema is newer than ``to``, or
            its ``flujo_schema`` table is damaged, or (``create=False``) it
            has no state tables.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        if not create:
            found_table = conn.execute("SELECT to_regclass('flujo_schema')").fetchone()
            if found_table is None or found_table[0] is None:
                raise StateBackendError(
                    f"{where}: no flujo_actors state store there (the database has no "
                    "flujo_schema table on its search_path). Point the DSN at the database "
                    "(and schema) the runners use as their state_backend."
                )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS flujo_schema ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT max(version) FROM flujo_schema").fetchone()
        found = row[0] if row is not None and row[0] is not None else 0
        if not isinstance(found, int):
            raise StateBackendError(
                f"{where}: flujo_schema holds version {found!r}; it is damaged."
            )
        if found > to:
            raise StateBackendError(
                f"{where}: the database has state schema version {found}; this flujo_actors "
                f"reads version {to}. Upgrade flujo_actors to use it."
            )
        for version in range(found + 1, to + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO flujo_schema (version) VALUES (%s)", (version,))
    return found
