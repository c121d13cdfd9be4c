"""A planted-subgroup vector dataset: the smallest setting with a failure mode to find.

Each example has a class signal (``core``, weak) and a spurious attribute signal
(``spurious``, strong) plus isotropic noise. In the train-like splits the attribute agrees
with the class (``a == y``) with probability ``p``; the minority (``a != y``) is where a
model that leans on the attribute fails. ``test`` is group-balanced.
"""
from __future__ import annotations

import numpy as np

from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.injections import plan_attributes
from spurlab.errors import SpurlabError
from spurlab.params import Interval, check_params, positive_int, probability


# What planted_subgroups accepts (spurlab.params), checked before any array is drawn.
PLANTED_CONSTRAINTS = {"p": probability(closed="neither"), "n_classes": Interval(int, 2, None), "dim": positive_int()}


def planted_subgroups(n_train: int = 2000, n_val: int = 1000, n_pool: int = 1000, n_test: int = 2000,
                      n_classes: int = 2, dim: int = 32, p: float = 0.9, core: float = 1.0,
                      spurious: float = 2.0, noise: float = 1.0, seed: int = 0) -> DatasetSplits:
    """Splits ``train``, ``val``, ``pool`` (attribute correlation ``p``) and ``test`` (balanced)."""
    p, n_classes, dim = check_params("planted_subgroups", PLANTED_CONSTRAINTS,
                                     {"p": p, "n_classes": n_classes, "dim": dim}).values()
    if dim < 2 * n_classes:
        raise SpurlabError(f"planted_subgroups: parameter 'dim' must be at least 2 * n_classes = {2 * n_classes}, "
                           f"got {dim}", hint="one direction per class and one per attribute value")
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    class_dirs, attr_dirs = basis[:n_classes], basis[n_classes:2 * n_classes]
    sizes = {"train": n_train, "val": n_val, "pool": n_pool, "test": n_test}
    splits = {}
    for name, n in sizes.items():
        if n <= 0:
            continue
        y = np.arange(n) % n_classes
        a = plan_attributes(y, n_classes, None if name == "test" else p, rng)
        x = core * class_dirs[y] + spurious * attr_dirs[a] + noise * rng.normal(size=(n, dim)) / np.sqrt(dim) * 2
        splits[name] = GroupedDataset(x=x.astype(np.float32), y=y, a=a,
                                      class_names=tuple(f"class{c}" for c in range(n_classes)),
                                      attr_names=tuple(f"attr{c}" for c in range(n_classes)))
    return DatasetSplits(splits, name="planted-subgroups",
                         params={"p": p, "core": core, "spurious": spurious, "noise": noise, "dim": dim})


def encoder_view(ds: GroupedDataset, dim: int = 16, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """Embeddings from an idealized external encoder: they see the class and the attribute of
    each example (as a pretrained encoder sees "a green 3"), not the example-level noise that
    decides a model's other errors. Fixed directions per ``seed``, fresh noise per call."""
    if ds.a is None:
        raise SpurlabError("encoder_view needs a dataset with a spurious attribute")
    k = ds.n_classes + ds.n_attrs
    if dim < k:
        raise SpurlabError(f"dim must be at least n_classes + n_attrs = {k}, got {dim}")
    basis = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))[0]
    rng = np.random.default_rng(seed + 1 + len(ds))
    signal = basis[ds.y] + basis[ds.n_classes + ds.a]
    return (signal + noise * rng.normal(size=(len(ds), dim)) / np.sqrt(dim)).astype(np.float32)
