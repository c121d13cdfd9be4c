"""Image datasets (digits, MNIST, Fashion-MNIST) with optional spurious injections.

Every image dataset goes through :func:`build_image_splits`, which maps the
original classes to tasks (``classes="0-4/5-9"`` for Binary-MNIST, ``"1/7"``),
carves a validation split, assigns the spurious attribute per split at the
requested correlation and draws it into the images. Other loaders (CIFAR, ...)
reuse it.
"""
from __future__ import annotations

import gzip
import os
import zlib
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from spurlab.data import injections as inj
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.dataset_registry import register_dataset, register_preset
from spurlab.data.lazy_images import UInt8Images
from spurlab.errors import DataNotFoundError, SpurlabError
from spurlab.params import check_params, optional, probability
from spurlab.utils import atomic_path

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle-boot")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_CODES_BY_NAME = {"train": 0, "val": 1, "test": 2}
DOWNLOAD_URLS = {
    "MNIST": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "FashionMNIST": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}


# ------------------------------------------------------------------ IDX files
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise SpurlabError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})",
                           hint="delete it and download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise SpurlabError(f"{path} is not an IDX file (bad magic number)" if data else f"{path} is empty",
                           hint="re-download the file; it may be truncated or an HTML error page")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(data[2])
    if dtype is None:
        raise SpurlabError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise SpurlabError(f"{path} is truncated: its header ends after {len(data)} bytes",
                           hint="delete it and download it again")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if (len(data) - 4 - 4 * ndim) % np.dtype(dtype).itemsize:
        raise SpurlabError(f"{path} is truncated: it ends inside a value", hint="delete it and download it again")
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise SpurlabError(f"{path} is truncated: header says {shape}, found {array.size} values")
    return array.reshape(shape)


def _find_idx(root: Path, folder: str, stem: str) -> Path | None:
    for base in (root / folder / "raw", root / folder, root):
        for name in (stem, stem + ".gz"):
            if (base / name).is_file():
                return base / name
    return None


def download_idx(root: Path, folder: str) -> None:
    """Fetch the four IDX files into ``root/folder/raw`` (online users only)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stems in IDX_FILES.values():
        for stem in stems:
            target = raw / f"{stem}.gz"
            if target.exists():
                continue
            with urllib.request.urlopen(DOWNLOAD_URLS[folder] + f"{stem}.gz", timeout=60) as resp, \
                    atomic_path(target) as tmp:
                tmp.write_bytes(resp.read())


def read_idx_dataset(data_dir: Path, folder: str, download: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images uint8 (N, 28, 28), labels), "test": (...)}`` from torchvision's layout."""
    if download:
        download_idx(data_dir, folder)
    out = {}
    for split, (img_stem, lbl_stem) in IDX_FILES.items():
        img, lbl = _find_idx(data_dir, folder, img_stem), _find_idx(data_dir, folder, lbl_stem)
        if img is None or lbl is None:
            raise DataNotFoundError(
                f"{folder} IDX files not found: looked for {img_stem}[.gz] and {lbl_stem}[.gz] "
                f"in {data_dir / folder / 'raw'}, {data_dir / folder} and {data_dir}",
                hint=f"put torchvision's {folder}/raw/*.gz under the data dir (--data-dir or SPURLAB_DATA), "
                     f"or pass download=True when online",
            )
        images, labels = read_idx(img), read_idx(lbl)
        if len(images) != len(labels):
            raise SpurlabError(f"{img} has {len(images)} images but {lbl} has {len(labels)} labels")
        out[split] = (images, labels.astype(np.int64))
    return out


# ------------------------------------------------------------------ class tasks
def parse_classes(spec: str | list | None, n_original: int) -> list[list[int]] | None:
    """``"0-4/5-9"`` -> [[0..4], [5..9]]; ``"1/7"`` -> [[1], [7]]; lists pass through."""
    if spec is None:
        return None
    if isinstance(spec, str):
        groups = []
        for part in spec.replace(" vs ", "/").split("/"):
            members: list[int] = []
            for token in part.split(","):
                token = token.strip()
                if "-" in token:
                    lo, hi = token.split("-")
                    members.extend(range(int(lo), int(hi) + 1))
                elif token:
                    members.append(int(token))
            groups.append(members)
    else:
        groups = [[int(c)] if np.isscalar(c) else [int(v) for v in c] for c in spec]
    flat = [c for grp in groups for c in grp]
    if len(groups) < 2 or any(not g for g in groups):
        raise SpurlabError(f"classes={spec!r} must name at least two non-empty class groups",
                           hint="e.g. '0-4/5-9' or '1/7'")
    if len(set(flat)) != len(flat) or min(flat) < 0 or max(flat) >= n_original:
        raise SpurlabError(f"classes={spec!r} repeats a class or names one outside 0..{n_original - 1}")
    return groups


