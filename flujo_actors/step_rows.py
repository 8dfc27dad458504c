"""Stored step results: one row per completed step, children stored once, by reference.

A step result is stored as the JSON of ``dump_typed(StepResult)`` (an
envelope ``{"__flujo_type__": ..., "value": {fields}}``), with one change:
a child in ``step_history`` that was already stored as a completed position
of its own (see :mod:`flujo_actors.run.checkpoint`) is written as a
*reference* ``{"__flujo_ref__": [suffix...]}`` instead of its whole subtree.
The suffix is the child's position relative to the position of the row's own
step (``["b3", "call"]`` under a parallel step ``("fan",)``), so a reference
is a few bytes whatever the depth. That is what makes the stored state
O(completed steps): a control-flow step's row holds its direct children's
references (and the synthesized branch results around them), never its
descendants again, so a top-level parallel step of 1,000 branches, or a loop
inside a parallel step inside a nested pipeline, does not re-encode the work
its positions already stored.

The result of a one-step branch (a parallel branch or a map item holding one
step) is derived from that step, so when the step is stored it is written as
``{"__flujo_branch__": [branch, step], "branch_context": ...}``: the reference
plus its context, nothing the step's record already holds (only when every
other field is exactly what the runner derives; else it is written whole).

Rows written before references existed have every child inline; they read
back the same way. A registered serializer for ``StepResult`` keeps its own
format (no references).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import attrs

from .results import StepResult
from .serialization import TYPE_KEY, VALUE_KEY, dump_typed, load_typed, type_tag
from .serialization.registry import has_custom_deserializer, has_custom_serializer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "BRANCH",
    "REF",
    "Saved",
    "expand_row",
    "row_from_step",
    "step_from_stored_row",
]

#: The key of a reference to a child stored as its own position.
REF: Final = "__flujo_ref__"
#: The key of a one-step branch's result written as its stored step (a reference) plus
#: its context: ``{"__flujo_branch__": [branch, step], "branch_context": ...}``.
BRANCH: Final = "__flujo_branch__"

Saved = dict[int, tuple[StepResult, tuple[Any, ...]]]
"""Results stored as positions, by ``id()``: the result (kept alive) and its position."""


def row_from_step(
    result: StepResult, root: tuple[Any, ...] = (), saved: Saved | None = None
) -> tuple[Any, Any]:
    """``(output JSON, row JSON)`` of ``result``, the step at position ``root``.

    Children found in ``saved`` (by identity) become references relative to
    ``root``; the others are encoded inline, recursively (their own children
    may be references). The output is serialized once: the row carries the
    same JSON.

    Raises:
        SerializationError: a value of the result cannot be serialized; the
            message names the step.
    """
    output = dump_typed(result.output, path=f"step {result.name!r} output")
    return output, _row(result, output, root, saved or {})


#: The envelope tag ``dump_typed`` gives a StepResult, and its fields in order.
_TAG: Final = "flujo_actors.results:StepResult"
_FIELDS: Final = (
    "name",
    "output",
    "success",
    "attempts",
    "latency_s",
    "cost_usd",
    "token_counts",
    "feedback",
    "branch_context",
    "metadata",
    "step_history",
)
#: The fast encoder below writes exactly these fields; a changed class takes the walk.
_FAST: Final = tuple(f.name for f in attrs.fields(StepResult)) == _FIELDS
#: The envelope tag of a Decimal (a step's cost).
_DECIMAL_TAG: Final = type_tag(Decimal)


def _row(result: StepResult, output: Any, root: tuple[Any, ...], saved: Saved) -> Any:
    if has_custom_serializer(StepResult):
        # A registered serializer for StepResult: its own format, whole, no references.
        return dump_typed(result, path=f"step {result.name!r} result")
    children = [_child(child, root, saved) for child in result.step_history]
    if _FAST and type(result) is StepResult:
        return {"__flujo_type__": _TAG, "value": _fields(result, output, children)}
    shallow = attrs.evolve(result, output=None, step_history=[])
    row = dump_typed(shallow, path=f"step {result.name!r} result")
    fields = row.get("value") if isinstance(row, dict) else None
    if not isinstance(fields, dict):
        return dump_typed(result, path=f"step {result.name!r} result")
    fields["output"] = output
    fields["step_history"] = children
    return row


def _fields(result: StepResult, output: Any, children: list[Any]) -> dict[str, Any]:
    """What ``dump_typed`` writes for the fields of ``result``, without its generic walk.

    Values of the plain types a step result holds pass as they are (what the
    walk does with them); anything else goes through ``dump_typed``. The
    per-step cost of a checkpoint is mostly this, so it stays cheap
    (test_step_rows checks it byte for byte against the walk).
    """
    name, feedback, latency = result.name, result.feedback, result.latency_s
    success, attempts, tokens = result.success, result.attempts, result.token_counts
    context, metadata, cost = result.branch_context, result.metadata, result.cost_usd
    plain = (
        type(name) is str
        and type(success) is bool
        and type(attempts) is int
        and type(latency) is float
        and type(tokens) is int
        and (feedback is None or type(feedback) is str)
    )
    if not plain:
        return _walked_fields(result, output, children)
    return {
        "name": name,
        "output": output,
        "success": success,
        "attempts": attempts,
        "latency_s": latency,
        # A Decimal is written as the walk writes it (its exact text in the envelope),
        # unless a serializer registered for Decimal owns its format.
        "cost_usd": {TYPE_KEY: _DECIMAL_TAG, VALUE_KEY: str(cost)}
        if type(cost) is Decimal and not has_custom_serializer(Decimal)
        else dump_typed(cost, path=f"step {name!r} result"),
        "token_counts": tokens,
        "feedback": feedback,
        "branch_context": None
        if context is None
        else dump_typed(context, path=f"step {name!r} result"),
        "metadata": {}
        if type(metadata) is dict and not metadata
        else dump_typed(metadata, path=f"step {name!r} result"),
        "step_history": children,
    }


def _walked_fields(result: StepResult, output: Any, children: list[Any]) -> dict[str, Any]:
    """:func:`_fields` for a result holding values of other types: each through the walk."""
    where = f"step {result.name!r} result"
    names = [n for n in _FIELDS if n not in ("output", "step_history")]
    fields = {n: dump_typed(getattr(result, n), path=where) for n in names}
    fields["output"] = output
    fields["step_history"] = children
    return {n: fields[n] for n in _FIELDS}


def _child(child: StepResult, root: tuple[Any, ...], saved: Saved) -> Any:
    found = saved.get(id(child))
    if found is not None and found[0] is child:
        position = found[1]
        n = len(root)
        if position[:n] == root:
            return {REF: list(position[n:])}
    branch = _branch_of(child, root, saved)
    if branch is not None:
        return branch
    output = dump_typed(child.output, path=f"step {child.name!r} output")
    return _row(child, output, root, saved)


def _branch_of(child: StepResult, root: tuple[Any, ...], saved: Saved) -> Any:
    """``child`` as a :data:`BRANCH` entry, if it is the result of a one-step branch.

    That is: its one child is stored as the position ``(*root, child.name,
    step.name)`` and every other field is what the runner derives from that
    step (see :func:`flujo_actors.run.common.branch_result`); only its
    context is written. Else None (the child is written whole).
    """
    history = child.step_history
    if len(history) != 1 or type(child) is not StepResult:
        return None
    step = history[0]
    found = saved.get(id(step))
    if found is None or found[0] is not step:
        return None
    name, success = child.name, child.success
    if not (
        type(name) is str
        and type(step.name) is str
        and found[1] == (*root, name, step.name)
        and type(success) is bool
        and success is step.success
        and (child.output is step.output if success else child.output is None)
        and type(child.attempts) is int
        and child.attempts == 1
        and type(child.latency_s) is float
        and type(step.latency_s) is float
        and child.latency_s == step.latency_s
        and type(child.cost_usd) is Decimal
        and type(step.cost_usd) is Decimal
        and str(child.cost_usd) == str(step.cost_usd)
        and type(child.token_counts) is int
        and type(step.token_counts) is int
        and child.token_counts == step.token_counts
        and child.feedback is (None if success else step.feedback)
        and type(child.metadata) is dict
        and not child.metadata
        and not has_custom_deserializer(StepResult)
    ):
        return None
    context = child.branch_context
    return {
        BRANCH: [name, step.name],
        "branch_context": None
        if context is None
        else dump_typed(context, path=f"step {name!r} result"),
    }


def step_from_stored_row(
    row: Any,
    where: str,
    root: tuple[Any, ...] = (),
    lookup: Callable[[tuple[Any, ...]], Any] | None = None,
) -> StepResult:
    """Rebuild a StepResult stored by :func:`row_from_step` at position ``root``.

    ``lookup(position)`` returns the stored row of the position a reference
    names (``None`` if it is not stored).

    Raises:
        SerializationError: the row does not decode.
        TypeError: the row is not a StepResult's.
        KeyError: a reference names a position that is not stored (the
            message names it and ``where``).
    """
    fields = row.get("value") if isinstance(row, dict) else None
    children = fields.get("step_history") if isinstance(fields, dict) else None
    if not isinstance(children, list) or not children or has_custom_deserializer(StepResult):
        return _as_step_result(load_typed(row, path=where))
    assert isinstance(fields, dict)
    shallow = {**row, "value": {**fields, "step_history": []}}
    result = _as_step_result(load_typed(shallow, path=where))
    result.step_history = [
        _decode_child(child, f"{where}.step_history[{i}]", root, lookup)
        for i, child in enumerate(children)
    ]
    return result


def _decode_child(
    child: Any,
    where: str,
    root: tuple[Any, ...],
    lookup: Callable[[tuple[Any, ...]], Any] | None,
) -> StepResult:
    if isinstance(child, dict) and BRANCH in child:
        return _decode_branch(child, where, root, lookup)
    if isinstance(child, dict) and REF in child:
        position = (*root, *child[REF])
        row = None if lookup is None else lookup(position)
        if row is None:
            raise KeyError(
                f"{where} refers to the stored position {list(position)!r}, which the state "
                "backend does not hold (deleted or damaged)."
            )
        return step_from_stored_row(row, where, position, lookup)
    return step_from_stored_row(child, where, root, lookup)


def _stored(
    suffix: Any,
    where: str,
    root: tuple[Any, ...],
    lookup: Callable[[tuple[Any, ...]], Any] | None,
) -> tuple[tuple[Any, ...], Any]:
    """The position a reference's ``suffix`` names under ``root``, and its stored row."""
    position = (*root, *suffix)
    row = None if lookup is None else lookup(position)
    if row is None:
        raise KeyError(
            f"{where} refers to the stored position {list(position)!r}, which the state "
            "backend does not hold (deleted or damaged)."
        )
    return position, row


