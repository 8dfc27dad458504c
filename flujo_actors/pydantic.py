"""A pydantic run context: :class:`PipelineContext` as a pydantic ``BaseModel``.

Needs the ``pydantic`` extra (``pip install 'flujo-actors[pydantic]'``).
Subclass it to add fields and pass it as ``Flujo(..., context_model=...)``: it
behaves like the attrs :class:`flujo_actors.PipelineContext` everywhere (the
runner sets ``initial_prompt`` and ``run_id``; branches and attempts get
structural copies; every merge strategy; ``updates_context``; persistence,
resume and cache through :func:`flujo_actors.dump_typed`, with
``model_validate`` rebuilding the same class).

Importing :mod:`flujo_actors` does not import this module or pydantic.
"""

from __future__ import annotations

from typing import Any

try:
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "flujo_actors.pydantic needs the 'pydantic' extra, and pydantic is not installed. "
        "Install it with: pip install 'flujo-actors[pydantic]'"
    ) from exc

__all__ = ["PipelineContext"]


class PipelineContext(BaseModel):
    """The default run context as a pydantic model; subclass it to add fields.

    Only the runner creates a context: ``initial_prompt`` comes from the run's
    input and ``run_id`` from the run. Fields may hold any value
    (``arbitrary_types_allowed``); assignments are not validated, like the
    attrs context.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    initial_prompt: str | None = None
    run_id: str = ""
    scratchpad: dict[str, Any] = Field(default_factory=dict)
    executed_branches: list[str] = Field(default_factory=list)
