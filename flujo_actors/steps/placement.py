"""Where a step may run: the placement names, their build-time check, and :class:`CallSites`.

The names and the extras they need are decided here, below the executors
that implement them (``flujo_actors.executors``), so that building a step
validates its ``placement=`` without importing any executor. At run time the
step executors reach the executors and the asyncio bridge only through the
:class:`CallSites` the runner puts on the run state: the run package never
imports the edges it calls.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias, get_args

from ..errors import PipelineDefinitionError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..executors.base import Executor
    from .agent import AgentStep
    from .callables import AgentSpec

__all__ = [
    "PLACEMENTS",
    "CallSites",
    "Placement",
    "PlacementName",
    "check_placement",
    "require_extra",
]

#: The executors a step or runner can name instead of passing one.
PlacementName: TypeAlias = Literal["inline", "process", "ray"]
#: What ``placement=`` / ``Flujo(executor=...)`` take: a name, or an object
#: implementing :class:`~flujo_actors.executors.Executor` (a string alias:
#: the executors sit above the steps and are only named for type checkers).
Placement: TypeAlias = "PlacementName | Executor"

PLACEMENTS: Final[tuple[str, ...]] = get_args(PlacementName)

# Which extra provides which placement, and the modules it needs.
_EXTRAS: Final[dict[str, tuple[str, ...]]] = {
    "process": ("trio_parallel", "cloudpickle"),
    "ray": ("ray", "cloudpickle"),
}


def require_extra(what: str, extra: str) -> None:
    """Raise a clear ImportError when the modules of ``extra`` are not installed.

    Uses ``find_spec``: nothing is imported.
    """
    missing = [m for m in _EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        pkgs = ", ".join(m.replace("_", "-") for m in missing)
        raise ImportError(
            f"{what} needs the {extra!r} extra, and {pkgs} "
            f"{'is' if len(missing) == 1 else 'are'} not installed. "
            f"Install it with: pip install 'flujo-actors[{extra}]'"
        )


def check_placement(
    step_name: str, placement: Any, *, owner: str | None = None, arg: str = "placement"
) -> None:
    """Validate a ``placement=`` / ``executor=`` value when a step or runner is built.

    ``owner`` names who was given the value in messages (default: the step
    ``step_name``), ``arg`` the argument.

    Raises:
        PipelineDefinitionError: unknown string, an object without ``submit``,
            or the extra that the placement needs is not installed.
    """
    if placement is None:
        return
    who = f"Step {step_name!r}" if owner is None else owner
    if isinstance(placement, str):
        if placement not in PLACEMENTS:
            raise PipelineDefinitionError(
                f"{who}: {arg} must be one of {PLACEMENTS!r} or an executor, got {placement!r}."
            )
        if placement in _EXTRAS:
            try:
                require_extra(f"{who} with {arg}={placement!r}", placement)
            except ImportError as exc:
                raise PipelineDefinitionError(str(exc)) from None
        return
    if not callable(getattr(placement, "submit", None)):
        raise PipelineDefinitionError(
            f"{who}: {arg} must be one of {PLACEMENTS!r} or an executor "
            f"(an object with async submit(item) and aclose()), got {placement!r}."
        )


class CallSites(Protocol):
    """Where an agent call goes when it does not run inline on trio.

    Implemented by :data:`flujo_actors.call_sites.CALL_SITES` (executors and
    the asyncio bridge); the runner hands it to every run.
    """

    def executor_for(self, placement: Any) -> Any:
        """The executor of a placement (a name or an executor instance)."""
        ...

    async def submit_step(
        self, executor: Any, step: AgentStep, data: Any, context: Any, resources: Any, attempt: int
    ) -> tuple[Any, Any]:
        """Run one attempt of ``step`` on ``executor``: its output and usage reading.

        Cancelled: the remote work is stopped before ``trio.Cancelled`` propagates.
        """
        ...

    async def call_on_asyncio(
        self, spec: AgentSpec, data: Any, context: Any, resources: Any
    ) -> Any:
        """Call a non-streaming agent on the run's asyncio loop; its output.

        Cancelled: the asyncio task is cancelled and awaited first.
        """
        ...

    async def stream_on_asyncio(
        self, make: Callable[[], Any], on_chunk: Callable[[Any], Awaitable[None]] | None
    ) -> list[Any]:
        """Iterate a streaming agent on asyncio, forwarding chunks; the chunks.

        Cancelled: the asyncio task is cancelled and awaited first.
        """
        ...
