"""``spurlab sweep``: run, inspect and collect sweeps.

``spurlab sweep CONFIG --out DIR`` runs a sweep (``run`` is the default command,
so ``spurlab sweep run CONFIG`` works too); ``spurlab sweep status DIR`` and
``spurlab sweep collect DIR`` read the store; ``spurlab sweep params TARGET``
lists what a target lets a sweep set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from spurlab.cli._console import console, err_console, fail, frame_table
from spurlab.errors import SpurlabError
from spurlab.runs import check_out_dir



class DefaultRunGroup(TyperGroup):
    """A group whose first argument, when it is not a command name, goes to ``run``."""

    default_command = "run"

    def resolve_command(self, ctx, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return self.default_command, self.commands[self.default_command], args
        return super().resolve_command(ctx, args)


sweep_app = typer.Typer(cls=DefaultRunGroup, no_args_is_help=True, add_completion=False,
                        help="Grid/random sweeps over a study, a training method or a function: "
                             "`spurlab sweep CONFIG --out DIR`, then `status DIR` and `collect DIR`.")


@sweep_app.command("run")
def run(config: Path = typer.Argument(..., help="Sweep config (.toml or .yaml)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Sweep folder (default runs/sweep-NAME); "
                                           "running again into it resumes."),
        executor: str = typer.Option("local", "--executor", help="local (process pool) or ray."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Runs at once (local default: one per "
                                              "CPU core; 0 runs in this process)."),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (e.g. auto or "
                                              "ray://host:10001); default starts a local Ray instance."),
        retry_failed: bool = typer.Option(True, "--retry-failed/--skip-failed",
                                          help="Run again the runs that failed last time."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and stop.")) -> None:
    """Run every run of CONFIG not yet stored in the sweep folder."""
    from spurlab.sweep.runner import plan_sweep, run_sweep

    try:
        check_out_dir(out)
        cfg, specs = plan_sweep(config)
        out = out or Path("runs") / f"sweep-{cfg.name}"
        if dry_run:
            _print_plan(cfg.target, specs)
            return
        console.print(f"sweep {cfg.name}: {len(specs)} runs of {cfg.target} into {out} ({executor} executor)",
                      markup=False)
        outcome = run_sweep(cfg, out, executor=executor, workers=workers, address=address,
                            retry_failed=retry_failed)
    except SpurlabError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished runs are stored in {out}; run the same command to resume",
                          markup=False)
        raise typer.Exit(code=130) from None
    console.print(f"{outcome.succeeded} finished, {outcome.failed} failed, {outcome.skipped} already stored "
                  f"-> {out}  (next: spurlab sweep collect {out})", markup=False)
    if outcome.failed:
        err_console.print(f"[yellow]{outcome.failed} run(s) failed[/]: see `spurlab sweep status "
                          f"{escape(str(out))} --failures`")
        raise typer.Exit(code=1)


def _print_plan(target: str, specs: list[Any]) -> None:
    import pandas as pd

    from spurlab.sweep.store import cell

    frame = pd.DataFrame([{"run_id": s.run_id, "seed": s.seed, **{k: cell(v) for k, v in s.params.items()}}
                          for s in specs])
    console.print(frame_table(frame, title=f"{len(specs)} runs of {target}"))


@sweep_app.command("status")
def status(sweep_dir: Path = typer.Argument(..., help="A sweep folder."),
           failures: bool = typer.Option(False, "--failures", "-f", help="Print each failure's traceback.")) -> None:
    """How many runs are finished, failed and pending; the failures' errors."""
    from spurlab.sweep.store import ResultStore

    if not (sweep_dir / "plan.json").is_file():
        fail(SpurlabError(f"{sweep_dir} is not a sweep folder (no plan.json)",
                           hint="pass the --out folder of `spurlab sweep CONFIG --out DIR`"))
    store = ResultStore(sweep_dir)
    state = store.status()
    table = Table(title=f"sweep {sweep_dir}")
    for col in ("planned", "finished", "failed", "pending"):
        table.add_column(col, justify="right")
    table.add_row(str(state.planned), str(state.done), str(state.failed), str(state.pending))
    console.print(table)
    if state.unplanned:
        console.print(f"{state.unplanned} stored run(s) come from an earlier config (`collect` includes them)")
    if state.stale_temp:
        console.print(f"{state.stale_temp} temporary file(s) from an interrupted write "
                      "(ignored; removed by the next run)")
    failed = store.failures()
    if not failed.empty:
        console.print(frame_table(failed[["run_id", "seed", "params", "error_type", "error", "attempts"]],
                             title="failed runs"))
        if failures:
            for row in failed.itertuples(index=False):
                console.print(f"[bold]{row.run_id}[/] {escape(str(row.params))}\n{escape(str(row.traceback))}")


@sweep_app.command("collect")
def collect(sweep_dir: Path = typer.Argument(..., help="A sweep folder."),
            dest: Optional[Path] = typer.Option(None, "--dest", help="Output folder (default DIR/collect)."),
            x: Optional[str] = typer.Option(None, "--x", help="Parameter on the figures' x axis.")) -> None:
    """Mean and 95% CI over seeds per setting: summary.csv, one PNG per metric, report.html."""
    from spurlab.sweep.collect import collect as collect_sweep
    from spurlab.sweep.collect import headline

    try:
        outcome = collect_sweep(sweep_dir, dest=dest, x=x)
    except SpurlabError as exc:
        fail(exc)
        return
    console.print(frame_table(headline(outcome.summary), title="mean ± 95% CI over seeds (first rows)"))
    console.print(f"wrote {outcome.summary_path}, {len(outcome.figure_paths)} figure(s) and {outcome.report_path}",
                  markup=False)


@sweep_app.command("params")
def params(target: str = typer.Argument(..., help='"study:NAME", "method:NAME" or "python:module:function".'),
           full: bool = typer.Option(False, "--full", help="Defaults of the full (not quick) run.")) -> None:
    """The parameters a sweep can set on TARGET, with their defaults."""
    from spurlab.sweep.targets import parse_target

    try:
        defaults = parse_target(target).parameters(quick=not full)
    except SpurlabError as exc:
        fail(exc)
        return
    table = Table(title=f"parameters of {target}")
    table.add_column("name")
    table.add_column("default")
    for key, value in defaults.items():
        table.add_row(escape(key), escape(repr(value)))
    console.print(table)
