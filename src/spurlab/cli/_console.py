"""What every command shares: the consoles, ``fail``, a DataFrame as a table, the common options."""
from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spurlab.errors import SpurlabError
from spurlab.runs import parse_sets

console = Console(stderr=False)
err_console = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Data folder (default: $SPURLAB_DATA, else ~/.cache/spurlab).")
SetOpt = typer.Option(None, "--set", help="Override a parameter: key=value (repeatable).")
# your own images as the data (dataset image-table): audit and embed
TableOpt = typer.Option(None, "--table", help="Your own images: a CSV/parquet table of image paths, labels and a "
                        "spurious attribute (dataset image-table).")
ImageRootOpt = typer.Option(None, "--image-root", help="Folder the table's relative paths start from (default: the "
                            "table's folder).")
LabelOpt = typer.Option(None, "--label", help="Label column of --table (default 'label').")
SpuriousOpt = typer.Option(None, "--spurious", help="Spurious-attribute column of --table.")

__all__ = ["DataDir", "ImageRootOpt", "LabelOpt", "SetOpt", "SpuriousOpt", "TableOpt", "console", "err_console",
           "fail", "frame_table", "parse_sets", "table_dataset", "warn"]


def table_dataset(dataset: str | None, params: dict, embeddings: Path | None, table: Path | None,
                  image_root: Path | None, label: str | None, spurious: str | None) -> tuple[str, dict]:
    """``--table/--image-root/--label/--spurious`` as the ``image-table`` dataset and its parameters."""
    if table is None:
        given = [flag for flag, value in (("--image-root", image_root), ("--label", label), ("--spurious", spurious))
                 if value is not None]
        if given:
            raise SpurlabError(f"{', '.join(given)} only apply together with --table FILE",
                               hint="spurlab audit --table table.csv --image-root DIR --label COL --spurious COL")
        return dataset or "spurious-digits", params
    others = [flag for flag, value in (("--dataset", dataset), ("--embeddings", embeddings)) if value is not None]
    if others:
        raise SpurlabError(f"--table cannot be combined with {' or '.join(others)}: it is the dataset",
                           hint="give one of --table FILE, --dataset NAME or --embeddings FILE")
    columns = {"table": str(table), "image_root": None if image_root is None else str(image_root),
               "label": label, "spurious": spurious}
    return "image-table", {**params, **{k: v for k, v in columns.items() if v is not None}}


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