def map_classes(images: np.ndarray, labels: np.ndarray, groups: list[list[int]] | None):
    if groups is None:
        return images, labels
    lookup = np.full(max(max(g) for g in groups) + 1, -1)
    for new, members in enumerate(groups):
        lookup[members] = new
    keep = (labels < len(lookup)) & (lookup[np.minimum(labels, len(lookup) - 1)] >= 0)
    return images[keep], lookup[labels[keep]]


def task_class_names(groups: list[list[int]] | None, names: tuple[str, ...]) -> tuple[str, ...]:
    if groups is None:
        return names
    return tuple("+".join(names[c] for c in g) if len(g) <= 2 else f"{names[g[0]]}..{names[g[-1]]}"
                 for g in groups)


# ------------------------------------------------------------------ the shared builder
def _take(n: int | None, total: int, rng: np.random.Generator) -> np.ndarray:
    if n is None or n >= total:
        return np.arange(total)
    return np.sort(rng.choice(total, size=int(n), replace=False))


def _carve_val(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train_idx, val_idx), both in original order."""
    if fraction <= 0:
        return np.arange(len(y)), np.empty(0, np.int64)
    val = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        val.append(rng.choice(idx, size=int(round(fraction * len(idx))), replace=False))
    val_idx = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(len(y)), val_idx), val_idx


# What build_image_splits accepts (spurlab.params), checked before any work (also when called without the registry).
SPLIT_CONSTRAINTS = {"val_fraction": probability(closed="left"),
                     "test_fraction": optional(probability(closed="neither")), "p": probability(closed="neither")}


def build_image_splits(
    raw: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: tuple[str, ...],
    *,
    name: str,
    classes: str | list | None = None,
    spurious: str | None = None,
    p: float = 0.95,
    val_correlation: float | str = "balanced",
    test_correlation: float | str = "balanced",
    group_sizes: dict | None = None,
    n_attrs: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    keep_uint8: bool = False,
    **injection_options: Any,
) -> DatasetSplits:
    """Turn raw ``{split: (uint8 or float images, labels)}`` into grouped splits.

    ``keep_uint8``: uint8 images without a spurious injection stay uint8 in memory
    (:class:`~spurlab.data.lazy_images.UInt8Images`, read as floats in [0, 1] per batch);
    an injection draws in floats, so injected images are float32.

    ``raw`` has a ``train`` split and, unless ``test_fraction`` is given, a
    ``test`` split. Images are (N, H, W), (N, H, W, C) or (N, C, H, W).
    """
    val_fraction, test_fraction = check_params("build_image_splits", SPLIT_CONSTRAINTS,
                                               {"val_fraction": val_fraction, "test_fraction": test_fraction}).values()
    rng = np.random.default_rng(seed)
    groups = parse_classes(classes, len(class_names))
    names = task_class_names(groups, class_names)
    arrays = {k: map_classes(_as_nchw(img), lbl, groups) for k, (img, lbl) in raw.items()}
    if test_fraction is not None:
        img, lbl = arrays.pop("train")
        rest, test_idx = _carve_val(lbl, test_fraction, rng)
        arrays = {"train": (img[rest], lbl[rest]), "test": (img[test_idx], lbl[test_idx])}
    train_img, train_lbl = arrays["train"]
    keep = _take(n_train, len(train_lbl), rng)
    train_img, train_lbl = train_img[keep], train_lbl[keep]
    tr_idx, va_idx = _carve_val(train_lbl, val_fraction, rng)
    parts = {"train": (train_img[tr_idx], train_lbl[tr_idx])}
    if len(va_idx):
        parts["val"] = (train_img[va_idx], train_lbl[va_idx])
    test_img, test_lbl = arrays["test"]
    keep = _take(n_test, len(test_lbl), rng)
    parts["test"] = (test_img[keep], test_lbl[keep])

    if spurious is not None and spurious not in inj.INJECTIONS:
        raise SpurlabError(f"unknown spurious injection {spurious!r}",
                           hint=f"known: {', '.join(inj.INJECTIONS)}")
    with_attr = spurious is not None and spurious not in inj.ATTRIBUTE_FREE
    if with_attr and not group_sizes:
        p = check_params("build_image_splits", SPLIT_CONSTRAINTS, {"p": p})["p"]
    k_attrs = n_attrs or len(names)
    correlations = {"train": p, "val": val_correlation, "test": test_correlation}
    splits = {}
    for i, (split, (img, lbl)) in enumerate(parts.items()):
        a = None
        if with_attr:
            if split == "train" and group_sizes:
                idx, a = inj.plan_group_sizes(lbl, k_attrs, group_sizes, rng)
                img, lbl = img[idx], lbl[idx]
            else:
                corr = inj.resolve_correlation(correlations[split], p, k_attrs)
                a = inj.plan_attributes(lbl, k_attrs, corr, rng)
        if keep_uint8 and spurious is None and img.dtype == np.uint8:
            x = UInt8Images(np.ascontiguousarray(img))
        else:
            x = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
        if spurious is not None:
            x = inj.inject(x, a, spurious, seed=seed + 101 * (i + 1), **injection_options)
        attr_names = inj.attribute_names(spurious, k_attrs) if with_attr else ()
        splits[split] = GroupedDataset(x=x, y=lbl, a=a, class_names=names, attr_names=attr_names, split=split)
        if with_attr:
            _check_no_empty_group(splits[split])
    return DatasetSplits(splits, name=name)


def _check_no_empty_group(ds: GroupedDataset) -> None:
    """Every class needs majority (a == y) and minority (a != y) examples; with more than two
    attribute values, single (y, a) cells may stay empty (the minority is spread over them)."""
    empty = []
    for c in range(ds.n_classes):
        in_class = ds.y == c
        aligned = int((in_class & (ds.a == c)).sum())
        if aligned == 0 or aligned == int(in_class.sum()):
            kind = "majority (a == y)" if aligned == 0 else "minority (a != y)"
            empty.append(f"the {kind} of class {ds.class_names[c]}")
    if empty:
        raise SpurlabError(
            f"split {ds.split!r} would have no examples in {', '.join(empty)}",
            hint="use more examples (n_train/n_test), a correlation further from 0 and 1, "
                 "or fewer classes (e.g. classes='0-4/5-9')")


def _as_nchw(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        return np.transpose(images, (0, 3, 1, 2))
    if images.ndim == 4:
        return images
    raise SpurlabError(f"expected images of rank 3 or 4, got shape {images.shape}")


# ------------------------------------------------------------------ registered datasets
@register_dataset("digits", "scikit-learn's 8x8 digits (1 797 images, no files needed); "
                  "the embedded default", kind="image", extra_params=inj.INJECTION_OPTIONS,
                  constraints=inj.IMAGE_CONSTRAINTS, requires=inj.IMAGE_REQUIRES)
def build_digits(classes: str | None = None, spurious: str | None = None, p: float = 0.95,
                 val_correlation: float | str = "balanced", test_correlation: float | str = "balanced",
                 magnitude: float = 1.0, val_fraction: float = 0.2, test_fraction: float = 0.3,
                 n_train: int | None = None, seed: int = 0, **injection_options: Any) -> DatasetSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    return build_image_splits({"train": (images, bunch.target.astype(np.int64))}, MNIST_CLASSES,
                              name="digits", classes=classes, spurious=spurious, p=p,
                              val_correlation=val_correlation, test_correlation=test_correlation,
                              magnitude=magnitude, val_fraction=val_fraction, test_fraction=test_fraction,
                              n_train=n_train, seed=seed, **injection_options)


def _idx_builder(folder: str, class_names: tuple[str, ...], name: str):
    def build(data_dir: Path, classes: str | None = None, spurious: str | None = None, p: float = 0.95,
              val_correlation: float | str = "balanced", test_correlation: float | str = "balanced",
              magnitude: float = 1.0, val_fraction: float = 0.1, n_train: int | None = None,
              n_test: int | None = None, download: bool = False, seed: int = 0,
              **injection_options: Any) -> DatasetSplits:
        raw = read_idx_dataset(data_dir, folder, download=download)
        return build_image_splits(raw, class_names, name=name, classes=classes, spurious=spurious, p=p,
                                  val_correlation=val_correlation, test_correlation=test_correlation,
                                  magnitude=magnitude, val_fraction=val_fraction, n_train=n_train,
                                  n_test=n_test, seed=seed, **injection_options)

    build.__name__ = f"build_{name.replace('-', '_')}"
    return build


register_dataset("mnist", "MNIST from IDX files (torchvision layout) under the data dir", kind="image",
                 needs_files=True, extra_params=inj.INJECTION_OPTIONS, constraints=inj.IMAGE_CONSTRAINTS,
                 requires=inj.IMAGE_REQUIRES)(_idx_builder("MNIST", MNIST_CLASSES, "mnist"))
register_dataset("fashion-mnist", "Fashion-MNIST from IDX files (torchvision layout) under the data dir",
                 kind="image", needs_files=True, extra_params=inj.INJECTION_OPTIONS, constraints=inj.IMAGE_CONSTRAINTS,
                 requires=inj.IMAGE_REQUIRES)(_idx_builder("FashionMNIST", FASHION_CLASSES, "fashion-mnist"))

register_preset("binary-mnist", "mnist", "Binary-MNIST: digits 0-4 vs 5-9", classes="0-4/5-9")
register_preset("mnist-1v7", "mnist", "MNIST 1 vs 7 (spurious-memorization's image task)", classes="1/7")
register_preset("binary-fashion-mnist", "fashion-mnist", "Fashion-MNIST classes 0-4 vs 5-9",
                classes="0-4/5-9")
register_preset("colored-mnist", "mnist", "Binary-MNIST with the digit coloured by a spurious attribute "
                "(train correlation p)", classes="0-4/5-9", spurious="foreground_colour", p=0.9)
register_preset("spurious-digits", "digits", "digits 0-4 vs 5-9 with a corner patch at 95% train "
                "correlation, balanced val/test (the audit's default)", classes="0-4/5-9",
                spurious="patch", p=0.95)
