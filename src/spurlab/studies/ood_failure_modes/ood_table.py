"""Geometric and statistical skew on a user's own table (the authors' UCI-obesity demo, generalized).

:func:`load_table_task` turns a CSV into the linear skew setting: feature
columns MinMax-scaled (categorical ones one-hot encoded), the label binarized
(``positive`` values -> +1, optional ``negative`` values kept, the rest
dropped), the spurious column binarized (``spurious_positive`` values, else
its two values, else its median) and oriented so that it agrees with the label
on most rows (those rows are the majority group). The spurious feature enters
the model as ``x_sp = B (2 s - 1)`` in the last column.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spurlab.data.synthetic import duplication_counts
from spurlab.errors import DataNotFoundError, SpurlabError
from spurlab.probes.skew import linear_group_accuracies, spurious_share
from spurlab.studies.ood_failure_modes.ood_linear import long_rows
from spurlab.train.engines.linear_gd import BatchedLinearGD
from spurlab.train.engines.max_margin import MaxMarginClassifier


@dataclass
class TableTask:
    """A binarized table: ``x`` (n, d) with the spurious feature last, ``y`` in {0, 1}, minority mask."""

    x: np.ndarray
    y: np.ndarray
    minority: np.ndarray
    feature_names: list[str]
    source: str
    notes: list[str] = field(default_factory=list)


def _values(spec) -> list[str]:
    """``"4,5,6"`` / ``4`` / ``[4, 5]`` -> ``["4", "5", "6"]``."""
    if spec is None:
        return []
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _matches(column: pd.Series, values: list[str]) -> np.ndarray:
    """Rows of ``column`` equal to one of ``values`` (numbers compared as numbers)."""
    if pd.api.types.is_numeric_dtype(column):
        try:
            return column.isin([float(v) for v in values]).to_numpy()
        except ValueError:
            pass
    return column.astype(str).str.strip().isin(values).to_numpy()


def binarize_label(column: pd.Series, positive, negative) -> tuple[np.ndarray, np.ndarray]:
    """``(keep mask, y in {0, 1} for the kept rows)``."""
    pos = _values(positive)
    if not pos:
        distinct = sorted(column.dropna().unique(), key=str)
        if len(distinct) != 2:
            raise SpurlabError(f"label column {column.name!r} has {len(distinct)} distinct values",
                               hint="say which values are positive with --positive V1,V2 (and --set negative=...)")
        pos = [str(distinct[1])]
    is_pos = _matches(column, pos)
    keep = is_pos | _matches(column, _values(negative)) if _values(negative) else column.notna().to_numpy()
    if not is_pos[keep].any() or is_pos[keep].all():
        raise SpurlabError(f"label column {column.name!r} gives only one class after binarizing with "
                           f"positive={pos}", hint="check the --positive values")
    return keep, is_pos[keep].astype(np.int64)


def binarize_spurious(column: pd.Series, spurious_positive) -> tuple[np.ndarray, str]:
    """``(s in {0, 1}, how)``: listed values, else the larger of two values, else above the median."""
    values = _values(spurious_positive)
    if values:
        return _matches(column, values).astype(np.int64), f"in {values}"
    distinct = sorted(column.dropna().unique(), key=lambda v: (str(type(v)), v))
    if len(distinct) == 2:
        return (column == distinct[1]).to_numpy().astype(np.int64), f"== {distinct[1]!r}"
    if pd.api.types.is_numeric_dtype(column):
        median = float(column.median())
        return (column > median).to_numpy().astype(np.int64), f"> median {median:g}"
    raise SpurlabError(f"spurious column {column.name!r} is categorical with {len(distinct)} values",
                       hint="say which values count as 1 with --set spurious_positive=V1,V2")


def minmax_features(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """One-hot encode non-numeric columns, then scale every column to [0, 1] (constant columns -> 0)."""
    encoded = pd.get_dummies(frame, dtype=np.float64)
    if encoded.isna().any().any():
        bad = encoded.columns[encoded.isna().any()].tolist()
        raise SpurlabError(f"feature column(s) {bad[:5]} have missing values", hint="impute or drop them first")
    x = encoded.to_numpy(dtype=np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (x - lo) / span, [str(c) for c in encoded.columns]


def load_table_task(path, label: str, spurious: str, positive=None, negative=None, spurious_positive=None,
                    B: float = 0.5) -> TableTask:
    """Read a CSV and build the binary task with the spurious feature as the last column."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"table {path} not found", hint="pass an existing CSV file with --table")
    frame = pd.read_csv(path)
    for role, col in (("label", label), ("spurious", spurious)):
        if not col or col not in frame.columns:
            raise SpurlabError(f"{role} column {col!r} is not in {path.name}",
                               hint=f"columns: {', '.join(map(str, frame.columns[:30]))}")
    if label == spurious:
        raise SpurlabError("the label and the spurious column must differ")
    frame = frame.dropna(subset=[label, spurious]).reset_index(drop=True)
    keep, y = binarize_label(frame[label], positive, negative)
    frame = frame[keep].reset_index(drop=True)
    s, how = binarize_spurious(frame[spurious], spurious_positive)
    notes = [f"label: {label} in {_values(positive) or 'the larger value'} -> +1; {int(keep.sum())} rows kept",
             f"spurious: {spurious} {how} -> 1"]
    if np.mean(s == y) < 0.5:
        s = 1 - s
        notes.append("spurious attribute flipped so that it agrees with the label on most rows")
    features, names = minmax_features(frame.drop(columns=[label, spurious]))
    if features.shape[1] == 0:
        raise SpurlabError("the table has no feature column besides the label and the spurious column")
    x = np.column_stack([features, B * (2.0 * s - 1.0)])
    minority = s != y
    if not minority.any() or minority.all():
        raise SpurlabError("the table has no minority rows (spurious value disagreeing with the label)",
                           hint="pick a spurious column that is correlated with, but not equal to, the label")
    return TableTask(x, y, minority, names + [spurious], path.name, notes)


