"""Figures and the headline table of the ``spurious-memorization`` study."""
from __future__ import annotations

import numpy as np
import pandas as pd

from spurlab.probes.memorization import gamma, gamma_at_ratio
from spurlab.report.plots import (cycle_colour, finish_axes, integer_axis, legend_below, line_style, panel_row,
                                  plt)

KEYS = ["model", "activation", "alpha", "N", "k", "d", "dataset", "frame_width"]


def wide(frame: pd.DataFrame, experiment: str | tuple[str, ...]) -> pd.DataFrame:
    """One row per setting (mean over seeds), one column per metric."""
    experiments = (experiment,) if isinstance(experiment, str) else experiment
    sub = frame[frame["experiment"].isin(experiments)]
    if sub.empty:
        return pd.DataFrame()
    keys = ["experiment", *[k for k in KEYS if k in sub.columns]]
    out = sub.groupby([*keys, "metric"], dropna=False, sort=False)["value"].mean().unstack("metric")
    return out.reset_index().rename_axis(columns=None)


def _setting_label(row: pd.Series, with_model: bool = False) -> str:
    parts = [str(row["model"])] if with_model else []
    if isinstance(row.get("activation"), str):
        parts.append(row["activation"])
    if not with_model:
        parts.append(f"α={row['alpha']:g}")
    return ", ".join(parts)


def _accuracy_panel(ax, table: pd.DataFrame, group_keys: list[str], with_model: bool) -> None:
    for i, (_, grp) in enumerate(table.groupby(group_keys, dropna=False, sort=False)):
        grp = grp.sort_values("N")
        style = {"color": cycle_colour(i), **line_style(i, dashes=False)}  # the marker tells coinciding lines apart
        label = _setting_label(grp.iloc[0], with_model)
        ax.plot(grp["N"], grp["spurious_acc"], "-", label=f"{label} spurious", **style)
        if "test_acc" in grp:
            ax.plot(grp["N"], grp["test_acc"], "--", mfc="none", alpha=0.7, label=f"{label} test", **style)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    finish_axes(ax, "N (training points)", "accuracy", xscale="log", ylim=(0.35, 1.03), legend_size=None)
    integer_axis(ax)


def synthetic_accuracy_figure(table: pd.DataFrame):
    models = list(dict.fromkeys(table["model"]))
    fig, axes = panel_row(len(models), 6, 4.2)
    for ax, model in zip(axes, models):
        sub = table[table["model"] == model]
        _accuracy_panel(ax, sub, ["activation", "alpha"], with_model=False)
        ax.set_title(f"{model.upper()} (d={int(sub['d'].iloc[0])}, k={int(sub['k'].iloc[0])})")
    legend_below(fig, axes)
    return fig


def image_accuracy_figure(table: pd.DataFrame):
    panels = list(dict.fromkeys(zip(table["dataset"], table["frame_width"])))
    fig, axes = panel_row(len(panels), 6, 4.2)
    for ax, (dataset, width) in zip(axes, panels):
        sub = table[(table["dataset"] == dataset) & (table["frame_width"] == width)]
        _accuracy_panel(ax, sub, ["model", "activation"], with_model=True)
        ax.set_title(f"{dataset}, noise frame {int(width)} px (α={sub['alpha'].iloc[0]:.2f})")
    legend_below(fig, axes)
    return fig


def alignment_vs_alpha_figure(table: pd.DataFrame):
    models = list(dict.fromkeys(table["model"]))
    grid = np.linspace(0.0, 1.0, 101)
    fig, axes = panel_row(len(models), 6, 4.2)
    for ax, model in zip(axes, models):
        sub = table[table["model"] == model]
        low_n, high_n = sub["N"].min(), sub["N"].max()
        d = sub["d"].iloc[0]
        for i, activation in enumerate(dict.fromkeys(sub["activation"])):
            colour = cycle_colour(i)
            act = sub[sub["activation"] == activation]
            for j, (n, regime, style) in enumerate(((low_n, "low_n", ":"), (high_n, "high_n", "-"))):
                pts = act[act["N"] == n].sort_values("alpha")
                marker = line_style(2 * i + j)["marker"]  # one per activation and N: coinciding points differ
                ax.plot(pts["alpha"], pts["feature_alignment"], marker, color=colour, ms=5,
                        label=f"{activation}: F at N/d={n / d:g}")
                ax.plot(grid, [gamma(model, activation, a, regime) for a in grid], style, color=colour, lw=1,
                        label=f"{activation}: γ {regime.replace('_', ' ')}")
        finish_axes(ax, "α (spurious fraction)", "feature alignment F",
                    f"{model.upper()}: measured F vs γ (d={int(d)})", legend_size=7)
    fig.tight_layout()
    return fig


