"""``DynamicSupervisor``: children started on demand from one spec (OTP's simple_one_for_one).

::

    dyn = DynamicSupervisor(ChildSpec("conn", Connection, restart=Restart.TEMPORARY),
                            max_children=1000)
    sup = await nursery.start(dyn.run)
    ref = await sup.start_child(stream)     # Connection(stream), named "conn-1"

Every child is built from the same spec with its own arguments, restarted
one-for-one under the same intensity, backoff and shutdown rules as any
:class:`~flujo_actors.actors.Supervisor`, and forgotten once it stops for good.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict, Unpack

from ..errors import MaxChildrenExceeded
from .actor import ActorRef, ReplySlot
from .spec import ChildSpec, Strategy
from .supervisor import Supervisor, _Child, _StartChild

if TYPE_CHECKING:
    from ..policy.intensity import Backoff
    from .deadletters import DeadLetters

__all__ = ["DynamicSupervisor", "DynamicSupervisorOptions"]


class DynamicSupervisorOptions(TypedDict, total=False):
    """The :class:`Supervisor` options a :class:`DynamicSupervisor` takes (all but the strategy).

    A type for ``**options`` only (so type checkers check them); the
    supervisor's own signature documents and validates each.
    """

    max_restarts: int
    max_seconds: float
    backoff: Backoff | None
    name: str | None
    max_redeliveries: int
    dead_letters: DeadLetters | None


class DynamicSupervisor(Supervisor):
    """A supervisor whose children are started on demand, all from ``spec``.

    Args:
        spec: the template: ``spec.factory(*spec.args, *args)`` builds each
            child (it must build an :class:`Actor`); its restart type, mailbox
            size and ``shutdown_s`` apply to every child. Children are named
            ``f"{spec.name}-{n}"`` (n = 1, 2, ...; never reused) unless
            :meth:`start_child` gets ``name=``.
        max_children: at most this many children alive at once (None: no
            limit); :meth:`start_child` beyond it raises
            :class:`~flujo_actors.errors.MaxChildrenExceeded`.
        **options: any other :class:`Supervisor` option (``max_restarts``,
            ``max_seconds``, ``backoff``, ``name``, ``dead_letters``, ...).
            The strategy is always ``ONE_FOR_ONE``.

    Children that stop for good (TEMPORARY ones when they exit, TRANSIENT
    ones after a normal exit, ``stop_child``) are forgotten: they leave
    :meth:`which_children` and their names are not reused.
    ``restart_child`` / ``delete_child`` therefore refuse (use ``start_child``).

    Raises:
        TypeError: ``spec`` is not a ChildSpec.
        ValueError: bad ``max_children``, or a ``strategy`` / ``children`` option.
    """

    def __init__(
        self,
        spec: ChildSpec,
        *,
        max_children: int | None = None,
        **options: Unpack[DynamicSupervisorOptions],
    ) -> None:
        label = options.get("name") or "dynamic supervisor"
        if not isinstance(spec, ChildSpec):
            raise TypeError(
                f"DynamicSupervisor {label!r}: spec must be a ChildSpec (the template for every "
                f"child), got {spec!r}."
            )
        for option in ("strategy", "children"):
            if option in options:
                raise ValueError(
                    f"DynamicSupervisor {label!r}: {option}= is not an option; a dynamic "
                    "supervisor restarts each child on its own (ONE_FOR_ONE) and starts its "
                    "children with start_child(*args)."
                )
        if max_children is not None and (
            isinstance(max_children, bool) or not isinstance(max_children, int) or max_children < 1
        ):
            raise ValueError(
                f"DynamicSupervisor {label!r}: max_children must be an int >= 1 or None "
                f"(no limit), got {max_children!r}."
            )
        options.setdefault("name", spec.name)
        super().__init__((), strategy=Strategy.ONE_FOR_ONE, **options)
        self.spec = spec
        self.max_children = max_children
        self._next_id = 0
        self._prune = False

    def __repr__(self) -> str:
        return f"<DynamicSupervisor {self.name!r} ({self._state}, {len(self._listed())} children)>"

    async def start_child(  # type: ignore[override]  # OTP: start_child(Sup, ExtraArgs)
        self, *args: object, name: str | None = None
    ) -> ActorRef:
        """Start one more child: ``spec.factory(*spec.args, *args)``; return its ref.

        Returns once its ``on_start`` ran. ``name`` overrides the generated
        name. Cancelling the caller does not cancel the start (the
        supervisor carries it out); it only stops the waiting.

        Raises:
            MaxChildrenExceeded: ``max_children`` children are alive already.
            ValueError: ``name`` is empty or taken by a live child.
            TypeError: the factory built something that is not an Actor.
            RuntimeError: the supervisor is not running.
            Exception: the child failed to start (it is not added).
        """
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(
                f"DynamicSupervisor {self.name!r}: name must be a non-empty string or None, "
                f"got {name!r}."
            )

        async def start() -> ActorRef:
            self._forget_stopped()
            limit = self.max_children
            if limit is not None and len(self._order) >= limit:
                raise MaxChildrenExceeded(
                    f"DynamicSupervisor {self.name!r} already runs max_children={limit} "
                    "children; stop one first, or raise max_children."
                )
            if name is None:
                self._next_id += 1
                child_name = f"{self.spec.name}-{self._next_id}"
            else:
                child_name = name
            request = _StartChild(self.spec.with_args(child_name, args), ReplySlot())
            self._pending.append(request)
            await self._do_start_child(request)
            await request.slot.wait()  # raises the start's error, if any
            child = self._children[child_name]
            if child.nested is not None:
                await self._terminate(child, keep_mailbox=False, reason="shutdown")
                del self._children[child_name]
                self._order.remove(child)
                raise TypeError(
                    f"DynamicSupervisor {self.name!r}: the factory of spec {self.spec.name!r} "
                    "built a Supervisor; a dynamic supervisor's children must be Actors "
                    "(nest the DynamicSupervisor in a Supervisor instead)."
                )
            return child.cell.ref

        ref = await self._call("starting a child", start)
        assert isinstance(ref, ActorRef)
        return ref

    async def restart_child(self, name: str) -> None:
        """Refused: a dynamic supervisor forgets stopped children; start a new one."""
        raise TypeError(self._refusal("restart_child", name))

    async def delete_child(self, name: str) -> None:
        """Refused: a dynamic supervisor forgets stopped children by itself."""
        raise TypeError(self._refusal("delete_child", name))

    def _refusal(self, what: str, name: str) -> str:
        return (
            f"DynamicSupervisor {self.name!r}: {what}({name!r}) is not supported; a dynamic "
            "supervisor forgets children that stopped for good (start a new one with "
            "start_child(*args))."
        )

    # -- hooks into Supervisor ------------------------------------------------

    def _listed(self) -> list[_Child]:
        return [child for child in self._order if not child.stopped]

    def _finalize(self, child: _Child, reason: str, error: str | None = None) -> None:
        super()._finalize(child, reason, error)
        self._prune = True  # forgotten at the next start_child, inside the loop

    def _forget_stopped(self) -> None:
        if not self._prune:
            return
        self._prune = False
        for child in [c for c in self._order if c.stopped]:
            self._order.remove(child)
            del self._children[child.spec.name]
