"""Showing a run: a rich progress bar and tables on a terminal, plain lines otherwise.

rich is optional (the ``bench`` extra) and imported only when a rich display is
actually opened, so ``import flujo_actors.bench`` stays cheap.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Protocol, TextIO

from .report import CaseResult, TextTable, summarize

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["Display", "PlainDisplay", "RichDisplay", "open_display", "rich_available"]


def rich_available() -> bool:
    """True when rich can be imported (without importing it)."""
    return importlib.util.find_spec("rich") is not None


class Display(Protocol):
    """What the CLI tells the person watching."""

    def start(self, total: int) -> None:
        """A run of ``total`` cases begins."""

    def case_started(self, label: str) -> None:
        """A case (``scenario[size]``) begins."""

    def case_finished(self, result: CaseResult) -> None:
        """A case ended (successfully or not)."""

    def stop(self) -> None:
        """The run ended; tables and text follow."""

    def table(self, table: TextTable) -> None:
        """Print a table."""

    def text(self, text: str, *, style: str = "") -> None:
        """Print a paragraph (``style`` is a rich style; plain output ignores it)."""


class PlainDisplay:
    """One line per case, fixed-width tables; safe for logs, pipes and CI."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._total = 0
        self._done = 0

    def start(self, total: int) -> None:
        """Remember how many cases will run (for the ``[i/n]`` prefix)."""
        self._total = total
        self._done = 0

    def case_started(self, label: str) -> None:
        """Plain output prints only finished cases (no partial lines in logs)."""

    def case_finished(self, result: CaseResult) -> None:
        """Print ``[i/n] summary (wall time)``."""
        self._done += 1
        width = len(str(self._total))
        print(
            f"[{self._done:>{width}}/{self._total}] {summarize(result)} ({result.wall_s:.1f} s)",
            file=self._stream,
            flush=True,
        )

    def stop(self) -> None:
        """Nothing to tear down."""

    def table(self, table: TextTable) -> None:
        """Print the table with a blank line before it."""
        print("", table.render_plain(), sep="\n", file=self._stream, flush=True)

    def text(self, text: str, *, style: str = "") -> None:
        """Print the text."""
        print(text, file=self._stream, flush=True)


class RichDisplay:
    """A live progress bar; finished cases scroll above it; tables in rich style."""

    def __init__(self, stream: TextIO, *, width: int | None = None) -> None:
        from rich.console import Console  # optional dependency, imported on use

        self._console: Console = Console(file=stream, width=width)
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, total: int) -> None:
        """Show the progress bar."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=total)

    def case_started(self, label: str) -> None:
        """Name the running case beside the bar."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=label)

    def case_finished(self, result: CaseResult) -> None:
        """Log the case above the bar, coloured by outcome, and advance the bar."""
        style = "green"
        if result.status == "unavailable":
            style = "yellow"
        elif result.status == "error" or result.failed_targets:
            style = "red"
        from rich.markup import escape

        line = f"{escape(summarize(result))} [dim]({result.wall_s:.1f} s)[/dim]"
        self._console.print(line, style=style, markup=True, highlight=False)
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def stop(self) -> None:
        """Remove the progress bar."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def table(self, table: TextTable) -> None:
        """Render a rich table."""
        from rich.table import Table
        from rich.text import Text

        rich_table = Table(title=Text(table.title), title_justify="left", header_style="bold")
        for header, align in zip(table.headers, table.align, strict=True):
            rich_table.add_column(
                header, justify="right" if align == "r" else "left", overflow="fold"
            )
        styles = table.styles or ("",) * len(table.rows)
        for row, style in zip(table.rows, styles, strict=True):
            # Text, not str: cells are data (error messages), never rich markup.
            rich_table.add_row(*(Text(cell) for cell in row), style=style or None)
        self._console.print()
        self._console.print(rich_table)

    def text(self, text: str, *, style: str = "") -> None:
        """Print the text in ``style``."""
        self._console.print(text, style=style or None, markup=False, highlight=False)


def open_display(stream: TextIO, *, plain: bool = False) -> Display:
    """A rich display when asked for, rich is installed and ``stream`` is a terminal."""
    if plain or not rich_available() or not stream.isatty():
        return PlainDisplay(stream)
    return RichDisplay(stream)