def _decode_branch(
    entry: dict[str, Any],
    where: str,
    root: tuple[Any, ...],
    lookup: Callable[[tuple[Any, ...]], Any] | None,
) -> StepResult:
    """The result of a one-step branch stored as a :data:`BRANCH` entry (see ``_branch_of``)."""
    suffix = entry[BRANCH]
    position, row = _stored(suffix, where, root, lookup)
    step = step_from_stored_row(row, where, position, lookup)
    context = entry.get("branch_context")
    success = step.success
    return StepResult(
        suffix[0],
        step.output if success else None,
        success,
        1,
        step.latency_s,
        step.cost_usd,
        step.token_counts,
        None if success else step.feedback,
        None if context is None else load_typed(context, path=f"{where}.branch_context"),
        {},
        [step],
    )


def _expand_branch(
    entry: dict[str, Any], root: tuple[Any, ...], lookup: Callable[[tuple[Any, ...]], Any]
) -> Any:
    """The whole row of a :data:`BRANCH` entry: what :func:`row_from_step` writes inline."""
    suffix = entry[BRANCH]
    position, found = _stored(suffix, "a stored step", root, lookup)
    row = expand_row(found, position, lookup)
    fields = row["value"]
    success = fields["success"]
    return {
        "__flujo_type__": _TAG,
        "value": {
            "name": suffix[0],
            "output": fields["output"] if success else None,
            "success": success,
            "attempts": 1,
            "latency_s": fields["latency_s"],
            "cost_usd": fields["cost_usd"],
            "token_counts": fields["token_counts"],
            "feedback": None if success else fields["feedback"],
            "branch_context": entry.get("branch_context"),
            "metadata": {},
            "step_history": [row],
        },
    }