def split_task(task: TableTask, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Group-stratified (train indices, test indices)."""
    rng = np.random.default_rng(seed)
    groups = 2 * task.y + task.minority
    train, test = [], []
    for g in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == g))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _test_accuracies(task: TableTask, test: np.ndarray, coef, intercept) -> dict[str, float]:
    return linear_group_accuracies(coef, task.x[test], task.y[test], task.minority[test], intercept)


def table_geometric_experiment(task: TableTask, n_mins: Sequence[int], seeds: Sequence[int],
                               test_fraction: float = 0.4, fit_intercept: bool = True) -> pd.DataFrame:
    """Every majority training row kept, the minority training rows subsampled (0 = all of them)."""
    rows = []
    for seed in seeds:
        train, test = split_task(task, test_fraction, int(seed))
        maj, mino = train[~task.minority[train]], train[task.minority[train]]
        mino = np.random.default_rng(int(seed) + 1).permutation(mino)
        sizes = sorted({len(mino) if int(n) <= 0 else min(int(n), len(mino)) for n in n_mins}, reverse=True)
        for k in sizes:
            idx = np.concatenate([maj, mino[:k]])
            try:
                svm = MaxMarginClassifier(fit_intercept=fit_intercept).fit(task.x[idx], task.y[idx])
            except SpurlabError as exc:
                raise SpurlabError(f"{task.source}: the training rows are not linearly separable, so the hard-"
                                   f"margin analysis does not apply ({exc.args[0].splitlines()[0]})",
                                   hint="use a linearly separable table, or fewer/other feature columns") from None
            metrics = {"spurious_share": spurious_share(svm.coef_), "maxmargin_norm": svm.norm_,
                       **_test_accuracies(task, test, svm.coef_, svm.intercept_)}
            rows += long_rows("geometric", seed, metrics, n_maj=len(maj), n_min=k, table=task.source)
    return pd.DataFrame(rows)


def table_statistical_experiment(task: TableTask, ps: Sequence[float], seeds: Sequence[int], n_unique: int = 0,
                                 test_fraction: float = 0.4, n_steps: int = 10_000, lr: float = 0.5,
                                 loss: str = "logistic", n_logged: int = 40, fit_intercept: bool = True,
                                 device: str = "auto") -> pd.DataFrame:
    """A balanced unique set (``n_unique`` per group; 0 = as many as the minority has), majority
    duplicated to each ``p`` through integer sample weights; one batched GD over seeds x p."""
    runs, xs, ys, ws, tests = [], [], [], [], []
    for seed in seeds:
        train, test = split_task(task, test_fraction, int(seed))
        rng = np.random.default_rng(int(seed) + 2)
        maj = rng.permutation(train[~task.minority[train]])
        mino = rng.permutation(train[task.minority[train]])
        k = min(len(maj), len(mino)) if n_unique <= 0 else min(n_unique, len(maj), len(mino))
        idx = np.concatenate([maj[:k], mino[:k]])
        for p in ps:
            runs.append((int(seed), float(p), k))
            xs.append(task.x[idx])
            ys.append(task.y[idx])
            ws.append(np.concatenate([duplication_counts(k, float(p)), np.ones(k)]))
            tests.append(test)
    gd = BatchedLinearGD(loss=loss, lr=lr, n_steps=n_steps, n_logged=n_logged, fit_intercept=fit_intercept,
                         device=device).fit(_pad(xs), _pad(ys), _pad(ws))
    shares = spurious_share(gd.coef_path_)
    rows = []
    for r, (seed, p, k) in enumerate(runs):
        for j, step in enumerate(gd.steps_):
            rows += long_rows("statistical", seed, {"spurious_share": shares[r, j]}, p=p, step=int(step),
                              n_unique=k, table=task.source)
        accs = _test_accuracies(task, tests[r], gd.coef_[r], gd.intercept_[r])
        rows += long_rows("statistical", seed, accs, p=p, step=int(gd.steps_[-1]), n_unique=k, table=task.source)
    return pd.DataFrame(rows)


def _pad(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack runs of different sizes; padded rows get zeros (zero weight when padding weights)."""
    n = max(len(a) for a in arrays)
    out = np.zeros((len(arrays), n) + arrays[0].shape[1:])
    for r, a in enumerate(arrays):
        out[r, :len(a)] = a
    return out
