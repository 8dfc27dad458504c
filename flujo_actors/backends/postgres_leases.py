"""The lease SQL of :class:`~flujo_actors.backends.postgres.PostgresBackend` (blocking).

A running run's row names its ``owner`` (one backend object, i.e. normally
one runner process) and ``lease_expires_at``, on the *server's* clock, so
the processes' clocks never have to agree. ``lease_epoch`` grows by one at
every claim; the owner's writes carry the epoch they claimed and apply only
while it is current (see :mod:`.postgres_sql`), so a process that lost its
lease cannot overwrite the progress of the process that took the run over.

A run is *recoverable* when it is ``running``, has an owner, and that
owner's lease has expired. A released run (its process ended it with an
error, or was cancelled) has no owner: it is not recovered automatically
(its caller saw the error) but can be resumed explicitly. A paused or
finished run has no owner either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ..errors import LeaseLostError

if TYPE_CHECKING:
    import psycopg

__all__ = ["claim_expired", "claim_run", "fenced_error", "release_run", "renew_lease"]

_LEASE: Final = "now() + make_interval(secs => %(lease_s)s)"


def claim_run(
    conn: psycopg.Connection[tuple[Any, ...]], run_id: str, owner: str, lease_s: float
) -> tuple[int | None, tuple[Any, ...] | None]:
    """Take the lease of ``run_id`` unless another owner's lease is still live.

    Returns:
        ``(epoch, None)`` when claimed, else ``(None, (owner, seconds_left))``
        of the live owner, or ``(None, None)`` for an unknown run.
    """
    found = conn.execute(
        "UPDATE flujo_runs SET owner = %(owner)s, lease_epoch = lease_epoch + 1,"
        f" lease_expires_at = {_LEASE}"
        " WHERE run_id = %(run_id)s AND (owner IS NULL OR owner = %(owner)s"
        "  OR lease_expires_at IS NULL OR lease_expires_at <= now())"
        " RETURNING lease_epoch",
        {"owner": owner, "lease_s": lease_s, "run_id": run_id},
    ).fetchone()
    if found is not None:
        epoch: int = found[0]
        return epoch, None
    holder = conn.execute(
        "SELECT owner, extract(epoch FROM lease_expires_at - now())::float8"
        " FROM flujo_runs WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    return None, holder


def claim_expired(
    conn: psycopg.Connection[tuple[Any, ...]],
    fingerprint: str,
    owner: str,
    lease_s: float,
    limit: int,
) -> list[tuple[str, int]]:
    """Claim up to ``limit`` recoverable runs of the pipeline ``fingerprint``.

    Rows another transaction is claiming right now are skipped (``FOR UPDATE
    SKIP LOCKED``), so concurrent recoverers split the runs and never claim
    one twice.

    Returns:
        ``(run_id, epoch)`` of each claimed run, oldest first.
    """
    rows = conn.execute(
        "WITH expired AS ("
        " SELECT run_id FROM flujo_runs"
        " WHERE status = 'running' AND owner IS NOT NULL AND lease_expires_at <= now()"
        "  AND fingerprint = %(fingerprint)s"
        " ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
        " UPDATE flujo_runs r SET owner = %(owner)s, lease_epoch = r.lease_epoch + 1,"
        f" lease_expires_at = {_LEASE}"
        " FROM expired WHERE r.run_id = expired.run_id"
        " RETURNING r.run_id, r.lease_epoch, r.seq",
        {"fingerprint": fingerprint, "owner": owner, "lease_s": lease_s, "limit": limit},
    ).fetchall()
    return [(row[0], row[1]) for row in sorted(rows, key=lambda row: row[2])]


def renew_lease(
    conn: psycopg.Connection[tuple[Any, ...]], run_id: str, epoch: int, owner: str, lease_s: float
) -> bool:
    """Extend the lease; False when it is no longer ours (taken over, or the run ended)."""
    found = conn.execute(
        f"UPDATE flujo_runs SET lease_expires_at = {_LEASE}"
        " WHERE run_id = %(run_id)s AND owner = %(owner)s AND lease_epoch = %(epoch)s"
        " AND status = 'running' RETURNING 1",
        {"lease_s": lease_s, "run_id": run_id, "owner": owner, "epoch": epoch},
    ).fetchone()
    return found is not None


def release_run(
    conn: psycopg.Connection[tuple[Any, ...]], run_id: str, epoch: int, owner: str
) -> None:
    """Give the lease up (the run stays as it was saved; it is no longer anyone's)."""
    conn.execute(
        "UPDATE flujo_runs SET owner = NULL, lease_expires_at = NULL"
        " WHERE run_id = %s AND owner = %s AND lease_epoch = %s",
        (run_id, owner, epoch),
    )


def fenced_error(
    conn: psycopg.Connection[tuple[Any, ...]],
    name: str,
    owner: str,
    lease_s: float,
    what: str,
    run_id: str,
    *,
    held: bool,
) -> LeaseLostError:
    """The error of a write ``what`` of ``run_id`` refused by the lease check.

    ``held``: ``owner`` held the run's lease (and lost it), else it never did
    and another owner leases the run. Built inside the refused write's
    transaction (the caller raises it, which rolls the transaction back),
    after looking up who holds the run now.
    """
    found = conn.execute("SELECT owner FROM flujo_runs WHERE run_id = %s", (run_id,)).fetchone()
    if found is None:
        return LeaseLostError(
            f"{name}: {what} of run {run_id!r} was refused: the run was deleted from the "
            f"store while this process ({owner}) ran it. Nothing was written; the run stops "
            "here."
        )
    if not held:
        return LeaseLostError(
            f"{name}: {what} of run {run_id!r} was refused: the run is leased by "
            f"{found[0]!r}, not by this process ({owner}). Nothing was written; claim the run "
            "first (`resume_async`, or `recover_async` once its owner's lease expired)."
        )
    now = "nobody holds it now" if found[0] is None else f"{found[0]!r} holds it now"
    return LeaseLostError(
        f"{name}: {what} of run {run_id!r} was refused: this process ({owner}) no longer "
        f"holds the run's lease (it was not renewed within lease_s={lease_s} s and another "
        f"process took the run over; {now}). Nothing was written; the run stops here and "
        "the other process's progress stands."
    )
