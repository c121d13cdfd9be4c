"""Image experiments of ood-failure-modes: isolating geometric and statistical skew in networks.

Any registered image dataset works (Binary-MNIST, Binary-Fashion-MNIST, CIFAR-10
once registered): its images are loaded *without* a spurious feature, the
groups are planned here and the spurious feature (a corner patch of colour by
default, magnitude ``B``) is drawn with :func:`spurlab.data.injections.inject`.

* ``geometric``: ``n_maj`` majority points fixed, the unique minority set
  shrunk (nested subsets), no duplication;
* ``statistical``: ``n_unique`` majority and ``n_unique`` minority points
  (balanced unique set), the majority duplicated to a share ``p``;
* ``norm``: ``n`` points with the spurious feature uncorrelated with the label;
  ``w_dist_from_init`` = ||W - W0|| is the network's norm-growth proxy.

Test images carry the feature aligned with the label (``majority_acc``) or
against it (``ood_acc``): the same digits, only the spurious feature flipped.

Training follows the paper's mechanism: duplicated majority points are real copies
(``duplication="copies"``; ``"weights"`` weighs the unique points instead), plain SGD,
and every run goes on until each *unique* training point is classified correctly
(``max_steps`` caps it). Every run reports ``train_acc`` on its unique points and
``fitted`` (1/0) beside its test numbers; an OOD number of a run that did not fit
measures underfitting, not skew, and the study lists such runs in its notes.
The ``norm`` mode records ``||W - W0||`` both when the run has fitted (``w_dist_from_init``,
after ``steps``) and after the same number of steps for every n (``w_dist_equal_steps``),
since a larger n also takes more steps to fit.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from spurlab.data import injections as inj
from spurlab.data.dataset_registry import get_entry, load_splits
from spurlab.data.synthetic import duplication_counts
from spurlab.errors import SpurlabError
from spurlab.params import OptionList, Options, check_param, check_params
from spurlab.models import make_model
from spurlab.models.small_convnet import small_convnet
from spurlab.train.engines.fit_to_data import FitConfig, FitReport, train_to_fit
from spurlab.train.trainer import predict

IMAGE_MODES = ("geometric", "statistical", "norm")
DUPLICATION_MODES = ("copies", "weights")
IMAGE_OPTIMIZERS = ("sgd", "adam")
IMAGE_MODELS = ("mlp", "cnn", "convnet")


@dataclass
class ImagePool:
    """Binary-labelled images of one dataset, without any spurious feature yet."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    notes: list[str] = field(default_factory=list)


@dataclass
class ImageSpec:
    """How every image run draws the spurious feature and trains the network.

    ``lr``, ``batch_size``, ``optimizer`` (plain ``sgd`` by default, ``momentum`` 0),
    ``max_steps`` (cap of the train-until-fitted loop) and ``norm_steps`` (the common
    step count at which the ``norm`` mode compares ``||W - W0||``; 0 = the number of
    steps the smallest n needed to fit, so that every run is read at that step)."""

    spurious: str = "patch"
    B: float = 1.0
    lr: float = 0.1
    batch_size: int = 32
    optimizer: str = "sgd"
    momentum: float = 0.0
    max_steps: int = 20_000
    norm_steps: int = 0
    mlp_hidden: tuple[int, ...] = (256, 128)
    cnn_channels: tuple[int, ...] = (16, 32, 64)
    duplication: str = "copies"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.spurious not in inj.INJECTIONS or self.spurious in inj.ATTRIBUTE_FREE:
            usable = [k for k in inj.INJECTIONS if k not in inj.ATTRIBUTE_FREE]
            raise SpurlabError(f"image_spurious={self.spurious!r} cannot carry a label-correlated attribute",
                               hint=f"use one of {', '.join(usable)}")
        check_params("ImageSpec", {"duplication": Options(*DUPLICATION_MODES), "optimizer": Options(*IMAGE_OPTIMIZERS)},
                     {"duplication": self.duplication, "optimizer": self.optimizer})  # plain sgd is the paper's GD
        if not 0 <= self.norm_steps <= self.max_steps:
            raise SpurlabError(f"image_norm_steps must lie in [0, image_max_steps={self.max_steps}] "
                               f"(0: the steps the smallest n needs to fit), got {self.norm_steps}")

    def fit_config(self, seed: int, min_steps: int = 0) -> FitConfig:
        return FitConfig(lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer, momentum=self.momentum,
                         max_steps=self.max_steps, min_steps=min_steps, seed=seed, device=self.device)


