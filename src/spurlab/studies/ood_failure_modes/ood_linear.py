"""The linear experiments of ood-failure-modes: norm growth, geometric and statistical skew.

Each experiment takes plain parameters and returns a long-format DataFrame
(``experiment, metric, value, seed`` + parameter columns), so tests can call
them directly and the study only concatenates them.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from spurlab.data.synthetic import LinearSkewData, duplicate_majority, easy_task
from spurlab.errors import SpurlabError
from spurlab.probes.skew import (linear_accuracy, linear_group_accuracies, spurious_ratio, spurious_share,
                                 theory_spurious_ratio, theory_spurious_share)
from spurlab.train.engines.linear_gd import BatchedLinearGD
from spurlab.train.engines.max_margin import MaxMarginClassifier

TEST_SEED_OFFSET = 10_007  # test points never share a seed with training points


def long_rows(experiment: str, seed: int, metrics: dict[str, float], **params) -> list[dict]:
    return [{"experiment": experiment, "metric": m, "value": float(v), "seed": int(seed), **params}
            for m, v in metrics.items()]


def skew_test_set(n_test: int, D: int, margin: float, B: float, seed: int) -> LinearSkewData:
    """``n_test`` majority then ``n_test`` minority points from a fresh seed."""
    return easy_task(n_test, n_test, D=D, margin=margin, B=B, seed=seed + TEST_SEED_OFFSET)


# ------------------------------------------------------------------ norm growth
def max_margin_norms(ns: Sequence[int], D: int = 1000, margin: float = 0.1, seeds: Sequence[int] = (0,),
                     fit_intercept: bool = False) -> pd.DataFrame:
    """``||w||`` of the hard-margin classifier on ``n`` easy-task points, invariant features only.

    The norm grows with ``n`` and saturates at ``1 / margin`` (the single
    coordinate ``x_inv[0] = margin * y`` separates any number of points)."""
    rows = []
    for seed in seeds:
        for n in ns:
            if int(n) < 2:
                raise SpurlabError(f"max-margin norms need n >= 2 (both classes), got {n}")
            data = easy_task(int(n), 0, D=D, margin=margin, seed=int(seed))
            svm = MaxMarginClassifier(fit_intercept=fit_intercept).fit(data.x_inv, data.y)
            rows.append({"n": int(n), "seed": int(seed), "maxmargin_norm": svm.norm_})
    return pd.DataFrame(rows)


def norm_growth_experiment(ns: Sequence[int], seeds: Sequence[int], D: int = 1000,
                           margin: float = 0.1) -> pd.DataFrame:
    """``maxmargin_norm`` of the invariant features of ``n`` easy-task points, for every n."""
    table = max_margin_norms(ns, D=D, margin=margin, seeds=seeds)
    rows = [row for rec in table.itertuples(index=False)
            for row in long_rows("norm_growth", rec.seed, {"maxmargin_norm": rec.maxmargin_norm}, n=rec.n)]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ geometric skew
def geometric_experiment(n_maj: int, n_mins: Sequence[int], seeds: Sequence[int], D: int = 1000,
                         margin: float = 0.1, B: float = 1.0, n_test: int = 1000,
                         fit_intercept: bool = False) -> pd.DataFrame:
    """Max-margin classifier of ``n_maj`` majority + ``n_min`` minority points, ``n_min`` swept.

    Reports ``spurious_share`` (w_sp/||w||), ``majority_acc`` and ``minority_acc``
    (fresh test points; the minority group is the OOD distribution) and ``maxmargin_norm``."""
    rows = []
    for seed in seeds:
        test = skew_test_set(n_test, D, margin, B, seed)
        for n_min in n_mins:
            train = easy_task(n_maj, int(n_min), D=D, margin=margin, B=B, seed=int(seed))
            svm = MaxMarginClassifier(fit_intercept=fit_intercept).fit(train.x, train.y)
            accs = linear_group_accuracies(svm.coef_, test.x, test.y, test.a != test.y, svm.intercept_)
            metrics = {"spurious_share": spurious_share(svm.coef_), "maxmargin_norm": svm.norm_,
                       "majority_acc": accs["majority_acc"], "minority_acc": accs["minority_acc"]}
            rows += long_rows("geometric", seed, metrics, n_maj=int(n_maj), n_min=int(n_min))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ statistical skew
def stack_padded(datasets: Sequence[LinearSkewData]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X (R, n, d), y (R, n), weights (R, n))`` with zero-weight padding to a common n."""
    n = max(len(d.y) for d in datasets)
    d_feat = datasets[0].x.shape[1]
    x = np.zeros((len(datasets), n, d_feat))
    y = np.ones((len(datasets), n))
    w = np.zeros((len(datasets), n))
    for r, data in enumerate(datasets):
        k = len(data.y)
        x[r, :k], y[r, :k], w[r, :k] = data.x, 2.0 * data.y - 1.0, 1.0
    return x, y, w


