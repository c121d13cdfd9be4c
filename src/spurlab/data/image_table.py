"""``image-table``: your own images, listed in a CSV or parquet table.

Columns: ``path`` (relative to ``image_root``, default the table's folder, or absolute), the label
(``label=COL``), the spurious attribute (``spurious=COL``) and/or a group column (``group=COL``; a
column named ``group`` is used when neither is given), an optional ``split`` column
(``train``/``val``/``test``; without it a seeded split stratified by group is drawn). Every other
column is kept as metadata (the attribute captioner describes failure directions with it).

Labels and attribute values may be strings: their sorted values become ``class_names`` and
``attr_names``. When there are as many attribute values as classes, the attribute values are
ordered so that value ``c`` is the one most frequent in class ``c`` on the training split
(spurlab's convention: ``a == y`` is the majority).

Images are decoded on demand (:class:`~spurlab.data.lazy_images.LazyImages`), resized to
``image_size`` and normalised per batch; ``cache=DIR`` (or ``auto``: ``DATA/decoded``) keeps the
decoded uint8 pixels on disk for the next epoch or run. Rows in error messages count from 1 after
the header line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spurlab.data.dataset_registry import register_dataset
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.images import SPLIT_CODES_BY_NAME, _carve_val
from spurlab.data.lazy_images import FILE_IMAGE_CONSTRAINTS, ImageTransform, cache_folder, lazy_split_inputs
from spurlab.errors import DataNotFoundError, SpurlabError
from spurlab.params import Text, check_params, optional, probability

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (any other suffix) or parquet (``.parquet``/``.pq``) table."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"image table not found: {path}", hint="pass the CSV/parquet file with --table")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise SpurlabError(f"cannot read the image table {path}: {exc}",
                           hint="a CSV with a header line, or a parquet file (.parquet)") from exc
    if frame.empty:
        raise SpurlabError(f"the image table {path} has no rows",
                           hint="one row per image: path, label, the spurious attribute or group")
    return frame


def _row(i: int) -> str:
    return f"row {int(i) + 1}"


def _check_columns(frame: pd.DataFrame, source: Path, needed: dict[str, str]) -> None:
    missing = [f"{col!r} ({role})" for role, col in needed.items() if col not in frame.columns]
    if missing:
        raise SpurlabError(f"{source} has no column {', '.join(missing)}",
                           hint=f"its columns: {', '.join(map(str, frame.columns))}; "
                                "name them with --label/--spurious (label=, spurious=, group=, path_column=)")
    for role, col in needed.items():
        empty = frame[col].isna().to_numpy()
        if empty.any():
            raise SpurlabError(f"{source}, {_row(np.flatnonzero(empty)[0])}: column {col!r} ({role}) is empty",
                               hint=f"{int(empty.sum())} row(s) lack a value; fill them or drop those rows")


def encode_values(column: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes 0..K-1 and the value names, sorted (numbers as numbers, otherwise as text)."""
    values = column.to_numpy()
    if pd.api.types.is_numeric_dtype(column):
        uniques = np.unique(values)
        names = tuple(str(int(v)) if float(v).is_integer() else str(v) for v in uniques)
    else:
        values = column.astype(str).str.strip().to_numpy()
        uniques = np.unique(values)
        names = tuple(str(v) for v in uniques)
    return np.searchsorted(uniques, values).astype(np.int64), names


