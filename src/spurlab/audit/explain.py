"""Explain: failure directions over the model's embeddings, and the critical units behind the minority."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from torch import nn

from spurlab.audit.findings import DirectionsFindings, UnitsFindings
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.metrics import group_accuracies
from spurlab.report.plots import plt

EDIT_MODES = ("zero", "random_init")
RANDOM_REPEATS = 5
# The units step runs the whole network once per intervention (36 of them): on a larger split it is scored on
# a seeded sample of this many examples, every group kept (at least UNITS_MIN_PER_GROUP of each, or all of it).
UNITS_MAX_EXAMPLES = 1200
UNITS_MIN_PER_GROUP = 100
MEAN_COLUMNS = ("flag_minority_precision", "minority_recall", "error_auroc", "cv_balanced_acc")


# ------------------------------------------------------------------ failure directions
def minority_mask(ds: GroupedDataset) -> np.ndarray | None:
    if ds.a is not None:
        return ds.is_minority()
    if ds.groups is not None:
        return np.isin(ds.g, ds.minority_groups())
    return None


def attribute_metadata(ds: GroupedDataset) -> pd.DataFrame | None:
    """The columns an attribute captioner can describe a direction with."""
    frame = pd.DataFrame(index=pd.RangeIndex(len(ds)))
    if ds.a is not None:
        frame["spurious"] = np.asarray(ds.attr_names, dtype=object)[ds.a]
    elif ds.groups is not None:
        frame["group"] = [ds.group_name(g) for g in ds.g]
    if ds.metadata is not None:
        for col in ds.metadata.columns:
            values = ds.metadata[col]
            if col != "prediction" and values.nunique() <= 30 and values.nunique() > 1:
                frame[col] = values.astype(str).to_numpy()
    return frame if len(frame.columns) else None


def explain_directions(splits: DatasetSplits, embeddings: dict[str, np.ndarray], predictions: dict[str, np.ndarray],
                       seed: int, device: str, top_k: int = 8) -> DirectionsFindings:
    """Fit per-class failure directions on ``val`` (else ``train``), score ``test``; return numbers + figures."""
    from spurlab.probes.captions import AttributeCaptioner
    from spurlab.probes.directions import FailureDirections
    from spurlab.report.direction_plots import plot_decision_histograms

    fit_split = "val" if "val" in splits else "train"
    fit_ds, test = splits[fit_split], splits["test"]
    fd = FailureDirections(seed=seed, device=device).fit(
        embeddings[fit_split], fit_ds.y, predictions[fit_split], train_embeddings=embeddings.get("train"))
    minority = minority_mask(test)
    table = fd.evaluate(embeddings["test"], test.y, predictions["test"], minority=minority,
                        class_names=list(test.class_names))
    dv = fd.decision_function(embeddings["test"], test.y)
    out = DirectionsFindings(fit_split=fit_split, table=table, skipped=dict(fd.skipped_),
                             **{column: _mean_row(table, column) for column in MEAN_COLUMNS})
    meta = attribute_metadata(fit_ds)
    if meta is not None:
        captioner = AttributeCaptioner(embeddings[fit_split], fit_ds.y, meta)
        out.captions = fd.describe(captioner, class_names=list(fit_ds.class_names), k=3)
    correct = predictions["test"] == test.y
    per_class = {}
    for c, name in enumerate(test.class_names):
        rows = test.y == c
        series = {"correct": dv[rows & correct], "error": dv[rows & ~correct]}
        if minority is not None:
            series = {"majority": dv[rows & ~minority], "minority": dv[rows & minority], **series}
        per_class[str(name)] = series
    out.figures["directions_histogram"] = (
        plot_decision_histograms(per_class, "test decision values of the per-class failure directions"),
        "Decision values on the test split, one panel per class on its own scale (each class has its own SVM): "
        "negative values are flagged as likely errors.")
    if test.x.ndim == 4:
        out.figures["directions_top_examples"] = (
            _top_examples_figure(fd, embeddings["test"], test, dv, top_k),
            "The most failure-aligned test examples of each class (title: group, decision value).")
    return out


def _mean_row(table: pd.DataFrame, column: str) -> float | None:
    if column not in table.columns:
        return None
    value = table.loc[table["name"] == "mean", column]
    return None if value.empty or pd.isna(value.iloc[0]) else float(value.iloc[0])


def _top_examples_figure(fd, emb: np.ndarray, ds: GroupedDataset, dv: np.ndarray, top_k: int):
    from spurlab.report.direction_plots import plot_image_grid

    ranked = fd.rank(emb, ds.y, k=top_k)
    idx = np.concatenate([ranked[c] for c in sorted(ranked)]) if ranked else np.empty(0, np.int64)
    images = np.transpose(ds.x[idx], (0, 2, 3, 1))
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    titles = [f"{ds.group_name(int(ds.g[i])).replace(',', chr(10))}\n{dv[i]:.2g}" for i in idx]
    return plot_image_grid(np.clip(images, 0, 1), titles, "top-ranked failure examples per class", columns=top_k)


# ------------------------------------------------------------------ critical units
def units_sample(ds: GroupedDataset, seed: int, max_examples: int | None = UNITS_MAX_EXAMPLES) -> GroupedDataset:
    """``ds`` itself up to ``max_examples``, else a seeded sample of about that many: each group in proportion,
    at least ``UNITS_MIN_PER_GROUP`` of every group (all of a smaller one). Lazy inputs stay lazy."""
    if max_examples is None or len(ds) <= max_examples:
        return ds
    rng = np.random.default_rng(seed)
    g = ds.g
    chosen = []
    for group in np.unique(g):
        rows = np.flatnonzero(g == group)
        quota = max(UNITS_MIN_PER_GROUP, round(max_examples * len(rows) / len(ds)))
        chosen.append(rows if len(rows) <= quota else rng.choice(rows, quota, replace=False))
    return ds.subset(np.sort(np.concatenate(chosen)))


def explain_units(model: nn.Module, splits: DatasetSplits, seed: int, k_max: int = 3,
                  max_examples: int | None = UNITS_MAX_EXAMPLES) -> UnitsFindings:
    """Rank units two ways, edit the top-k, and report every group's accuracy change on train and test
    (each scored on at most about ``max_examples`` examples: :func:`units_sample`)."""
    from spurlab.models.editing import Intervention
    from spurlab.models.batched_edits import evaluate_interventions
    from spurlab.probes.neurons import find_critical_units

    sampled = {split: units_sample(splits[split], seed, max_examples) for split in ("train", "test")}
    sample_sizes = {split: (len(ds), len(splits[split])) for split, ds in sampled.items()}
    train = sampled["train"]
    minority = sorted(set(train.minority_groups()))
    target = _worst_minority_group(model, train, minority)
    selectors = {"weight_norm": find_critical_units(model, train, "weight_norm", k=k_max)}
    if target is not None:
        selectors["group_gradient"] = find_critical_units(model, train, "group_gradient", k=k_max, group=target)
    interventions = []
    for sel_name, units in selectors.items():
        for mode in EDIT_MODES:
            for k in range(1, k_max + 1):
                repeats = RANDOM_REPEATS if mode != "zero" else 1
                for r in range(repeats):
                    interventions.append(Intervention(units.top(k), mode=mode, sigma=0.05, seed=seed + r,
                                                      tags={"selector": sel_name, "mode": mode, "k": k}))
    rows = []
    for split in ("train", "test"):
        ds = sampled[split]
        base = _group_acc(model, ds)
        accs = evaluate_interventions(model, interventions, ds.x, ds.y, ds.g, ds.n_groups)
        for iv, acc in zip(interventions, accs):
            for g in range(ds.n_groups):
                if g in base:
                    rows.append({**iv.tags, "split": split, "group": g, "name": ds.group_name(g),
                                 "minority": g in minority, "delta_acc": float(acc[g] - base[g])})
    deltas = (pd.DataFrame(rows).groupby(["selector", "mode", "k", "split", "group", "name", "minority"],
                                          as_index=False)["delta_acc"].mean())
    units_table = pd.concat([u.table().assign(selector=name) for name, u in selectors.items()], ignore_index=True)
    return UnitsFindings(target_group=None if target is None else train.group_name(target), units=units_table,
                         deltas=deltas, headline=_units_headline(deltas), sample_sizes=sample_sizes,
                         figures={"units_delta": (_delta_figure(deltas), _DELTA_CAPTION)})


_DELTA_CAPTION = ("Change of training and test accuracy when the top-k critical units are zeroed or "
                  "re-initialised (random modes averaged over repeats); minority groups in red.")


def _group_acc(model: nn.Module, ds: GroupedDataset) -> dict[int, float]:
    from spurlab.train import predict

    # batches of 256: a backbone's activations for 1024 images take over a GiB
    return group_accuracies(ds.y, predict(model, ds.x, batch_size=256, device="cpu"), ds.g, ds.n_groups)


def _worst_minority_group(model: nn.Module, train: GroupedDataset, minority: list[int]) -> int | None:
    if not minority:
        return None
    accs = _group_acc(model, train)
    return min(minority, key=lambda g: (accs.get(g, 1.0), g))


def most_moved(deltas: pd.DataFrame) -> pd.Series | None:
    """The row whose ``delta_acc`` is largest in size, sign kept (never a mean over groups that may move in
    opposite directions)."""
    if deltas.empty:
        return None
    return deltas.loc[deltas["delta_acc"].abs().idxmax()]


def _units_headline(deltas: pd.DataFrame) -> dict[str, Any]:
    """The edit that moves one minority group's training accuracy the most while moving every majority group
    the least; each side is reported by the group that moved most, with its sign."""
    train = deltas[deltas["split"] == "train"]
    best, best_score = None, -np.inf
    for (selector, mode, k), edit in train.groupby(["selector", "mode", "k"], sort=True):
        minority, majority = most_moved(edit[edit["minority"]]), most_moved(edit[~edit["minority"]])
        if minority is None or majority is None:
            continue
        score = abs(minority["delta_acc"]) - abs(majority["delta_acc"])
        if score > best_score:
            best_score = score
            best = {"selector": selector, "mode": mode, "k": int(k),
                    "minority_group": str(minority["name"]), "minority_train_delta": float(minority["delta_acc"]),
                    "majority_group": str(majority["name"]), "majority_train_delta": float(majority["delta_acc"])}
    return best or {}


LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _delta_figure(deltas: pd.DataFrame):
    combos = list(deltas[["selector", "mode"]].drop_duplicates().itertuples(index=False))
    groups = list(dict.fromkeys(deltas.sort_values("group")["name"]))
    fig, axes = plt.subplots(2, len(combos), figsize=(3.2 * len(combos), 5.6), squeeze=False, sharey=True)
    for j, (selector, mode) in enumerate(combos):
        for i, split in enumerate(("train", "test")):
            ax = axes[i, j]
            part = deltas[(deltas.selector == selector) & (deltas["mode"] == mode) & (deltas.split == split)]
            for name, grp in part.groupby("name"):
                # minority red, majority blue; each group its own marker and dash, so overlapping lines stay apart
                g = groups.index(name)
                minority = bool(grp["minority"].iloc[0])
                ax.plot(grp["k"], grp["delta_acc"], marker=MARKERS[g % len(MARKERS)],
                        ls=LINE_STYLES[g % len(LINE_STYLES)], color="tab:red" if minority else "tab:blue",
                        alpha=0.8, markersize=5, label=f"{name}{' (minority)' if minority else ''}")
            ax.axhline(0, color="k", lw=0.6)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{selector} · {mode}\n{split}", fontsize=8)
            ax.set_xlabel("k units edited", fontsize=8)
            if j == 0:
                ax.set_ylabel("Δ accuracy", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 2), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * max(1, -(-len(labels) // 2)), 1, 1))
    return fig
