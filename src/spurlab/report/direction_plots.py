"""Plots for failure directions: decision-value histograms and grids of ranked examples."""
from __future__ import annotations

import numpy as np

from spurlab.report.plots import finish_axes, plt


def plot_decision_histogram(series: dict[str, np.ndarray], title: str):
    """Histogram of decision values per named subset (e.g. majority / minority, correct / error)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    finite = [v[np.isfinite(v)] for v in series.values()]
    values = np.concatenate(finite) if finite else np.empty(0)
    bins = np.linspace(values.min(), values.max(), 40) if values.size and values.min() < values.max() else 20
    for name, f in zip(series, finite, strict=True):
        if f.size:
            ax.hist(f, bins=bins, alpha=0.55, density=True, label=f"{name} (n={f.size})")
    ax.axvline(0.0, color="k", lw=1, ls="--")
    finish_axes(ax, "SVM decision value (negative = flagged)", "density", title, title_size=10, grid=None)
    fig.tight_layout()
    return fig


def plot_image_grid(images: np.ndarray, titles: list[str], title: str, columns: int = 8):
    """Images (n, H, W, 3) in [0, 1] in a grid, one short title each."""
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.45 * rows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, text in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(text, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