def alignment_vs_n_figure(table: pd.DataFrame):
    models = list(dict.fromkeys(table["model"]))
    alphas = [a for a in (0.5, 0.25) if a in set(table["alpha"])] or sorted(set(table["alpha"]))[:2]
    fig, axes = panel_row(len(models), 6, 4.2)
    for ax, model in zip(axes, models):
        sub = table[(table["model"] == model) & table["alpha"].isin(alphas)]
        groups = sub.groupby(["activation", "alpha"], sort=False)
        for i, ((activation, alpha), grp) in enumerate(groups):
            colour = cycle_colour(i)
            grp = grp.sort_values("N")
            ratio = grp["N"] / grp["d"]
            ax.plot(ratio, grp["feature_alignment"], line_style(i)["marker"], color=colour,
                    label=f"{activation}, α={alpha:g}: F")
            grid = np.geomspace(ratio.min(), ratio.max(), 60)
            ax.plot(grid, [gamma_at_ratio(model, activation, alpha, r) for r in grid], "-", color=colour, lw=1)
            ax.axhline(grp["gamma_low_n"].iloc[0], color=colour, ls=":", lw=1)
            ax.axhline(grp["gamma_high_n"].iloc[0], color=colour, ls="--", lw=1)
        finish_axes(ax, "N / d", "feature alignment F", f"{model.upper()}: F vs N/d", xscale="log",
                    legend_size=None)
    for ls, meaning in ((":", "γ low N"), ("--", "γ high N"), ("-", "γ at finite N/d")):
        axes[0].plot([], [], ls=ls, color="grey", lw=1, label=meaning)
    legend_below(fig, axes)
    return fig


def memorization_figure(table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    regime_gamma = np.where(table["N"] < table["d"], table["gamma_low_n"], table["gamma_high_n"])
    for i, model in enumerate(dict.fromkeys(table["model"])):
        mask = (table["model"] == model).to_numpy()
        sub = table[mask]
        colour = cycle_colour(i)
        ax.scatter(sub["feature_alignment"] * sub["loo_error"], sub["memorization_cov"], color=colour, s=18,
                   label=f"{model.upper()}: measured F × LOO")
        ax.scatter(regime_gamma[mask] * sub["loo_error"], sub["memorization_cov"], facecolors="none",
                   edgecolors=colour, s=28, label=f"{model.upper()}: γ × LOO")
    top = float(np.nanmax([table["memorization_cov"].max(), 1e-3])) * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=0.8)
    finish_axes(ax, "alignment × leave-one-out error", "memorization Cov(f(z^s), g)",
                "Memorization = alignment × stability", legend_size=7)
    fig.tight_layout()
    return fig


def add_figures(result, frame: pd.DataFrame) -> None:
    """Add every figure whose experiment ran."""
    synthetic = wide(frame, "synthetic")
    if not synthetic.empty:
        result.add_figure("synthetic_accuracy_vs_n", synthetic_accuracy_figure(synthetic),
                          "Spurious accuracy (solid; fraction of training points whose spurious query alone "
                          "gets the label) and test accuracy (dashed) vs N. Chance is 0.5.")
        result.add_figure("memorization_vs_alignment_x_loo", memorization_figure(synthetic),
                          "Memorization Cov(f(z^s, θ*), g) against alignment × leave-one-out error: filled with the "
                          "measured F, hollow with γ of the regime (low N if N < d, else high N). The line is y = x.")
    images = wide(frame, ("images", "networks"))
    if not images.empty:
        result.add_figure("image_accuracy_vs_n", image_accuracy_figure(images),
                          "Noise-framed images: spurious accuracy (solid; frame only, image zeroed) and test "
                          "accuracy (dashed) vs N, for kernels and (full run) trained networks.")
    alignment = wide(frame, "alignment")
    if not alignment.empty:
        result.add_figure("alignment_vs_alpha", alignment_vs_alpha_figure(alignment),
                          "Measured feature alignment F at the smallest and the largest N/d against the closed "
                          "forms γ for N ≪ d (dotted) and d ≪ N ≪ d² (solid).")
        result.add_figure("alignment_vs_n_over_d", alignment_vs_n_figure(alignment),
                          "Measured F (points) moves from γ(low N) towards γ(high N) as N/d grows; the line is "
                          "its finite-N/d value (1 − w) γ(high N) + w α with w ≈ d/N (gamma_at_ratio).")


def headline_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per kernel setting, the metrics at the largest N; for trained networks every N (with train accuracy)."""
    table = wide(frame, ("synthetic", "images", "networks"))
    if table.empty:
        return table
    kernels = table[table["experiment"] != "networks"]
    rows = kernels.loc[kernels.groupby(["experiment", "model", "activation", "alpha", "dataset"], dropna=False,
                                       sort=False)["N"].idxmax()] if not kernels.empty else kernels
    rows = pd.concat([rows, table[table["experiment"] == "networks"].sort_values(["model", "N"])])
    columns = ["experiment", "dataset", "model", "activation", "alpha", "N", "train_acc", "test_acc", "spurious_acc",
               "chance_acc", "feature_alignment", "gamma_low_n", "gamma_high_n"]
    return rows[[c for c in columns if c in rows.columns]].reset_index(drop=True)
