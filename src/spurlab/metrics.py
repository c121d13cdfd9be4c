"""Group metrics from plain arrays.

Two different "average accuracies" circulate in the spurious-correlation
literature and they are easy to confuse:

* :func:`mean_group_accuracy` — the unweighted mean of the per-group accuracies
  (every group counts the same);
* :func:`train_weighted_accuracy` — per-group *test* accuracies weighted by the
  *training* group proportions. This is what Waterbirds papers usually call
  "average accuracy": it estimates accuracy on the training distribution, so a
  model that fails its minority groups still scores high on it.

Plain accuracy on the test split (:func:`accuracy`) weights groups by their
*test* proportions, a third number again.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from spurlab.errors import SpurlabError
from spurlab.params import Interval, Labels, check_params, optional
from spurlab.utils import check_same_length

# What the scoring functions accept (spurlab.params): label arrays of one entry per example, at least one example.
SCORE_CONSTRAINTS = {"y_true": Labels(), "y_pred": Labels()}
GROUP_CONSTRAINTS = {**SCORE_CONSTRAINTS, "groups": Labels(), "n_groups": optional(Interval(int, 0, None)),
                     "train_groups": Labels()}


def _checked(owner: str, constraints: dict, **values) -> tuple:
    """``values`` checked by their declared constraints (equal lengths first), in the order given."""
    check_same_length(**{name: v for name, v in values.items() if name in ("y_true", "y_pred", "groups")})
    return tuple(check_params(owner, constraints, values).values())


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = _checked("accuracy", SCORE_CONSTRAINTS, y_true=y_true, y_pred=y_pred)
    return float(np.mean(y_true == y_pred))


def group_accuracies(y_true, y_pred, groups, n_groups: int | None = None) -> dict[int, float]:
    """``{group: accuracy}`` for every group with at least one example.

    Groups in ``range(n_groups)`` with no example are left out (their accuracy is
    undefined), so callers can see which groups were scored.
    """
    y_true, y_pred, groups, n_groups = _checked("group_accuracies", GROUP_CONSTRAINTS, y_true=y_true, y_pred=y_pred,
                                                groups=groups, n_groups=n_groups)
    n = max(int(groups.max()) + 1, n_groups or 0)
    correct = np.bincount(groups, weights=(y_true == y_pred), minlength=n)
    counts = np.bincount(groups, minlength=n)
    return {g: float(correct[g] / counts[g]) for g in range(n) if counts[g] > 0}


def worst_group_accuracy(y_true, y_pred, groups) -> float:
    return min(group_accuracies(y_true, y_pred, groups).values())


def mean_group_accuracy(y_true, y_pred, groups) -> float:
    accs = group_accuracies(y_true, y_pred, groups)
    return float(np.mean(list(accs.values())))


def train_weighted_accuracy(y_true, y_pred, groups, train_groups) -> float:
    """Test group accuracies weighted by the *training* group proportions."""
    accs = group_accuracies(y_true, y_pred, groups)
    (train_groups,) = _checked("train_weighted_accuracy", GROUP_CONSTRAINTS, train_groups=train_groups)
    weights = np.bincount(train_groups, minlength=max(accs) + 1).astype(float)
    missing = [g for g in range(len(weights)) if weights[g] > 0 and g not in accs]
    if missing:
        raise SpurlabError(f"group(s) {missing} occur in training but not in the scored split",
                           hint="the weighted accuracy needs every training group to be scored")
    total = sum(weights[g] for g in accs)
    return float(sum(weights[g] * accs[g] for g in accs) / total)


def group_gap(train_accs: dict[int, float], test_accs: dict[int, float]) -> dict[int, float]:
    """Per-group train - test accuracy: the memorization signature."""
    return {g: train_accs[g] - test_accs[g] for g in train_accs if g in test_accs}


def group_report(y_true, y_pred, groups, group_names: list[str] | None = None) -> pd.DataFrame:
    """One row per group: group, name, count, correct, accuracy."""
    y_true, y_pred, groups = _checked("group_report", GROUP_CONSTRAINTS, y_true=y_true, y_pred=y_pred, groups=groups)
    accs = group_accuracies(y_true, y_pred, groups)
    counts = np.bincount(groups)
    return pd.DataFrame([
        {"group": g, "name": group_names[g] if group_names else str(g), "count": int(counts[g]),
         "accuracy": acc}
        for g, acc in accs.items()
    ])


def summarize_predictions(y_true, y_pred, groups, train_groups=None) -> dict[str, float]:
    """accuracy, worst/mean group accuracy and (with ``train_groups``) the train-weighted accuracy."""
    out = {
        "accuracy": accuracy(y_true, y_pred),
        "worst_group_acc": worst_group_accuracy(y_true, y_pred, groups),
        "mean_group_acc": mean_group_accuracy(y_true, y_pred, groups),
    }
    if train_groups is not None:
        out["train_weighted_acc"] = train_weighted_accuracy(y_true, y_pred, groups, train_groups)
    return out
