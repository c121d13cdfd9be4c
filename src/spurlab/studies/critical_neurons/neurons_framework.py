"""The framework experiment of critical-neurons: ERM fine-tuning vs the pruned-copy framework.

Every seed trains its own ERM model; from it, plain cross-entropy fine-tuning
and the pruned-copy framework (one arm per mask: the authors' ``magnitude``
default and their ``gradient`` option) run for the same epochs, LR and batch.
Each epoch records the per-group accuracy on train / val / test and, for the
framework, how far the pruned copy is from the model. Two selections are
scored: the final epoch, and the epoch with the best worst-group *validation*
accuracy (epochs 1..E; ties keep the earlier one).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from spurlab.data.grouped import DatasetSplits
from spurlab.probes.unit_evidence import group_accuracies_of
from spurlab.train.engines.pruned_copy_contrastive import (PrunedContrastiveConfig, VacuousPrunedCopyWarning,
                                                           is_vacuous, train_pruned_contrastive)
from spurlab.train.trainer import TrainConfig, fit

METHOD_OF_MASK = {"magnitude": "pruned_contrastive", "gradient": "pruned_contrastive_gradient"}
ABLATION = "ce_term_only"  # the framework's CE term alone (no NT-Xent), same optimizer and schedule
SPLITS = ("train", "val", "test")
SELECTIONS = ("final", "val_worst_group")
METRICS = {"worst": "worst_group_acc", "mean": "mean_group_acc", "weighted": "train_weighted_acc"}


def method_name(mask: str) -> str:
    return METHOD_OF_MASK[mask]


def epoch_metrics(splits: DatasetSplits):
    """``on_epoch_end`` callback: per-group accuracy on every split (``train_g0``, ``val_g1``, ...)."""
    evaluated = {s: splits[s] for s in SPLITS if s in splits}

    def callback(epoch, model) -> dict[str, float]:
        return {f"{s}_g{g}": acc for s, ds in evaluated.items()
                for g, acc in enumerate(group_accuracies_of(model, ds))}

    return callback


def run_framework(cfg: dict[str, Any], splits: DatasetSplits, erm_runs: list[dict], device: str) -> pd.DataFrame:
    """Per-epoch curves (one row per seed, method and epoch; epoch 0 is the ERM model) of every arm."""
    train = splits["train"]
    callback = epoch_metrics(splits)
    curves = []
    for erm in erm_runs:
        seed = erm["seed"]
        start = {"epoch": 0, **callback(0, erm["model"])}
        tcfg = TrainConfig(epochs=int(cfg["framework_epochs"]), lr=float(cfg["framework_lr"]),
                           batch_size=int(cfg["framework_batch"]), seed=seed, device=device)
        histories = {"erm": fit(copy.deepcopy(erm["model"]), train.x, train.y, tcfg, on_epoch_end=callback).history}
        arms = {method_name(mask): {"mask_method": mask} for mask in cfg["framework_masks"]}
        if cfg["framework_ablation"]:
            arms[ABLATION] = {"contrastive_weight": 0.0, "on_vacuous_mask": "ignore"}
        for method, options in arms.items():
            pcfg = PrunedContrastiveConfig(epochs=tcfg.epochs, lr=tcfg.lr, batch_size=tcfg.batch_size,
                                           lam=float(cfg["lam"]), temperature=float(cfg["temperature"]),
                                           prune_fraction=float(cfg["prune_fraction"]),
                                           mask_layers=cfg["mask_layers"], representation=cfg["representation"],
                                           on_vacuous_mask=cfg["on_vacuous_mask"], seed=seed, device=device)
            pcfg = replace(pcfg, **options)
            with warnings.catch_warnings():
                # The study reports vacuous copies once, in its notes, from the recorded divergence.
                warnings.simplefilter("ignore", VacuousPrunedCopyWarning)
                histories[method] = train_pruned_contrastive(copy.deepcopy(erm["model"]), train, pcfg,
                                                             on_epoch_end=callback)
        for method, history in histories.items():
            curves += [{"seed": seed, "method": method, **record} for record in [start, *history]]
    return pd.DataFrame(curves)


def _group_columns(curves: pd.DataFrame, split: str) -> list[str]:
    return [c for c in curves.columns if c.startswith(f"{split}_g") and curves[c].notna().any()]


def selected_metrics(curves: pd.DataFrame, train_counts: np.ndarray | None = None) -> pd.DataFrame:
    """Worst-group, mean-group (plain mean) and train-weighted accuracy (group accuracies weighted by the
    training group sizes, the Waterbirds convention) on every split for each (seed, method, selection),
    plus ``erm_start`` (the ERM model before fine-tuning)."""
    splits = [s for s in SPLITS if _group_columns(curves, s)]
    frame = curves.copy()
    for split in splits:
        cols = _group_columns(curves, split)
        frame[f"{split}_worst"] = frame[cols].min(axis=1)
        frame[f"{split}_mean"] = frame[cols].mean(axis=1)
        if train_counts is not None:
            weights = np.array([train_counts[int(c.split("_g")[1])] for c in cols], dtype=float)
            frame[f"{split}_weighted"] = frame[cols].fillna(0).to_numpy() @ weights / weights.sum()
    rows = []
    for (seed, method), runs in frame.groupby(["seed", "method"], sort=False):
        trained = runs[runs["epoch"] > 0]
        picks = {"final": trained.iloc[-1]}
        if "val" in splits:
            picks["val_worst_group"] = trained.loc[trained["val_worst"].idxmax()]
        if method == "erm":
            picks["start"] = runs[runs["epoch"] == 0].iloc[0]
        for selection, row in picks.items():
            name = "erm_start" if selection == "start" else method
            for selection_name in (SELECTIONS if selection == "start" else (selection,)):
                if selection_name == "val_worst_group" and "val" not in splits:
                    continue
                for split in splits:
                    for metric, label in METRICS.items():
                        if f"{split}_{metric}" in row:
                            rows.append({"seed": seed, "method": name, "selection": selection_name, "split": split,
                                         "metric": label, "value": float(row[f"{split}_{metric}"]),
                                         "epoch": int(row["epoch"])})
    return pd.DataFrame(rows)


def divergence_rows(curves: pd.DataFrame) -> pd.DataFrame:
    """The recorded full-vs-pruned divergence per (seed, method, epoch), long format (the CE-only ablation,
    which never uses its copy, is left out)."""
    cols = [c for c in curves.columns if c.startswith("mask_")]
    if not cols:
        return pd.DataFrame(columns=["seed", "method", "epoch", "metric", "group", "value"])
    sub = curves[(curves["epoch"] > 0) & (curves["method"] != ABLATION)].dropna(subset=["mask_dlogit"])
    long = sub.melt(id_vars=["seed", "method", "epoch"], value_vars=cols, var_name="metric").dropna(subset=["value"])
    group = long["metric"].str.extract(r"_g(\d+)$")[0]
    long["group"] = group.astype(float)
    long["metric"] = long["metric"].str.replace(r"_g\d+$", "", regex=True)
    return long.reset_index(drop=True)


# ------------------------------------------------------------------ verdicts
def difference_table(summary: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per framework arm and selection: test worst-group accuracy minus ERM's, over seeds, with the
    train worst-group accuracy of both beside it."""
    rows = []
    worst = summary[summary["metric"] == "worst_group_acc"]
    for method in methods:
        for selection in worst["selection"].unique():
            sel = worst[worst["selection"] == selection]
            wide = {split: sel[sel["split"] == split].pivot(index="seed", columns="method", values="value")
                    for split in ("train", "test")}
            if method not in wide["test"] or "erm" not in wide["test"]:
                continue
            diff = (wide["test"][method] - wide["test"]["erm"]).dropna()
            n = len(diff)
            sem = float(diff.std() / np.sqrt(n)) if n > 1 else float("nan")
            rows.append({"method": method, "selection": selection, "n_seeds": n, "diff_mean": float(diff.mean()),
                         "diff_std": float(diff.std()) if n > 1 else float("nan"), "diff_sem": sem,
                         "test_worst": float(wide["test"][method].mean()),
                         "test_worst_erm": float(wide["test"]["erm"].mean()),
                         "train_worst": float(wide["train"][method].mean()),
                         "train_worst_erm": float(wide["train"]["erm"].mean()),
                         "verdict": verdict_word(float(diff.mean()), sem), "per_seed": diff.round(3).tolist()})
    return pd.DataFrame(rows)


