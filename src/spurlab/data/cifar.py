"""CIFAR-10 and CIFAR-100 read from the archives' own layouts, safely.

Under the data dir (``--data-dir`` / ``SPURLAB_DATA``), either layout of the
official archives (https://www.cs.toronto.edu/~kriz/cifar.html) is read:

* binary: ``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`` (records of
  1 label byte + 3072 pixel bytes) and ``cifar-100-binary/{train,test}.bin``
  (coarse byte, fine byte, 3072 pixel bytes);
* Python: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` and
  ``cifar-100-python/{train,test,meta}``, pickles read by
  :mod:`spurlab.data.safe_pickle`, which refuses anything but plain data.

``layout="auto"`` prefers the binary layout (no pickle involved). Images go
through :func:`~spurlab.data.images.build_image_splits`, so class tasks
(``classes="3/8"``) and every spurious injection work on 32x32x3 images. Each
example keeps where it came from in ``metadata`` (``index`` in its original
split, the original labels and, for the Python layout, its ``filename``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurlab.data import injections as inj
from spurlab.data.cifar_names import CIFAR10_CLASSES, CIFAR100_COARSE, CIFAR100_FINE
from spurlab.data.grouped import DatasetSplits
from spurlab.data.images import build_image_splits
from spurlab.data.dataset_registry import register_dataset, register_preset
from spurlab.data.safe_pickle import load_plain_pickle
from spurlab.errors import DataNotFoundError, SpurlabError
from spurlab.params import Options, check_param, check_params, probability

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32
FOLDERS = {
    "cifar10": {"binary": "cifar-10-batches-bin", "python": "cifar-10-batches-py"},
    "cifar100": {"binary": "cifar-100-binary", "python": "cifar-100-python"},
}
SPLIT_FILES = {
    ("cifar10", "binary"): {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
    ("cifar10", "python"): {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    ("cifar100", "binary"): {"train": ["train.bin"], "test": ["test.bin"]},
    ("cifar100", "python"): {"train": ["train"], "test": ["test"]},
}
LAYOUTS = ("auto", "binary", "python")
ARCHIVES_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass
class CifarSplit:
    """One split as stored: images uint8 (N, 3, 32, 32), labels (fine for CIFAR-100), coarse labels."""

    images: np.ndarray
    labels: np.ndarray
    coarse: np.ndarray | None = None
    filenames: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class CifarArchive:
    """Everything read from one CIFAR folder."""

    variant: str
    layout: str
    folder: Path
    class_names: tuple[str, ...]
    splits: dict[str, CifarSplit] = field(default_factory=dict)
    coarse_names: tuple[str, ...] = ()


# ------------------------------------------------------------------ finding the files
def find_cifar(data_dir: Path, variant: str = "cifar10", layout: str = "auto") -> tuple[str, Path]:
    """``(layout, folder)`` of the first complete CIFAR layout under ``data_dir``."""
    variant, layout = check_params("find_cifar", {"variant": Options(*FOLDERS), "layout": Options(*LAYOUTS)},
                                   {"variant": variant, "layout": layout}).values()
    data_dir = Path(data_dir)
    candidates = ("binary", "python") if layout == "auto" else (layout,)
    for kind in candidates:
        folder = data_dir / FOLDERS[variant][kind]
        if folder.is_dir():
            _require_files(folder, variant, kind)
            return kind, folder
    looked = " or ".join(str(data_dir / FOLDERS[variant][k]) for k in candidates)
    raise DataNotFoundError(
        f"{variant} not found: looked for {looked}",
        hint=f"extract the binary or Python archive from {ARCHIVES_URL} under the data dir (--data-dir or "
             f"SPURLAB_DATA); `python -m spurlab.data.replicas DIR` writes a small replica to try the loader")


def _require_files(folder: Path, variant: str, layout: str) -> None:
    wanted = [name for names in SPLIT_FILES[(variant, layout)].values() for name in names]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise DataNotFoundError(f"{folder} is incomplete: missing {', '.join(missing)}",
                                hint=f"re-extract the archive from {ARCHIVES_URL}")


# ------------------------------------------------------------------ binary layout
def read_binary_records(path: Path, n_label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (N, n_label_bytes) int64, images uint8 (N, 3, 32, 32))`` from a ``.bin`` batch."""
    raw = np.fromfile(path, dtype=np.uint8)
    record = n_label_bytes + PIXELS
    if raw.size == 0 or raw.size % record:
        raise SpurlabError(f"{path} holds {raw.size} bytes, not a whole number of {record}-byte CIFAR records",
                           hint=f"the file is truncated or not a CIFAR batch; re-extract it from {ARCHIVES_URL}")
    rows = raw.reshape(-1, record)
    labels = rows[:, :n_label_bytes].astype(np.int64)
    return labels, rows[:, n_label_bytes:].reshape(-1, *IMAGE_SHAPE)


