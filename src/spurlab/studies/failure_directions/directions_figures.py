"""Headline table and figures of the failure-directions study."""
from __future__ import annotations

import numpy as np
import pandas as pd

from spurlab.report.direction_plots import plot_decision_histograms
from spurlab.report.plots import MAX_FIGURE_WIDTH, finish_axes, legend_below, line_style, panel_row, plt

HEADLINE_COLUMNS = {"svm_cv_balanced_acc": "svm_cv_bal_acc", "error_auroc": "error_auroc",
                    "minority_share_of_errors": "minority_share_of_errors",
                    "flag_minority_precision": "flag_minority_precision", "minority_recall": "minority_recall",
                    "pooled_minority_share_of_errors": "pooled_minority_share_of_errors",
                    "pooled_flag_minority_precision": "pooled_flag_minority_precision",
                    "pooled_minority_recall": "pooled_minority_recall", "caption_accuracy": "caption_acc",
                    "clip_caption_accuracy": "clip_caption_acc",
                    "worst_group_acc": "worst_group_acc", "train_worst_group_acc": "train_wga",
                    "accuracy": "accuracy", "train_accuracy": "train_acc", "fitted": "fitted"}


def _row_label(frame: pd.DataFrame) -> pd.Series:
    directions = frame["experiment"] == "directions"
    via = np.where(frame["embedder"].fillna("none") == "none", "", " (" + frame["embedder"].fillna("") + ")")
    return pd.Series(np.where(directions, "directions: " + frame["embedder"].fillna(""),
                              frame["intervention"].fillna("") + via), index=frame.index)


def headline_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (correlation, directions of an embedder | intervention), mean over seeds.

    ``train_wga`` / ``train_acc`` sit beside the test ``worst_group_acc`` / ``accuracy`` (directions rows:
    the ERM model's); ``fitted`` is the share of seeds whose model fitted its training set.
    """
    if frame.empty:
        return frame
    wanted = frame[frame["metric"].isin(list(HEADLINE_COLUMNS))]
    table = (wanted.assign(row=_row_label(wanted))
             .pivot_table(index=["correlation", "row"], columns="metric", values="value", aggfunc="mean",
                          sort=False)
             .reindex(columns=[c for c in HEADLINE_COLUMNS if c in set(wanted["metric"])])
             .rename(columns=HEADLINE_COLUMNS))
    return table.reset_index()


def _per_intervention(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    fixes = frame[frame["experiment"].isin(["upweighting", "selection"]) & (frame["metric"] == metric)]
    return fixes.assign(label=_row_label(fixes)).pivot_table(index="label", columns="correlation", values="value",
                                                             aggfunc="mean")


def plot_worst_group(frame: pd.DataFrame):
    """Worst-group test accuracy per intervention (bars) with the worst training group's accuracy (markers)."""
    table = _per_intervention(frame, "worst_group_acc")
    train = _per_intervention(frame, "train_worst_group_acc").reindex(index=table.index, columns=table.columns)
    fig, ax = plt.subplots(figsize=(min(max(6.5, 0.55 * len(table)), MAX_FIGURE_WIDTH), 4))
    width = 0.8 / max(len(table.columns), 1)
    x = np.arange(len(table))
    for i, corr in enumerate(table.columns):
        offset = x + (i - (len(table.columns) - 1) / 2) * width
        ax.bar(offset, table[corr].to_numpy(), width, label=f"p = {corr}: test")
        ax.plot(offset, train[corr].to_numpy(), "k_", markersize=12, markeredgewidth=2,
                label="train (worst group)" if i == 0 else None)
    ax.set_xticks(x, table.index, rotation=30, ha="right", fontsize=8)
    finish_axes(ax, ylabel="worst-group accuracy", title="Interventions: worst-group accuracy after retraining",
                ylim=(0, 1.05), grid="y", legend_size=None)
    legend_below(fig, [ax])  # under the bars, where it covers none of them
    return fig


def plot_flags(frame: pd.DataFrame):
    directions = frame[frame["experiment"] == "directions"]
    fig, axes = panel_row(2, 5, 3.6)
    for i, (embedder, sub) in enumerate(directions.groupby("embedder")):
        table = sub.pivot_table(index="correlation", columns="metric", values="value", aggfunc="mean")
        marker = line_style(i, dashes=False)  # embedders whose lines coincide differ by marker
        axes[0].plot(table.index, table["flag_minority_precision"], "-", label=f"{embedder}: precision", **marker)
        if i == 0:  # the same quantity for every embedder (it depends on the model only)
            axes[0].plot(table.index, table["minority_share_of_errors"], "kx--", alpha=0.7,
                         label="minority share of the errors")
        axes[1].plot(table.index, table["minority_recall"], "-", label=f"{embedder}: minority recall", **marker)
        axes[1].plot(table.index, table["error_auroc"], ":", mfc="none", label=f"{embedder}: error AUROC", **marker)
    for ax, title in zip(axes, ("Flags that are minority examples", "Recall and error AUROC"), strict=True):
        finish_axes(ax, "train correlation p", title=title, ylim=(0, 1.05), legend_size=None)
    legend_below(fig, axes)
    return fig


def add_figures(result, frame: pd.DataFrame, histograms: dict, correlation: float) -> None:
    if frame.empty:
        return
    if frame["experiment"].isin(["upweighting", "selection"]).any():
        result.add_figure("worst_group_accuracy", plot_worst_group(frame),
                          "Worst-group accuracy on the group-balanced test split after each intervention (bars) "
                          "and on the examples the model was trained on (black marks).")
    if (frame["experiment"] == "directions").any():
        result.add_figure("flags", plot_flags(frame),
                          "Left: share of flagged pool examples that are minority (a != y), against the "
                          "minority's share of the model's errors. Right: minority recall and error AUROC.")
    for embedder, per_class in histograms.items():
        result.add_figure(f"decision_values_{embedder}",
                          plot_decision_histograms(per_class, f"{embedder} directions, p = {correlation}: pool"),
                          "Decision values of pool examples under their class SVM, by group; one panel per class "
                          "on its own scale.")