def expand_row(row: Any, root: tuple[Any, ...], lookup: Callable[[tuple[Any, ...]], Any]) -> Any:
    """``row`` (JSON) with every reference replaced by the row it names, recursively.

    For copying a run's rows elsewhere (a fork) without its positions.

    Raises:
        KeyError: a reference names a position that is not stored.
    """
    fields = row.get("value") if isinstance(row, dict) else None
    children = fields.get("step_history") if isinstance(fields, dict) else None
    if not isinstance(children, list) or not children:
        return row
    assert isinstance(fields, dict)
    expanded = []
    for child in children:
        if isinstance(child, dict) and BRANCH in child:
            expanded.append(_expand_branch(child, root, lookup))
        elif isinstance(child, dict) and REF in child:
            position = (*root, *child[REF])
            found = lookup(position)
            if found is None:
                raise KeyError(
                    f"a stored step refers to position {list(position)!r}, which the state "
                    "backend does not hold (deleted or damaged)."
                )
            expanded.append(expand_row(found, position, lookup))
        else:
            expanded.append(expand_row(child, root, lookup))
    return {**row, "value": {**fields, "step_history": expanded}}


def position_rows(records: Mapping[str, Any]) -> Callable[[tuple[Any, ...]], Any]:
    """The ``lookup`` of :func:`step_from_stored_row` over a run's position records."""
    from .run.checkpoint import position_key

    def lookup(position: tuple[Any, ...]) -> Any:
        record = records.get(position_key(position))
        return record.get("result") if isinstance(record, dict) else None

    return lookup


def _as_step_result(value: object) -> StepResult:
    if not isinstance(value, StepResult):
        raise TypeError(f"stored step row is a {type(value).__name__}, not a StepResult")
    return value