# ------------------------------------------------------------------ data
def binarize_classes(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Classes ``0..K-1`` -> ``y >= K/2`` (0-4 vs 5-9 for ten classes)."""
    return (y >= (n_classes + 1) // 2).astype(np.int64) if n_classes > 2 else y


def load_image_pool(name: str, n_pool: int, n_test: int, data_dir=None, seed: int = 0) -> ImagePool:
    """``n_pool`` training and ``n_test`` test images of dataset ``name`` with binary labels."""
    entry = get_entry(name)
    if entry.kind != "image":
        raise SpurlabError(f"dataset {name!r} is a {entry.kind} dataset, not an image dataset",
                           hint="pass an image dataset such as binary-mnist or binary-fashion-mnist")
    known = entry.parameters()
    wanted = {"n_train": n_pool, "n_test": n_test, "val_fraction": 0.0, "spurious": None}
    splits = load_splits(name, data_dir=data_dir, seed=seed, **{k: v for k, v in wanted.items() if k in known})
    if "test" not in splits:
        raise SpurlabError(f"dataset {name!r} has no test split", hint="image experiments need train and test")
    train, test = splits["train"], splits["test"]
    notes = []
    if train.n_classes > 2:
        notes.append(f"{name}: {train.n_classes} classes binarized as first half vs second half")
    rng = np.random.default_rng(seed)
    tr = rng.permutation(len(train))[:n_pool]
    te = rng.permutation(len(test))[:n_test]
    pool = ImagePool(name, train.x[tr].astype(np.float32), binarize_classes(train.y[tr], train.n_classes),
                     test.x[te].astype(np.float32), binarize_classes(test.y[te], test.n_classes), notes)
    if min(np.bincount(pool.y_train, minlength=2)) == 0:
        raise SpurlabError(f"dataset {name!r} gave training images of one class only")
    return pool


def interleaved_by_class(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation alternating the two classes, so every prefix is (nearly) class-balanced."""
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in (0, 1)]
    k = min(len(p) for p in per_class)
    head = np.column_stack([per_class[0][:k], per_class[1][:k]]).ravel()
    return np.concatenate([head, per_class[0][k:], per_class[1][k:]])


def _need(pool: ImagePool, n: int, what: str) -> None:
    if n > len(pool.y_train):
        raise SpurlabError(f"{what} needs {n} training images but only {len(pool.y_train)} were loaded "
                           f"from {pool.name}", hint="lower the image sizes in the study config")


def geometric_sets(pool: ImagePool, n_maj: int, n_mins: Sequence[int], seed: int):
    """Yield ``(n_min, indices, a, weights)``: fixed majority, nested shrinking minority sets."""
    _need(pool, n_maj + max(n_mins), "the geometric image experiment")
    order = interleaved_by_class(pool.y_train, np.random.default_rng(seed))
    maj = order[:n_maj]
    minority_pool = interleaved_by_class(pool.y_train[order[n_maj:]], np.random.default_rng(seed + 1))
    minority_pool = order[n_maj:][minority_pool]
    for n_min in n_mins:
        idx = np.concatenate([maj, minority_pool[:n_min]])
        a = np.concatenate([pool.y_train[maj], 1 - pool.y_train[minority_pool[:n_min]]])
        yield int(n_min), idx, a, np.ones(len(idx))


def statistical_sets(pool: ImagePool, n_unique: int, ps: Sequence[float], seed: int):
    """Yield ``(p, indices, a, weights)``: the same balanced unique set, majority copies to reach ``p``."""
    _need(pool, 2 * n_unique, "the statistical image experiment")
    order = interleaved_by_class(pool.y_train, np.random.default_rng(seed))
    maj, mino = order[:n_unique], order[n_unique:2 * n_unique]
    idx = np.concatenate([maj, mino])
    a = np.concatenate([pool.y_train[maj], 1 - pool.y_train[mino]])
    for p in ps:
        copies = duplication_counts(n_unique, float(p))
        yield float(p), idx, a, np.concatenate([copies, np.ones(n_unique)]).astype(np.float64)


