"""Synthetic generators of the three theory papers, every symbol a parameter.

* :func:`easy_task` / :func:`duplicate_majority` — the easy-to-learn linear task
  of *ood-failure-modes* (geometric and statistical skew).
* :func:`structured_features` — the core + background feature model of
  *feature-contamination*.
* :func:`gaussian_core_spurious` — the core + independent spurious Gaussian
  model of *spurious-memorization* (random features / NTK).

Each generator returns plain arrays; the registered datasets wrap them into
:class:`~spurlab.data.grouped.DatasetSplits`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.dataset_registry import register_dataset
from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, check_params, footprint, optional, positive_int, probability

SIGNED_NAMES = ("-1", "+1")
ALIGNMENT_NAMES = ("x_sp<0", "x_sp>0")


def signed(y: np.ndarray) -> np.ndarray:
    """Class index {0, 1} -> label {-1, +1}."""
    return 2.0 * np.asarray(y, dtype=np.float64) - 1.0


# What the generators accept (spurlab.params), checked by name before any array is drawn.
GENERATOR_CONSTRAINTS = {
    "n_maj": Interval(int, 0, None), "n_min": Interval(int, 0, None), "D": positive_int(), "n": positive_int(),
    "p": probability(closed="neither"), "alpha": probability(closed="neither"), "core": Options("linear", "nonlinear"),
    "mode": Options("fresh", "zero"),
    "duplicate_p": Interval(float, 0.5, 1, closed="left"),  # duplication can only raise the majority share
}


def _checked(owner: str, **values):
    """``values`` checked by GENERATOR_CONSTRAINTS, in the order given (one value: itself)."""
    checked = tuple(check_params(owner, GENERATOR_CONSTRAINTS, values).values())
    return checked[0] if len(checked) == 1 else checked


# ======================================================== ood-failure-modes
@dataclass
class LinearSkewData:
    """``x = [x_inv (D), x_sp (1)]``, class index ``y`` and alignment ``a`` (a == y: majority)."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    unique_id: np.ndarray  # duplicated points share an id

    @property
    def x_inv(self) -> np.ndarray:
        return self.x[:, :-1]

    @property
    def x_sp(self) -> np.ndarray:
        return self.x[:, -1]


def _invariant_features(n: int, D: int, margin: float, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x_inv = rng.normal(0.0, 1.0 / np.sqrt(D), size=(n, D))
    x_inv[:, 0] = margin * signed(y)
    return x_inv


def easy_task(n_maj: int, n_min: int, D: int = 1000, margin: float = 0.1, B: float = 1.0,
              seed: int = 0) -> LinearSkewData:
    """The easy-to-learn task: ``x_inv[0] = margin * y`` separates the classes,
    other invariant coordinates are N(0, 1/D), and ``x_sp = +B y`` on the
    ``n_maj`` majority points and ``-B y`` on the ``n_min`` minority points.
    Classes are balanced inside each group (up to one point)."""
    n_maj, n_min, D = _checked("easy_task", n_maj=n_maj, n_min=n_min, D=D)
    if n_maj + n_min == 0:
        raise SpurlabError("easy_task needs at least one point", hint="set n_maj or n_min > 0")
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(n_maj) % 2, np.arange(n_min) % 2]).astype(np.int64)
    minority = np.concatenate([np.zeros(n_maj, bool), np.ones(n_min, bool)])
    x_sp = B * signed(y) * np.where(minority, -1.0, 1.0)
    x = np.column_stack([_invariant_features(len(y), D, margin, y, rng), x_sp])
    a = np.where(minority, 1 - y, y)
    return LinearSkewData(x, y, a, np.arange(len(y)))


def duplication_counts(n_unique: int, p: float) -> np.ndarray:
    """Copies of each of ``n_unique`` majority points so that, with ``n_unique``
    minority points, the majority share is ``p`` (copies spread as evenly as possible)."""
    p = check_params("duplication_counts", {"p": GENERATOR_CONSTRAINTS["duplicate_p"]}, {"p": p})["p"]
    total = int(round(n_unique * p / (1.0 - p)))
    base, extra = divmod(total, n_unique)
    return np.array([base + (i < extra) for i in range(n_unique)], dtype=np.int64)


def duplicate_majority(n_unique: int, p: float, D: int = 1000, margin: float = 0.1, B: float = 1.0,
                       seed: int = 0) -> LinearSkewData:
    """Statistical skew: ``n_unique`` minority and ``n_unique`` majority points, the
    majority points duplicated so that a fraction ``p`` of the set is majority.
    The set of *unique* points is balanced, so its max-margin classifier puts
    (almost) no weight on ``x_sp``; gradient descent does, for a long time."""
    base = easy_task(n_unique, n_unique, D=D, margin=margin, B=B, seed=seed)
    copies = duplication_counts(n_unique, p)
    idx = np.concatenate([np.repeat(np.arange(n_unique), copies), np.arange(n_unique, 2 * n_unique)])
    return LinearSkewData(base.x[idx], base.y[idx], base.a[idx], base.unique_id[idx])