def read_label_names(path: Path, default: tuple[str, ...]) -> tuple[str, ...]:
    """Names one per line (``batches.meta.txt``); the defaults when the file is absent."""
    if not path.is_file():
        return default
    names = tuple(line.strip() for line in path.read_text(encoding="latin1").splitlines() if line.strip())
    if len(names) != len(default):
        raise SpurlabError(f"{path} lists {len(names)} names, expected {len(default)}")
    return names


def _read_binary(folder: Path, variant: str) -> CifarArchive:
    n_label_bytes = 1 if variant == "cifar10" else 2
    splits = {}
    for split, names in SPLIT_FILES[(variant, "binary")].items():
        parts = [read_binary_records(folder / name, n_label_bytes) for name in names]
        labels = np.concatenate([lbl for lbl, _ in parts])
        images = np.concatenate([img for _, img in parts])
        if variant == "cifar10":
            splits[split] = CifarSplit(images, labels[:, 0])
        else:  # CIFAR-100 records start with the coarse label, then the fine label
            splits[split] = CifarSplit(images, labels[:, 1], coarse=labels[:, 0])
    if variant == "cifar10":
        names = read_label_names(folder / "batches.meta.txt", CIFAR10_CLASSES)
        return CifarArchive(variant, "binary", folder, names, splits)
    return CifarArchive(variant, "binary", folder, read_label_names(folder / "fine_label_names.txt", CIFAR100_FINE),
                        splits, read_label_names(folder / "coarse_label_names.txt", CIFAR100_COARSE))


# ------------------------------------------------------------------ Python (pickle) layout
def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def read_python_batch(path: Path) -> dict[str, Any]:
    """A pickled batch as a dict with str keys, loaded without running any code from the file."""
    batch = load_plain_pickle(path, encoding="bytes")  # Python 2 str stays bytes: no decode/encode of pixels
    if not isinstance(batch, dict):
        raise SpurlabError(f"{path} holds a {type(batch).__name__}, expected a dict of CIFAR arrays",
                           hint=f"re-extract the archive from {ARCHIVES_URL}")
    return {_text(k): v for k, v in batch.items()}


