"""Figures of the critical-neurons study (matplotlib, headless)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from spurlab.report.plots import (cycle_colour, finish_axes, integer_axis, legend_below, line_style, line_with_band,
                                  mean_std_curve, panel_grid, panel_row, plot_group_accuracies)


def _median_sigma(sigmas) -> float:
    return float(sorted(float(s) for s in sigmas)[(len(sigmas) - 1) // 2]) if sigmas else float("nan")


def _one_variant(frame: pd.DataFrame, mode: str, sigma: float) -> pd.DataFrame:
    """Rows of one mode; random modes at ``sigma``, rewind at its smallest depth."""
    sub = frame[frame["mode"] == mode]
    if mode.startswith("random"):
        sub = sub[np.isclose(sub["sigma"], sigma)]
    elif mode == "rewind" and not sub.empty:
        sub = sub[sub["rewind_epochs"] == sub["rewind_epochs"].min()]
    return sub


def _minority_majority_lines(ax, means: pd.DataFrame, i: int, label: str) -> None:
    """Solid: mean over minority groups; dashed with hollow markers: majority. The marker tells unit sets apart
    where their lines coincide."""
    style = {"color": cycle_colour(i), "ms": 4, **line_style(i, dashes=False)}
    if True in means:
        ax.plot(means.index, means[True], "-", label=f"{label} minority", **style)
    if False in means:
        ax.plot(means.index, means[False], "--", mfc="none", alpha=0.7, label=f"{label} majority", **style)


def delta_vs_k(evidence: pd.DataFrame, minority: list[int], modes: list[str], sigmas: list[float]):
    structured = evidence[~evidence["unit_set"].str.startswith("magnitude")]
    sigma = _median_sigma(sigmas)
    splits = ["train", "test"]
    fig, axes = panel_grid(len(modes), len(splits), 3.3, 2.8, sharey=True)
    for r, split in enumerate(splits):
        for c, mode in enumerate(modes):
            ax = axes[r * len(modes) + c]
            sub = _one_variant(structured[structured["split"] == split], mode, sigma)
            for i, (label, rows) in enumerate(sub.groupby("unit_set", sort=False)):
                rows = rows.assign(minority=rows["group"].isin(minority))
                _minority_majority_lines(ax, rows.groupby(["k", "minority"])["delta"].mean().unstack("minority"),
                                         i, label)
            ax.axhline(0, color="grey", lw=0.6)
            title = mode + (f" σ={sigma:g}" if mode.startswith("random") else "")
            finish_axes(ax, title=f"{split}: {title}", title_size=9, legend_size=None)
            ax.set_xlabel("k (edited units)", fontsize=8)
            integer_axis(ax)
        axes[r * len(modes)].set_ylabel("Δ group accuracy")
    legend_below(fig, axes)
    return fig


def delta_vs_sigma(evidence: pd.DataFrame, minority: list[int], k: int = 3):
    sub = evidence[(evidence["split"] == "train") & evidence["mode"].str.startswith("random")]
    sub = sub[~sub["unit_set"].str.startswith("magnitude")]
    sub = sub[sub["k"] == min(k, int(sub["k"].max()))] if not sub.empty else sub
    fig, axes = panel_row(2, 4, 3.4, sharey=True)
    for ax, mode in zip(axes, ("random_init", "random_noise")):
        rows = sub[sub["mode"] == mode].assign(minority=lambda f: f["group"].isin(minority))
        for i, (label, part) in enumerate(rows.groupby("unit_set", sort=False)):
            _minority_majority_lines(ax, part.groupby(["sigma", "minority"])["delta"].mean().unstack("minority"),
                                     i, label)
        finish_axes(ax, "σ", title=f"train, {mode}", title_size=9, xscale="log", legend_size=None)
    axes[0].set_ylabel("Δ group accuracy")
    legend_below(fig, axes)
    return fig


def top_units(unit_sets, n: int = 10):
    structured = [us for us in unit_sets if us.units.granularity == "channel"]
    fig, axes = panel_row(max(len(structured), 1), 3.4, 3.6)
    for ax, us in zip(axes, structured):
        top = us.units.top(min(n, len(us.units)))
        scores = top.scores / max(float(np.max(np.abs(top.scores))), 1e-12)
        ax.barh(np.arange(len(top))[::-1], scores, color="#3b6fd8")
        ax.set_yticks(np.arange(len(top))[::-1], top.labels(), fontsize=7)
        ax.set_title(us.label, fontsize=9)
        ax.set_xlabel("score / max", fontsize=8)
    fig.tight_layout()
    return fig


def framework_curves(curves: pd.DataFrame, group_names: list[str]):
    cols = [c for c in curves.columns if c.startswith("test_g")]
    frame = curves.assign(worst=curves[cols].min(axis=1), mean=curves[cols].mean(axis=1))
    fig, axes = panel_row(2, 4.5, 3.4, sharex=True)
    for ax, metric, title in ((axes[0], "worst", "test worst-group accuracy"),
                              (axes[1], "mean", "test mean group accuracy")):
        for i, (method, rows) in enumerate(frame.groupby("method", sort=False)):
            line_with_band(ax, mean_std_curve(rows, "epoch", value=metric), "epoch", method, band_alpha=0.2, ms=3,
                           **line_style(i))
        finish_axes(ax, "fine-tuning epoch", "accuracy", title=title, title_size=9, legend_size=None)
        integer_axis(ax)
    legend_below(fig, axes)
    return fig


def group_gap(evidence: pd.DataFrame, group_names: list[str]):
    base = evidence.attrs["base"].copy()
    base["name"] = [group_names[g] for g in base["group"]]
    base = base.rename(columns={"acc": "accuracy"})
    return plot_group_accuracies(base, title="ERM accuracy per group: train vs test")
