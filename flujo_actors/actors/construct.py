"""Kernel objects users get from a factory, never build: ``Cls(...)`` raises a TypeError.

An :class:`~.actor.ActorRef` or a :class:`~.monitor.Monitor` built by hand
would point at a cell no actor runs on, or watch without being registered;
like trio's own channels and tasks, they have no public constructor. The
kernel builds them with ``Cls._create(...)``.
"""

from __future__ import annotations

from abc import ABCMeta
from typing import Any, NoReturn, TypeVar

__all__ = ["NoPublicConstructor"]

T = TypeVar("T")


class NoPublicConstructor(ABCMeta):
    """Metaclass: calling the class raises a TypeError naming its factory (``_FACTORY``).

    (An ``ABCMeta``, so that a class deriving from an ABC such as
    ``trio.abc.AsyncResource`` can use it.)
    """

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        factory = getattr(cls, "_FACTORY", "the factory that returns it")
        raise TypeError(f"{cls.__name__} has no public constructor; get one from {factory}.")

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        """Build an instance (for the kernel only)."""
        # What type.__call__ would do, without the detour through this metaclass.
        instance = cls.__new__(cls)
        instance.__init__(*args, **kwargs)  # type: ignore[misc]
        return instance
