"""What every command shares: the consoles, ``fail``, a DataFrame as a table, the common options."""
from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spurlab.runs import parse_sets

console = Console(stderr=False)
err_console = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Data folder (default: $SPURLAB_DATA, else ~/.cache/spurlab).")
SetOpt = typer.Option(None, "--set", help="Override a parameter: key=value (repeatable).")

__all__ = ["DataDir", "SetOpt", "console", "err_console", "fail", "frame_table", "parse_sets", "warn"]


def fail(exc: Exception) -> NoReturn:
    """Print a user error (markup in the message is shown as text) and exit with status 2."""
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(code=2)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}")


def frame_table(frame, title: str | None = None) -> Table:
    """A pandas DataFrame as a rich table (floats to 4 significant digits)."""
    table = Table(title=None if title is None else escape(title), show_lines=False)
    for col in frame.columns:
        table.add_column(escape(str(col)), justify="left" if frame[col].dtype == object else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else escape(str(v)) for v in row])
    return table
