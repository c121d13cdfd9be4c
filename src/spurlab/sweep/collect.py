"""Collect a sweep: mean and 95% confidence interval over seeds per setting, as CSV and figures.

A *setting* is every column of the results table except ``value``, ``seed`` and
``run_id``: the target, experiment, metric, the parameters the config set and any
column the runs' rows carry (a step, a split, a group). The interval is the
Student-t interval of the mean over the seeds of that setting.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spurlab.errors import SpurlabError
from spurlab.sweep.store import ResultStore
from spurlab.utils import atomic_write_bytes, atomic_write_csv

NOT_SETTING = ("value", "seed", "run_id")
STAT_COLUMNS = ("n_seeds", "mean", "std", "ci95_low", "ci95_high", "ci95_half")
PANEL_COLUMNS = ("target", "experiment")
MAX_LEGEND = 12


@dataclass
class CollectOutcome:
    summary: pd.DataFrame
    dest: Path
    summary_path: Path
    figure_paths: dict[str, Path] = field(default_factory=dict)
    report_path: Path | None = None


# ------------------------------------------------------------------ statistics
def t_half_width(std: np.ndarray, n: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Half-width of the Student-t interval of a mean (NaN with fewer than two values)."""
    from scipy import stats

    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        quantile = stats.t.ppf(0.5 + level / 2, np.where(n > 1, n - 1, np.nan))
        return quantile * np.asarray(std, dtype=float) / np.sqrt(n)