def _batch_field(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise SpurlabError(f"{path} has no {key!r} entry (it has {', '.join(sorted(batch))})",
                           hint="the file is not a CIFAR batch of this variant")
    return batch[key]


def _batch_images(batch: dict[str, Any], path: Path) -> np.ndarray:
    data = _batch_field(batch, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] not in ((PIXELS,), IMAGE_SHAPE):
        shape = getattr(data, "shape", None)
        raise SpurlabError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {type(data).__name__} {shape}")
    return data.reshape(-1, *IMAGE_SHAPE)


def _batch_labels(batch: dict[str, Any], key: str, n: int, path: Path) -> np.ndarray:
    values = _batch_field(batch, key, path)
    labels = np.asarray(values)
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise SpurlabError(f"{path}: {key!r} must hold {n} integer labels, got shape {labels.shape}")
    return labels.astype(np.int64)


def _read_python(folder: Path, variant: str) -> CifarArchive:
    splits = {}
    for split, names in SPLIT_FILES[(variant, "python")].items():
        parts = []
        for name in names:
            path = folder / name
            batch = read_python_batch(path)
            images = _batch_images(batch, path)
            label_key = "labels" if variant == "cifar10" else "fine_labels"
            labels = _batch_labels(batch, label_key, len(images), path)
            coarse = _batch_labels(batch, "coarse_labels", len(images), path) if variant == "cifar100" else None
            files = [_text(f) for f in batch.get("filenames", [])]
            parts.append(CifarSplit(images, labels, coarse, files if len(files) == len(images) else None))
        splits[split] = _concat(parts)
    meta_name = "batches.meta" if variant == "cifar10" else "meta"
    meta = read_python_batch(folder / meta_name) if (folder / meta_name).is_file() else {}
    if variant == "cifar10":
        return CifarArchive(variant, "python", folder, _names(meta, "label_names", CIFAR10_CLASSES), splits)
    return CifarArchive(variant, "python", folder, _names(meta, "fine_label_names", CIFAR100_FINE), splits,
                        _names(meta, "coarse_label_names", CIFAR100_COARSE))


def _names(meta: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    names = meta.get(key)
    if not isinstance(names, list) or len(names) != len(default):
        return default
    return tuple(_text(n) for n in names)


def _concat(parts: list[CifarSplit]) -> CifarSplit:
    coarse = None if parts[0].coarse is None else np.concatenate([p.coarse for p in parts])
    files = None if any(p.filenames is None for p in parts) else [f for p in parts for f in p.filenames]
    return CifarSplit(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                      coarse, files)


# ------------------------------------------------------------------ reading, checked
def read_cifar(data_dir: str | Path, variant: str = "cifar10", layout: str = "auto") -> CifarArchive:
    """Read every split of CIFAR-10 or CIFAR-100 from the binary or Python layout."""
    kind, folder = find_cifar(Path(data_dir).expanduser(), variant, layout)
    archive = _read_binary(folder, variant) if kind == "binary" else _read_python(folder, variant)
    for split, part in archive.splits.items():
        _check_range(part.labels, len(archive.class_names), f"{folder} ({split}) labels")
        if part.coarse is not None:
            _check_range(part.coarse, len(archive.coarse_names), f"{folder} ({split}) coarse labels")
    return archive


def _check_range(labels: np.ndarray, n: int, what: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise SpurlabError(f"{what} range over {labels.min()}..{labels.max()}, outside 0..{n - 1}",
                           hint=f"the file is corrupted or of another variant; re-extract it from {ARCHIVES_URL}")


# ------------------------------------------------------------------ CIFAR-100 subclass reduction
def superclass_of(fine: np.ndarray, coarse: np.ndarray) -> dict[int, int]:
    """``{fine label: coarse label}`` as recorded in the data (each fine class has one superclass)."""
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)
    mapping = {int(f): int(c) for f, c in pairs}
    if len(mapping) != len(pairs):
        raise SpurlabError("some CIFAR-100 fine classes appear under two coarse labels",
                           hint=f"the files are corrupted; re-extract them from {ARCHIVES_URL}")
    return mapping


def choose_reduced_subclasses(fine: np.ndarray, coarse: np.ndarray, spec: Any,
                              fine_names: tuple[str, ...], seed: int) -> list[int]:
    """Fine labels to cut: ``"random"`` (one per superclass, seeded), ``"first"`` (the first
    subclass of each superclass in label order) or fine class names (a list or ``"a,b"``)."""
    owner = superclass_of(fine, coarse)
    members: dict[int, list[int]] = {}
    for f, c in sorted(owner.items()):
        members.setdefault(c, []).append(f)
    if spec == "random":
        rng = np.random.default_rng([seed, 7919])  # its own stream: the split selection stays unchanged
        return sorted(int(rng.choice(fs)) for _, fs in sorted(members.items()))
    if spec == "first":
        return sorted(fs[0] for fs in members.values())
    if isinstance(spec, str):
        names = [n.strip() for n in spec.split(",") if n.strip()]
    else:
        names = [str(n) for n in spec] if isinstance(spec, (list, tuple)) else []
    unknown = [n for n in names if n not in fine_names]
    if unknown or not names or len(set(names)) != len(names):
        raise SpurlabError(f"reduced_subclasses={spec!r} must name distinct CIFAR-100 fine classes"
                           + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                           hint="use 'random', 'first' or names such as 'beaver,aquarium_fish'")
    return sorted(fine_names.index(n) for n in names)


def reduce_subclasses(fine: np.ndarray, reduced: list[int], fraction: float, seed: int) -> np.ndarray:
    """Indices kept when only ``fraction`` of each reduced fine class stays (seeded, in order)."""
    fraction = check_param("reduce_subclasses", "subclass_fraction", probability(), fraction)
    rng = np.random.default_rng([seed, 104729])
    drop = []
    for f in reduced:
        idx = np.flatnonzero(fine == f)
        n_keep = int(round(fraction * len(idx)))
        drop.append(rng.choice(idx, size=len(idx) - n_keep, replace=False))
    return np.setdiff1d(np.arange(len(fine)), np.concatenate(drop) if drop else [])


# ------------------------------------------------------------------ building grouped splits
RAW_SPLIT_OF = {"train": "train", "val": "train", "test": "test"}


def build_with_sources(arrays: dict[str, tuple[np.ndarray, np.ndarray]], class_names: tuple[str, ...], *,
                       name: str, seed: int, **options: Any) -> tuple[DatasetSplits, dict[str, np.ndarray]]:
    """:func:`build_image_splits`, plus each output example's index in its raw split."""
    splits = build_image_splits(arrays, class_names, name=name, seed=seed, keep_uint8=True, **options)
    # Selection (class task, n_train, the val carve, n_test) is seeded and made before any spurious
    # plan, so the same call on 1-pixel images holding each example's index selects the same examples.
    selection = {k: options[k] for k in ("classes", "val_fraction", "n_train", "n_test") if k in options}
    probes = {k: (np.arange(len(lbl), dtype=np.float32).reshape(-1, 1, 1, 1), lbl) for k, (_, lbl) in arrays.items()}
    traced = build_image_splits(probes, class_names, name=name, seed=seed, **selection)
    sources = {}
    for split, ds in splits.items():
        if split not in traced or not np.array_equal(traced[split].y, ds.y):
            raise RuntimeError(f"could not trace the {split} examples back to their files; "
                               "build_image_splits no longer selects before planning attributes")
        sources[split] = traced[split].x.reshape(-1).astype(np.int64)
    return splits, sources


def _with_metadata(splits: DatasetSplits, frames: dict[str, pd.DataFrame], sources: dict[str, np.ndarray],
                   name: str) -> DatasetSplits:
    out = {}
    for split, ds in splits.items():
        frame = frames[RAW_SPLIT_OF.get(split, split)].iloc[sources[split]].reset_index(drop=True)
        out[split] = replace(ds, metadata=frame)
    return DatasetSplits(out, name=name)


def _source_frame(part: CifarSplit, extra: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame({"index": np.arange(len(part)), **extra})
    if part.filenames is not None:
        frame["filename"] = part.filenames
    return frame


def _check_injection_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(inj.INJECTION_OPTIONS))
    if unknown:
        raise SpurlabError(f"CIFAR datasets take no parameter(s) {', '.join(unknown)}",
                           hint=f"injection options: {', '.join(inj.INJECTION_OPTIONS)}")


@register_dataset("cifar10", "CIFAR-10 (binary or Python layout) under the data dir; classes='3/8' for "
                  "cats vs ships", kind="image", needs_files=True, extra_params=inj.INJECTION_OPTIONS,
                  constraints={**inj.IMAGE_CONSTRAINTS, "layout": Options(*LAYOUTS)}, requires=inj.IMAGE_REQUIRES)
def build_cifar10(data_dir: Path, classes: str | None = None, spurious: str | None = None, p: float = 0.95,
                  val_correlation: float | str = "balanced", test_correlation: float | str = "balanced",
                  magnitude: float = 1.0, val_fraction: float = 0.1, n_train: int | None = None,
                  n_test: int | None = None, layout: str = "auto", seed: int = 0,
                  **injection_options: Any) -> DatasetSplits:
    _check_injection_options(injection_options)
    archive = read_cifar(data_dir, "cifar10", layout)
    names = np.asarray(archive.class_names)
    frames = {k: _source_frame(s, {"label": s.labels, "label_name": names[s.labels]})
              for k, s in archive.splits.items()}
    arrays = {k: (s.images, s.labels) for k, s in archive.splits.items()}
    splits, sources = build_with_sources(
        arrays, archive.class_names, name="cifar10", seed=seed, classes=classes, spurious=spurious, p=p,
        val_correlation=val_correlation, test_correlation=test_correlation, magnitude=magnitude,
        val_fraction=val_fraction, n_train=n_train, n_test=n_test, **injection_options)
    return _with_metadata(splits, frames, sources, "cifar10")


@register_dataset("cifar100", "CIFAR-100 (binary or Python layout): 100 fine or 20 coarse labels; optionally "
                  "one subclass per superclass cut to a fraction (failure-directions)", kind="image",
                  needs_files=True, extra_params=inj.INJECTION_OPTIONS,
                  constraints={**inj.IMAGE_CONSTRAINTS, "layout": Options(*LAYOUTS),
                               "labels": Options("fine", "coarse"), "subclass_fraction": probability(closed="left")},
                  requires={**inj.IMAGE_REQUIRES, "subclass_fraction": "reduced_subclasses"})
def build_cifar100(data_dir: Path, labels: str = "fine", classes: str | None = None,
                   reduced_subclasses: str | None = None, subclass_fraction: float = 0.25,
                   spurious: str | None = None, p: float = 0.95, val_correlation: float | str = "balanced",
                   test_correlation: float | str = "balanced", magnitude: float = 1.0, val_fraction: float = 0.1,
                   n_train: int | None = None, n_test: int | None = None, layout: str = "auto", seed: int = 0,
                   **injection_options: Any) -> DatasetSplits:
    if labels not in ("fine", "coarse"):
        raise SpurlabError(f"labels={labels!r} is not a CIFAR-100 label set", hint="use 'fine' or 'coarse'")
    if reduced_subclasses is not None and labels != "coarse":
        raise SpurlabError("reduced_subclasses needs labels='coarse' (a subclass is a fine class inside a "
                           "superclass)", hint="add labels=coarse, or use the cifar100-superclasses preset")
    _check_injection_options(injection_options)
    archive = read_cifar(data_dir, "cifar100", layout)
    fine_names, coarse_names = np.asarray(archive.class_names), np.asarray(archive.coarse_names)
    parts = dict(archive.splits)
    reduced = None
    if reduced_subclasses is not None:
        train = parts["train"]
        reduced = choose_reduced_subclasses(train.labels, train.coarse, reduced_subclasses, archive.class_names, seed)
    frames = {k: _cifar100_frame(s, fine_names, coarse_names, reduced) for k, s in parts.items()}
    if reduced is not None:
        keep = reduce_subclasses(parts["train"].labels, reduced, subclass_fraction, seed)
        parts["train"] = _take_split(parts["train"], keep)
        frames["train"] = frames["train"].iloc[keep].reset_index(drop=True)
    task_names = archive.coarse_names if labels == "coarse" else archive.class_names
    arrays = {k: (s.images, s.coarse if labels == "coarse" else s.labels) for k, s in parts.items()}
    splits, sources = build_with_sources(
        arrays, task_names, name="cifar100", seed=seed, classes=classes, spurious=spurious, p=p,
        val_correlation=val_correlation, test_correlation=test_correlation, magnitude=magnitude,
        val_fraction=val_fraction, n_train=n_train, n_test=n_test, **injection_options)
    splits = _with_metadata(splits, frames, sources, "cifar100")
    if reduced is None or any(ds.a is not None for ds in splits.values()):
        return splits  # an injection's attribute, when there is one, is `a`; the subclass stays in metadata
    return DatasetSplits({k: replace(ds, a=ds.metadata["reduced"].to_numpy(np.int64),
                                     attr_names=("other subclasses", "reduced subclass"))
                          for k, ds in splits.items()}, name="cifar100")


def _take_split(part: CifarSplit, keep: np.ndarray) -> CifarSplit:
    files = None if part.filenames is None else [part.filenames[i] for i in keep]
    return CifarSplit(part.images[keep], part.labels[keep], part.coarse[keep], files)


def _cifar100_frame(part: CifarSplit, fine_names: np.ndarray, coarse_names: np.ndarray,
                    reduced: list[int] | None) -> pd.DataFrame:
    columns = {"fine_label": part.labels, "subclass": fine_names[part.labels],
               "coarse_label": part.coarse, "superclass": coarse_names[part.coarse]}
    if reduced is not None:
        columns["reduced"] = np.isin(part.labels, reduced)
    return _source_frame(part, columns)


register_preset("cifar10-cats-ships", "cifar10", "CIFAR-10 cats vs ships (spurious-memorization's image task)",
                classes="3/8")
register_preset("cifar10-cats-dogs", "cifar10", "CIFAR-10 cats vs dogs (ood-failure-modes)", classes="3/5")
register_preset("binary-cifar10", "cifar10", "CIFAR-10 classes 0-4 vs 5-9", classes="0-4/5-9")
register_preset("cifar100-coarse", "cifar100", "CIFAR-100 with its 20 superclass labels", labels="coarse")
register_preset("cifar100-superclasses", "cifar100", "CIFAR-100 superclasses with one subclass per superclass "
                "kept at 1/4 in training; a = 'reduced subclass' (failure-directions)", labels="coarse",
                reduced_subclasses="random", subclass_fraction=0.25)
