"""Cache keys: a stable hash of a step's identity and its input (pure, no I/O)."""

from __future__ import annotations

import hashlib
import json

from ..errors import SerializationError
from ..serialization import dump_typed

__all__ = ["cache_key"]


def cache_key(step_identity: str, data: object) -> str:
    """Return the cache key of running the step ``step_identity`` on ``data``.

    The key is the SHA-256 hex digest of a canonical JSON document holding the
    identity string and ``dump_typed(data)`` with sorted keys, so it is stable
    across processes and Python runs (no ``hash()`` randomisation, no ids).
    Type tags are part of the document: ``Decimal("1")``, ``"1"`` and ``1``,
    or a tuple and a list, get different keys. Equal sets and equal
    string-keyed dicts get equal keys whatever their insertion order; dicts
    with non-string keys keep their order (a different order only costs a
    cache miss, never a wrong hit).

    Args:
        step_identity: What identifies the step's behaviour (name, agent).
        data: The step's input.

    Returns:
        64 lowercase hex characters.

    Raises:
        SerializationError: ``data`` cannot be serialized; the message names
            the step, the offending type and its path under ``input``.
    """
    try:
        payload = dump_typed(data, path="input")
    except SerializationError as exc:
        raise SerializationError(
            f"Cannot compute the cache key of step {step_identity!r}: {exc}"
        ) from exc
    # ensure_ascii: lone surrogates in strings stay encodable, and the text
    # (hence the key) does not depend on any locale or encoding setting.
    document = json.dumps(
        [step_identity, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(document.encode("ascii")).hexdigest()
