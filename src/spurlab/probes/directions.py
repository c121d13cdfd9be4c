"""Failure directions (Jain, Lawrence, Moitra, Madry, ICLR 2023): per-class linear SVMs that
predict whether a model is right, fit on embeddings of a held-out split.

>>> fd = FailureDirections(seed=0).fit(val_emb, val_y, val_pred, train_embeddings=train_emb)  # doctest: +SKIP
>>> dv = fd.decision_function(test_emb, test_y)       # most negative = most failure-aligned
>>> fd.evaluate(test_emb, test_y, test_pred, minority=test_minority)   # per-class table

The pre-processing (standardize with the train-split statistics, then L2-normalize)
happens inside the estimator, exactly once: always pass raw embeddings.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurlab.errors import SpurlabError
from spurlab.params import Boolean, Interval, NumberList, Options, check_params, optional, positive_int
from spurlab.utils import atomic_path, check_finite, check_labels, check_same_length, resolve_device, torch_threads

DEFAULT_CS = tuple(float(c) for c in np.logspace(-6, 0, 7))
FORMAT_VERSION = 1
LOSSES = ("hinge", "squared_hinge")
ROW_CHUNK = 4096  # rows checked, standardized and scored at a time (bounded temporaries on a large split)
FOLD_RULES = ("ordered", "shuffled")


# ------------------------------------------------------------------ helpers usable on their own
def preprocess(embeddings: np.ndarray, mean: np.ndarray, scale: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Standardize with (mean, scale), then L2-normalize each row (zero rows stay zero)."""
    z = (np.asarray(embeddings, dtype=np.float32) - mean) / scale
    if not normalize:
        return z
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norms > 0, norms, 1.0)


