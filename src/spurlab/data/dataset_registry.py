"""Dataset registry: every dataset is a builder returning all of its named splits."""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.errors import SpurlabError
from spurlab.params import Constraint, check_params, check_requires, check_size
from spurlab.registry import Registry

DEFAULT_DATA_DIR = Path("~/.cache/spurlab")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` argument, else ``$SPURLAB_DATA``, else ``~/.cache/spurlab``."""
    if data_dir is None:
        data_dir = os.environ.get("SPURLAB_DATA") or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    builder: Callable[..., DatasetSplits]
    summary: str
    kind: str  # synthetic | image | benchmark | file
    needs_files: bool = False
    defaults: dict[str, Any] | None = None  # preset parameters layered over the builder's
    extra_params: tuple[str, ...] = ()  # accepted through the builder's **kwargs
    constraints: dict[str, Constraint] | None = None  # what each parameter accepts (spurlab.params)
    requires: dict[str, str] | None = None  # parameter -> the parameter without which it has no effect
    size: Callable[[dict[str, Any]], float] | None = None  # bytes the parameters would allocate

    def _check_params(self, given: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
        """Declared constraints, ignored parameters and the memory estimate, before the builder runs."""
        owner = f"dataset {self.name!r}"
        merged = check_params(owner, self.constraints or {}, merged)
        check_requires(owner, self.requires or {}, given, merged)
        if self.size is not None:
            check_size(f"{owner} with these parameters", self.size({**self.parameters(), **merged}),
                       hint="use smaller sizes (see `spurlab datasets show NAME`)")
        return merged

    def parameters(self) -> dict[str, Any]:
        """Parameter names and defaults (the preset's overrides applied)."""
        params = {}
        for p in inspect.signature(self.builder).parameters.values():
            if p.name in ("data_dir", "seed") or p.kind is p.VAR_KEYWORD:
                continue
            params[p.name] = None if p.default is p.empty else p.default
        params.update({k: None for k in self.extra_params if k not in params})
        params.update(self.defaults or {})
        return params

    def build(self, data_dir: Path, seed: int, **params: Any) -> DatasetSplits:
        known = self.parameters()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise SpurlabError(
                f"dataset {self.name!r} has no parameter(s) {', '.join(unknown)}",
                hint=f"its parameters: {', '.join(known) or '(none)'}",
            )
        merged = self._check_params(params, {**(self.defaults or {}), **params})
        kwargs: dict[str, Any] = {k: v for k, v in merged.items()
                                  if not (k in self.extra_params and v is None)}
        sig = inspect.signature(self.builder).parameters
        if "data_dir" in sig:
            kwargs["data_dir"] = data_dir
        if "seed" in sig:
            kwargs["seed"] = seed
        splits = self.builder(**kwargs)
        splits.name = self.name
        for ds in splits.values():
            ds.name = self.name
        splits.params = {**known, **merged}
        for ds in splits.values():
            ds.params = dict(splits.params)
        return splits


DATASETS: Registry[DatasetEntry] = Registry(
    "dataset", [f"spurlab.data.{m}" for m in ("synthetic", "images", "benchmarks", "cifar", "embeddings",
                                              "spuco_mnist", "image_table")])


def register_dataset(name: str, summary: str, kind: str, needs_files: bool = False,
                     defaults: dict[str, Any] | None = None, extra_params: tuple[str, ...] = (),
                     constraints: dict[str, Constraint] | None = None, requires: dict[str, str] | None = None,
                     size: Callable[[dict[str, Any]], float] | None = None):
    """Decorator registering a builder ``f(**params, data_dir=, seed=) -> DatasetSplits``.

    ``constraints`` declares what each parameter accepts, ``requires`` the parameters that act only when another
    is set, ``size`` an estimate in bytes of what the parameters allocate (refused above the memory limit).
    """

    def decorate(builder: Callable[..., DatasetSplits]):
        entry = DatasetEntry(name, builder, summary, kind, needs_files, defaults, extra_params, constraints,
                             requires, size)
        DATASETS.add(name, entry, origin=builder.__module__)
        return builder

    return decorate


def register_preset(name: str, base: str, summary: str, **defaults: Any) -> None:
    """Register ``name`` as ``base`` with some parameters preset."""
    entry = DATASETS.get(base, load=False)
    preset = DatasetEntry(name, entry.builder, summary, entry.kind, entry.needs_files,
                          {**(entry.defaults or {}), **defaults}, entry.extra_params, entry.constraints,
                          entry.requires, entry.size)
    DATASETS.add(name, preset, origin=entry.builder.__module__)


def dataset_entries() -> dict[str, DatasetEntry]:
    return DATASETS.entries()


def get_entry(name: str) -> DatasetEntry:
    return DATASETS.get(name)


def load_splits(name: str, data_dir: str | os.PathLike | None = None, seed: int = 0,
                **params: Any) -> DatasetSplits:
    """Build every split of dataset ``name``."""
    return get_entry(name).build(resolve_data_dir(data_dir), seed, **params)


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 seed: int = 0, **params: Any) -> GroupedDataset:
    """Load one split of a registered dataset.

    >>> ds = load_dataset("linear-skew", split="train", n_maj=100, n_min=10)
    >>> ds.summary()  # doctest: +SKIP
    """
    return load_splits(name, data_dir=data_dir, seed=seed, **params)[split]
