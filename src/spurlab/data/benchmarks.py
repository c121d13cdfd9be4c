"""Benchmark datasets read from their usual on-disk layouts.

* Waterbirds (WILDS layout): ``DATA/waterbirds_v1.0/metadata.csv`` or
  ``DATA/waterbird_complete95_forest2water2/metadata.csv`` with columns
  ``img_filename, y, split, place``; images relative to that folder.
* CelebA: ``DATA/celeba/list_attr_celeba.txt``, ``list_eval_partition.txt`` and
  ``img_align_celeba/``; the target and spurious attributes are chosen by name.

Images stay on disk and are decoded per batch (:class:`~spurlab.data.lazy_images.LazyImages`):
resized to ``image_size`` (square), floats in [0, 1] (``normalize=imagenet|lite`` for a
backbone's statistics), ``augment`` on the training split, ``cache=auto|DIR`` keeps the decoded
pixels on disk for the next epoch; ``limit`` caps the examples per split (a seeded subsample).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.dataset_registry import register_dataset
from spurlab.errors import DataNotFoundError, SpurlabError
from spurlab.params import Text

from spurlab.data.images import SPLIT_CODES_BY_NAME
from spurlab.data.lazy_images import (FILE_IMAGE_CONSTRAINTS, ImageTransform, LazyImages, cache_folder,
                                      lazy_split_inputs)

SPLIT_CODES = {v: k for k, v in SPLIT_CODES_BY_NAME.items()}
WATERBIRDS_DIRS = ("waterbirds_v1.0", "waterbird_complete95_forest2water2", "waterbirds")


def _subsample(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None or len(frame) <= limit:
        return frame
    return frame.sample(n=int(limit), random_state=seed).sort_index()


def _inputs(root: Path, names: pd.Series, rows: np.ndarray, split: str, source: Path, dataset: str,
            image_options: dict, data_dir: Path, seed: int) -> LazyImages:
    """The lazy images of one split: checked to exist, decoded and transformed per batch."""
    opts = dict(image_options)
    cache, workers = cache_folder(opts.pop("cache"), data_dir), opts.pop("workers")
    augment = bool(opts.pop("augment")) and split == "train"
    transform = ImageTransform(int(opts.pop("image_size")), augment=augment, seed=seed, **opts)
    return lazy_split_inputs([str(root / name) for name in names], rows + 1, transform, cache, str(source),
                             label=f"{dataset}-{split}", workers=workers)


def find_waterbirds(data_dir: Path) -> Path:
    for name in WATERBIRDS_DIRS:
        if (data_dir / name / "metadata.csv").is_file():
            return data_dir / name
    if (data_dir / "metadata.csv").is_file():
        return data_dir
    looked = ", ".join(str(data_dir / n / "metadata.csv") for n in WATERBIRDS_DIRS)
    raise DataNotFoundError(f"Waterbirds not found: looked for {looked}",
                            hint="extract the WILDS waterbirds_v1.0 archive under the data dir "
                                 "(--data-dir or SPURLAB_DATA)")


@register_dataset("waterbirds", "Waterbirds (WILDS layout): bird type with land/water backgrounds",
                  kind="benchmark", needs_files=True,
                  constraints=FILE_IMAGE_CONSTRAINTS)
def build_waterbirds(data_dir: Path, image_size: int = 64, limit: int | None = None, normalize: str = "none",
                     resize: str = "squash", augment: bool = False, cache: str | None = None,
                     workers: int | None = None, seed: int = 0) -> DatasetSplits:
    root = find_waterbirds(data_dir)
    meta = pd.read_csv(root / "metadata.csv")
    missing = {"img_filename", "y", "split", "place"} - set(meta.columns)
    if missing:
        raise SpurlabError(f"{root / 'metadata.csv'} lacks column(s) {', '.join(sorted(missing))}",
                           hint="expected the WILDS columns img_filename, y, split, place")
    options = dict(image_size=image_size, normalize=normalize, resize=resize, augment=augment, cache=cache,
                   workers=workers)
    splits = {}
    for code, split in SPLIT_CODES.items():
        rows = _subsample(meta[meta["split"] == code], limit, seed)
        if rows.empty:
            continue
        splits[split] = GroupedDataset(
            x=_inputs(root, rows["img_filename"], rows.index.to_numpy(), split, root / "metadata.csv", "waterbirds",
                      options, data_dir, seed),
            y=rows["y"].to_numpy(np.int64), a=rows["place"].to_numpy(np.int64),
            class_names=("landbird", "waterbird"), attr_names=("land", "water"),
            metadata=rows.drop(columns=["y", "place", "split"]).reset_index(drop=True), split=split)
    return DatasetSplits(splits, name="waterbirds")


def read_celeba_attributes(path: Path) -> pd.DataFrame:
    """``list_attr_celeba.txt``: a count line, a header of names, then ``file v1 v2 ...`` (+1/-1)."""
    with open(path) as fh:
        fh.readline()
        names = fh.readline().split()
        if not names:
            raise SpurlabError(f"{path} is empty or truncated", hint="re-extract CelebA's annotation files")
    try:
        table = pd.read_csv(path, sep=r"\s+", skiprows=2, header=None, index_col=0,
                            dtype={i: np.int8 for i in range(1, len(names) + 1)})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
        table = None
    if table is None or table.shape[1] != len(names):
        raise SpurlabError(f"{path}: some rows do not have {len(names)} attribute values",
                           hint="the file is damaged; re-extract CelebA's annotation files")
    values = table.to_numpy()
    if not np.isin(values, (1, -1)).all():
        raise SpurlabError(f"{path}: attribute values must be 1 or -1",
                           hint="the file is damaged; re-extract CelebA's annotation files")
    return pd.DataFrame((values > 0).astype(np.int64), columns=names, index=table.index.astype(str).to_numpy())


def find_celeba(data_dir: Path) -> Path:
    for base in (data_dir / "celeba", data_dir / "CelebA", data_dir):
        if (base / "list_attr_celeba.txt").is_file():
            return base
    raise DataNotFoundError(f"CelebA not found: looked for list_attr_celeba.txt in "
                            f"{data_dir / 'celeba'}, {data_dir / 'CelebA'} and {data_dir}",
                            hint="place list_attr_celeba.txt, list_eval_partition.txt and img_align_celeba/ "
                                 "in DATA/celeba")


@register_dataset("celeba", "CelebA attributes: target and spurious attribute by name "
                  "(default Blond_Hair x Male)", kind="benchmark", needs_files=True,
                  constraints={"target": Text(), "spurious": Text(), **FILE_IMAGE_CONSTRAINTS})
def build_celeba(data_dir: Path, target: str = "Blond_Hair", spurious: str = "Male", image_size: int = 64,
                 limit: int | None = None, normalize: str = "none", resize: str = "squash", augment: bool = False,
                 cache: str | None = None, workers: int | None = None, seed: int = 0) -> DatasetSplits:
    root = find_celeba(data_dir)
    attrs = read_celeba_attributes(root / "list_attr_celeba.txt")
    for col in (target, spurious):
        if col not in attrs.columns:
            raise SpurlabError(f"CelebA has no attribute {col!r}",
                               hint=f"choose from: {', '.join(attrs.columns)}")
    part_file = root / "list_eval_partition.txt"
    if not part_file.is_file():
        raise DataNotFoundError(f"missing {part_file}", hint="it ships with CelebA's annotations")
    part = pd.read_csv(part_file, sep=r"\s+", header=None, names=["file", "split"], index_col=0)["split"]
    frame = attrs.join(part, how="inner")
    frame["row"] = np.arange(len(frame))
    options = dict(image_size=image_size, normalize=normalize, resize=resize, augment=augment, cache=cache,
                   workers=workers)
    splits = {}
    for code, split in SPLIT_CODES.items():
        rows = _subsample(frame[frame["split"] == code], limit, seed)
        if rows.empty:
            continue
        splits[split] = GroupedDataset(
            x=_inputs(root / "img_align_celeba", pd.Series(rows.index), rows["row"].to_numpy(), split,
                      part_file, "celeba", options, data_dir, seed),
            y=rows[target].to_numpy(), a=rows[spurious].to_numpy(),
            class_names=(f"not {target}", target), attr_names=(f"not {spurious}", spurious),
            metadata=rows.drop(columns=["split", "row"]).reset_index(names="file"), split=split)
    return DatasetSplits(splits, name="celeba")
