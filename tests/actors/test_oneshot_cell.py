"""OneShotCell starts exactly as the ActorCell made with the same arguments."""

from __future__ import annotations

import pytest

from flujo_actors.actors.actor import ActorCell
from flujo_actors.actors.deadletters import DeadLetters
from flujo_actors.actors.mailbox import OneShotMailbox
from flujo_actors.actors.oneshot import OneShotCell
from flujo_actors.actors.registry import Registry


def test_a_one_shot_cell_starts_like_a_full_cell() -> None:
    dead, registry = DeadLetters(), Registry()
    box = OneShotMailbox("frame", full=True)
    cell = OneShotCell("s", dead, box, registry, "step", ("p", "s"))
    full = ActorCell(
        "s", dead_letters=dead, mailbox=box, registry=registry, kind="step", path=("p", "s")
    )
    for name in ActorCell.__slots__:
        assert getattr(cell, name) == getattr(full, name), name
    cell.state = "running"
    cell.handled += 1
    assert (cell.state, cell.handled) == ("running", 1)
    assert OneShotCell.state == "new"  # a write stays on its instance


def test_a_one_shot_cell_needs_a_name() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        OneShotCell("", DeadLetters(), OneShotMailbox(), None, "step", ())
