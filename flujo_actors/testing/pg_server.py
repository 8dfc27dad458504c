"""A throwaway PostgreSQL server from the machine's own packages (tests, benchmarks).

``PgServer()`` runs ``initdb`` into a fresh directory under ``/tmp``;
:meth:`PgServer.start` starts ``postgres`` on a Unix socket in that directory
(no TCP), with fsync off (the data is thrown away); :meth:`PgServer.destroy`
stops it and deletes everything. As root (CI, containers), initdb refuses to
run, so the server's files are owned by, and its processes run as, the
``postgres`` user the Debian package creates (else ``nobody``); as a normal
user they run as that user.

A missing installation raises :class:`PostgresNotInstalled` with the fix in
the message: the test session fails on it (``.ci/run`` installs PostgreSQL
when it is missing), the benchmark harness reports its PostgreSQL scenario
"unavailable" with that reason.

Used by ``tests/conftest.py`` (one server for the test session), by tests
that stop and restart a server of their own, by
``benchmarks/bench_postgres.py`` and ``benchmarks/postgres_scaling.py``.
Standard library only (no psycopg): :meth:`PgServer.dsn` is the connection
string to hand to ``PostgresBackend``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from typing import Any

__all__ = ["PgServer", "PostgresNotInstalled", "find_bindir"]

SUPERUSER = "flujo"


class PostgresNotInstalled(RuntimeError):
    """No PostgreSQL server installation (initdb, pg_ctl, postgres) on this machine."""


def find_bindir() -> str:
    """The directory of ``initdb``/``pg_ctl``/``postgres`` (newest installed major).

    Raises:
        PostgresNotInstalled: There is none.
    """
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found:
            candidates.append(found)

    def major(path: str) -> int:
        name = os.path.basename(os.path.dirname(path))
        return int(name) if name.isdigit() else 0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bindir
    initdb = shutil.which("initdb")
    if initdb is not None:
        return os.path.dirname(os.path.realpath(initdb))
    raise PostgresNotInstalled(
        "A throwaway PostgreSQL server needs a local PostgreSQL server installation (initdb, "
        "pg_ctl, postgres), and none was found via `pg_config --bindir`, "
        "/usr/lib/postgresql/*/bin or PATH. Install it: `apt-get install -y postgresql` "
        "(.ci/run does this on CI)."
    )


def _server_user() -> pwd.struct_passwd | None:
    """The user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(
        "Running as root, the PostgreSQL tests need a non-root user for the server "
        "(initdb refuses root), and neither 'postgres' nor 'nobody' exists."
    )


class PgServer:
    """One throwaway server: :meth:`start`, :meth:`stop`, :meth:`restart`, :meth:`destroy`."""

    def __init__(self, *, port: int = 5432) -> None:
        self.bindir = find_bindir()
        self.user = _server_user()
        # Short and world-traversable: a Unix socket path must fit in 107 bytes,
        # and the server's user must reach it (pytest's tmp dirs are 0700).
        self.root = tempfile.mkdtemp(prefix="flujo-pg-", dir="/tmp")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.port = port
        self._as_user(self.root)
        self._run("initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")  # fmt: skip

    @property
    def socket_dir(self) -> str:
        return self.root

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for ``dbname`` on this server."""
        return f"host={self.root} port={self.port} user={SUPERUSER} dbname={dbname}"

    def _as_user(self, path: str) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _run(self, tool: str, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        proc = subprocess.run(
            [os.path.join(self.bindir, tool), *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
            **kwargs,
        )
        if proc.returncode != 0:
            log = ""
            if os.path.exists(self.log):
                with open(self.log, encoding="utf-8", errors="replace") as f:
                    log = f.read()[-2000:]
            raise RuntimeError(
                f"PostgreSQL test server: {tool} {' '.join(args)} failed "
                f"({proc.returncode}): {proc.stdout}{proc.stderr}{log}"
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-k {self.root} -p {self.port} -c listen_addresses='' -c fsync=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60",
                  "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients and shut down; ``immediate``: abort)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def destroy(self) -> None:
        """Stop the server if it runs and delete its files."""
        try:
            if self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
