"""Plots shared by reports and studies (matplotlib, headless)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


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
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(value.replace("_", " "))
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=len(hues), loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
