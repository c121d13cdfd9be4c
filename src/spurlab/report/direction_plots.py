"""Plots for failure directions: decision-value histograms and grids of ranked examples."""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from spurlab.report.plots import finish_axes, plt


def _histogram_panel(ax, series: dict[str, np.ndarray], title: str, title_size: int = 10) -> None:
    finite = [np.asarray(v, dtype=np.float64)[np.isfinite(v)] for v in series.values()]
    values = np.concatenate(finite) if finite else np.empty(0)
    bins = np.linspace(values.min(), values.max(), 40) if values.size and values.min() < values.max() else 20
    if not values.size:
        ax.text(0.5, 0.5, "no decision values\n(the class has no direction)", ha="center", va="center",
                transform=ax.transAxes, fontsize=9, color="#556")
    for name, f in zip(series, finite, strict=True):
        if f.size:
            ax.hist(f, bins=bins, alpha=0.55, density=True, label=f"{name} (n={f.size})")
    ax.axvline(0.0, color="k", lw=1, ls="--")
    finish_axes(ax, "SVM decision value (negative = flagged)", "density", title, title_size=title_size, grid=None)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))


def plot_decision_histogram(series: dict[str, np.ndarray], title: str):
    """Histogram of decision values per named subset (e.g. majority / minority, correct / error)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    _histogram_panel(ax, series, title)
    fig.tight_layout()
    return fig


def plot_decision_histograms(per_class: dict[str, dict[str, np.ndarray]], title: str, columns: int = 3):
    """One histogram panel per class, each on its own scale: the classes' SVMs are fit separately, so their
    decision values are not comparable across classes."""
    n = max(1, len(per_class))
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.0 * rows + 0.5), squeeze=False)
    for ax in axes.ravel()[len(per_class):]:
        ax.axis("off")
    for ax, (name, series) in zip(axes.ravel(), per_class.items(), strict=False):
        _histogram_panel(ax, series, f"class {name}", title_size=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_image_grid(images: np.ndarray, titles: list[str], title: str, columns: int = 8):
    """Images (n, H, W, 3) in [0, 1] in a grid, one short title each (rows spaced for the longest title)."""
    n = len(images)
    rows = max(1, -(-n // columns))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, (1.25 + 0.15 * lines) * rows + 0.4),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, text in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(text, fontsize=7, linespacing=1.05)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
