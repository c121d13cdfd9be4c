"""Fixing failure modes found by failure directions: loss upweighting and data selection.

Weights and selections come from plain arrays (decision values, confidences, groups), so
they plug into any trainer; :func:`failure_direction_weights` goes from embeddings to
training weights in one call (the robust-methods registry wraps it as
``failure_directions``); :func:`compare_upweighting` and :func:`compare_selection`
retrain a model per intervention and report per-group and worst-group accuracy.

Upweighting schemes (decision value ``dv`` of each training example under its class SVM):

* ``overweight`` (alias ``flagged``) — weight ``upweight`` (2) where ``dv <= 0``, else 1;
* ``balanced`` — within each class, flagged and unflagged examples get equal total mass;
* ``soft`` — a flagged example's extra weight grows with ``max(0, -dv)``, scaled so that
  flagged examples average ``upweight``; unflagged examples keep weight 1.

Every weight vector is normalized to mean 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spurlab import metrics
from spurlab.data.grouped import GroupedDataset
from spurlab.data.lazy_images import concat_rows, take_rows
from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, check_params
from spurlab.train.trainer import TrainConfig, fit, predict, predict_logits
from spurlab.utils import check_labels, check_same_length

SCHEMES = ("overweight", "balanced", "soft")
ALIASES = {"flagged": "overweight"}
STRATEGIES = ("svm", "confidence", "random")
# What the weighting and selection functions accept (spurlab.params), checked by name before any work.
WEIGHT_CONSTRAINTS = {"scheme": Options(*SCHEMES, *ALIASES), "upweight": Interval(float, 1, None)}
SELECT_CONSTRAINTS = {"strategy": Options(*STRATEGIES), "k": Interval(int, 0, None), "seed": Interval(int, 0, None)}


# ------------------------------------------------------------------ weights
def _mean_one(weights: np.ndarray) -> np.ndarray:
    total = weights.sum()
    if not total > 0:
        raise SpurlabError("every training weight is zero", hint="check the decision values and the scheme")
    return weights * (len(weights) / total)


def upweight_flagged(decision_values, labels=None, scheme: str = "overweight", upweight: float = 2.0) -> np.ndarray:
    """Training weights (mean 1) from SVM decision values; NaN values (no SVM) count as unflagged.
    ``scheme``: overweight, balanced or soft ('flagged' is an alias of 'overweight')."""
    scheme, upweight = check_params("upweight_flagged", WEIGHT_CONSTRAINTS,
                                    {"scheme": scheme, "upweight": upweight}).values()
    scheme = ALIASES.get(scheme, scheme)
    dv = np.asarray(decision_values, dtype=float)
    flagged = np.nan_to_num(dv, nan=np.inf) <= 0
    if scheme == "overweight":
        return _mean_one(np.where(flagged, float(upweight), 1.0))
    if scheme == "soft":
        depth = np.where(flagged, np.maximum(0.0, -np.nan_to_num(dv, nan=0.0)), 0.0)
        mean_depth = depth[flagged].mean() if flagged.any() else 0.0
        extra = depth / mean_depth if mean_depth > 0 else flagged.astype(float)
        return _mean_one(1.0 + (float(upweight) - 1.0) * extra)
    labels = np.zeros(len(dv), np.int64) if labels is None else check_labels("labels", labels)
    check_same_length(decision_values=dv, labels=labels)
    weights = np.ones(len(dv))
    for c in np.unique(labels):
        in_class = labels == c
        n_flag = int((flagged & in_class).sum())
        n_rest = int(in_class.sum()) - n_flag
        if n_flag and n_rest:  # each side gets half of the class's mass
            weights[flagged & in_class] = in_class.sum() / (2.0 * n_flag)
            weights[~flagged & in_class] = in_class.sum() / (2.0 * n_rest)
    return _mean_one(weights)


def lowest_per_class(scores, labels, counts: dict[int, int] | int) -> np.ndarray:
    """Indices of the ``counts[c]`` (or ``counts``) lowest-scoring examples of every class c."""
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=np.inf)
    labels = check_labels("labels", labels)
    chosen = []
    for c in np.unique(labels):
        k = counts if isinstance(counts, (int, np.integer)) else int(counts.get(int(c), 0))
        idx = np.flatnonzero(labels == c)
        chosen.append(idx[np.argsort(scores[idx], kind="stable")[: max(int(k), 0)]])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)


def confidence_weights(confidence, labels, counts: dict[int, int] | int, upweight: float = 2.0) -> np.ndarray:
    """Baseline: upweight the lowest-confidence examples of each class (as many as ``counts``)."""
    upweight = check_params("confidence_weights", WEIGHT_CONSTRAINTS, {"upweight": upweight})["upweight"]
    weights = np.ones(len(labels))
    weights[lowest_per_class(confidence, labels, counts)] = float(upweight)
    return _mean_one(weights)


def oracle_group_weights(groups) -> np.ndarray:
    """Baseline with group labels: every group gets the same total mass (mean 1)."""
    groups = check_labels("groups", groups)
    counts = np.bincount(groups)
    return _mean_one(1.0 / counts[groups])


def flagged_counts(decision_values, labels) -> dict[int, int]:
    """Number of flagged (``dv <= 0``) examples per class."""
    flagged = np.nan_to_num(np.asarray(decision_values, float), nan=np.inf) <= 0
    labels = np.asarray(labels)
    return {int(c): int((flagged & (labels == c)).sum()) for c in np.unique(labels)}


def true_label_confidence(logits: np.ndarray, labels) -> np.ndarray:
    """Softmax probability a model gives each example's true label."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return probs[np.arange(len(probs)), np.asarray(labels)]


