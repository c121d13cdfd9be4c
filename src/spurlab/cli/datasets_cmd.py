"""``spurlab datasets list|show``: the registered datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from spurlab.cli._console import DataDir, SetOpt, console, fail, frame_table, parse_sets
from spurlab.errors import SpurlabError
datasets_app = typer.Typer(no_args_is_help=True, help="List and inspect the registered datasets.")

@datasets_app.command("list")
def datasets_list() -> None:
    """Every registered dataset with its kind and a one-line description."""
    from spurlab.data.dataset_registry import dataset_entries

    table = Table(title="spurlab datasets")
    for col in ("name", "kind", "files", "description"):
        table.add_column(col)
    for entry in dataset_entries().values():
        table.add_row(*map(escape, (entry.name, entry.kind, "needs files" if entry.needs_files else "built in",
                                    entry.summary)))
    console.print(table)


@datasets_app.command("show")
def datasets_show(name: str, data_dir: Optional[Path] = DataDir, seed: int = 0,
                  set_: Optional[list[str]] = SetOpt) -> None:
    """Parameters, groups and counts per split of one dataset."""
    from spurlab.data.dataset_registry import get_entry, load_splits

    try:
        entry = get_entry(name)
        params = parse_sets(set_)
        console.print(f"[bold]{escape(entry.name)}[/] ({entry.kind}): {escape(entry.summary)}")
        ptable = Table(title="parameters")
        ptable.add_column("name")
        ptable.add_column("default")
        for key, value in entry.parameters().items():
            ptable.add_row(escape(key), escape(repr(value)))
        console.print(ptable)
        splits = load_splits(name, data_dir=data_dir, seed=seed, **params)
    except SpurlabError as exc:
        fail(exc)
        return
    first = next(iter(splits.values()))
    console.print(f"inputs {first.input_shape}, {first.n_classes} classes: {', '.join(first.class_names)}",
                  markup=False)
    console.print(frame_table(splits.summary(), title="examples per group and split"))
