"""Embedding files: a practitioner's model outputs as a dataset.

An ``.npz`` or ``.parquet`` file with ``embeddings`` (N x D), ``labels`` (N) and
optionally ``predictions``, ``groups``, ``spurious`` (an attribute, gives groups
from (label, spurious)), ``split`` (train/val/test or 0/1/2), ``class_names`` and
any other per-example columns (kept as metadata, e.g. ``image_path``).
In Parquet, embeddings are a list column ``embeddings`` or columns ``emb_0 ...``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.images import SPLIT_CODES_BY_NAME
from spurlab.data.dataset_registry import register_dataset
from spurlab.errors import DataNotFoundError, SpurlabError
from spurlab.params import PathArg, optional
from spurlab.utils import check_finite, check_labels, check_same_length

RESERVED = {"embeddings", "labels", "predictions", "groups", "spurious", "split", "class_names"}


NPZ_HINT = "write it again with numpy.savez(path, embeddings=..., labels=..., ...)"


def _read_npz(path: Path) -> dict[str, Any]:
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(6)
        what = ("a single .npy array, not an .npz archive" if head == b"\x93NUMPY" else
                "empty (0 bytes)" if not head else "not an .npz (zip) archive: truncated or corrupt")
        raise SpurlabError(f"embeddings file {str(path)!r} is {what}", hint=NPZ_HINT)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise SpurlabError(f"embeddings file {str(path)!r} holds pickled objects; spurlab never unpickles",
                               hint="save plain arrays: numbers, or strings as a fixed-width dtype "
                                    "(np.array(names, dtype=str)), never dtype=object") from None
        raise SpurlabError(f"embeddings file {str(path)!r} is corrupt: {exc}", hint=NPZ_HINT) from None
    except Exception as exc:  # zip members truncated or damaged: zlib, zipfile and numpy header errors
        raise SpurlabError(f"embeddings file {str(path)!r} is truncated or corrupt "
                           f"({type(exc).__name__}: {str(exc)[:120]})", hint=NPZ_HINT) from None


def _read_parquet(path: Path) -> dict[str, Any]:
    try:
        return _parquet_columns(path)
    except SpurlabError:
        raise
    except Exception as exc:  # pyarrow's errors for truncated, empty or non-parquet files
        raise SpurlabError(f"embeddings file {str(path)!r} is not a readable parquet file "
                           f"({type(exc).__name__}: {str(exc)[:160]})",
                           hint="write it again with DataFrame.to_parquet") from None


def _parquet_columns(path: Path) -> dict[str, Any]:
    frame = pd.read_parquet(path)
    out: dict[str, Any] = {}
    if "embeddings" in frame.columns:
        out["embeddings"] = np.stack(frame.pop("embeddings").to_numpy())
    else:
        cols = [c for c in frame.columns if str(c).startswith("emb_")]
        if cols:
            cols.sort(key=lambda c: int(str(c)[4:]))
            out["embeddings"] = frame[cols].to_numpy()
            frame = frame.drop(columns=cols)
    for col in frame.columns:
        out[str(col)] = frame[col].to_numpy()
    return out


def read_embeddings_file(path: str | Path) -> dict[str, Any]:
    """Read and validate an embeddings file into a dict of arrays."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"embeddings file not found: {path}",
                                hint="pass the path of an .npz or .parquet file")
    if path.suffix == ".npz":
        data = _read_npz(path)
    elif path.suffix in (".parquet", ".pq"):
        data = _read_parquet(path)
    else:
        raise SpurlabError(f"unsupported embeddings file type {path.suffix!r}", hint="use .npz or .parquet")
    for key in ("embeddings", "labels"):
        if key not in data:
            raise SpurlabError(f"{path} has no {key!r} entry",
                               hint="an embeddings file needs 'embeddings' (N x D) and 'labels' (N)")
    emb = np.asarray(data["embeddings"])
    if not (np.issubdtype(emb.dtype, np.number) or emb.dtype == bool) or np.iscomplexobj(emb):
        raise SpurlabError(f"{path}: 'embeddings' must hold real numbers, got dtype {emb.dtype}")
    emb = emb.astype(np.float32)
    if emb.ndim != 2:
        raise SpurlabError(f"{path}: 'embeddings' must be 2-d (N x D), got shape {emb.shape}")
    if emb.shape[0] == 0 or emb.shape[1] == 0:
        raise SpurlabError(f"{path}: 'embeddings' holds no examples or no dimensions (shape {emb.shape})")
    data["embeddings"] = emb
    check_finite("embeddings", emb)
    if "class_names" in data and np.ndim(data["class_names"]) != 1:
        raise SpurlabError(f"{path}: 'class_names' must be a 1-d list of names, got shape "
                           f"{np.shape(data['class_names'])}")
    per_example = {k: v for k, v in data.items() if k != "class_names" and np.ndim(v) >= 1}
    check_same_length(**per_example)
    n_classes = len(data["class_names"]) if "class_names" in data else None
    data["labels"] = check_labels("labels", data["labels"], n_classes)
    if "predictions" in data:
        data["predictions"] = check_labels("predictions", data["predictions"], n_classes)
    if n_classes is None:
        check_label_set(path, data)
    for key in ("spurious", "groups"):
        if key in data:
            data[key] = check_labels(f"{path}: {key!r}", data[key])
    if "spurious" in data:
        present = sorted(set(np.unique(data["spurious"]).tolist()))
        missing = sorted(set(range(present[-1] + 1)) - set(present)) if present else []
        if missing:
            raise SpurlabError(f"{path}: 'spurious' attribute values skip {missing[:10]} (values {present[:10]}); "
                               "groups would include attribute values with no example",
                               hint="number the attribute values 0..A-1")
    return data


