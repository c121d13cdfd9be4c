"""Result columns, figures and the headline table of the ``feature-contamination`` study.

Every figure is drawn from the study's tidy result table, so a saved
``results.csv`` can be re-plotted with the same functions.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from spurlab.report.plots import finish_axes, integer_axis, legend_below, line_style, panel_row, plt
from spurlab.studies.study_base import StudyResult

PARAM_COLUMNS = ("activation", "step", "shift_scale", "role", "model", "dataset")
CONTRAST = ("relu", "identity")
STYLE = {"relu": dict(color="#c0392b", lw=2.2), "identity": dict(color="#2c6fbb", lw=2.2)}
DISTILL_METRICS = ("id_acc", "ood_acc", "bg_probe_acc", "bg_variance_share")
PADDING_METRICS = ("acc_padded", "acc_plain", "red_response_ratio", "feature_red_shift")


def row_params(**values: Any) -> dict[str, Any]:
    """Every row carries every parameter column (None where it does not apply)."""
    return {name: values.get(name) for name in PARAM_COLUMNS}


def _mean(frame: pd.DataFrame, experiment: str, by: list[str]) -> pd.DataFrame:
    """Mean value over seeds per ``by`` + metric, one column per metric."""
    sub = frame[frame["experiment"] == experiment]
    if sub.empty:
        return sub
    return sub.groupby(by + ["metric"], dropna=False)["value"].mean().unstack("metric").reset_index()


def _style(activation: str) -> dict:
    return STYLE.get(activation, dict(lw=1.0, alpha=0.6))


def _marked(i: int, activation: str, points: int, dashes: bool = True) -> dict:
    """Colour and width of the activation, with the i-th marker (and dash pattern): activations whose curves
    coincide (identity, sigmoid and tanh often do) stay distinguishable; about ten markers per curve."""
    return {**_style(activation), **line_style(i, dashes), "ms": 4, "markevery": max(1, points // 10)}


# ------------------------------------------------------------------ two-layer figures
def fig_losses(traj: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, act in enumerate(CONTRAST):
        sub = traj[traj["activation"] == act]
        if sub.empty:
            continue
        ax.plot(sub["step"], sub["id_loss"], ls="-", label=f"{act}: ID", **_marked(i, act, len(sub), dashes=False))
        ax.plot(sub["step"], sub["ood_loss"], ls="--", mfc="none", label=f"{act}: OOD",
                **_marked(i, act, len(sub), dashes=False))
    finish_axes(ax, "SGD step", "loss", "ID vs OOD loss", yscale="log")
    integer_axis(ax)
    fig.tight_layout()
    return fig


def fig_norms(traj: pd.DataFrame):
    fig, axes = panel_row(2, 5, 3.8, sharey=True)
    for ax, metric, title in zip(axes, ("core_norm", "bg_norm"), ("core block of W T", "background block of W T")):
        for i, act in enumerate(CONTRAST):
            sub = traj[traj["activation"] == act]
            if not sub.empty:
                ax.plot(sub["step"], sub[metric], label=act, **_marked(i, act, len(sub)))
        finish_axes(ax, "SGD step", title=title, legend_size=None)
        integer_axis(ax)
    axes[0].set_ylabel("mean neuron weight norm")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_asymmetry(traj: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, (act, sub) in enumerate(traj.groupby("activation")):
        ax.plot(sub["step"], sub["activation_asymmetry"], label=act, **_marked(i, act, len(sub)))
    finish_axes(ax, "SGD step", "activation asymmetry",
                "sign(a_k) [P(active | y=+1) - P(active | y=-1)], mean over neurons", legend_size=None)
    integer_axis(ax)
    legend_below(fig, [ax])
    return fig


def fig_bg_by_activation(acts: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = range(len(acts))
    ax.bar([i - 0.2 for i in x], acts["bg_norm_init"], 0.4, label="at initialisation", color="#bbbbbb")
    bars = ax.bar([i + 0.2 for i in x], acts["bg_norm"], 0.4, label="after training", color="#8e44ad")
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(list(x), acts["activation"])
    finish_axes(ax, ylabel="background weight norm", title="Background norm by activation", grid="y")
    fig.tight_layout()
    return fig


def fig_shift(shift: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (act, sub) in enumerate(shift.groupby("activation")):
        sub = sub.sort_values("shift_scale")
        ax.plot(sub["shift_scale"], sub["ood_acc"], label=act, **_marked(i, act, len(sub)))
    ax.set_xscale("log", base=2)
    finish_axes(ax, "background shift scale s (test background ~ -s U[0,1])", "OOD accuracy",
                "OOD accuracy vs shift scale", ylim=(0, 1.05), legend_size=None)
    legend_below(fig, [ax])
    return fig


# ------------------------------------------------------------------ image figures
def fig_table(table: pd.DataFrame, title: str):
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(table.columns), 0.5 + 0.45 * (len(table) + 1)))
    ax.axis("off")
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    tab = ax.table(cellText=cells, colLabels=list(table.columns), loc="center", cellLoc="center")
    tab.scale(1, 1.4)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def distillation_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = _mean(frame, "distillation", ["role"])
    if table.empty:
        return table
    order = {"teacher": 0, "student": 1}
    table = table.sort_values("role", key=lambda s: s.map(order)).reset_index(drop=True)
    return table[["role", *[m for m in DISTILL_METRICS if m in table.columns]]]


def padding_table(frame: pd.DataFrame) -> pd.DataFrame:
    table = _mean(frame, "padding", ["role"])
    if table.empty:
        return table
    return table[["role", *[m for m in PADDING_METRICS if m in table.columns]]]


# ------------------------------------------------------------------ entry points
def add_figures(result: StudyResult) -> None:
    frame = result.frame()
    traj = _mean(frame, "dynamics", ["activation", "step"])
    if not traj.empty:
        traj = traj.sort_values("step")
        result.add_figure("id_vs_ood_loss", fig_losses(traj),
                          "ID (solid) and OOD (dashed) loss over training: ReLU vs linear network.")
        result.add_figure("core_vs_bg_norm", fig_norms(traj),
                          "Mean neuron norm of the first-layer weights mapped to feature space (W T): "
                          "core block and background block. ReLU grows the background block, linear shrinks it.")
        result.add_figure("activation_asymmetry", fig_asymmetry(traj),
                          "Activation asymmetry over training (pre-activation > 0 counts as active).")
    acts = _mean(frame, "activations", ["activation"])
    if not acts.empty:
        result.add_figure("bg_norm_by_activation", fig_bg_by_activation(acts),
                          "Background weight norm at initialisation and after training, per activation.")
    shift = _mean(frame, "shift", ["activation", "shift_scale"])
    if not shift.empty:
        result.add_figure("ood_acc_vs_shift", fig_shift(shift),
                          "OOD accuracy when the test background is -s U[0,1]^d_bg.")
    distill = distillation_table(frame)
    if not distill.empty:
        result.add_figure("distillation_table", fig_table(distill, "Representation distillation (linear probes)"),
                          "Teacher trained on several colour domains; student fitted by MSE to the teacher's "
                          "representation on one domain. id/ood_acc: linear probe fitted on that domain; "
                          "bg_probe_acc: nearest-class-mean probe for the domain colour (chance 1/n_domains).")
    padding = padding_table(frame)
    if not padding.empty:
        result.add_figure("padding_table", fig_table(padding, "Brick-red padding on training images only"),
                          "acc_padded / acc_plain: test accuracy with and without the red padding; "
                          "red_response_ratio: first-layer response to red on the padding, trained / init; "
                          "feature_red_shift: relative change of the features when the red padding is added.")


def headline_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A short long-format summary: experiment, setting, metric, value."""
    rows: list[dict[str, Any]] = []
    acts = _mean(frame, "activations", ["activation"])
    for act in CONTRAST:
        sub = acts[acts["activation"] == act] if not acts.empty else acts
        for metric in ("core_norm_init", "core_norm", "bg_norm_init", "bg_norm", "id_loss", "ood_loss",
                       "activation_asymmetry"):
            if not sub.empty and metric in sub:
                rows.append({"experiment": "activations", "setting": act, "metric": metric,
                             "value": float(sub[metric].iloc[0])})
    for experiment in ("activations", "activations_toy"):  # every activation, with its training fit
        table = _mean(frame, experiment, ["activation"])
        for row in table.to_dict("records") if not table.empty else []:
            if experiment == "activations" and row["activation"] in CONTRAST:
                continue  # shown above
            for metric in ("bg_norm_init", "bg_norm", "train_acc", "id_loss", "ood_loss", "ood_acc"):
                if metric in row:
                    rows.append({"experiment": experiment, "setting": row["activation"], "metric": metric,
                                 "value": float(row[metric])})
    shift = _mean(frame, "shift", ["activation", "shift_scale"])
    for act in CONTRAST:
        sub = shift[shift["activation"] == act] if not shift.empty else shift
        for row in sub.itertuples(index=False):
            rows.append({"experiment": "shift", "setting": f"{act}, s={row.shift_scale:g}", "metric": "ood_acc",
                         "value": float(row.ood_acc)})
    for name, table in (("distillation", distillation_table(frame)), ("padding", padding_table(frame))):
        for row in table.to_dict("records"):
            for metric, value in row.items():
                if metric != "role":
                    rows.append({"experiment": name, "setting": row["role"], "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=["experiment", "setting", "metric", "value"])
