"""Figures and the headline table of the ood-failure-modes study (from its long results table)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from spurlab.report.plots import (finish_axes, integer_axis, legend_below, line_style, line_with_band,
                                  mean_std_curve, panel_row, plt)


def metric_curve(frame: pd.DataFrame, experiment: str, metric: str, x: str,
                 by: list[str] | None = None) -> pd.DataFrame:
    """Mean and std over seeds of ``metric`` against ``x`` (one curve per ``by`` value)."""
    sub = frame[(frame["experiment"] == experiment) & (frame["metric"] == metric)]
    return mean_std_curve(sub, x, by=by)


def fig_norm_growth(frame: pd.DataFrame, margin: float):
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    line_with_band(ax, metric_curve(frame, "norm_growth", "maxmargin_norm", "n"), "n", "max-margin norm")
    ax.axhline(1.0 / margin, ls="--", color="grey", label=f"1/gamma = {1.0 / margin:g}")
    finish_axes(ax, "n (training points)", "||w|| on invariant features", "Max-margin norm grows with n",
                xscale="log")
    integer_axis(ax)
    fig.tight_layout()
    return fig


def fig_geometric(frame: pd.DataFrame):
    fig, (left, right) = panel_row(2, 4.75, 3.6)
    line_with_band(left, metric_curve(frame, "geometric", "spurious_share", "n_min"), "n_min", "w_sp / ||w||")
    left.axhline(0, color="grey", lw=0.8)
    for i, (metric, colour) in enumerate((("minority_acc", "tab:red"), ("majority_acc", "tab:blue"))):
        line_with_band(right, metric_curve(frame, "geometric", metric, "n_min"), "n_min", metric, color=colour,
                       **line_style(i))
    right.set_ylim(-0.03, 1.03)
    for ax, ylabel in ((left, "spurious share"), (right, "test accuracy")):
        finish_axes(ax, "n_min (minority training points)", ylabel, xscale="log")
        integer_axis(ax)
    fig.suptitle("Geometric skew: max-margin classifier vs minority size")
    fig.tight_layout()
    return fig


def fig_statistical(frame: pd.DataFrame, experiment: str = "statistical"):
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    shares = metric_curve(frame, experiment, "spurious_share", "step", by=["p"])
    theory = metric_curve(frame, experiment, "theory_spurious_share", "step", by=["p"])
    for p, curve in shares.groupby("p"):
        curve = curve[curve["step"] > 0]
        ax.plot(curve["step"], curve["mean"], label=f"GD, p={p:g}")
        th = theory[(theory["p"] == p) & (theory["step"] > 1)]
        if not th.empty:
            ax.plot(th["step"], th["mean"], ls="--", color=ax.lines[-1].get_color(), lw=1)
    title = "Statistical skew" + (", D = 1000" if experiment == "statistical_highd" else "")
    finish_axes(ax, "GD step t", "w_sp / ||w||", f"{title} (dashed: ln(p/(1-p)) / (2B ln t))", xscale="log")
    integer_axis(ax)
    fig.tight_layout()
    return fig


IMAGE_PANELS = (("geometric", "ood_acc", "n_min", "OOD accuracy vs unique minority size"),
                ("statistical", "ood_acc", "p", "OOD accuracy vs duplication p"),
                ("norm", "w_dist_from_init", "n", "||W - W0|| vs n"))


def fig_images(frame: pd.DataFrame):
    images = frame[frame["experiment"] == "images"]
    panels = [panel for panel in IMAGE_PANELS if (images["mode"] == panel[0]).any()] if not images.empty else []
    if not panels:
        return None
    fig, axes = panel_row(len(panels), 4.6, 3.7)
    for ax, (mode, metric, x, title) in zip(axes, panels):
        sub = images[(images["mode"] == mode) & (images["metric"] == metric)]
        for i, ((dataset, model), part) in enumerate(sub.groupby(["dataset", "model"])):
            style = line_style(i, dashes=False)
            line_with_band(ax, mean_std_curve(part, x), x, f"{dataset} / {model}", **style)
            if mode == "norm":  # the same runs compared after an equal number of steps
                equal = images[(images["mode"] == mode) & (images["metric"] == "w_dist_equal_steps")
                               & (images["dataset"] == dataset) & (images["model"] == model)]
                if not equal.empty:
                    line_with_band(ax, mean_std_curve(equal, x), x, f"{dataset} / {model}, equal steps",
                                   color=ax.lines[-1].get_color(), ls="--", mfc="none", **style)
        finish_axes(ax, x, metric, title, title_size=10, xscale="log" if x in ("n_min", "n") else None,
                    legend_size=None)
        if x in ("n_min", "n"):
            integer_axis(ax)
    fig.suptitle("Networks on images with an injected spurious feature")
    legend_below(fig, axes)
    return fig


# ------------------------------------------------------------------ headline table
def _mean(frame: pd.DataFrame, **where) -> float:
    mask = np.ones(len(frame), bool)
    for col, val in where.items():
        mask &= (frame[col] == val).to_numpy()
    return float(frame.loc[mask, "value"].mean()) if mask.any() else float("nan")


def headline_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The numbers worth reading first, averaged over seeds."""
    rows = []
    norm = frame[frame["experiment"] == "norm_growth"]
    for n in sorted(norm["n"].unique()) if not norm.empty else []:
        rows.append(("norm_growth", f"n={n:g}", "maxmargin_norm", _mean(norm, n=n)))
    geo = frame[frame["experiment"] == "geometric"]
    for n_min in sorted(geo["n_min"].unique(), reverse=True) if not geo.empty else []:
        for metric in ("spurious_share", "minority_acc"):  # a hard-margin solution separates every training point
            rows.append(("geometric", f"n_min={n_min:g}", metric, _mean(geo, n_min=n_min, metric=metric), 1.0, 1.0))
    for experiment in ("statistical", "statistical_highd"):
        rows += _statistical_rows(frame[frame["experiment"] == experiment], experiment)
    images = frame[frame["experiment"] == "images"]
    for (dataset, model, mode), part in images.groupby(["dataset", "model", "mode"]) if not images.empty else []:
        x = {"geometric": "n_min", "statistical": "p", "norm": "n"}[mode]
        metrics = IMAGE_HEADLINE_METRICS[mode]
        for value in sorted(part[x].unique()):
            setting = f"{dataset}/{model} {mode} {x}={value:g}"
            train_acc = _mean(part, metric="train_acc", **{x: value})
            fitted = _mean(part, metric="fitted", **{x: value})
            for metric in metrics:
                rows.append(("images", setting, metric, _mean(part, metric=metric, **{x: value}), train_acc, fitted))
    rows = [row if len(row) == 6 else (*row, np.nan, np.nan) for row in rows]
    table = pd.DataFrame(rows, columns=["experiment", "setting", "metric", "value", "train_acc", "fitted"])
    return table.dropna(subset=["value"]).reset_index(drop=True)