def check_label_set(path: Path, data: dict[str, Any]) -> None:
    """Without ``class_names`` the classes are the labels 0..K-1: no gaps, no prediction outside them."""
    present = set(np.unique(data["labels"]).tolist())
    missing = sorted(set(range(max(present) + 1)) - present)
    if missing:
        raise SpurlabError(f"{path}: labels skip class(es) {missing[:10]} (values {sorted(present)[:10]}); "
                           "the classes would include ones with no example",
                           hint="renumber the labels 0..K-1, or add 'class_names' listing every class")
    if "predictions" in data:
        outside = sorted(set(np.unique(data["predictions"]).tolist()) - present)
        if outside:
            raise SpurlabError(f"{path}: predictions hold class(es) {outside[:10]} that no label has "
                               f"(labels: {sorted(present)[:10]})",
                               hint="predictions must use the labels' class indices; add 'class_names' if a "
                                    "class has no example")


def _split_names(values: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.integer):
        lookup = {v: k for k, v in SPLIT_CODES_BY_NAME.items()}
        bad = set(np.unique(values).tolist()) - set(lookup)
        if bad:
            raise SpurlabError(f"split codes {sorted(bad)} are not 0 (train), 1 (val) or 2 (test)")
        return np.array([lookup[v] for v in values])
    return values.astype(str)


def splits_from_arrays(data: dict[str, Any], name: str = "embeddings") -> DatasetSplits:
    labels = data["labels"]
    n_classes = int(max(labels.max(), data["predictions"].max() if "predictions" in data else 0)) + 1
    class_names = tuple(str(c) for c in data.get("class_names", range(n_classes)))
    meta = pd.DataFrame({k: v for k, v in data.items() if k not in RESERVED and np.ndim(v) == 1},
                        index=pd.RangeIndex(len(labels)))
    if "predictions" in data:
        meta["prediction"] = data["predictions"]
    split = _split_names(np.asarray(data["split"])) if "split" in data else np.full(len(labels), "all")
    spurious = data.get("spurious")
    groups = data.get("groups") if spurious is None else None
    out = {}
    for s in dict.fromkeys(split.tolist()):
        mask = split == s
        out[s] = GroupedDataset(
            x=data["embeddings"][mask], y=labels[mask], class_names=class_names,
            a=None if spurious is None else np.asarray(spurious)[mask],
            groups=None if groups is None else np.asarray(groups)[mask],
            metadata=meta[mask].reset_index(drop=True), split=s)
    return DatasetSplits(out, name=name)


@register_dataset("embeddings", "your own embeddings file (.npz/.parquet): embeddings, labels, "
                  "optional predictions, groups, spurious, split", kind="file", needs_files=True,
                  constraints={"path": optional(PathArg())})
def build_embeddings(path: str | None = None) -> DatasetSplits:
    if path is None:
        raise SpurlabError("the embeddings dataset needs a file", hint="pass path=FILE (--set path=FILE)")
    return splits_from_arrays(read_embeddings_file(path))
