"""``spurlab embed``: a model's penultimate embeddings of a dataset, written as an embeddings file.

    spurlab embed --dataset waterbirds --model efficientnet-lite0 --set freeze=backbone --out wb.npz
    spurlab embed --table photos.csv --image-root photos --label label --spurious place --model net.pt --out e.npz

The file (``embeddings``, ``labels``, ``predictions``, ``split``, ``spurious`` or ``groups``,
``class_names``) is what ``spurlab directions --embeddings`` and ``spurlab audit --embeddings``
read. Your trained model (a module, or a TorchScript file on the command line) is embedded as it
is; a registered name or a factory is first trained by ERM on the training split (with
``freeze=backbone``: its head only, on cached features), so that the predictions mean something.
Features go through the feature cache (:mod:`spurlab.train.feature_cache`): a second run with the
same model, data and transform reads them back (``EmbedResult.from_cache``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spurlab.data.dataset_registry import load_splits
from spurlab.data.grouped import DatasetSplits
from spurlab.errors import SpurlabError
from spurlab.models.model_registry import as_model_spec
from spurlab.train.feature_cache import EmbedResult, embed_model_splits
from spurlab.train.methods import get_method
from spurlab.utils import resolve_device


def embed_dataset(dataset: str | DatasetSplits, model: Any, out: str | os.PathLike | None = None, *,
                  data_dir: str | Path | None = None, seed: int = 0, dataset_params: dict[str, Any] | None = None,
                  model_options: dict[str, Any] | None = None, epochs: int = 10, batch_size: int = 256,
                  device: str = "auto", cache: str | os.PathLike | bool | None = None) -> EmbedResult:
    """Embed every split of ``dataset`` with ``model``'s penultimate layer; write ``out`` when given."""
    if isinstance(dataset, DatasetSplits):
        if dataset_params:
            raise SpurlabError("dataset_params do not apply to splits you built")
        splits = dataset
    else:
        splits = load_splits(dataset, data_dir=data_dir, seed=seed, **dict(dataset_params or {}))
    spec = as_model_spec(model, **dict(model_options or {}))
    device = resolve_device(device)
    if spec.kind == "module":
        net = spec.model
    else:
        if "train" not in splits:
            raise SpurlabError(f"model {spec.label!r} must be trained first and the data have no 'train' split",
                               hint="pass your trained model (an nn.Module or a TorchScript file) instead")
        erm = get_method("erm", model=spec, epochs=int(epochs), selection="last", seed=seed, device=device)
        net = erm.fit(splits).model_
    return embed_model_splits(net, splits, out, token=spec.cache_token(), batch_size=batch_size, device=device,
                              cache=cache)
