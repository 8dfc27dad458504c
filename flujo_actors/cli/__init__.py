"""The command line: ``python -m flujo_actors runs ...`` (also the ``flujo-actors`` script).

``runs`` inspects and operates the runs in a state backend: ``list``,
``show``, ``resume``, ``fork``, ``delete`` and ``prune`` (see
:mod:`.runs`). Exit status: 0 done (a resumed or forked run completed), 1 the
run failed or was cancelled, 2 a usage error (bad arguments, no store, an
unknown run), 3 the run is paused for human input.

Ctrl-C (or SIGTERM turned into KeyboardInterrupt) cancels the command's trio
run: a resumed run stops like any cancelled run, with what had completed
already stored.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

_EPILOG = """\
AGE is a number of seconds or a number with a unit: 90s, 15m, 2h, 7d.
Exit status: 0 done, 1 the run failed or was cancelled, 2 usage error, 3 paused.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flujo-actors", description="flujo_actors command line.", epilog=_EPILOG
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # ``--backend`` is accepted before the action (``runs --backend X list``, as documented)
    # and after it (``runs list --backend X``, where people type it): ``runs`` and every
    # action inherit it, and SUPPRESS keeps an absent one from hiding the other.
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--backend",
        default=argparse.SUPPRESS,
        metavar="STORE",
        help="the state store: a SQLite file path (or a postgresql:// URL with the postgres extra)",
    )
    runs = commands.add_parser(
        "runs",
        parents=[store],
        help="inspect and operate the runs in a state backend",
        description="Inspect and operate the runs stored in a state backend.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", parents=[store], help="list runs, newest first")
    listing.add_argument("--status", help="only runs with this status")
    listing.add_argument("--pipeline", metavar="NAME", help="only runs of this pipeline name")
    listing.add_argument("--older-than", metavar="AGE", help="only runs not updated for AGE")
    listing.add_argument("--newer-than", metavar="AGE", help="only runs updated within AGE")
    listing.add_argument("--limit", type=int, metavar="N", help="at most N runs")
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = actions.add_parser("show", parents=[store], help="one run's step tree")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print the stored run as JSON")

    for name, text in (
        ("resume", "continue a stored run"),
        ("fork", "start a new run from a stored run's checkpoint"),
    ):
        act = actions.add_parser(name, parents=[store], help=text)
        act.add_argument("run_id")
        act.add_argument(
            "--pipeline",
            required=True,
            metavar="MODULE:ATTR",
            help="the pipeline: a Flujo runner, a Pipeline or a Step, as module:attribute",
        )
        act.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "resume":
            act.add_argument(
                "--input", metavar="JSON", help="the human input for a paused run (JSON)"
            )
            act.add_argument(
                "--allow-changed-pipeline",
                action="store_true",
                help="resume even if the pipeline changed since the run was stored",
            )
        else:
            act.add_argument(
                "--at", required=True, metavar="STEP", help="top-level step name or index"
            )
            act.add_argument(
                "--context", metavar="JSON", help="a JSON object of context field updates"
            )
            act.add_argument("--run-id", dest="new_run_id", metavar="ID", help="the new run's id")

    delete = actions.add_parser("delete", parents=[store], help="delete runs and their history")
    delete.add_argument("run_ids", nargs="+", metavar="RUN_ID")

    prune = actions.add_parser("prune", parents=[store], help="delete old runs (retention)")
    prune.add_argument("--older-than", metavar="AGE", help="runs not updated for AGE")
    prune.add_argument("--status", help="runs with this status (running runs need it)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "runs" and not hasattr(args, "backend"):
        parser.error(
            "runs: --backend STORE is required (a SQLite file path or a postgresql:// URL), "
            "before or after the action: flujo-actors runs --backend runs.db list"
        )
    from .runs import UsageError, run_command

    try:
        return run_command(args)
    except UsageError as exc:
        print(f"flujo-actors: error: {exc}", file=sys.stderr)
        return 2