def unique_set_share(data: LinearSkewData, fit_intercept: bool = False) -> float:
    """Spurious share of the max-margin classifier of the *distinct* points (≈ 0 when balanced)."""
    _, keep = np.unique(np.column_stack([data.x, data.y]), axis=0, return_index=True)
    svm = MaxMarginClassifier(fit_intercept=fit_intercept).fit(data.x[keep], data.y[keep])
    return float(spurious_share(svm.coef_))


def statistical_experiment(ps: Sequence[float], seeds: Sequence[int], n_unique: int = 10, D: int = 1,
                           margin: float = 1.0, B: float = 1.0, n_steps: int = 100_000, lr: float = 0.5,
                           loss: str = "logistic", n_logged: int = 60, batch_size: int | None = None,
                           n_test: int = 500, device: str = "auto", experiment: str = "statistical") -> pd.DataFrame:
    """GD on ``n_unique`` minority + ``n_unique`` majority points, the majority duplicated to ``p``.

    Every (seed, p) is one run of a single batched GD computation. Per logged
    ``step``: ``spurious_share``, ``spurious_ratio`` and the overlay
    ``theory_spurious_share`` / ``theory_spurious_ratio``; at the last step the
    test ``majority_acc`` / ``minority_acc`` (the minority group is the OOD distribution), the
    training accuracy ``train_acc`` and the max-margin share of the unique set. ``experiment``
    names the rows (``statistical_highd`` for the high-dimensional variant)."""
    runs = [(int(s), float(p)) for s in seeds for p in ps]
    datasets = [duplicate_majority(n_unique, p, D=D, margin=margin, B=B, seed=s) for s, p in runs]
    x, y, w = stack_padded(datasets)
    gd = BatchedLinearGD(loss=loss, lr=lr, n_steps=n_steps, n_logged=n_logged, batch_size=batch_size,
                         device=device, seed=int(seeds[0])).fit(x, y, w)
    shares, ratios = spurious_share(gd.coef_path_), spurious_ratio(gd.coef_path_)
    rows = []
    for r, (seed, p) in enumerate(runs):
        theory_r = theory_spurious_ratio(p, B, gd.steps_, margin)
        theory_s = theory_spurious_share(p, B, gd.steps_, margin)
        for j, step in enumerate(gd.steps_):
            metrics = {"spurious_share": shares[r, j], "spurious_ratio": ratios[r, j]}
            if step > 1:
                metrics.update(theory_spurious_share=theory_s[j], theory_spurious_ratio=theory_r[j])
            rows += long_rows(experiment, seed, metrics, p=p, step=int(step))
        test = skew_test_set(n_test, D, margin, B, seed)
        accs = linear_group_accuracies(gd.coef_[r], test.x, test.y, test.a != test.y)
        x_unique, keep = np.unique(datasets[r].x, axis=0, return_index=True)
        train_acc = linear_accuracy(gd.coef_[r], x_unique, datasets[r].y[keep])  # on the unique points
        final = {**accs, "train_acc": train_acc, "maxmargin_spurious_share": unique_set_share(datasets[r])}
        rows += long_rows(experiment, seed, final, p=p, step=int(gd.steps_[-1]))
    return pd.DataFrame(rows)


def check_duplication_p(ps: Sequence[float]) -> None:
    for p in ps:
        if not 0.5 <= float(p) < 1.0:
            raise SpurlabError(f"duplication p must lie in [0.5, 1), got {p}",
                               hint="p is the majority share after duplicating majority points")
