"""A state backend named by a string: a SQLite file path, or a PostgreSQL URL.

What ``Flujo(state_backend="...")`` accepts:

* ``postgresql://...`` or ``postgres://...`` (any letter case): a
  :class:`~flujo_actors.backends.postgres.PostgresBackend` on that URL
  (needs the ``postgres`` extra);
* any other ``scheme://...``: refused (``mysql://``, ``sqlite://``,
  ``file://``, a misspelt ``postgressql://``), rather than taken for a
  file name and silently made into a new SQLite file of that name;
* anything else (and every ``os.PathLike``): a SQLite file,
  :class:`~flujo_actors.backends.sqlite.SQLiteBackend`.

Messages never repeat a URL: it may hold a password.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import os

    from .state import StateBackend

__all__ = ["POSTGRES_SCHEMES", "state_backend_named", "url_scheme"]

#: The URL schemes that name a PostgreSQL database (libpq's two spellings).
POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres"})

# RFC 3986 scheme, then "://". A Windows path ("C:\\runs.db") has no "//" after the colon.
_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def url_scheme(value: str) -> str | None:
    """The scheme of ``value`` in lower case if it is a ``scheme://`` URL, else ``None``."""
    found = _SCHEME.match(value)
    return found[1].lower() if found else None


def state_backend_named(value: str | os.PathLike[str]) -> StateBackend:
    """The state backend ``value`` names (see the module docstring); nothing is opened yet.

    Raises:
        ImportError: a PostgreSQL URL without the ``postgres`` extra installed
            (the message gives the install command).
        ValueError: a URL of another scheme, a malformed PostgreSQL URL, or a
            path SQLite cannot use (empty, a NUL character).
        TypeError: a bytes path.
    """
    if not isinstance(value, str) or (scheme := url_scheme(value)) is None:
        from .sqlite import SQLiteBackend

        return SQLiteBackend(value)
    if scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            f"a {scheme}:// URL names no state backend flujo_actors has. Pass a "
            "postgresql:// (or postgres://) URL for PostgresBackend, a file path such as "
            "'runs.db' for SQLiteBackend, or a StateBackend object."
        )
    try:
        from .postgres import PostgresBackend

        # libpq knows the two schemes in lower case only.
        return PostgresBackend(scheme + value[len(scheme) :])
    except ImportError as exc:
        raise ImportError(
            "a postgresql:// URL needs the 'postgres' extra (psycopg 3 and psycopg_pool), "
            f"which is not installed ({exc}). Install it with: "
            "pip install 'flujo-actors[postgres]'"
        ) from exc