IMAGE_HEADLINE_METRICS = {"geometric": ("ood_acc", "majority_acc"), "statistical": ("ood_acc", "majority_acc"),
                          "norm": ("w_dist_from_init", "steps", "w_dist_equal_steps", "equal_steps")}


def _statistical_rows(stat: pd.DataFrame, experiment: str) -> list[tuple]:
    """Spurious share against the overlay at t = 1e2, 1e4, ...; minority (OOD) accuracy at the last step."""
    if stat.empty:
        return []
    rows = []
    steps = sorted(stat["step"].unique())
    shown = [s for s in steps if s >= 100 and np.log10(s) % 2 == 0] or steps[-1:]
    last = steps[-1]
    for p in sorted(stat["p"].unique()):
        for step in shown:
            for metric in ("spurious_share", "theory_spurious_share"):
                rows.append((experiment, f"p={p:g}, t={step:.0e}", metric, _mean(stat, p=p, step=step, metric=metric)))
        train_acc = _mean(stat, p=p, step=last, metric="train_acc")
        fitted = float(np.mean(stat.loc[(stat["p"] == p) & (stat["metric"] == "train_acc"), "value"] == 1.0))
        for metric in ("minority_acc", "majority_acc"):
            rows.append((experiment, f"p={p:g}, t={last:.0e}", metric, _mean(stat, p=p, step=last, metric=metric),
                         train_acc, fitted))
    return rows
