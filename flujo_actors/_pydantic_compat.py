"""pydantic models as contexts, inputs and outputs, without importing pydantic.

A value can only be a pydantic model if pydantic is already imported, so every
check here looks at ``sys.modules`` first: programs that never import pydantic
pay one dict lookup, on paths that meet a type for the first time.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["field_default", "is_pydantic_model", "model_field_names"]


def is_pydantic_model(tp: Any) -> bool:
    """Whether ``tp`` is a pydantic (v2) ``BaseModel`` subclass."""
    main = sys.modules.get("pydantic.main")
    if main is None:
        return False
    base = getattr(main, "BaseModel", None)
    return base is not None and isinstance(tp, type) and issubclass(tp, base)


def model_field_names(cls: Any) -> tuple[str, ...]:
    """The declared field names of a pydantic model class, in order."""
    return tuple(cls.model_fields)


def field_default(cls: Any, name: str) -> tuple[bool, Any]:
    """``(True, default)`` for a field with a default (factories called), else ``(False, None)``."""
    info = cls.model_fields[name]
    if info.is_required():
        return False, None
    return True, info.get_default(call_default_factory=True)
