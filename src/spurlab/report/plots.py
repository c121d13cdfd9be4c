"""Plots shared by reports and studies (matplotlib, headless).

Besides ready-made figures (``plot_group_accuracies``) this module holds the small
pieces the study figures are built from: ``mean_std_curve`` (mean and std over
seeds), ``line_with_band`` (mean line with a shaded +-std band), ``panel_row``
(one row of panels), ``finish_axes`` (labels, scale, grid, legend) and
``cycle_colour`` (the i-th colour of the default cycle).
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def cycle_colour(i: int) -> str:
    """The ``i``-th colour of matplotlib's default colour cycle (wrapping around)."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return colours[i % len(colours)]


def mean_std_curve(frame: pd.DataFrame, x: str, by: Sequence[str] | None = None,
                   value: str = "value") -> pd.DataFrame:
    """Mean and std of ``value`` (over seeds) per ``by`` + ``x``: columns ``*by, x, mean, std``."""
    keys = [*(by or []), x]
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std"])
    return frame.groupby(keys, dropna=False)[value].agg(["mean", "std"]).reset_index()


def line_with_band(ax, curve: pd.DataFrame, x: str, label: str | None = None, band_alpha: float = 0.15,
                   **style) -> None:
    """``curve["mean"]`` against ``curve[x]`` with a shaded +-std band where the std is known."""
    ax.plot(curve[x], curve["mean"], label=label, **{"marker": "o", "ms": 4, **style})
    std = curve["std"]
    if std.notna().any():
        ax.fill_between(curve[x], curve["mean"] - std.fillna(0), curve["mean"] + std.fillna(0),
                        alpha=band_alpha, color=ax.lines[-1].get_color())


def panel_row(n: int, width: float, height: float, **subplots):
    """``(fig, axes)``: ``n`` panels side by side, each ``width`` x ``height`` inches; ``axes`` is 1-D."""
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, **subplots)
    return fig, axes[0]


def finish_axes(ax, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None, *,
                title_size: float | None = None, xscale: str | None = None, yscale: str | None = None,
                ylim: tuple[float, float] | None = None, grid: str | None = "both",
                legend_size: float | None = 8, legend_cols: int = 1) -> None:
    """Labels, title, scales, limits, a light grid (``"both"``, ``"x"``, ``"y"`` or None) and a legend.

    Call it after plotting: the legend (``legend_size=None``: none) lists the labelled artists
    drawn so far, and is left out when there are none.
    """
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    if xscale is not None:
        ax.set_xscale(xscale)
    if yscale is not None:
        ax.set_yscale(yscale)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if grid is not None:
        ax.grid(axis=grid, alpha=0.3)
    if legend_size is not None and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size, ncol=legend_cols)


def plot_group_accuracies(table: pd.DataFrame, title: str = "Accuracy per group",
                          value: str = "accuracy", hue: str = "split"):
    """Grouped bars: one cluster per group name, one bar per ``hue`` value."""
    names = list(dict.fromkeys(table["name"]))
    hues = list(dict.fromkeys(table[hue]))
    width = 0.8 / max(len(hues), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 3.8))
    x = np.arange(len(names))
    for i, h in enumerate(hues):
        sub = table[table[hue] == h].set_index("name").reindex(names)
        bars = ax.bar(x + (i - (len(hues) - 1) / 2) * width, sub[value].to_numpy(), width, label=str(h))
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    finish_axes(ax, ylabel=value.replace("_", " "), title=title, ylim=(0, 1.12), grid="y", legend_size=None)
    ax.legend(fontsize=8, ncol=len(hues), loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    fig.tight_layout()
    return fig
