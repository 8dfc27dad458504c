"""``flujo-actors runs ...``: list, show, resume, fork, delete and prune stored runs.

Every command opens the store named by ``--backend`` (a SQLite file, or a
``postgresql://`` URL with the postgres extra), does its work inside one
``trio.run`` and closes the store. A store that does not exist is an error
(the command never creates an empty one by accident: no SQLite file, no
tables in a PostgreSQL database); so are a malformed URL, a missing database
and an unreachable server, each one line on stderr with exit status 2.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

import trio

from ..errors import FlujoError
from . import render

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable

    from ..backends.state import RunSnapshot, StateBackend
    from ..results import PendingInput, PipelineResult
    from ..runner import Flujo

__all__ = ["UsageError", "parse_age", "run_command"]


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_age(text: str, option: str) -> float:
    """Seconds in an AGE (``90``, ``90s``, ``15m``, ``2h``, ``7d``); UsageError otherwise."""
    found = _AGE.match(text)
    seconds = float(found[1]) * _UNITS[found[2] or "s"] if found else math.nan
    if not math.isfinite(seconds):
        raise UsageError(f"{option} must be an age such as 3600, 90s, 15m, 2h or 7d, got {text!r}.")
    return seconds


def _json_arg(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{option} must be JSON, got {text!r}: {exc}.") from None


def open_backend(spec: str) -> StateBackend:
    """The state backend a ``--backend`` value names (UsageError if there is none)."""
    if spec.startswith(("postgresql://", "postgres://")):
        # The URL is never echoed: it may hold a password (the backend's repr hides it).
        try:
            module = importlib.import_module("flujo_actors.backends.postgres")
        except ImportError as exc:
            raise UsageError(
                "--backend is a PostgreSQL URL, which needs the postgres extra: "
                f"pip install 'flujo-actors[postgres]' ({exc})."
            ) from None
        try:
            # Never create tables from the command line: a mistyped database or
            # schema is an error, not a new empty store.
            backend: StateBackend = module.PostgresBackend(spec, create_tables=False)
        except ValueError as exc:
            raise UsageError(f"--backend: {exc}") from None
        return backend
    if not os.path.isfile(spec):
        raise UsageError(
            f"--backend {spec!r}: no state store there (no such file). Pass the SQLite file "
            "a runner was given as state_backend=."
        )
    from ..backends.sqlite import SQLiteBackend

    return SQLiteBackend(spec)


def load_runner(target: str, backend: StateBackend) -> Flujo:
    """A runner of the ``module:attr`` pipeline that persists to ``backend``.

    ``attr`` may be a :class:`~flujo_actors.Flujo` (its settings are kept, its
    state backend is replaced by the command's), a ``Pipeline`` or a ``Step``.
    """
    from ..runner import Flujo
    from ..steps.dsl import Pipeline, Step

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--pipeline must be module:attribute, got {target!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--pipeline {target!r}: cannot import {module_name!r}: {exc}.") from None
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise UsageError(f"--pipeline {target!r}: {module_name} has no {attr!r}.") from None
    if isinstance(value, Flujo):
        return Flujo(
            value.pipeline,
            context_model=value.context_model,
            initial_context_data=dict(value.initial_context_data),
            resources=value.resources,
            usage_limits=value.usage_limits,
            state_backend=backend,
            cache_backend=value.cache_backend,
            executor=value.executor,
            hooks=value.hooks,
            trace=value.trace,
        )
    if isinstance(value, Pipeline | Step):
        return Flujo(value, state_backend=backend)
    raise UsageError(
        f"--pipeline {target!r} is a {type(value).__name__}; it must name a Flujo runner, "
        "a Pipeline or a Step."
    )


async def _snapshot(backend: StateBackend, run_id: str) -> RunSnapshot:
    snap = await backend.load_state(run_id)
    if snap is None:
        raise UsageError(f"run {run_id!r} is not in the store (`runs list` lists the runs).")
    return snap


async def _list(backend: StateBackend, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a number >= 1, got {args.limit!r}.")
    try:
        ids = await backend.list_runs(args.status)
    except ValueError as exc:
        raise UsageError(f"--status: {exc}") from None
    now = time.time()
    older = parse_age(args.older_than, "--older-than") if args.older_than else None
    newer = parse_age(args.newer_than, "--newer-than") if args.newer_than else None
    runs = []
    for run_id in ids:
        snap = await backend.load_state(run_id)
        if snap is None:  # deleted meanwhile
            continue
        if args.pipeline is not None and snap.pipeline_name != args.pipeline:
            continue
        age = now - snap.updated_at
        if (older is not None and age < older) or (newer is not None and age > newer):
            continue
        runs.append(snap)
    runs.sort(key=lambda snap: snap.updated_at, reverse=True)
    if args.limit is not None:
        runs = runs[: args.limit]
    render.run_list(runs, now, as_json=args.json)
    return 0


async def _pending(backend: StateBackend, snap: RunSnapshot) -> list[PendingInput]:
    """The human inputs a paused run waits for (empty for any other run)."""
    if snap.status != "paused":
        return []
    from ..runner_human import PAUSED_KEY, pending_from_record

    positions = await backend.load_positions(snap.run_id)
    return pending_from_record(positions.get(PAUSED_KEY))


async def _show(backend: StateBackend, args: argparse.Namespace) -> int:
    snap = await _snapshot(backend, args.run_id)
    pending = await _pending(backend, snap)
    # The stored steps refer to their children's position records.
    positions = await backend.load_positions(snap.run_id)
    if args.json:
        import attrs

        from ..persistence import expanded_rows

        # Each step with its children inline, as they were before references.
        whole = attrs.evolve(snap, step_history=expanded_rows(snap.step_history, positions))
        render.print_json(render.snapshot_json(whole, pending))
        return 0
    from ..persistence import result_from_snapshot

    try:
        result = result_from_snapshot(snap, positions)
    except (FlujoError, TypeError, ValueError) as exc:
        raise UsageError(
            f"run {args.run_id!r} cannot be shown as results ({exc}); `show --json` prints "
            "it as stored."
        ) from None
    render.run_tree(snap, result, pending)
    return 0


def _exit_status(result: PipelineResult) -> int:
    return {"completed": 0, "paused": 3}.get(result.status, 1)


async def _report(run: Awaitable[PipelineResult], as_json: bool) -> int:
    """Await a resumed or forked run, print its result; the exit status."""
    from ..errors import UsageLimitExceededError

    try:
        result = await run
    except UsageLimitExceededError as exc:
        # A breach is an outcome of the run, with a result: print it, exit 1.
        if exc.result is not None:
            render.run_result(exc.result, as_json=as_json)
        print(f"flujo-actors: {exc}", file=sys.stderr)
        return 1
    render.run_result(result, as_json=as_json)
    return _exit_status(result)


async def _resume(backend: StateBackend, args: argparse.Namespace) -> int:
    await _snapshot(backend, args.run_id)
    runner = load_runner(args.pipeline, backend)
    options: dict[str, Any] = {"allow_changed_pipeline": args.allow_changed_pipeline}
    if args.input is not None:
        options["human_input"] = _json_arg(args.input, "--input")
    return await _report(runner.resume_async(args.run_id, **options), args.json)


async def _fork(backend: StateBackend, args: argparse.Namespace) -> int:
    await _snapshot(backend, args.run_id)
    runner = load_runner(args.pipeline, backend)
    at: str | int = int(args.at) if args.at.isdigit() else args.at
    updates = _json_arg(args.context, "--context") if args.context is not None else None
    if updates is not None and not isinstance(updates, dict):
        raise UsageError(
            f"--context must be a JSON object of field -> value, got {args.context!r}."
        )
    run = runner.fork_async(args.run_id, at=at, context_updates=updates, run_id=args.new_run_id)
    return await _report(run, args.json)


async def _delete(backend: StateBackend, args: argparse.Namespace) -> int:
    for run_id in args.run_ids:
        await _snapshot(backend, run_id)  # a typo is an error, not a silent no-op
    for run_id in args.run_ids:
        await backend.delete_state(run_id)
        print(f"deleted {run_id}")
    return 0


async def _prune(backend: StateBackend, args: argparse.Namespace) -> int:
    older = parse_age(args.older_than, "--older-than") if args.older_than else None
    try:
        gone = await backend.prune(older_than_s=older, status=args.status)
    except ValueError as exc:
        raise UsageError(str(exc).replace("older_than_s", "--older-than")) from None
    for run_id in gone:
        print(f"pruned {run_id}")
    print(f"{len(gone)} run(s) pruned")
    return 0


_ACTIONS = {
    "list": _list,
    "show": _show,
    "resume": _resume,
    "fork": _fork,
    "delete": _delete,
    "prune": _prune,
}


def run_command(args: argparse.Namespace) -> int:
    """Execute a parsed ``runs`` command; return the exit status.

    Raises:
        UsageError: a command-line mistake (printed by :func:`~flujo_actors.cli.main`).
    """
    action = _ACTIONS[args.action]

    async def main() -> int:
        backend = open_backend(args.backend)
        try:
            return await action(backend, args)
        except FlujoError as exc:
            # The library's own errors already say what and how to fix it.
            raise UsageError(str(exc)) from None
        finally:
            await backend.aclose()

    status: int = trio.run(main)
    return status