def norm_sets(pool: ImagePool, ns: Sequence[int], seed: int):
    """Yield ``(n, indices, a, weights)``: ``n`` points, spurious feature independent of the label."""
    _need(pool, max(ns), "the image norm-growth experiment")
    order = interleaved_by_class(pool.y_train, np.random.default_rng(seed))
    for n in ns:
        idx = order[:n]
        flip = (np.arange(n) // 2) % 2 == 1  # every other pair: half of each class is minority
        yield int(n), idx, np.where(flip, 1 - pool.y_train[idx], pool.y_train[idx]), np.ones(n)


# ------------------------------------------------------------------ training
def image_network(name: str, input_shape: tuple[int, ...], spec: ImageSpec, seed: int) -> torch.nn.Module:
    """``convnet``: the small conv16-conv32-fc256 net; ``mlp`` / ``cnn``: the registered nets."""
    name = check_param("image_network", "name", Options(*IMAGE_MODELS), name)
    if name == "convnet":
        return small_convnet(input_shape, 2, seed=seed)
    return make_model(name, input_shape, 2, seed=seed, hidden=spec.mlp_hidden, channels=spec.cnn_channels)


def fit_planned_set(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, copies: np.ndarray, spec: ImageSpec,
                    seed: int, equal_steps: int = 0) -> FitReport:
    """Train until every unique point of ``(x, y)`` is fitted; the optimiser sees ``copies[i]`` copies of point i."""
    check = (x, y)
    if spec.duplication == "copies" or np.all(copies == 1):
        rep = np.repeat(np.arange(len(y)), copies.astype(np.int64))
        return train_to_fit(model, x[rep], y[rep], spec.fit_config(seed, equal_steps), check=check,
                            record_steps=[equal_steps] if equal_steps else ())
    return train_to_fit(model, x, y, spec.fit_config(seed, equal_steps), check=check,
                        record_steps=[equal_steps] if equal_steps else (), sample_weight=copies)


def train_and_measure(pool: ImagePool, idx: np.ndarray, a: np.ndarray, weights: np.ndarray, model_name: str,
                      spec: ImageSpec, seed: int, equal_steps: int = 0) -> dict[str, float]:
    """Train one network on the planned set until it fits; test accuracies, fit report and ||W - W0||.

    ``equal_steps > 0`` also reports ``w_dist_equal_steps`` (the run lasts at least that many steps)."""
    x = inj.inject(pool.x_train[idx], a, spec.spurious, magnitude=spec.B, seed=seed)
    y = pool.y_train[idx]
    model = image_network(model_name, x.shape[1:], spec, seed)
    report = fit_planned_set(model, x, y, np.asarray(weights), spec, seed, equal_steps)
    test_y = pool.y_test
    x_major = inj.inject(pool.x_test, test_y, spec.spurious, magnitude=spec.B, seed=seed)
    x_ood = inj.inject(pool.x_test, 1 - test_y, spec.spurious, magnitude=spec.B, seed=seed)
    metrics = {
        "ood_acc": float(np.mean(predict(model, x_ood, device=spec.device) == test_y)),
        "majority_acc": float(np.mean(predict(model, x_major, device=spec.device) == test_y)),
        **report.metrics(),
    }
    if equal_steps:
        metrics["w_dist_equal_steps"] = report.dist_at.get(equal_steps, float("nan"))
    return metrics


def images_experiment(datasets: Sequence[str], models: Sequence[str], modes: Sequence[str], seeds: Sequence[int],
                      spec: ImageSpec, n_maj: int, n_mins: Sequence[int], n_unique: int, ps: Sequence[float],
                      norm_ns: Sequence[int], n_test: int, data_dir=None) -> tuple[pd.DataFrame, list[str]]:
    """Every (dataset, model, mode, setting, seed) run; long rows and notes."""
    modes, models = check_params("images_experiment", {"modes": OptionList(*IMAGE_MODES, min_len=0),
                                                       "models": OptionList(*IMAGE_MODELS, min_len=0)},
                                 {"modes": modes, "models": models}).values()
    n_pool = max([n_maj + max(n_mins, default=0) if "geometric" in modes else 0,
                  2 * n_unique if "statistical" in modes else 0,
                  max(norm_ns, default=0) if "norm" in modes else 0])
    rows, notes = [], []
    for name in datasets:
        for seed in seeds:
            pool = load_image_pool(name, n_pool, n_test, data_dir=data_dir, seed=int(seed))
            notes += [n for n in pool.notes if n not in notes]
            plans = {"geometric": lambda: geometric_sets(pool, n_maj, n_mins, seed),
                     "statistical": lambda: statistical_sets(pool, n_unique, ps, seed),
                     "norm": lambda: norm_sets(pool, sorted(norm_ns), seed)}
            equal_steps = {m: spec.norm_steps for m in models}  # norm mode; 0 until the smallest n has fitted
            for mode in modes:
                for setting, idx, a, weights in plans[mode]():
                    for model_name in models:
                        equal = equal_steps[model_name] if mode == "norm" else 0
                        metrics = train_and_measure(pool, idx, a, weights, model_name, spec, int(seed), equal)
                        if mode == "norm" and not equal:
                            equal_steps[model_name] = int(metrics["steps"])
                            metrics["w_dist_equal_steps"] = metrics["w_dist_from_init"]
                        if mode == "norm":
                            metrics["equal_steps"] = float(equal_steps[model_name])
                        if not metrics["fitted"]:
                            notes.append(f"NOT FITTED: {name}/{model_name} {mode} {_setting_label(mode, setting)} "
                                         f"seed {seed}: unique-set train accuracy {metrics['train_acc']:.3f} "
                                         f"after {int(metrics['steps'])} steps (raise image_max_steps); its OOD "
                                         f"accuracy measures underfitting")
                        params = {"dataset": name, "model": model_name, "mode": mode, "n": len(idx),
                                  "n_min": setting if mode == "geometric" else np.nan,
                                  "p": setting if mode == "statistical" else np.nan}
                        rows += [{"experiment": "images", "metric": m, "value": v, "seed": int(seed), **params}
                                 for m, v in metrics.items()]
    return pd.DataFrame(rows), notes


def _setting_label(mode: str, setting) -> str:
    return {"geometric": "n_min", "statistical": "p", "norm": "n"}[mode] + f"={setting:g}"
