"""The ``spurlab`` command line."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from spurlab.errors import SpurlabError
from spurlab.sweep.cli import sweep_app

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Find, measure, explain and fix the spurious features a model relies on.")
datasets_app = typer.Typer(no_args_is_help=True, help="List and inspect the registered datasets.")
app.add_typer(datasets_app, name="datasets")
app.add_typer(sweep_app, name="sweep")
console = Console(stderr=False)
err_console = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Data folder (default: $SPURLAB_DATA, else ~/.cache/spurlab).")
SetOpt = typer.Option(None, "--set", help="Override a parameter: key=value (repeatable).")


def _fail(exc: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def _frame_table(frame, title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    for col in frame.columns:
        table.add_column(str(col), justify="left" if frame[col].dtype == object else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    return table


def _parse_sets(items: list[str] | None) -> dict:
    """``["k=v", ...]`` -> ``{k: parsed v}`` (numbers, booleans, JSON lists, strings)."""
    from spurlab.studies.base import parse_value

    out = {}
    for item in items or []:
        if "=" not in item:
            raise SpurlabError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value, None)
    return out


# ------------------------------------------------------------------ datasets
@datasets_app.command("list")
def datasets_list() -> None:
    """Every registered dataset with its kind and a one-line description."""
    from spurlab.data.registry import dataset_entries

    table = Table(title="spurlab datasets")
    for col in ("name", "kind", "files", "description"):
        table.add_column(col)
    for entry in dataset_entries().values():
        table.add_row(entry.name, entry.kind, "needs files" if entry.needs_files else "built in", entry.summary)
    console.print(table)


@datasets_app.command("show")
def datasets_show(name: str, data_dir: Optional[Path] = DataDir, seed: int = 0,
                  set_: Optional[list[str]] = SetOpt) -> None:
    """Parameters, groups and counts per split of one dataset."""
    from spurlab.data.registry import get_entry, load_splits

    try:
        entry = get_entry(name)
        params = _parse_sets(set_)
        console.print(f"[bold]{entry.name}[/] ({entry.kind}): {entry.summary}")
        ptable = Table(title="parameters")
        ptable.add_column("name")
        ptable.add_column("default")
        for key, value in entry.parameters().items():
            ptable.add_row(key, repr(value))
        console.print(ptable)
        splits = load_splits(name, data_dir=data_dir, seed=seed, **params)
    except SpurlabError as exc:
        _fail(exc)
        return
    first = next(iter(splits.values()))
    console.print(f"inputs {first.input_shape}, {first.n_classes} classes: {', '.join(first.class_names)}")
    console.print(_frame_table(splits.summary(), title="examples per group and split"))


# ------------------------------------------------------------------ studies
@app.command("study")
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
    from spurlab.studies.base import get_study, run_study, study_registry

    if name == "list":
        table = Table(title="spurlab studies")
        for col in ("name", "paper", "what it reproduces"):
            table.add_column(col)
        for cls in study_registry().values():
            table.add_row(cls.name, cls.paper, cls.title)
        console.print(table)
        return
    overrides = list(set_ or [])
    for key, value in (("table", table), ("label", label), ("spurious", spurious), ("positive", positive)):
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        get_study(name)
        result, path = run_study(name, out_dir=out, quick=quick, seed=seed, device=device, overrides=overrides)
    except SpurlabError as exc:
        _fail(exc)
        return
    if result.headline is not None and not result.headline.empty:
        console.print(_frame_table(result.headline, title=f"{name}: headline numbers"))
    console.print(f"wrote {path}/report.html ({len(result.rows)} result rows)")


# ------------------------------------------------------------------ audit
@app.command("audit")
def audit(dataset: str = typer.Option("spurious-digits", "--dataset", help="A registered dataset."),
          embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="Audit your own model from an "
                                                    ".npz/.parquet of embeddings, labels and predictions."),
          out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/audit-TIME)."),
          quick: bool = typer.Option(False, "--quick", help="A first look: fewer methods, seeds and epochs."),
          model: str = typer.Option("auto", "--model", help="auto, linear, mlp or cnn."),
          epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default 15 quick, 40 full)."),
          seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per fix (default 2 quick, 3 full)."),
          methods: Optional[str] = typer.Option(None, "--methods", help="Fixes to compare, comma-separated."),
          skip: Optional[str] = typer.Option(None, "--skip", help="Steps to skip: directions, units, fixes."),
          seed: int = typer.Option(0, "--seed"),
          device: str = typer.Option("auto", "--device"),
          data_dir: Optional[Path] = DataDir,
          set_: Optional[list[str]] = SetOpt) -> None:
    """Diagnose, explain and fix a model's reliance on spurious features; writes report.html."""
    from spurlab.audit import run_audit

    def split_list(text: str | None) -> tuple[str, ...] | None:
        return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None

    try:
        report = run_audit(dataset=dataset, out_dir=out, model=model, epochs=epochs, seed=seed, device=device,
                           data_dir=data_dir, dataset_params=_parse_sets(set_), embeddings=embeddings,
                           quick=quick, seeds=seeds, methods=split_list(methods), skip=split_list(skip) or ())
    except SpurlabError as exc:
        _fail(exc)
        return
    test = report.group_table[report.group_table["split"] == "test"]
    console.print(_frame_table(test.drop(columns=["split"]), title="test accuracy per group"))
    for method in report.summary.get("methods", []):
        console.print(f"  {method['method']:<20} worst-group {method['worst_group_acc']:.3f} "
                      f"± {method['worst_group_acc_std']:.3f}   mean-group {method['mean_group_acc']:.3f}")
    console.print(report.verdict)
    console.print(f"report: {report.out_dir / 'report.html'}")


@app.command("directions")
def directions(embeddings: Path = typer.Option(..., "--embeddings", help="An .npz/.parquet with embeddings, "
                                               "labels, predictions [, split, groups, spurious, images, ...]."),
               out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/directions-TIME)."),
               captions: Optional[str] = typer.Option(None, "--captions", help="Caption vocabulary: a built-in "
                                                      "name (default, digits) or a JSON file; needs --clip."),
               clip: Optional[Path] = typer.Option(None, "--clip", help="Local CLIP checkpoint folder "
                                                   "(Hugging Face save_pretrained layout) for captions."),
               top_k: int = typer.Option(16, "--top-k", help="Failure-aligned examples shown per class."),
               seed: int = typer.Option(0, "--seed"),
               device: str = typer.Option("auto", "--device")) -> None:
    """Find, rank and caption a model's failure modes from an embeddings file (failure directions)."""
    from spurlab.directions_cli import run_directions
    from spurlab.studies.base import default_out_dir

    try:
        run = run_directions(embeddings, out or default_out_dir("directions"), captions=captions, clip=clip,
                             top_k=top_k, seed=seed, device=device)
    except SpurlabError as exc:
        _fail(exc)
        return
    for warning in run.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
    columns = [c for c in ("name", "n", "n_errors", "cv_balanced_acc", "error_auroc", "flagged_fraction",
                           "flag_minority_precision", "minority_recall") if c in run.table.columns]
    console.print(_frame_table(run.table[columns], title="failure directions per class"))
    console.print(f"wrote {run.out_dir}/report.html, examples.csv, summary.json, directions.npz")


# ------------------------------------------------------------------ train (spurlab/train_cli.py)
from spurlab.train_cli import train as _train_command  # noqa: E402

app.command("train")(_train_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
