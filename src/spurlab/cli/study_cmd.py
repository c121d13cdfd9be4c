"""``spurlab study NAME``: reproduce one research work."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from spurlab.cli._console import SetOpt, console, fail, frame_table
from spurlab.errors import SpurlabError
from spurlab.runs import check_out_dir
from spurlab.studies.study_names import STUDIES


def study(name: str = typer.Argument(..., help="A study name, or 'list'."),
          quick: bool = typer.Option(False, "--quick", help="Small, fast version with the same trends."),
          out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/study-NAME-TIME)."),
          seed: int = typer.Option(0, "--seed"),
          device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
          set_: Optional[list[str]] = SetOpt,
          table: Optional[Path] = typer.Option(None, "--table", help="Run on your own CSV table "
                                               "(studies that accept one)."),
          label: Optional[str] = typer.Option(None, "--label", help="Label column of --table."),
          spurious: Optional[str] = typer.Option(None, "--spurious", help="Spurious column of --table."),
          positive: Optional[str] = typer.Option(None, "--positive", help="Label values counted as the "
                                                 "positive class, comma-separated.")) -> None:
    """Reproduce one research work: results.csv, manifest.json, figures and report.html."""
    if name == "list":
        from spurlab.studies.study_base import study_registry

        table = Table(title="spurlab studies")
        for col in ("name", "paper", "what it reproduces"):
            table.add_column(col)
        for cls in study_registry().values():
            table.add_row(*map(escape, (cls.name, cls.paper, cls.title)))
        console.print(table)
        return
    overrides = list(set_ or [])
    for key, value in (("table", table), ("label", label), ("spurious", spurious), ("positive", positive)):
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        STUDIES.refuse_unknown(name)  # a typo answers before numpy, pandas and torch load
        check_out_dir(out)
        from spurlab.studies.study_base import get_study, run_study

        get_study(name)
        result, path = run_study(name, out_dir=out, quick=quick, seed=seed, device=device, overrides=overrides)
    except SpurlabError as exc:
        fail(exc)
        return
    if result.headline is not None and not result.headline.empty:
        console.print(frame_table(result.headline, title=f"{name}: headline numbers"))
    console.print(f"wrote {path}/report.html ({len(result.rows)} result rows)", markup=False)
