"""Penultimate features computed once per (model, data, transform) and reused: the last-layer fast path.

:func:`split_features` embeds one split with a model's penultimate layer (the convention of
:mod:`spurlab.models.penultimate`) and keeps the result in a cache folder under a key made of

* the model: a digest of the weights that produce the features (a ``head`` that only reads
  them is left out, so retraining the head keeps the key) and the model's transform options
  (``image_size``, ``feature_layer``, ...);
* the data: dataset name and parameters (image size, normalisation, ...), split, labels, groups
  and a digest of the inputs (all of them when in memory, a few decoded rows when lazy).

The folder is ``cache=`` when given, else ``$SPURLAB_CACHE``, else ``~/.cache/spurlab/features``;
``cache=False`` turns caching off. :data:`CACHE_STATS` counts hits and misses in this process
and every :class:`SplitFeatures` says whether it came from the cache.

:func:`embed_dataset` is the Python side of ``spurlab embed``: features, labels, groups,
predictions and split written as an embeddings file that ``spurlab directions`` and
``spurlab audit --embeddings`` read.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.errors import SpurlabError
from spurlab.models.layers import model_device
from spurlab.models.penultimate import BackboneWithHead, batch_indices, float_batch, penultimate_features
from spurlab.utils import atomic_path, log, resolve_device

CACHE_ENV = "SPURLAB_CACHE"
FULL_HASH_BYTES = 256 * 2**20  # in-memory inputs up to this size are hashed whole
SAMPLED_ROWS = 32


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    def reset(self) -> None:
        self.hits = self.misses = 0


CACHE_STATS = CacheStats()


@dataclass
class SplitFeatures:
    features: np.ndarray  # float32 (N, D)
    from_cache: bool
    key: str
    path: Path | None


def cache_folder(cache: str | os.PathLike | bool | None = None) -> Path | None:
    if cache is False:
        return None
    if cache is None or cache is True:
        cache = os.environ.get(CACHE_ENV) or Path("~/.cache/spurlab/features")
    return Path(cache).expanduser()


# ------------------------------------------------------------------ keys
def feature_owner(model: nn.Module, feature_layer: str | None) -> tuple[nn.Module, str | None, bool]:
    """The module whose weights make the features, the layer they are read at, and whether a ``head``
    of that module only reads them (and can be left out of the key)."""
    if isinstance(model, BackboneWithHead):
        return feature_owner(model.backbone, model.feature_layer)
    return model, feature_layer, feature_layer is None and callable(getattr(model, "features", None))


def weights_digest(model: nn.Module, feature_layer: str | None = None) -> str:
    owner, layer, skip_head = feature_owner(model, feature_layer)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(owner).__module__}.{type(owner).__qualname__}|{layer}".encode())
    for name, tensor in owner.state_dict().items():
        if skip_head and (name == "head" or name.startswith("head.")):
            continue
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def inputs_digest(x) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(x).__name__}|{tuple(x.shape)}|{getattr(x, 'dtype', '')}".encode())
    if isinstance(x, np.ndarray) and x.nbytes <= FULL_HASH_BYTES:
        h.update(np.ascontiguousarray(x).tobytes())
    elif len(x):
        rows = np.unique(np.linspace(0, len(x) - 1, num=min(SAMPLED_ROWS, len(x))).astype(np.int64))
        h.update(np.ascontiguousarray(np.asarray(x[rows], dtype=np.float32)).tobytes())
    return h.hexdigest()


def data_digest(ds: GroupedDataset) -> str:
    h = hashlib.blake2b(digest_size=16)
    params = json.dumps(ds.params, sort_keys=True, default=str)
    h.update(f"{ds.name}|{ds.split}|{params}|{len(ds)}".encode())
    h.update(np.ascontiguousarray(ds.y).tobytes())
    h.update(np.ascontiguousarray(ds.g).tobytes())
    h.update(inputs_digest(ds.x).encode())
    return h.hexdigest()


def feature_key(model: nn.Module, ds: GroupedDataset, token: Mapping[str, Any] | None = None,
                weights_key: str | None = None) -> str:
    token = dict(token or {})
    h = hashlib.blake2b(digest_size=20)
    h.update((weights_key or weights_digest(model, token.get("feature_layer"))).encode())
    h.update(data_digest(ds).encode())
    h.update(json.dumps(token, sort_keys=True, default=str).encode())
    return h.hexdigest()


# ------------------------------------------------------------------ computing and caching
def split_features(model: nn.Module, ds: GroupedDataset, *, token: Mapping[str, Any] | None = None,
                   batch_size: int = 256, device: str = "auto", cache: str | os.PathLike | bool | None = None,
                   weights_key: str | None = None) -> SplitFeatures:
    """The penultimate features of ``ds`` under ``model``, from the cache when this key was seen
    (``weights_key``: the model's :func:`weights_digest`, when already computed)."""
    token = dict(token or {})
    folder = cache_folder(cache)
    key = feature_key(model, ds, token, weights_key)
    path = folder / f"{key}.npz" if folder is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                features = npz["features"]
            if len(features) == len(ds):
                CACHE_STATS.hits += 1
                return SplitFeatures(features, True, key, path)
        except (OSError, ValueError, KeyError):
            log(f"[spurlab] feature cache: unreadable entry {path.name}, recomputing")
    CACHE_STATS.misses += 1
    features = penultimate_features(model, ds.x, batch_size=batch_size, device=resolve_device(device),
                                    feature_layer=token.get("feature_layer"))
    features = features.astype(np.float32, copy=False)  # N x D: one copy only, however large the split
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, features=features)
    return SplitFeatures(features, False, key, path)


