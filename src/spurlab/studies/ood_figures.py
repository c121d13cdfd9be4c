"""Figures and the headline table of the ood-failure-modes study (from its long results table)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def metric_curve(frame: pd.DataFrame, experiment: str, metric: str, x: str,
                 by: list[str] | None = None) -> pd.DataFrame:
    """Mean and std over seeds of ``metric`` against ``x`` (one curve per ``by`` value)."""
    sub = frame[(frame["experiment"] == experiment) & (frame["metric"] == metric)]
    keys = (by or []) + [x]
    if sub.empty:
        return pd.DataFrame(columns=keys + ["mean", "std"])
    return sub.groupby(keys, dropna=False)["value"].agg(["mean", "std"]).reset_index()


def _errorline(ax, curve: pd.DataFrame, x: str, label: str, **style) -> None:
    ax.plot(curve[x], curve["mean"], marker="o", ms=4, label=label, **style)
    if curve["std"].notna().any():
        ax.fill_between(curve[x], curve["mean"] - curve["std"].fillna(0), curve["mean"] + curve["std"].fillna(0),
                        alpha=0.15, color=ax.lines[-1].get_color())


def fig_norm_growth(frame: pd.DataFrame, margin: float):
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    _errorline(ax, metric_curve(frame, "norm_growth", "maxmargin_norm", "n"), "n", "max-margin norm")
    ax.axhline(1.0 / margin, ls="--", color="grey", label=f"1/gamma = {1.0 / margin:g}")
    ax.set_xscale("log")
    ax.set_xlabel("n (training points)")
    ax.set_ylabel("||w|| on invariant features")
    ax.set_title("Max-margin norm grows with n")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fig_geometric(frame: pd.DataFrame):
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    _errorline(left, metric_curve(frame, "geometric", "spurious_share", "n_min"), "n_min", "w_sp / ||w||")
    left.axhline(0, color="grey", lw=0.8)
    left.set_ylabel("spurious share")
    for metric, colour in (("minority_acc", "tab:red"), ("majority_acc", "tab:blue")):
        _errorline(right, metric_curve(frame, "geometric", metric, "n_min"), "n_min", metric, color=colour)
    right.set_ylabel("test accuracy")
    right.set_ylim(-0.03, 1.03)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("n_min (minority training points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
    ax.set_xscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel("w_sp / ||w||")
    ax.set_title("Statistical skew (dashed: ln(p/(1-p)) / (2B ln t))")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.7), squeeze=False)
    for ax, (mode, metric, x, title) in zip(axes[0], panels):
        sub = images[(images["mode"] == mode) & (images["metric"] == metric)]
        for (dataset, model), part in sub.groupby(["dataset", "model"]):
            curve = part.groupby(x)["value"].agg(["mean", "std"]).reset_index()
            _errorline(ax, curve, x, f"{dataset} / {model}")
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.set_title(title, fontsize=10)
        if x in ("n_min", "n"):
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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