def stratified_folds(outcome: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold id per example, each outcome value spread evenly over the folds (seeded)."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(outcome), dtype=np.int64)
    for value in np.unique(outcome):
        idx = rng.permutation(np.flatnonzero(outcome == value))
        folds[idx] = np.arange(len(idx)) % n_folds
    return folds


def ordered_stratified_folds(outcome: np.ndarray, n_folds: int) -> np.ndarray:
    """Fold id per example as scikit-learn's ``StratifiedKFold(n_folds)`` without shuffling assigns them
    (what the authors' ``cross_val_score(..., cv=2)`` uses): each outcome's examples, in order, cut into
    contiguous runs whose sizes deal the sorted outcomes round-robin over the folds."""
    values, encoded = np.unique(outcome, return_inverse=True)
    ordered = np.sort(encoded)
    sizes = np.array([np.bincount(ordered[f::n_folds], minlength=len(values)) for f in range(n_folds)])
    folds = np.empty(len(outcome), dtype=np.int64)
    for k in range(len(values)):
        folds[encoded == k] = np.repeat(np.arange(n_folds), sizes[:, k])
    return folds


def balanced_weights(target: np.ndarray) -> np.ndarray:
    """scikit-learn's ``class_weight="balanced"``: n / (2 * n_value) per example of a boolean target."""
    target = np.asarray(target, dtype=bool)
    n_pos = int(target.sum())
    n_neg = len(target) - n_pos
    return np.where(target, len(target) / (2.0 * max(n_pos, 1)), len(target) / (2.0 * max(n_neg, 1)))


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    recalls = [np.mean(predicted[truth == v] == v) for v in (True, False) if np.any(truth == v)]
    return float(np.mean(recalls))


def auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positive`` (NaN if one class is absent)."""
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, float)).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def minority_from_groups(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Minority mask when only group ids are known: within each class, every group but its largest."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    minority = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        in_class = labels == c
        values, counts = np.unique(groups[in_class], return_counts=True)
        minority[in_class] = groups[in_class] != values[np.argmax(counts)]
    return minority


def within_class_rank(decision_values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 = the most failure-aligned example of its class; NaN decision values rank last."""
    ranks = np.zeros(len(labels), dtype=np.int64)
    dv = np.where(np.isnan(decision_values), np.inf, decision_values)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        ranks[idx[np.argsort(dv[idx], kind="stable")]] = np.arange(1, len(idx) + 1)
    return ranks


# ------------------------------------------------------------------ the estimator
class FailureDirections:
    """One linear SVM per class that predicts the model's correctness from embeddings.

    Parameters
    ----------
    Cs : regularization grid searched by cross-validation (default ``logspace(-6, 0, 7)``, the authors').
    n_folds : folds of the stratified cross-validation that picks C (on balanced accuracy; ties keep the
        smaller C, as the authors' strict ``>`` over the increasing grid does).
    loss : ``"hinge"`` (default; the authors' ``SVC(kernel="linear")``: same optimum, and the bias by
        libsvm's rule, so the flags are SVC's at the same C) or ``"squared_hinge"`` (L2-SVM, a batched
        finite-Newton solver in torch, faster at many examples per dimension; its C and bias differ from SVC's).
    folds : ``"ordered"`` (default; scikit-learn's ``StratifiedKFold`` without shuffling, the authors'
        ``cross_val_score(cv=2)``) or ``"shuffled"`` (stratified, seeded by ``seed``).
    standardize, normalize : the pre-processing steps (both on by default, as in the paper).
    device : ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``: where the squared-hinge solver runs
        (the hinge solver runs in float64 on the CPU).
    dtype : ``"float32"`` (default) or ``"float64"`` for the squared-hinge solver.
    n_threads : torch CPU threads for the solver (default 1: its many small matrix products gain
        little from more threads and stall badly on a busy machine; ``None`` keeps torch's setting).
    min_per_outcome : a class needs at least this many errors and as many correct examples
        (and at least ``n_folds``); otherwise it is skipped and reported in ``skipped_``.
    seed : seeds the cross-validation folds (``folds="shuffled"``).

    Learned attributes: ``classes_``, ``n_features_in_``, ``mean_``, ``scale_``,
    ``directions_`` (K x D; unit failure directions, NaN rows for skipped classes),
    ``coef_``/``intercept_`` (the raw SVMs), ``C_``, ``cv_balanced_accuracy_``,
    ``cv_scores_`` (K x len(Cs)), ``class_counts_``, ``skipped_`` ({class: reason}).
    """

    def __init__(self, Cs: tuple[float, ...] | list[float] = DEFAULT_CS, n_folds: int = 2,
                 standardize: bool = True, normalize: bool = True, device: str = "auto",
                 dtype: str = "float32", n_threads: int | None = 1, min_per_outcome: int = 2,
                 max_iter: int = 30, tol: float = 1e-5, seed: int = 0, loss: str = "hinge",
                 folds: str = "ordered"):
        self.Cs = Cs
        self.loss = loss
        self.folds = folds
        self.n_folds = n_folds
        self.standardize = standardize
        self.normalize = normalize
        self.device = device
        self.dtype = dtype
        self.n_threads = n_threads
        self.min_per_outcome = min_per_outcome
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    # -------------------------------------------------------------- validation
    _parameter_constraints = {
        "Cs": NumberList(Interval(float, 0, None, closed="neither")),  # e.g. numpy.logspace(-6, 0, 7)
        "n_folds": Interval(int, 2, None), "loss": Options(*LOSSES), "folds": Options(*FOLD_RULES),
        "standardize": Boolean(), "normalize": Boolean(), "dtype": Options("float32", "float64"),
        "n_threads": optional(positive_int()), "min_per_outcome": Interval(int, 0, None), "max_iter": positive_int(),
        "tol": Interval(float, 0, None, closed="neither"), "seed": Interval(int, 0, None),
    }

    def _check_params(self) -> np.ndarray:
        """The declared constraints, before any work; the grid of Cs as an array."""
        checked = check_params("FailureDirections", self._parameter_constraints,
                               {name: getattr(self, name) for name in self._parameter_constraints})
        return np.asarray(checked["Cs"], dtype=float)

    def _check_embeddings(self, name: str, embeddings: Any) -> np.ndarray:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise SpurlabError(f"{name} must be 2-d (examples x dimensions), got shape {emb.shape}",
                               hint="flatten or pool your features to one vector per example")
        if len(emb) == 0:
            raise SpurlabError(f"{name} is empty", hint="pass at least one example per class")
        if not all(np.isfinite(emb[s:s + ROW_CHUNK]).all() for s in range(0, len(emb), ROW_CHUNK)):
            check_finite(name, emb)  # names the count of bad values
        if hasattr(self, "n_features_in_") and emb.shape[1] != self.n_features_in_:
            raise SpurlabError(f"{name} has {emb.shape[1]} dimensions, the directions were fit on "
                               f"{self.n_features_in_}", hint="use embeddings from the same encoder")
        return emb

    def _check_fitted(self) -> None:
        if not hasattr(self, "directions_"):
            raise SpurlabError("FailureDirections is not fitted yet", hint="call fit(embeddings, labels, predictions)")

    # -------------------------------------------------------------- fitting
    def fit(self, embeddings, labels, predictions, train_embeddings=None) -> FailureDirections:
        """Fit one SVM per class on (held-out) ``embeddings`` to predict ``predictions == labels``.

        ``train_embeddings`` (the model's training split) supply the standardization
        statistics; without them the statistics of ``embeddings`` are used.
        """
        cs = self._check_params()
        emb = self._check_embeddings("embeddings", embeddings)
        check_same_length(embeddings=emb, labels=labels, predictions=predictions)
        labels = check_labels("labels", labels)
        predictions = check_labels("predictions", predictions)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise SpurlabError(f"the labels hold a single class ({classes[0]})",
                               hint="pass the held-out examples of every class the model predicts")
        stats_from = emb if train_embeddings is None else self._check_embeddings("train_embeddings", train_embeddings)
        if stats_from.shape[1] != emb.shape[1]:
            raise SpurlabError(f"train_embeddings have {stats_from.shape[1]} dimensions, embeddings {emb.shape[1]}")
        self.n_features_in_ = emb.shape[1]
        self.mean_, self.scale_ = self._statistics(stats_from)
        z = self.transform(emb)
        self.classes_ = classes
        self.cs_ = cs
        self._fit_classes(z, labels, predictions == labels)
        return self

    def _statistics(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = emb.shape[1]
        if not self.standardize:
            return np.zeros(d, np.float32), np.ones(d, np.float32)
        if len(emb) > ROW_CHUNK:  # a large training split: two passes over row chunks, no full-size temporary
            mean = sum(emb[s:s + ROW_CHUNK].sum(axis=0, dtype=np.float64) for s in range(0, len(emb), ROW_CHUNK))
            mean = mean / len(emb)
            squares = sum(np.square(emb[s:s + ROW_CHUNK] - mean).sum(axis=0) for s in range(0, len(emb), ROW_CHUNK))
            mean, scale = mean.astype(np.float32), np.sqrt(squares / len(emb)).astype(np.float32)
        else:
            mean, scale = emb.mean(axis=0).astype(np.float32), emb.std(axis=0)
        return mean, np.where(scale > 1e-12, scale, 1.0).astype(np.float32)

    def transform(self, embeddings) -> np.ndarray:
        """The pre-processed embeddings the SVMs see (standardized, then L2-normalized)."""
        if not hasattr(self, "mean_"):
            raise SpurlabError("FailureDirections is not fitted yet", hint="call fit(...) first")
        return preprocess(self._check_embeddings("embeddings", embeddings), self.mean_, self.scale_,
                          normalize=self.normalize)

    def _fit_classes(self, z: np.ndarray, labels: np.ndarray, correct: np.ndarray) -> None:
        k, d, n_c = len(self.classes_), z.shape[1], len(self.cs_)
        self.coef_ = np.full((k, d), np.nan)
        self.intercept_ = np.full(k, np.nan)
        self.C_ = np.full(k, np.nan)
        self.cv_scores_ = np.full((k, n_c), np.nan)
        self.cv_balanced_accuracy_ = np.full(k, np.nan)
        self.class_counts_ = np.zeros((k, 2), dtype=np.int64)  # (n examples, n errors)
        self.skipped_: dict[int, str] = {}
        for i, c in enumerate(self.classes_):
            rows = np.flatnonzero(labels == c)
            ok = correct[rows]
            self.class_counts_[i] = (len(rows), int((~ok).sum()))
            reason = self._skip_reason(ok)
            if reason:
                self.skipped_[int(c)] = reason
                continue
            scores = self._cross_validate(z[rows], ok, seed=self.seed + int(c))
            best = int(np.argmax(scores))  # ties keep the smallest C
            w, b = self._solve(z[rows], ok, self.cs_[best:best + 1])
            self.cv_scores_[i], self.cv_balanced_accuracy_[i], self.C_[i] = scores, scores[best], self.cs_[best]
            self.coef_[i], self.intercept_[i] = w[0], b[0]
        norms = np.linalg.norm(self.coef_, axis=1, keepdims=True)
        self.directions_ = self.coef_ / np.where(norms > 0, norms, 1.0)

    def _skip_reason(self, ok: np.ndarray) -> str:
        need = max(int(self.min_per_outcome), int(self.n_folds))
        n_err, n_ok = int((~ok).sum()), int(ok.sum())
        if n_err == 0:
            return "the model makes no errors on this class"
        if n_ok == 0:
            return "the model gets no example of this class right"
        if min(n_err, n_ok) < need:
            return (f"too few examples to cross-validate ({n_err} errors, {n_ok} correct; "
                    f"need {need} of each)")
        return ""

    def _solve(self, z: np.ndarray, ok: np.ndarray, cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from spurlab.probes.svm import solve_hinge, solve_squared_hinge

        if self.loss == "hinge":
            with torch_threads(self.n_threads):
                sol = solve_hinge(np.asarray(z, dtype=np.float64), np.where(ok, 1.0, -1.0), balanced_weights(ok), cs)
            return sol.w, sol.b
        dtype = torch.float64 if self.dtype == "float64" else torch.float32
        with torch_threads(self.n_threads):
            sol = solve_squared_hinge(z, np.where(ok, 1.0, -1.0), balanced_weights(ok), cs,
                                      max_iter=self.max_iter, tol=self.tol,
                                      device=resolve_device(self.device), dtype=dtype)
        return sol.w, sol.b

    def _cross_validate(self, z: np.ndarray, ok: np.ndarray, seed: int) -> np.ndarray:
        folds = ordered_stratified_folds(ok, int(self.n_folds)) if self.folds == "ordered" else \
            stratified_folds(ok, int(self.n_folds), seed)
        scores = np.zeros((int(self.n_folds), len(self.cs_)))
        for f in range(int(self.n_folds)):
            train, test = folds != f, folds == f
            w, b = self._solve(z[train], ok[train], self.cs_)
            dv = z[test] @ w.T + b  # n_test x n_C
            scores[f] = [balanced_accuracy(ok[test], dv[:, j] > 0) for j in range(len(self.cs_))]
        return scores.mean(axis=0)

    # -------------------------------------------------------------- scoring
    def _class_index(self, labels: np.ndarray) -> np.ndarray:
        lookup = {int(c): i for i, c in enumerate(self.classes_)}
        return np.array([lookup.get(int(v), -1) for v in labels], dtype=np.int64)

    def decision_function(self, embeddings, labels) -> np.ndarray:
        """SVM decision value of each example under its class's SVM.

        Negative: on the failing side (a likely error); NaN for classes without an SVM
        (skipped, or not seen in ``fit``).
        """
        self._check_fitted()
        emb = self._check_embeddings("embeddings", embeddings)
        labels = check_labels("labels", labels)
        check_same_length(embeddings=emb, labels=labels)
        idx = self._class_index(labels)
        out = np.full(len(labels), np.nan)
        for start in range(0, len(labels), ROW_CHUNK):  # chunks of rows: no (N, D) temporaries for a large split
            rows = slice(start, start + ROW_CHUNK)
            z, k = self.transform(emb[rows]), idx[rows]
            known = k >= 0
            out[rows][known] = np.einsum("nd,nd->n", z[known], self.coef_[k[known]]) + self.intercept_[k[known]]
        return out

    def signed_distance(self, embeddings, labels) -> np.ndarray:
        """Decision value over ``||w_c||``: the signed distance to the class's hyperplane in the shared
        pre-processed (unit-norm) embedding space, so values of different classes are in the same units
        and can be ranked together (the pooled metrics do). Same sign as the decision value."""
        dv = self.decision_function(embeddings, labels)
        norms = np.linalg.norm(self.coef_, axis=1)
        idx = self._class_index(np.asarray(labels))
        scale = np.where(idx >= 0, norms[np.maximum(idx, 0)], np.nan)
        return dv / np.where(scale > 0, scale, np.nan)

    def predict(self, embeddings, labels) -> np.ndarray:
        """``True`` where the example is flagged as a likely error (decision value <= 0)."""
        dv = self.decision_function(embeddings, labels)
        return np.nan_to_num(dv, nan=np.inf) <= 0

    def rank(self, embeddings, labels, k: int | None = None) -> dict[int, np.ndarray]:
        """``{class: indices}`` sorted from the most failure-aligned example (first ``k`` when given)."""
        dv = self.decision_function(embeddings, labels)
        labels = np.asarray(labels)
        out = {}
        for c in self.classes_:
            if int(c) in self.skipped_:
                continue
            idx = np.flatnonzero(labels == c)
            order = idx[np.argsort(dv[idx], kind="stable")]
            out[int(c)] = order if k is None else order[:k]
        return out

    def score_direction(self, vectors, label: int) -> np.ndarray:
        """Decision values of arbitrary vectors (e.g. caption embeddings) under one class's SVM."""
        return self.decision_function(vectors, np.full(len(np.asarray(vectors)), int(label)))

    # -------------------------------------------------------------- evaluation
    def evaluate(self, embeddings, labels, predictions, groups=None, minority=None,
                 class_names: list[str] | tuple[str, ...] | None = None, pooled: bool = False) -> pd.DataFrame:
        """Per-class metrics on (held-out) data, plus a ``mean`` row (and, with ``pooled=True``, a
        ``pooled`` row: the same metrics over the examples of every fitted class at once -- the paper's
        89.9% / 84.7% are pooled -- with the error AUROC of :meth:`signed_distance`).

        Columns: class, name, n, n_errors, error_rate, C, cv_balanced_acc, error_auroc
        (AUROC of ``-decision value`` for the model's actual errors), flagged_fraction,
        flag_error_precision, error_recall and, when ``minority`` (or ``groups``) is known,
        minority_share, minority_share_of_errors, flag_minority_precision, minority_recall.
        """
        dv = self.decision_function(embeddings, labels)
        labels = np.asarray(labels)
        predictions = check_labels("predictions", predictions)
        check_same_length(labels=labels, predictions=predictions, groups=groups, minority=minority)
        if minority is None and groups is not None:
            minority = minority_from_groups(labels, check_labels("groups", groups))
        minority = None if minority is None else np.asarray(minority, dtype=bool)
        rows = [self._class_metrics(i, dv, labels, predictions, minority, class_names)
                for i in range(len(self.classes_))]
        table = pd.DataFrame(rows)
        numeric = table.drop(columns=["class", "name", "skipped"]).mean(numeric_only=True)
        summary = {"class": -1, "name": "mean", **numeric.to_dict(), "skipped": ""}
        rows = [summary]
        if pooled:
            rows.append(self._pooled_metrics(embeddings, labels, predictions, dv, minority))
        return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)

    def _pooled_metrics(self, embeddings, labels, predictions, dv, minority) -> dict[str, Any]:
        fitted = ~np.isnan(dv)
        err = (predictions != labels)[fitted]
        flag = (dv <= 0)[fitted]
        distance = self.signed_distance(embeddings, labels)[fitted]
        out: dict[str, Any] = {"class": -2, "name": "pooled", "n": int(fitted.sum()), "n_errors": int(err.sum()),
                               "error_rate": _mean(err), "C": np.nan, "cv_balanced_acc": np.nan,
                               "error_auroc": auroc(err, -distance), "flagged_fraction": _mean(flag),
                               "flag_error_precision": _mean(err[flag]), "error_recall": _mean(flag[err])}
        if minority is not None:
            mino = minority[fitted]
            out.update(minority_share=_mean(mino), minority_share_of_errors=_mean(mino[err]),
                       flag_minority_precision=_mean(mino[flag]), minority_recall=_mean(flag[mino]))
        out["skipped"] = ""
        return out

    def _class_metrics(self, i, dv, labels, predictions, minority, class_names) -> dict[str, Any]:
        c = int(self.classes_[i])
        rows = labels == c
        err = predictions[rows] != c
        flag = np.nan_to_num(dv[rows], nan=np.inf) <= 0
        out: dict[str, Any] = {
            "class": c, "name": class_names[c] if class_names is not None and c < len(class_names) else str(c),
            "n": int(rows.sum()), "n_errors": int(err.sum()), "error_rate": _mean(err),
            "C": self.C_[i], "cv_balanced_acc": self.cv_balanced_accuracy_[i],
            "error_auroc": auroc(err, -dv[rows]) if c not in self.skipped_ else np.nan,
            "flagged_fraction": _mean(flag), "flag_error_precision": _mean(err[flag]),
            "error_recall": _mean(flag[err]),
        }
        if minority is not None:
            mino = minority[rows]
            out.update(minority_share=_mean(mino), minority_share_of_errors=_mean(mino[err]),
                       flag_minority_precision=_mean(mino[flag]), minority_recall=_mean(flag[mino]))
        out["skipped"] = self.skipped_.get(c, "")
        return out

    def score(self, embeddings, labels, predictions) -> float:
        """Mean over classes of the error AUROC (higher: the directions find the errors better)."""
        table = self.evaluate(embeddings, labels, predictions)
        return float(table.loc[table["class"] >= 0, "error_auroc"].mean())

    def describe(self, captioner, class_names=None, k: int = 5, **kwargs) -> dict[int, dict[str, list]]:
        """Captions for every direction: ``captioner.describe(self, class_names, k=k, **kwargs)``.

        Use :class:`spurlab.probes.captions.CaptionScorer` (joint image-text encoder) or
        :class:`spurlab.probes.captions.AttributeCaptioner` (attribute metadata).
        """
        self._check_fitted()
        return captioner.describe(self, class_names=class_names, k=k, **kwargs)

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted state to an ``.npz`` (arrays + JSON parameters; no pickle)."""
        self._check_fitted()
        path = Path(path)
        meta = {"format_version": FORMAT_VERSION, "params": self.get_params(),
                "skipped": {str(k): v for k, v in self.skipped_.items()}}
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FailureDirections:
        path = Path(path)
        if not path.is_file():
            raise SpurlabError(f"no saved failure directions at {path}", hint="pass the .npz written by save()")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"])) if "meta" in data.files else None
                arrays = {name: data[name] for name in _ARRAYS if name in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise SpurlabError(f"{path} is not a readable .npz file ({exc})",
                               hint="pass the .npz written by FailureDirections.save()") from None
        if meta is None:
            raise SpurlabError(f"{path} is not a saved FailureDirections file (no 'meta' entry)")
        missing = [n for n in _ARRAYS if n not in arrays]
        if missing or meta.get("format_version") != FORMAT_VERSION:
            raise SpurlabError(f"{path} lacks {missing or 'a known format version'}",
                               hint="re-fit and save with this version of spurlab")
        params = meta["params"]
        params["Cs"] = tuple(params["Cs"])
        est = cls(**params)
        for name, value in arrays.items():
            setattr(est, name, value)
        est.n_features_in_ = int(est.mean_.shape[0])
        est.skipped_ = {int(k): v for k, v in meta["skipped"].items()}
        return est

    def get_params(self) -> dict[str, Any]:
        return {"Cs": [float(c) for c in np.ravel(self.Cs)], "n_folds": int(self.n_folds),
                "standardize": bool(self.standardize), "normalize": bool(self.normalize), "device": self.device,
                "dtype": self.dtype, "n_threads": self.n_threads, "min_per_outcome": int(self.min_per_outcome),
                "max_iter": int(self.max_iter), "tol": float(self.tol), "seed": int(self.seed), "loss": self.loss,
                "folds": self.folds}

    def __repr__(self) -> str:
        fitted = f", fitted on {len(self.classes_)} classes" if hasattr(self, "classes_") else ""
        return f"FailureDirections(loss={self.loss!r}, folds={self.folds!r}, n_folds={self.n_folds}{fitted})"


_ARRAYS = ("classes_", "cs_", "mean_", "scale_", "coef_", "intercept_", "directions_", "C_", "cv_scores_",
           "cv_balanced_accuracy_", "class_counts_")


def _mean(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if len(mask) else float("nan")
