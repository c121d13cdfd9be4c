"""Figures and the headline table of the ood-failure-modes study (from its long results table)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from spurlab.report.plots import finish_axes, line_with_band, mean_std_curve, panel_row, plt


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
    fig.tight_layout()
    return fig


def fig_geometric(frame: pd.DataFrame):
    fig, (left, right) = panel_row(2, 4.75, 3.6)
    line_with_band(left, metric_curve(frame, "geometric", "spurious_share", "n_min"), "n_min", "w_sp / ||w||")
    left.axhline(0, color="grey", lw=0.8)
    for metric, colour in (("minority_acc", "tab:red"), ("majority_acc", "tab:blue")):
        line_with_band(right, metric_curve(frame, "geometric", metric, "n_min"), "n_min", metric, color=colour)
    right.set_ylim(-0.03, 1.03)
    for ax, ylabel in ((left, "spurious share"), (right, "test accuracy")):
        finish_axes(ax, "n_min (minority training points)", ylabel, xscale="log")
    fig.suptitle("Geometric skew: max-margin classifier vs minority size")
    fig.tight_layout()
    return fig


def fig_statistical(frame: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    shares = metric_curve(frame, "statistical", "spurious_share", "step", by=["p"])
    theory = metric_curve(frame, "statistical", "theory_spurious_share", "step", by=["p"])
    for p, curve in shares.groupby("p"):
        curve = curve[curve["step"] > 0]
        ax.plot(curve["step"], curve["mean"], label=f"GD, p={p:g}")
        th = theory[(theory["p"] == p) & (theory["step"] > 1)]
        if not th.empty:
            ax.plot(th["step"], th["mean"], ls="--", color=ax.lines[-1].get_color(), lw=1)
    finish_axes(ax, "GD step t", "w_sp / ||w||", "Statistical skew (dashed: ln(p/(1-p)) / (2B ln t))",
                xscale="log")
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
        for (dataset, model), part in sub.groupby(["dataset", "model"]):
            line_with_band(ax, mean_std_curve(part, x), x, f"{dataset} / {model}")
        finish_axes(ax, x, metric, title, title_size=10, xscale="log" if x in ("n_min", "n") else None,
                    legend_size=7)
    fig.suptitle("Networks on images with an injected spurious feature")
    fig.tight_layout()
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
        for metric in ("spurious_share", "minority_acc"):
            rows.append(("geometric", f"n_min={n_min:g}", metric, _mean(geo, n_min=n_min, metric=metric)))
    stat = frame[frame["experiment"] == "statistical"]
    if not stat.empty:
        steps = sorted(stat["step"].unique())
        shown = [s for s in steps if s >= 100 and np.log10(s) % 2 == 0] or steps[-1:]
        for p in sorted(stat["p"].unique()):
            for step in shown:
                for metric in ("spurious_share", "theory_spurious_share"):
                    rows.append(("statistical", f"p={p:g}, t={step:.0e}", metric,
                                 _mean(stat, p=p, step=step, metric=metric)))
    images = frame[frame["experiment"] == "images"]
    for (dataset, model, mode), part in images.groupby(["dataset", "model", "mode"]) if not images.empty else []:
        x = {"geometric": "n_min", "statistical": "p", "norm": "n"}[mode]
        metric = "w_dist_from_init" if mode == "norm" else "ood_acc"
        for value in sorted(part[x].unique()):
            rows.append(("images", f"{dataset}/{model} {mode} {x}={value:g}", metric,
                         _mean(part, metric=metric, **{x: value})))
    table = pd.DataFrame(rows, columns=["experiment", "setting", "metric", "value"])
    return table.dropna(subset=["value"]).reset_index(drop=True)
