"""Plots shared by reports and studies (matplotlib, headless).

Besides ready-made figures (``plot_group_accuracies``) this module holds the small
pieces the study figures are built from: ``mean_std_curve`` (mean and std over
seeds), ``line_with_band`` (mean line with a shaded +-std band), ``panel_row``
(panels side by side, wrapped so no figure is wider than the page), ``finish_axes``
(labels, scale, grid, legend), ``cycle_colour`` (the i-th colour of the default cycle),
``line_style`` (a marker and dash pattern per line, so lines drawn on top of each
other stay distinguishable), ``integer_axis`` (integer ticks on an axis that counts)
and ``legend_below`` (one legend under the panels, inside the figure, sized to fit).

Layout rules every report figure keeps: at most ``MAX_FIGURE_WIDTH`` inches wide (1280 px
at the reports' 110 dpi), legend text of at least 7 pt with each entry once, and integer
tick labels on axes that count things (epochs, n, steps, units).
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

# 1280 px, the page width reports are checked at, at the 110 dpi of report.html.figure_png.
MAX_FIGURE_WIDTH = 1280 / 110
LEGEND_SIZE = 8
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", "-.", ":")


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


def line_style(i: int, dashes: bool = True) -> dict:
    """Marker (and, with ``dashes``, dash pattern) of the ``i``-th line of a panel: lines that coincide stay
    distinguishable. Pass ``dashes=False`` when the line style already means something."""
    style = {"marker": MARKERS[i % len(MARKERS)]}
    if dashes:
        style["ls"] = LINE_STYLES[(i // len(MARKERS) + i) % len(LINE_STYLES)]
    return style


def panel_row(n: int, width: float, height: float, **subplots):
    """``(fig, axes)``: ``n`` panels of ``width`` x ``height`` inches side by side, wrapped into further rows
    when one row would be wider than ``MAX_FIGURE_WIDTH``; ``axes`` is 1-D (length ``n``)."""
    return panel_grid(n, 1, width, height, **subplots)


def panel_grid(n: int, rows: int, width: float, height: float, **subplots):
    """``(fig, axes)``: ``rows`` x ``n`` panels of ``width`` x ``height`` inches; a row wider than
    ``MAX_FIGURE_WIDTH`` gets panels up to a quarter narrower, else wraps. ``axes`` is 1-D, row-major
    (``rows * n`` panels); spare cells are hidden."""
    cols = n if n * 0.75 * width <= MAX_FIGURE_WIDTH else max(1, int(MAX_FIGURE_WIDTH // width))
    width = min(width, MAX_FIGURE_WIDTH / cols)
    lines = -(-n // cols)
    fig, grid = plt.subplots(rows * lines, cols, figsize=(width * cols, height * rows * lines), squeeze=False,
                             **subplots)
    axes = []
    for r in range(rows):
        cells = grid[r * lines:(r + 1) * lines].ravel()
        for ax in cells[n:]:
            ax.axis("off")
        axes += list(cells[:n])
    return fig, np.array(axes, dtype=object)


def integer_axis(ax, axis: str = "x") -> None:
    """Integer tick locations and labels on an axis that counts (epochs, n, steps, units); call it after
    plotting and after the scale is set. On a log scale: a few integer steps within one decade, 1-2-5 steps
    within two, else powers of ten, labelled as whole numbers, and no minor-tick labels to overlap them."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    if target.get_scale() != "log":
        target.set_major_locator(MaxNLocator(integer=True))
        return
    low, high = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    decades = np.log10(high / max(low, 1e-12))
    if decades <= 1:  # 1-2-5 steps might leave no tick inside a narrow range (e.g. 300..400)
        target.set_major_locator(MaxNLocator(nbins=4, integer=True))
    else:
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
    target.set_major_formatter(FuncFormatter(_count_label))
    target.set_minor_formatter(NullFormatter())


def _count_label(value: float, _pos=None) -> str:
    if 1 <= value < 1e5:
        return f"{value:,.0f}"
    exponent = np.log10(value) if value > 0 else np.nan
    return f"$10^{{{exponent:.0f}}}$" if np.isfinite(exponent) and exponent == round(exponent) else f"{value:g}"


def unique_legend_entries(*axes) -> tuple[list, list[str]]:
    """The labelled artists of ``axes``, each label once (first occurrence wins)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def legend_below(fig, axes, fontsize: float = LEGEND_SIZE, max_columns: int = 4):
    """One legend for the figure under its panels (each label once), inside the figure and no wider than it;
    lays the figure out (``tight_layout``) around it. Returns the legend, or None when nothing is labelled."""
    handles, labels = unique_legend_entries(*np.ravel(axes))
    if not handles:
        fig.tight_layout()
        return None
    renderer = fig.canvas.get_renderer()
    for ncol in range(min(max_columns, len(labels)), 0, -1):
        legend = fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=fontsize, frameon=False)
        if legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width or ncol == 1:
            break
        legend.remove()
    height = legend.get_window_extent(renderer).height / fig.bbox.height
    fig.tight_layout(rect=(0, min(height + 0.01, 0.6), 1, 1))
    return legend


def finish_axes(ax, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None, *,
                title_size: float | None = None, xscale: str | None = None, yscale: str | None = None,
                ylim: tuple[float, float] | None = None, grid: str | None = "both",
                legend_size: float | None = LEGEND_SIZE, legend_cols: int = 1) -> None:
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