def verdict_word(mean: float, sem: float) -> str:
    """``improved`` / ``lowered`` when the mean difference is 2 standard errors from 0, else ``no clear change``."""
    if not np.isfinite(sem):
        return "one seed: no verdict"
    if mean - 2 * sem > 0:
        return "improved"
    if mean + 2 * sem < 0:
        return "lowered"
    return "no clear change"


def framework_notes(table: pd.DataFrame, divergence: pd.DataFrame, min_divergence: float) -> list[str]:
    notes = []
    for row in table.itertuples(index=False):
        spread = f" ± {row.diff_std:.3f} (std; s.e. {row.diff_sem:.3f})" if row.n_seeds > 1 else ""
        notes.append(f"Framework vs ERM at the same budget ({row.method}, selection {row.selection}): test "
                     f"worst-group accuracy {row.diff_mean:+.3f}{spread} over {row.n_seeds} seeds "
                     f"-> {row.verdict} (test {row.test_worst:.3f} vs ERM {row.test_worst_erm:.3f}; train "
                     f"worst-group {row.train_worst:.3f} vs {row.train_worst_erm:.3f}; per seed {row.per_seed}).")
    for method, rows in divergence.groupby("method", sort=False):
        wide = rows[rows["group"].isna()].pivot_table(index=["seed", "epoch"], columns="metric", values="value")
        vacuous = sum(is_vacuous(r, min_divergence) for r in wide.to_dict("records"))
        notes.append(f"Pruned copy of {method}: mean |Δlogit| {wide['mask_dlogit'].mean():.2e}, mean |Δp| "
                     f"{wide['mask_dprob'].mean():.2e}, cosine {wide['mask_cosine'].mean():.4f}, prediction flips "
                     f"{wide['mask_flips'].mean():.3f}; indistinguishable from the model in {vacuous} of "
                     f"{len(wide)} epochs" + (" -- the contrastive pair is the same vector twice." if vacuous else "."))
    return notes