def embed_splits(model: nn.Module, splits: Mapping[str, GroupedDataset], *, token: Mapping[str, Any] | None = None,
                 batch_size: int = 256, device: str = "auto", cache: str | os.PathLike | bool | None = None
                 ) -> dict[str, SplitFeatures]:
    weights_key = weights_digest(model, dict(token or {}).get("feature_layer"))
    return {name: split_features(model, ds, token=token, batch_size=batch_size, device=device, cache=cache,
                                 weights_key=weights_key)
            for name, ds in splits.items()}


@torch.no_grad()
def logits_from_features(model: nn.Module, features: np.ndarray, x=None, feature_layer: str | None = None,
                         batch_size: int = 1024, device: str = "cpu") -> np.ndarray:
    """The model's logits: its ``head`` applied to the features when the head only reads them,
    else a forward pass over ``x``."""
    _, _, head_reads_features = feature_owner(model, feature_layer)
    head = getattr(model, "head", None)
    model.eval().to(device)
    if isinstance(model, BackboneWithHead) or (head_reads_features and isinstance(head, nn.Module)):
        parts = [head(torch.as_tensor(features[idx], device=model_device(head))).cpu().numpy()
                 for idx in batch_indices(len(features), batch_size)]
    else:
        if x is None:
            raise SpurlabError("the model's predictions need its inputs (its head is not known)")
        parts = [model(float_batch(x[idx], device)).cpu().numpy()
                 for idx in batch_indices(len(x), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)


# ------------------------------------------------------------------ embeddings files
def embeddings_arrays(splits: Mapping[str, GroupedDataset], features: Mapping[str, np.ndarray],
                      predictions: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an embeddings file (:mod:`spurlab.data.embeddings`) for these splits."""
    names = list(splits)
    first = splits[names[0]]
    out: dict[str, np.ndarray] = {
        "embeddings": np.concatenate([features[s] for s in names]).astype(np.float32),
        "labels": np.concatenate([splits[s].y for s in names]).astype(np.int64),
        "split": np.concatenate([np.full(len(splits[s]), s) for s in names]).astype(str),
        "class_names": np.asarray(first.class_names, dtype=str),
    }
    if predictions is not None:
        out["predictions"] = np.concatenate([predictions[s] for s in names]).astype(np.int64)
    if all(splits[s].a is not None for s in names):
        out["spurious"] = np.concatenate([splits[s].a for s in names]).astype(np.int64)
    elif all(splits[s].has_groups for s in names):
        out["groups"] = np.concatenate([splits[s].g for s in names]).astype(np.int64)
    return out


def write_embeddings_file(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """``.npz`` or ``.parquet`` (embeddings as a list column), written atomically."""
    path = Path(path)
    if path.suffix not in (".npz", ".parquet", ".pq"):
        raise SpurlabError(f"unsupported embeddings file type {path.suffix!r}", hint="use .npz or .parquet")
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        else:
            import pandas as pd

            frame = pd.DataFrame({k: v for k, v in arrays.items() if k not in ("embeddings", "class_names")})
            frame.insert(0, "embeddings", list(arrays["embeddings"]))
            frame.to_parquet(tmp)
    return path


@dataclass
class EmbedResult:
    path: Path | None
    splits: DatasetSplits
    features: dict[str, SplitFeatures]
    predictions: dict[str, np.ndarray]

    @property
    def from_cache(self) -> bool:
        """Every split's features came from the cache."""
        return all(f.from_cache for f in self.features.values())


def embed_model_splits(model: nn.Module, splits: DatasetSplits, out: str | os.PathLike | None = None, *,
                       token: Mapping[str, Any] | None = None, batch_size: int = 256, device: str = "auto",
                       cache: str | os.PathLike | bool | None = None) -> EmbedResult:
    """Features (cached), predictions, and optionally the embeddings file of a trained ``model``."""
    token = dict(token or {})
    device = resolve_device(device)
    feats = embed_splits(model, splits, token=token, batch_size=batch_size, device=device, cache=cache)
    preds = {s: logits_from_features(model, f.features, splits[s].x, token.get("feature_layer"),
                                     device=device).argmax(axis=1) for s, f in feats.items()}
    path = None
    if out is not None:
        arrays = embeddings_arrays(splits, {s: f.features for s, f in feats.items()}, preds)
        path = write_embeddings_file(out, arrays)
    return EmbedResult(path, splits, feats, preds)
