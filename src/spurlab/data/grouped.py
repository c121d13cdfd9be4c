"""The one data model every dataset, probe and method shares.

A :class:`GroupedDataset` is one split of a dataset: inputs ``x``, class labels
``y`` (0..K-1), an optional spurious attribute ``a`` (0..A-1) and the group id
``g = y * A + a`` derived from them. A :class:`DatasetSplits` bundles the named
splits (``train``, ``val``, ``test``, ...) of one dataset.

Convention used by every generator and injection in spurlab: attribute value
``c`` is the one aligned with class ``c``, so the *majority* groups are those
with ``a == y`` and the *minority* groups those with ``a != y``.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from spurlab.data.lazy_images import is_lazy
from spurlab.errors import SpurlabError
from spurlab.params import Interval, NumberList, check_params, probability
from spurlab.utils import check_finite, check_labels, check_same_length


@dataclass(eq=False)
class GroupedDataset:
    """One split of a dataset with class labels, a spurious attribute and groups."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    attr_names: tuple[str, ...] = ()
    metadata: pd.DataFrame | None = None
    name: str = "dataset"
    split: str = "train"
    params: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None  # explicit group ids when no attribute is known

    def __post_init__(self) -> None:
        if not is_lazy(self.x):  # lazy images (files, uint8) are decoded per batch, never here
            self.x = np.asarray(self.x)
        check_same_length(x=self.x, y=self.y, a=self.a, groups=self.groups,
                          metadata=None if self.metadata is None else self.metadata.index)
        if not is_lazy(self.x):
            check_finite("x", self.x)
        self.y = check_labels("y", self.y)
        if not self.class_names:
            k = int(self.y.max()) + 1 if self.y.size else 0
            self.class_names = tuple(str(i) for i in range(k))
        self.class_names = tuple(str(c) for c in self.class_names)
        check_labels("y", self.y, n_classes=len(self.class_names))
        if self.a is not None:
            self.a = check_labels("a", self.a)
            if not self.attr_names:
                k = int(self.a.max()) + 1 if self.a.size else 0
                self.attr_names = tuple(str(i) for i in range(max(k, 1)))
            self.attr_names = tuple(str(c) for c in self.attr_names)
            check_labels("a", self.a, n_classes=len(self.attr_names), what="attribute values (attr_names)")
        if self.groups is not None:
            self.groups = check_labels("groups", self.groups)
        if self.metadata is not None:
            self.metadata = self.metadata.reset_index(drop=True)

    # ------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_attrs(self) -> int:
        return len(self.attr_names) if self.a is not None else 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    # ------------------------------------------------------------ groups
    @property
    def has_groups(self) -> bool:
        return self.a is not None or self.groups is not None

    @property
    def n_groups(self) -> int:
        if self.a is not None:
            return self.n_classes * self.n_attrs
        if self.groups is not None:
            return int(self.groups.max()) + 1 if self.groups.size else 0
        return self.n_classes

    @property
    def g(self) -> np.ndarray:
        """Group id per example: ``y * n_attrs + a`` (or the explicit groups, or y)."""
        if self.a is not None:
            return self.y * self.n_attrs + self.a
        if self.groups is not None:
            return self.groups
        return self.y

    def group_of(self, y: int, a: int) -> int:
        return int(y) * self.n_attrs + int(a)

    def group_name(self, g: int) -> str:
        if self.a is not None:
            y, a = divmod(int(g), self.n_attrs)
            return f"y={self.class_names[y]},a={self.attr_names[a]}"
        if self.groups is not None:
            return f"group={int(g)}"
        return f"y={self.class_names[int(g)]}"

    @property
    def group_names(self) -> list[str]:
        return [self.group_name(g) for g in range(self.n_groups)]

    def group_counts(self) -> np.ndarray:
        return np.bincount(self.g, minlength=self.n_groups)

    def partition(self) -> dict[tuple[int, int], np.ndarray]:
        """``{(y, a): indices}`` for every (class, attribute) pair, empty ones included."""
        if self.a is None:
            raise SpurlabError(f"{self.name}/{self.split} has no spurious attribute to partition by")
        return {
            (y, a): np.flatnonzero((self.y == y) & (self.a == a))
            for y in range(self.n_classes)
            for a in range(self.n_attrs)
        }

    def is_minority(self) -> np.ndarray:
        """Boolean mask of minority examples: ``a != y`` under spurlab's alignment convention, or,
        when attribute values and classes differ in number (e.g. CIFAR-100 superclasses with a
        reduced-subclass flag), membership of a group smaller than the uniform share."""
        if self.a is None:
            raise SpurlabError(f"{self.name}/{self.split} has no spurious attribute")
        if self.n_attrs != self.n_classes:
            return np.isin(self.g, self.minority_groups())
        return self.a != self.y

    def minority_groups(self) -> list[int]:
        """Groups whose share of the split is below the uniform share (1 / n_groups)."""
        counts = self.group_counts()
        return [int(g) for g in np.flatnonzero(counts < counts.sum() / max(len(counts), 1))]

    def summary(self) -> pd.DataFrame:
        """One row per group: id, name, y, a, count and share."""
        counts = self.group_counts()
        rows = []
        for g, count in enumerate(counts):
            row: dict[str, Any] = {"group": g, "name": self.group_name(g)}
            if self.a is not None:
                y, a = divmod(g, self.n_attrs)
                row.update(y=self.class_names[y], a=self.attr_names[a])
            row.update(count=int(count), share=float(count / max(len(self), 1)))
            rows.append(row)
        return pd.DataFrame(rows)

    # ------------------------------------------------------------ subsetting
    def subset(self, indices: np.ndarray | list[int], split: str | None = None) -> GroupedDataset:
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            x=self.x.select(idx) if is_lazy(self.x) else self.x[idx],
            y=self.y[idx],
            a=None if self.a is None else self.a[idx],
            groups=None if self.groups is None else self.groups[idx],
            metadata=None if self.metadata is None else self.metadata.iloc[idx].reset_index(drop=True),
            split=split or self.split,
            params=dict(self.params),
        )

    def select_groups(self, groups: list[int]) -> GroupedDataset:
        return self.subset(np.isin(self.g, groups))

    def with_x(self, x: np.ndarray) -> GroupedDataset:
        """The same examples with new inputs (e.g. embeddings); lengths must match."""
        if len(x) != len(self):
            raise SpurlabError(f"new inputs have {len(x)} rows, the dataset has {len(self)}")
        return replace(self, x=x if is_lazy(x) else np.asarray(x), params=dict(self.params))

    # ------------------------------------------------------------ conversion
    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, g)`` as numpy arrays."""
        return self.x, self.y, self.g

    @property
    def is_lazy(self) -> bool:
        """Inputs decoded per batch (image files, uint8 pixels): index ``x`` per batch, never whole."""
        return is_lazy(self.x)

    def torch_dataset(self, with_index: bool = False):
        """A torch dataset of (x, y, g[, index]): tensors, or rows decoded on access for lazy inputs."""
        import torch
        from torch.utils.data import TensorDataset

        if self.is_lazy:
            return LazyTorchDataset(self.x, self.y, self.g, with_index)
        tensors = [
            torch.as_tensor(self.x, dtype=torch.float32),
            torch.as_tensor(self.y, dtype=torch.long),
            torch.as_tensor(self.g, dtype=torch.long),
        ]
        if with_index:
            tensors.append(torch.arange(len(self)))
        return TensorDataset(*tensors)

    def dataloader(self, batch_size: int = 128, shuffle: bool = False, seed: int = 0, **kwargs):
        """Batches of (x, y, g); lazy inputs are decoded one whole batch at a time (on the images'
        decoding threads) rather than image by image."""
        import torch
        from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

        generator = torch.Generator().manual_seed(seed) if shuffle else None
        if self.is_lazy:
            data = self.torch_dataset()
            order = RandomSampler(data, generator=generator) if shuffle else SequentialSampler(data)
            return DataLoader(data, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None,
                              **kwargs)
        return DataLoader(self.torch_dataset(), batch_size=batch_size, shuffle=shuffle,
                          generator=generator, **kwargs)

    def __repr__(self) -> str:
        return (f"GroupedDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"x={self.input_shape}, classes={self.n_classes}, groups={self.n_groups})")


class LazyTorchDataset:
    """(x, y, g[, index]) over lazy inputs: an int gives one example, a list of ints a whole batch."""

    def __init__(self, x, y: np.ndarray, g: np.ndarray, with_index: bool = False):
        self.x, self.y, self.g, self.with_index = x, y, g, with_index

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key):
        import torch

        idx = key if isinstance(key, (int, np.integer)) else np.asarray(key, dtype=np.int64)
        out = [torch.as_tensor(self.x[idx]), torch.as_tensor(self.y[idx]), torch.as_tensor(self.g[idx])]
        if self.with_index:
            out.append(torch.as_tensor(idx))
        return tuple(out)


def _default_names(names: tuple[str, ...]) -> bool:
    return names == tuple(str(i) for i in range(len(names)))


def align_group_numbering(splits: Mapping[str, GroupedDataset], name: str) -> None:
    """Give every split the same class and attribute numbering, so a group id means the same group everywhere.

    A split built without ``class_names``/``attr_names`` numbers its values ``0..max``: one that lacks
    the highest attribute value would get fewer attributes and different group ids (``g = y * A + a``).
    Default (numeric) names are widened to the largest split's; named splits must agree exactly.
    """
    for field_name in ("class_names", "attr_names"):
        members = [ds for ds in splits.values() if field_name == "class_names" or ds.a is not None]
        variants = {getattr(ds, field_name) for ds in members}
        if len(variants) <= 1:
            continue
        if not all(_default_names(v) for v in variants):
            listing = "; ".join(f"{ds.split}: {', '.join(getattr(ds, field_name))}" for ds in members)
            raise SpurlabError(f"the splits of {name!r} disagree on their {field_name} ({listing}), so their "
                               f"group ids would mean different groups",
                               hint=f"build every split with the same {field_name}")
        widest = max(variants, key=len)
        for ds in members:
            setattr(ds, field_name, widest)


class DatasetSplits(Mapping[str, GroupedDataset]):
    """The named splits of one dataset, e.g. ``splits["train"]``."""

    def __init__(self, splits: dict[str, GroupedDataset], name: str = "dataset",
                 params: dict[str, Any] | None = None):
        if not splits:
            raise SpurlabError(f"dataset {name!r} has no splits")
        self._splits = dict(splits)
        self.name = name
        self.params = dict(params or {})
        for split_name, ds in self._splits.items():
            ds.name, ds.split = name, split_name
            ds.params = dict(self.params)
        align_group_numbering(self._splits, name)

    @classmethod
    def from_arrays(cls, x, y, *, attributes=None, groups=None, split=None, class_names=None, attr_names=None,
                    metadata: pd.DataFrame | None = None, name: str = "arrays", seed: int = 0,
                    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> DatasetSplits:
        """Your own data as splits: inputs, labels, an optional spurious attribute (or group ids), split names.

        ``x``: images (N, C, H, W) in [0, 1] or vectors (N, D), or a lazy array-like of images.
        ``y`` and ``attributes``: ints 0..K-1, or any values (strings): they are then numbered in
        sorted order and their names kept (``class_names`` / ``attr_names`` fix the order instead).
        ``split``: per example ``train``/``val``/``test`` (or 0/1/2); when absent, a split seeded by
        ``seed`` in ``fractions``, stratified by group.

        >>> splits = DatasetSplits.from_arrays(x, y, attributes=background, split=split)  # doctest: +SKIP
        """
        owner = "DatasetSplits.from_arrays"
        fractions, seed = check_params(owner, FROM_ARRAYS_CONSTRAINTS, {"fractions": fractions, "seed": seed}).values()
        if len(fractions) != 3 or not np.isclose(sum(fractions), 1.0):
            raise SpurlabError(f"{owner}: parameter 'fractions' must be three shares (train, val, test) summing to 1, "
                               f"got {fractions}", hint="e.g. fractions=(0.6, 0.2, 0.2)")
        y, class_names = _coded("y", y, class_names)
        a, attr_names = (None, ()) if attributes is None else _coded("attributes", attributes, attr_names)
        full = GroupedDataset(x=x, y=y, a=a, class_names=class_names, attr_names=attr_names, metadata=metadata,
                              groups=None if groups is None or a is not None else np.asarray(groups), name=name)
        names = _split_per_example(split, full.g, len(full), seed, fractions)
        parts = {s: full.subset(np.flatnonzero(names == s), split=s)
                 for s in ("train", "val", "test", *sorted(set(names.tolist()) - {"train", "val", "test"}))
                 if (names == s).any()}
        return cls(parts, name=name, params={"source": "arrays"})

    def __getitem__(self, split: str) -> GroupedDataset:
        if split not in self._splits:
            raise SpurlabError(
                f"dataset {self.name!r} has no split {split!r}",
                hint=f"available splits: {', '.join(self._splits)}",
            )
        return self._splits[split]

    def __contains__(self, split: object) -> bool:
        return split in self._splits

    def get(self, split: str, default: GroupedDataset | None = None) -> GroupedDataset | None:
        return self._splits.get(split, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._splits)

    def __len__(self) -> int:
        return len(self._splits)

    def summary(self) -> pd.DataFrame:
        """Group counts per split, one row per group, one column per split."""
        frames = []
        for split_name, ds in self._splits.items():
            s = ds.summary().set_index(["group", "name"])["count"].rename(split_name)
            frames.append(s)
        return pd.concat(frames, axis=1).fillna(0).astype(int).reset_index()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self._splits.items())
        return f"DatasetSplits(name={self.name!r}, {sizes})"


# ------------------------------------------------------------------ DatasetSplits.from_arrays helpers
SPLIT_NAMES_BY_CODE = {0: "train", 1: "val", 2: "test"}


def _coded(what: str, values, names) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes and names for labels given as ints 0..K-1 or as any sortable values."""
    values = np.asarray(values)
    if names is not None:
        names = tuple(str(n) for n in names)
        if np.issubdtype(values.dtype, np.integer):
            return values.astype(np.int64), names
        lookup = {n: i for i, n in enumerate(names)}
        unknown = sorted(set(values.astype(str).tolist()) - set(lookup))
        if unknown:
            raise SpurlabError(f"{what} has values {unknown[:5]} that are not among the names given",
                               hint=f"names: {', '.join(names)}")
        return np.array([lookup[v] for v in values.astype(str)], dtype=np.int64), names
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64), ()
    uniques, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.astype(np.int64), tuple(uniques.tolist())