def _linear_skew_split(data: LinearSkewData, name: str) -> GroupedDataset:
    import pandas as pd

    return GroupedDataset(
        x=data.x.astype(np.float64), y=data.y, a=data.a, class_names=SIGNED_NAMES,
        attr_names=ALIGNMENT_NAMES, split=name,
        metadata=pd.DataFrame({"unique_id": data.unique_id}),
    )


@register_dataset("linear-skew", "ood-failure-modes easy-to-learn linear task with geometric (n_min) "
                  "or statistical (duplicate_p) skew", kind="synthetic",
                  constraints={"n_maj": Interval(int, 0, None), "n_min": Interval(int, 0, None),
                               "p": optional(probability()), "n": optional(positive_int()),
                               "duplicate_p": optional(probability(closed="neither")), "D": Interval(int, 2, None),
                               "margin": Interval(float, 0, None, closed="neither"),
                               "B": Interval(float, 0, None, closed="neither"), "n_test": positive_int()},
                  requires={"n": "p"},
                  size=footprint(lambda q: (q["n"] or q["n_maj"] + q["n_min"]) + 2 * q["n_test"], "D"))
def build_linear_skew(n_maj: int = 500, n_min: int = 20, p: float | None = None, n: int | None = None,
                      duplicate_p: float | None = None, D: int = 1000, margin: float = 0.1, B: float = 1.0,
                      n_test: int = 1000, seed: int = 0) -> DatasetSplits:
    """Splits ``train``, ``test`` (balanced majority/minority) and ``ood`` (minority only).

    Group sizes come from ``n_maj``/``n_min``, or from ``p`` and ``n`` (``n_min =
    round((1 - p) n)``). With ``duplicate_p`` the train split is instead
    ``n_min`` unique points of each group with the majority duplicated to ``duplicate_p``.
    """
    if p is not None:
        p = _checked("build_linear_skew", p=p)
        total = n if n is not None else n_maj + n_min
        n_min = int(round((1.0 - p) * total))
        n_maj = total - n_min
    if duplicate_p is not None:
        train = duplicate_majority(n_min, duplicate_p, D=D, margin=margin, B=B, seed=seed)
    else:
        train = easy_task(n_maj, n_min, D=D, margin=margin, B=B, seed=seed)
    test = easy_task(n_test // 2, n_test - n_test // 2, D=D, margin=margin, B=B, seed=seed + 1)
    ood = easy_task(0, n_test, D=D, margin=margin, B=B, seed=seed + 2)
    return DatasetSplits({
        "train": _linear_skew_split(train, "train"),
        "test": _linear_skew_split(test, "test"),
        "ood": _linear_skew_split(ood, "ood"),
    }, name="linear-skew")


# ======================================================== feature-contamination
@dataclass
class StructuredFeatures:
    """Inputs ``x = features @ T.T`` with ``features = [core, background]``."""

    x: np.ndarray
    y: np.ndarray
    core: np.ndarray
    background: np.ndarray
    transform: np.ndarray  # T: (d_in, d_core + d_bg), orthonormal columns


def random_orthonormal(d_in: int, d_feat: int, rng: np.random.Generator) -> np.ndarray:
    if d_feat > d_in:
        raise SpurlabError(f"d_core + d_bg = {d_feat} must not exceed d_in = {d_in}")
    q, r = np.linalg.qr(rng.normal(size=(d_in, d_feat)))
    return q * np.sign(np.diag(r))


def _core_features(y: np.ndarray, d_core: int, variant: str, rng: np.random.Generator) -> np.ndarray:
    if variant == "linear":
        return signed(y)[:, None] * rng.uniform(0.0, 1.0, size=(len(y), d_core))
    direction = rng.normal(size=(len(y), d_core))  # nonlinear
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * np.where(y == 1, 1.0, 2.0)[:, None]


def structured_features(n: int = 1000, d_core: int = 32, d_bg: int = 32, d_in: int = 256,
                        core: str = "linear", shift_scale: float = 0.0, seed: int = 0,
                        transform: np.ndarray | None = None) -> StructuredFeatures:
    """Balanced samples of the structured feature model.

    ``shift_scale = 0`` draws the training background ``U[0, 1]^d_bg``; ``s > 0``
    draws the shifted test background ``-s U[0, 1]^d_bg``. Pass the training
    ``transform`` to build test data in the same input space.
    """
    n, core = _checked("structured_features", n=n, core=core)
    rng = np.random.default_rng(seed)
    T = random_orthonormal(d_in, d_core + d_bg, rng) if transform is None else transform
    y = (np.arange(n) % 2).astype(np.int64)
    rng.shuffle(y)
    core_f = _core_features(y, d_core, core, rng)
    bg = rng.uniform(0.0, 1.0, size=(n, d_bg))
    if shift_scale:
        bg = -float(shift_scale) * bg
    feats = np.concatenate([core_f, bg], axis=1)
    return StructuredFeatures(feats @ T.T, y, core_f, bg, T)


@register_dataset("structured-features", "feature-contamination core + label-uncorrelated background "
                  "features in R^d_in; test_ood shifts the background", kind="synthetic",
                  constraints={"n": positive_int(), "n_test": positive_int(), "d_core": positive_int(),
                               "d_bg": positive_int(), "d_in": positive_int(), "core": Options("linear", "nonlinear"),
                               "shift_scale": Interval(float)},
                  size=footprint(lambda q: 3 * (q["n"] + 2 * q["n_test"]),
                                 lambda q: q["d_in"] + q["d_core"] + q["d_bg"]))
def build_structured_features(n: int = 1000, n_test: int = 1000, d_core: int = 32, d_bg: int = 32,
                              d_in: int = 256, core: str = "linear", shift_scale: float = 1.0,
                              seed: int = 0) -> DatasetSplits:
    """Splits ``train``, ``test_id`` (same distribution) and ``test_ood`` (background ``-s U[0,1]``)."""
    train = structured_features(n, d_core, d_bg, d_in, core, 0.0, seed)
    test_id = structured_features(n_test, d_core, d_bg, d_in, core, 0.0, seed + 1, train.transform)
    test_ood = structured_features(n_test, d_core, d_bg, d_in, core, shift_scale, seed + 2, train.transform)
    splits = {}
    for name, data in (("train", train), ("test_id", test_id), ("test_ood", test_ood)):
        splits[name] = GroupedDataset(x=data.x, y=data.y, class_names=SIGNED_NAMES, split=name)
    return DatasetSplits(splits, name="structured-features")


# ======================================================== spurious memorization
@dataclass
class CoreSpuriousData:
    """``z = [x, s]``: core ``x`` (d_x) decides the label; spurious ``s`` (d_y) is independent."""

    z: np.ndarray
    y: np.ndarray
    d_core: int
    u: np.ndarray  # label direction

    @property
    def core(self) -> np.ndarray:
        return self.z[:, : self.d_core]

    @property
    def spurious(self) -> np.ndarray:
        return self.z[:, self.d_core:]


def split_dims(d: int, alpha: float) -> tuple[int, int]:
    """``(d_x, d_y)`` with ``d_y = round(alpha d)`` spurious coordinates."""
    alpha = _checked("split_dims", alpha=alpha)
    d_y = int(round(alpha * d))
    if d_y < 1 or d_y >= d:
        raise SpurlabError(f"alpha={alpha} with d={d} leaves no core or no spurious coordinate")
    return d - d_y, d_y


def gaussian_core_spurious(n: int, d: int = 1000, alpha: float = 0.5, seed: int = 0,
                           u: np.ndarray | None = None) -> CoreSpuriousData:
    """``x ~ N(0, I_dx)``, ``s ~ N(0, I_dy)``, label ``sign(u . x)`` with ``u ~ N(0, I/d_x)``."""
    n = _checked("gaussian_core_spurious", n=n)
    d_x, d_y = split_dims(d, alpha)
    rng = np.random.default_rng(seed)
    if u is None:
        u = np.random.default_rng(seed + 7919).normal(0.0, 1.0 / np.sqrt(d_x), size=d_x)
    x = rng.normal(size=(n, d_x))
    s = rng.normal(size=(n, d_y))
    y = (x @ u > 0).astype(np.int64)
    return CoreSpuriousData(np.concatenate([x, s], axis=1), y, d_x, u)


def spurious_query(data: CoreSpuriousData, mode: str = "fresh", seed: int = 0) -> np.ndarray:
    """``z^s = [x~, s]``: the spurious part kept, the core replaced by a fresh draw or zeros."""
    mode = _checked("spurious_query", mode=mode)
    zs = data.z.copy()
    if mode == "fresh":
        zs[:, : data.d_core] = np.random.default_rng(seed).normal(size=(len(zs), data.d_core))
    else:  # zero
        zs[:, : data.d_core] = 0.0
    return zs


@register_dataset("gaussian-core-spurious", "spurious-memorization Gaussian core + independent "
                  "spurious part; spurious_query keeps s and redraws the core", kind="synthetic",
                  constraints={"n": positive_int(), "n_test": positive_int(), "d": Interval(int, 2, None),
                               "alpha": probability(closed="neither"), "query": Options("fresh", "zero")},
                  size=footprint(lambda q: 2 * (2 * q["n"] + q["n_test"]), "d"))
def build_gaussian_core_spurious(n: int = 100, n_test: int = 1000, d: int = 1000, alpha: float = 0.5,
                                 query: str = "fresh", seed: int = 0) -> DatasetSplits:
    """Splits ``train``, ``test`` and ``spurious_query`` (the train points with the core redrawn)."""
    train = gaussian_core_spurious(n, d, alpha, seed)
    test = gaussian_core_spurious(n_test, d, alpha, seed + 1, u=train.u)
    zs = spurious_query(train, query, seed + 2)
    return DatasetSplits({
        "train": GroupedDataset(x=train.z, y=train.y, class_names=SIGNED_NAMES),
        "test": GroupedDataset(x=test.z, y=test.y, class_names=SIGNED_NAMES),
        "spurious_query": GroupedDataset(x=zs, y=train.y, class_names=SIGNED_NAMES),
    }, name="gaussian-core-spurious")