def align_attribute(y: np.ndarray, a: np.ndarray, n_classes: int, n_attrs: int) -> np.ndarray:
    """A permutation ``order`` of the attribute values such that value ``order[c]`` is the one
    co-occurring most with class ``c`` (a maximum matching of the class x attribute counts)."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((n_classes, n_attrs))
    np.add.at(counts, (y, a), 1)
    _, cols = linear_sum_assignment(-counts)
    return cols


def _split_names(frame: pd.DataFrame, column: str, source: Path) -> np.ndarray:
    raw = frame[column]
    text = raw.astype(str).str.strip().str.lower()
    codes = {str(v): k for k, v in SPLIT_CODES_BY_NAME.items()}  # 0/1/2 as CelebA and WILDS write them
    names = text.map(lambda v: SPLIT_ALIASES.get(v, codes.get(v.removesuffix(".0"))))
    bad = names.isna().to_numpy()
    if bad.any():
        unknown = sorted(set(raw[bad].astype(str)))
        raise SpurlabError(f"{source}, {_row(np.flatnonzero(bad)[0])}: split column {column!r} has unknown "
                           f"value(s) {', '.join(map(repr, unknown[:5]))}",
                           hint="use train, val or test (or 0/1/2), or drop the column for a seeded split")
    return names.to_numpy(dtype=object)


FRACTIONS = ("val_fraction", "test_fraction")


def _seeded_split(strata: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """train/val/test per row, stratified by ``strata`` (the groups)."""
    val_fraction, test_fraction = check_params("image-table", {name: probability(closed="left") for name in FRACTIONS},
                                               {"val_fraction": val_fraction, "test_fraction": test_fraction}).values()
    if val_fraction + test_fraction >= 1.0:
        raise SpurlabError(f"val_fraction + test_fraction must stay below 1, got {val_fraction + test_fraction}")
    rng = np.random.default_rng(seed)
    names = np.full(len(strata), "train", dtype=object)
    rest, test_idx = _carve_val(strata, float(test_fraction), rng)
    names[test_idx] = "test"
    share = float(val_fraction) / (1.0 - float(test_fraction))
    _, val_pos = _carve_val(strata[rest], share, rng)
    names[rest[val_pos]] = "val"
    return names


def _resolve_paths(frame: pd.DataFrame, column: str, root: Path) -> list[str]:
    out = []
    for name in frame[column].astype(str):
        p = Path(name).expanduser()
        out.append(str(p if p.is_absolute() else root / p))
    return out


@register_dataset("image-table", "your own images: a CSV/parquet table of paths, labels and a spurious "
                  "attribute or groups (decoded on demand)", kind="file", needs_files=True,
                  constraints={"table": optional(Text()), "image_root": optional(Text()), "label": Text(),
                               "spurious": optional(Text()), "group": optional(Text()), "path_column": Text(),
                               "split_column": Text(), "val_fraction": probability(closed="left"),
                               "test_fraction": probability(closed="left"), **FILE_IMAGE_CONSTRAINTS})
def build_image_table(data_dir: Path, table: str | None = None, image_root: str | None = None, label: str = "label",
                      spurious: str | None = None, group: str | None = None, path_column: str = "path",
                      split_column: str = "split", image_size: int = 64, normalize: str = "none",
                      resize: str = "squash", augment: bool = False, cache: str | None = None,
                      val_fraction: float = 0.2, test_fraction: float = 0.2, limit: int | None = None,
                      workers: int | None = None, seed: int = 0) -> DatasetSplits:
    if table is None:
        raise SpurlabError("image-table needs table=FILE (a CSV or parquet file)",
                           hint="spurlab audit --table table.csv --image-root DIR --label COL --spurious COL")
    source = Path(table).expanduser()
    frame = read_table(source)
    if spurious is None and group is None and "group" in frame.columns:
        group = "group"
    if spurious is None and group is None:
        raise SpurlabError("image-table needs the spurious attribute (spurious=COL) or a group column (group=COL)",
                           hint=f"columns of {source}: {', '.join(map(str, frame.columns))}")
    needed = {"image path": path_column, "label": label}
    needed.update({"spurious attribute": spurious} if spurious else {})
    needed.update({"group": group} if group else {})
    _check_columns(frame, source, needed)
    frame = frame.reset_index(drop=True)

    y, class_names = encode_values(frame[label])
    if len(class_names) < 2:
        raise SpurlabError(f"{source}: label column {label!r} has a single class ({class_names[0]!r})",
                           hint="a classifier needs at least two classes; check --label")
    a, attr_names = encode_values(frame[spurious]) if spurious else (None, ())
    groups = encode_values(frame[group])[0] if group and not spurious else None
    strata = y * max(len(attr_names), 1) + a if a is not None else (groups if groups is not None else y)
    if split_column in frame.columns:
        split_of = _split_names(frame, split_column, source)
    else:
        split_of = _seeded_split(strata, val_fraction, test_fraction, seed)
    if a is not None and len(attr_names) == len(class_names):
        train_rows = split_of == "train"
        order = align_attribute(y[train_rows], a[train_rows], len(class_names), len(attr_names))
        a = np.argsort(order)[a]
        attr_names = tuple(attr_names[i] for i in order)

    root = Path(image_root).expanduser() if image_root else source.parent
    files = _resolve_paths(frame, path_column, root)
    roles = {label, spurious, group, split_column} - {None}
    metadata = frame.drop(columns=[c for c in roles if c in frame.columns])
    cache_dir = cache_folder(cache, data_dir)
    rng = np.random.default_rng(seed)
    splits = {}
    for split in ("train", "val", "test"):
        rows = np.flatnonzero(split_of == split)
        if limit is not None and len(rows) > int(limit):
            rows = np.sort(rng.choice(rows, size=int(limit), replace=False))
        if not len(rows):
            continue
        transform = ImageTransform(int(image_size), normalize, resize, augment=bool(augment) and split == "train",
                                   seed=seed)
        x = lazy_split_inputs([files[i] for i in rows], rows + 1, transform, cache_dir, str(source),
                              label=f"{source.stem}-{split}", workers=workers)
        splits[split] = GroupedDataset(
            x=x, y=y[rows], a=None if a is None else a[rows], groups=None if groups is None else groups[rows],
            class_names=class_names, attr_names=attr_names, split=split,
            metadata=metadata.iloc[rows].reset_index(drop=True))
    return DatasetSplits(splits, name="image-table")