def failure_direction_weights(val_embeddings, val_labels, val_predictions, train_embeddings, train_labels,
                              scheme: str = "overweight", upweight: float = 2.0, seed: int = 0,
                              **direction_params) -> np.ndarray:
    """Per-example training weights from failure directions fit on the validation split.

    The SVMs are fit on the validation embeddings (standardized with the training split's
    statistics) to predict ``val_predictions == val_labels``; training examples on the
    failing side of their class's SVM are upweighted by ``scheme``.
    """
    from spurlab.probes.directions import FailureDirections

    directions = FailureDirections(seed=seed, **direction_params).fit(
        val_embeddings, val_labels, val_predictions, train_embeddings=train_embeddings)
    dv = directions.decision_function(train_embeddings, train_labels)
    return upweight_flagged(dv, train_labels, scheme=scheme, upweight=upweight)


# ------------------------------------------------------------------ data selection
def select_from_pool(strategy: str, labels, k: int, decision_values=None, confidence=None, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` pool examples per class: ``svm`` (lowest decision value),
    ``confidence`` (lowest confidence) or ``random``."""
    strategy, k, seed = check_params("select_from_pool", SELECT_CONSTRAINTS,
                                     {"strategy": strategy, "k": k, "seed": seed}).values()
    labels = check_labels("labels", labels)
    if strategy == "svm":
        if decision_values is None:
            raise SpurlabError("svm selection needs the pool's decision values")
        return lowest_per_class(decision_values, labels, k)
    if strategy == "confidence":
        if confidence is None:
            raise SpurlabError("confidence selection needs the pool's confidences")
        return lowest_per_class(confidence, labels, k)
    return lowest_per_class(np.random.default_rng(seed).random(len(labels)), labels, k)  # random


# ------------------------------------------------------------------ retrain and report
@dataclass
class Retrainer:
    """How every intervention retrains: a fresh ``model`` trained with ``config``."""

    model: Any = "mlp"  # a registered name, or anything the models registry takes (a factory, a module, ...)
    config: TrainConfig | None = None
    model_options: dict | None = None  # e.g. {"hidden": (128,)} for the MLP

    def train(self, x: np.ndarray, y: np.ndarray, n_classes: int, sample_weights=None, seed_offset: int = 0):
        from spurlab.models import as_model_spec, make_model

        cfg = self.config or TrainConfig()
        cfg = TrainConfig(**{**cfg.__dict__, "seed": cfg.seed + seed_offset})
        shape, spec = tuple(x.shape[1:]), as_model_spec(self.model)
        model = (make_model(spec.model, shape, n_classes, seed=cfg.seed, **(self.model_options or {}))
                 if spec.kind == "name" else spec.build(shape, n_classes, seed=cfg.seed))
        fit(model, x, y, cfg, sample_weights=sample_weights)
        return model


def group_metrics(model, ds: GroupedDataset, device: str = "auto") -> dict[str, float]:
    """accuracy, worst/mean group accuracy and one ``group_acc[name]`` entry per group."""
    pred = predict(model, ds.x, device=device)
    accs = metrics.group_accuracies(ds.y, pred, ds.g, ds.n_groups)
    out = {"accuracy": metrics.accuracy(ds.y, pred), "worst_group_acc": min(accs.values()),
           "mean_group_acc": float(np.mean(list(accs.values())))}
    out.update({f"group_acc[{ds.group_name(g)}]": acc for g, acc in accs.items()})
    return out


def _rows(name: str, values: dict[str, float]) -> list[dict]:
    return [{"intervention": name, "metric": k, "value": float(v)} for k, v in values.items()]


def compare_upweighting(train: GroupedDataset, test: GroupedDataset, weights: dict[str, np.ndarray | None],
                        retrainer: Retrainer) -> pd.DataFrame:
    """Retrain once per entry of ``weights`` (``None`` = plain ERM); long table of test metrics."""
    rows = []
    for name, w in weights.items():  # same seed for every run: paired comparisons
        model = retrainer.train(train.x, train.y, train.n_classes, sample_weights=w)
        rows += _rows(name, group_metrics(model, test, _device(retrainer)))
    return pd.DataFrame(rows)


def compare_selection(train: GroupedDataset, pool: GroupedDataset, test: GroupedDataset,
                      selections: dict[str, np.ndarray], retrainer: Retrainer) -> pd.DataFrame:
    """Retrain on train + each selected pool subset; long table of test metrics (plus the
    minority share of the selected examples when the pool has groups)."""
    rows = []
    for name, idx in selections.items():
        x = concat_rows([train.x, take_rows(pool.x, idx)])  # lazy images stay lazy: read per batch
        y = np.concatenate([train.y, pool.y[idx]])
        model = retrainer.train(x, y, train.n_classes)
        values = group_metrics(model, test, _device(retrainer))
        values["n_selected"] = float(len(idx))
        if pool.a is not None and pool.n_attrs == pool.n_classes and len(idx):
            values["selected_minority_share"] = float(np.mean(pool.is_minority()[idx]))
        rows += _rows(name, values)
    return pd.DataFrame(rows)


def _device(retrainer: Retrainer) -> str:
    return (retrainer.config or TrainConfig()).device


def model_confidence(model, x: np.ndarray, labels, device: str = "auto") -> np.ndarray:
    return true_label_confidence(predict_logits(model, x, device=device), labels)