# What from_arrays accepts beyond the arrays (spurlab.params); three fractions summing to 1 is a rule across them.
FROM_ARRAYS_CONSTRAINTS = {"fractions": NumberList(probability(), min_len=3, scalar=False),
                           "seed": Interval(int, 0, None)}


def _split_per_example(split, groups: np.ndarray, n: int, seed: int,
                       fractions: tuple[float, float, float]) -> np.ndarray:
    if split is not None:
        split = np.asarray(split)
        if len(split) != n:
            raise SpurlabError(f"split has {len(split)} entries for {n} examples")
        if np.issubdtype(split.dtype, np.integer):
            bad = sorted(set(np.unique(split).tolist()) - set(SPLIT_NAMES_BY_CODE))
            if bad:
                raise SpurlabError(f"split codes {bad} are not 0 (train), 1 (val) or 2 (test)")
            return np.array([SPLIT_NAMES_BY_CODE[int(v)] for v in split])
        return split.astype(str)
    rng = np.random.default_rng(seed)
    names = np.empty(n, dtype=object)
    for g in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == g))
        cut = np.round(np.cumsum(fractions)[:2] * len(members)).astype(int)
        for label, part in zip(("train", "val", "test"), np.split(members, cut)):
            names[part] = label
    return names.astype(str)