def _hashable(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists or dicts inside cells (from a run's rows) become their JSON text so they can group."""
    for col in [c for c in frame.columns if frame[c].dtype == object]:
        if frame[col].map(lambda v: isinstance(v, (list, dict))).any():
            frame[col] = frame[col].map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v)
    return frame


def summarize(table: pd.DataFrame, exclude: tuple[str, ...] = ()) -> pd.DataFrame:
    """Mean, std and 95% CI of ``value`` over seeds for every setting of ``table``."""
    if "value" not in table.columns or "metric" not in table.columns:
        raise SpurlabError("the results table has no `metric`/`value` columns",
                           hint="targets must return long rows (metric, value)")
    frame = _hashable(table.copy())
    # a parameter named like a statistic (a study's own `n_seeds`) keeps its values under another name
    frame = frame.rename(columns={c: f"{c}_param" for c in frame.columns if c in STAT_COLUMNS + ("n_values",)})
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    keys = [c for c in frame.columns if c not in NOT_SETTING and c not in exclude]
    grouped = frame.groupby(keys, dropna=False, sort=True)
    out = grouped["value"].agg(n_values="count", mean="mean", std="std").reset_index()
    seeds = grouped["seed"].nunique() if "seed" in frame.columns else grouped["value"].size()
    out.insert(len(keys), "n_seeds", seeds.to_numpy())
    half = t_half_width(out["std"].to_numpy(), out["n_values"].to_numpy())
    out["ci95_low"], out["ci95_high"], out["ci95_half"] = out["mean"] - half, out["mean"] + half, half
    front = [c for c in ("target", "experiment", "metric") if c in keys]
    return out[front + [c for c in out.columns if c not in front]]


# ------------------------------------------------------------------ figures
def _varying(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if frame[c].nunique(dropna=True) > 1]


def _pick_x(frame: pd.DataFrame, candidates: list[str], preferred: str | None) -> str | None:
    if preferred is not None and preferred in candidates:
        return preferred
    numeric = [c for c in candidates if pd.to_numeric(frame[c], errors="coerce").notna().all()]
    return max(numeric, key=lambda c: frame[c].nunique(), default=None)


def _label(row: pd.Series, columns: list[str]) -> str:
    return ", ".join(f"{c}={row[c]}" for c in columns) or "all"


def metric_figure(part: pd.DataFrame, metric: str, x: str | None = None):
    """One figure for one metric: a panel per experiment, mean ± 95% CI vs the swept parameter."""
    from spurlab.report.plots import panel_row  # matplotlib (Agg) loads with the first figure

    settings = [c for c in part.columns if c not in STAT_COLUMNS and c not in ("metric", "n_values")]
    varying = _varying(part, settings)
    panels = [c for c in PANEL_COLUMNS if c in varying]
    x_col = _pick_x(part, [c for c in varying if c not in panels], x)
    hues = [c for c in varying if c not in panels and c != x_col]
    groups = list(part.groupby(panels, sort=True)) if panels else [((), part)]
    fig, axes = panel_row(len(groups), 4.6, 3.6)  # wrapped into rows rather than wider than the page
    for ax, (key, panel) in zip(axes, groups):
        _draw_panel(ax, panel, x_col, hues)
        key = key if isinstance(key, tuple) else (key,)
        if key:
            ax.set_title(" / ".join(str(k) for k in key), fontsize=9)
        ax.set_ylabel(metric)
    fig.suptitle(f"{metric}: mean ± 95% CI over seeds", fontsize=10)
    fig.tight_layout()
    return fig


def _draw_panel(ax, panel: pd.DataFrame, x_col: str | None, hues: list[str]) -> None:
    from spurlab.report.plots import integer_axis, line_style  # matplotlib loads with the first figure

    lines = list(panel.groupby(hues, sort=True, dropna=False)) if hues else [((), panel)]
    if x_col is None:
        labels = [_label(sub.iloc[0], hues) for _, sub in lines]
        means = [sub["mean"].mean() for _, sub in lines]
        halves = [np.nan_to_num(sub["ci95_half"].mean()) for _, sub in lines]
        ax.bar(range(len(labels)), means, yerr=halves, capsize=4, color="#3b6fd8", alpha=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=7)
    else:
        for i, (_, sub) in enumerate(lines):
            # lines that coincide stay distinguishable by their marker and dash pattern
            sub = sub.assign(_x=pd.to_numeric(sub[x_col])).sort_values("_x")
            half = np.nan_to_num(sub["ci95_half"].to_numpy())
            ax.plot(sub["_x"], sub["mean"], ms=4, label=_label(sub.iloc[0], hues), **line_style(i))
            ax.fill_between(sub["_x"], sub["mean"] - half, sub["mean"] + half, alpha=0.2)
        xs = pd.to_numeric(panel[x_col])
        if (xs > 0).all() and xs.max() / xs.min() >= 100:
            ax.set_xscale("log")
        if np.allclose(xs, np.round(xs)):
            integer_axis(ax)
        ax.set_xlabel(x_col)
        if hues and len(lines) <= MAX_LEGEND:
            ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def file_stem(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") or "metric"


# ------------------------------------------------------------------ the command
def collect(sweep_dir: str | os.PathLike, dest: str | os.PathLike | None = None, x: str | None = None,
            exclude: tuple[str, ...] = (), report: bool = True) -> CollectOutcome:
    """Write ``summary.csv``, one ``<metric>.png`` per metric and ``report.html`` into ``dest``.

    ``dest`` defaults to ``<sweep_dir>/collect``; ``x`` picks the parameter on the
    figures' x axis (default: the numeric one with the most values).
    """
    store = ResultStore(sweep_dir)
    table = store.table()
    if table.empty:
        raise SpurlabError(f"no finished runs in {sweep_dir}", hint="run `spurlab sweep CONFIG --out DIR` first")
    summary = summarize(table, exclude=exclude)
    dest = Path(dest) if dest is not None else Path(sweep_dir) / "collect"
    outcome = CollectOutcome(summary=summary, dest=dest, summary_path=atomic_write_csv(dest / "summary.csv", summary))
    figures = {}
    from spurlab.report.html import figure_png

    for metric, part in summary.groupby("metric", sort=True):
        png = figure_png(metric_figure(part, str(metric), x=x))
        figures[str(metric)] = png
        outcome.figure_paths[str(metric)] = atomic_write_bytes(dest / f"{file_stem(str(metric))}.png", png)
    if report:
        outcome.report_path = write_report(store, summary, figures, dest / "report.html")
    return outcome


def constant_columns(summary: pd.DataFrame) -> dict[str, object]:
    """Setting columns that hold one value across the whole summary (shown once, not in every row)."""
    settings = [c for c in summary.columns if c not in STAT_COLUMNS and c not in ("n_values", "metric")]
    return {c: summary[c].iloc[0] for c in settings if summary[c].nunique(dropna=False) == 1}


def summary_paragraph(summary: pd.DataFrame, status) -> str:
    """One paragraph: what ran, what was swept, what is fixed, which metrics, and how to read the figures."""
    fixed = constant_columns(summary)
    settings = [c for c in summary.columns if c not in STAT_COLUMNS and c not in ("n_values", "metric")]
    swept = [f"{c} ({summary[c].nunique(dropna=False)} values)" for c in settings if c not in fixed]
    metrics = sorted(summary["metric"].astype(str).unique())
    seeds = sorted(summary["n_seeds"].unique().tolist())
    text = [f"{status.done} of {status.planned} planned runs finished ({status.failed} failed, {status.pending} "
            f"pending)."]
    if swept:
        text.append("Swept: " + ", ".join(swept) + ".")
    if fixed:
        text.append("Fixed: " + ", ".join(f"{k} = {v}" for k, v in fixed.items()) + ".")
    text.append(f"{len(metrics)} metric(s): {', '.join(metrics[:12])}{' …' if len(metrics) > 12 else ''}; "
                f"{'/'.join(str(s) for s in seeds)} seed(s) per setting. Each figure shows the mean over seeds with "
                "its 95% Student-t interval; the table below lists every setting.")
    return " ".join(text)


def write_report(store: ResultStore, summary: pd.DataFrame, figures: dict[str, bytes], path: Path) -> Path:
    from spurlab.report.html import HtmlReport

    status = store.status()
    doc = HtmlReport(f"spurlab sweep: {store.root.name}",
                     subtitle=f"{status.done} finished, {status.failed} failed, {status.pending} pending "
                              f"of {status.planned} planned runs")
    doc.text(summary_paragraph(summary, status))
    if figures:
        doc.heading("Figures")
        for metric, png in figures.items():
            doc.figure(file_stem(metric), png, f"{metric}: mean over seeds, band = 95% Student-t interval")
    fixed = constant_columns(summary)
    doc.heading("Mean and 95% CI over seeds").table(
        summary.drop(columns=list(fixed)).round(6),
        caption="columns that hold one value in every row are listed once above" if fixed else None)
    failures = store.failures()
    if not failures.empty:
        doc.heading("Failed runs").table(failures[["run_id", "seed", "params", "error_type", "error"]])
    return doc.write(path)


def ci_text(mean: float, half: float) -> str:
    """``0.912 ± 0.013`` (no interval with a single seed)."""
    return f"{mean:.4g}" if half is None or math.isnan(half) else f"{mean:.4g} ± {half:.2g}"


def headline(summary: pd.DataFrame, limit: int = 20) -> pd.DataFrame:
    """A compact view of the summary for the terminal: settings, seeds and mean ± CI."""
    settings = [c for c in summary.columns if c not in STAT_COLUMNS and c != "n_values"]
    shown = summary[settings + ["n_seeds"]].copy()
    shown["mean ± 95% CI"] = [ci_text(m, h) for m, h in zip(summary["mean"], summary["ci95_half"])]
    shown = shown.loc[:, [c for c in shown.columns if shown[c].nunique(dropna=False) > 1 or c in
                          ("metric", "n_seeds", "mean ± 95% CI")]]
    return shown.head(limit)
