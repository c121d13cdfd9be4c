"""Fix: the robust training methods compared side by side on the audited dataset."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spurlab.audit.findings import FixesFindings
from spurlab.data.grouped import DatasetSplits
from spurlab.report.plots import plt

FULL_METHODS = ("erm", "reweight", "upsample", "groupdro", "jtt", "dfr", "failure_directions", "pruned_contrastive")
QUICK_METHODS = ("erm", "groupdro", "jtt", "dfr", "failure_directions")


def usable_methods(splits: DatasetSplits, methods: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split ``methods`` into those the dataset's group labels allow and notes on the others."""
    from spurlab.train.methods import get_method_class

    usable, notes = [], []
    for name in methods:
        needs = get_method_class(name)().group_label_needs()
        missing = [s for s in needs if s not in splits or not splits[s].has_groups]
        if missing:
            notes.append(f"{name} skipped: it needs group labels on {', '.join(missing)}")
        else:
            usable.append(name)
    return usable, notes


def compare_fixes(splits: DatasetSplits, methods: tuple[str, ...], seeds: tuple[int, ...], model: str,
                  epochs: int, device: str) -> FixesFindings:
    from spurlab.train.methods import compare_methods, summarize_comparison

    usable, notes = usable_methods(splits, methods)
    frame = compare_methods(splits, usable, seeds=seeds, model=model, epochs=epochs, device=device)
    summary = summarize_comparison(frame, split="test")
    return FixesFindings(runs=frame, summary=summary, notes=notes,
                         figures={"fixes": (_fixes_figure(summary), "Worst-group and mean-group test accuracy "
                                            "per method: mean over seeds, bars show the seeds' standard deviation.")})


def _fixes_figure(summary: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(summary)), 3.6))
    x = np.arange(len(summary))
    for offset, metric, colour in ((-0.2, "worst_group_acc", "tab:red"), (0.2, "mean_group_acc", "tab:blue")):
        bars = ax.bar(x + offset, summary[f"{metric}_mean"], 0.4, yerr=summary[f"{metric}_std"],
                      color=colour, alpha=0.8, capsize=3, label=metric.replace("_", " "))
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(x, summary["method"], rotation=15, fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def best_fix(summary: pd.DataFrame, baseline: str = "erm") -> dict[str, Any] | None:
    """The method with the highest mean worst-group test accuracy, against the baseline."""
    if summary.empty:
        return None
    best = summary.loc[summary["worst_group_acc_mean"].idxmax()]
    base = summary[summary["method"] == baseline]
    return {"method": str(best["method"]), "worst_group_acc": float(best["worst_group_acc_mean"]),
            "worst_group_acc_std": float(best["worst_group_acc_std"]),
            "baseline_worst_group_acc": float(base["worst_group_acc_mean"].iloc[0]) if len(base) else None}
