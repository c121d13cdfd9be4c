"""A small, seeded, device-aware trainer for classifiers on GroupedDatasets or arrays.

Inputs are read one minibatch at a time (``x[index_array]``), so ``x`` may be any
numpy-like array, including a lazy one that decodes images on indexing. uint8
images are scaled to [0, 1] per batch; float images that look like 0..255 pixels
get a warning. The order of examples in an epoch comes from a *sampler*: a
seeded permutation by default, or e.g. :func:`group_balanced_sampler` (draws with
replacement, every group equally likely, as in the released Group DRO code).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from spurlab.errors import SpurlabError
from spurlab.models.penultimate import float_batch
from spurlab.params import Boolean, Interval, Options, check_param, check_params, positive_int
from spurlab.utils import log, progress, resolve_device

OPTIMIZERS = ("adam", "adamw", "sgd")
# What TrainConfig accepts (spurlab.params), checked by fit before any work.
TRAIN_CONSTRAINTS = {
    "epochs": positive_int(), "lr": Interval(float, 0, None, closed="neither"), "batch_size": positive_int(),
    "optimizer": Options(*OPTIMIZERS), "momentum": Interval(float, 0, 1, closed="left"), "nesterov": Boolean(),
    "weight_decay": Interval(float, 0, None), "seed": Interval(int, 0, None),
    "checkpoint_every": Interval(int, 0, None),  # 0: never
}
# sampler(generator) -> the indices of one epoch, in order
Sampler = Callable[[torch.Generator], torch.Tensor]
# batch_loss(per-example losses, batch indices) -> the scalar to descend on
BatchLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"  # adam | sgd | adamw
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 0  # keep a copy of the weights every N epochs (0: never)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    checkpoints: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    optimizer = check_param("TrainConfig", "optimizer", TRAIN_CONSTRAINTS["optimizer"], cfg.optimizer)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    nesterov = bool(cfg.nesterov) and cfg.momentum > 0  # sgd; torch refuses nesterov without momentum
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=nesterov)


# ------------------------------------------------------------------ inputs, one batch at a time
class InputScaler:
    """Turns a batch of ``x`` into float32: uint8 divided by 255; warns once about 0..255 floats."""

    def __init__(self) -> None:
        self.warned = False

    def __call__(self, batch) -> torch.Tensor:
        if isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8:
            return batch.to(torch.float32).div_(255.0)
        tensor = float_batch(batch, "cpu")
        if not self.warned and tensor.ndim == 4 and tensor.numel() and float(tensor.max()) > 2.0:
            self.warned = True
            log("[spurlab] warning: float images with values above 2 (0..255 pixels?) are fed as they are; "
                "pass uint8 (scaled to [0, 1]) or scale them yourself")
        return tensor


def batch_source(x):
    """What minibatches are indexed from: an in-memory numpy array becomes a zero-copy tensor view
    (indexing it is faster than numpy fancy indexing); anything else (a lazy array) stays as it is."""
    if (isinstance(x, np.ndarray) and x.flags.writeable and x.dtype != np.float16
            and np.issubdtype(x.dtype, np.number)):
        return torch.from_numpy(np.ascontiguousarray(x))
    return x


def input_batch(x, idx: torch.Tensor | np.ndarray, scaler: InputScaler | None = None) -> torch.Tensor:
    """``x[idx]`` as a float32 tensor on the CPU (``x`` any numpy-like array; uint8 scaled to [0, 1])."""
    if isinstance(x, torch.Tensor):
        batch = x[torch.as_tensor(idx)]
    else:
        batch = x[idx.numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)]
    return (scaler or InputScaler())(batch)


def shuffled_sampler(n: int) -> Sampler:
    """A fresh seeded permutation of ``range(n)`` every epoch (the default)."""
    return lambda gen: torch.randperm(n, generator=gen)


def weighted_sampler(weights: np.ndarray, n_samples: int | None = None) -> Sampler:
    """Draw ``n_samples`` (default: all) indices with replacement, example ``i`` with probability
    proportional to ``weights[i]``: the same expected loss as weighting each loss, with far less variance
    when a few examples carry much of the mass (they then appear in most minibatches)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.size == 0 or not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.sum() <= 0:
        raise SpurlabError("sampling weights must be finite, non-negative and not all zero")
    table = torch.as_tensor(weights)
    size = int(n_samples if n_samples is not None else len(weights))
    return lambda gen: torch.multinomial(table, size, replacement=True, generator=gen)


def group_balanced_sampler(groups: np.ndarray, n_samples: int | None = None) -> Sampler:
    """Draw ``n_samples`` (default: all) indices with replacement, each present group equally likely.

    Example ``i`` has probability ``1 / (n_present_groups * n_{g_i})``: the released Group DRO
    code's ``--reweight_groups`` (a WeightedRandomSampler with weights ``1 / n_g``) and SpuCo's
    group-balanced sampling. A minibatch of ``B`` holds about ``B / n_groups`` of every group.
    """
    groups = np.asarray(groups)
    if groups.size == 0:
        raise SpurlabError("cannot balance an empty set of examples")
    return weighted_sampler(1.0 / np.bincount(groups)[groups], n_samples)


def repeated_sampler(indices: np.ndarray) -> Sampler:
    """A fixed multiset of indices (e.g. upsampled groups), shuffled afresh every epoch: nothing is copied."""
    table = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    return lambda gen: table[torch.randperm(len(table), generator=gen)]


# ------------------------------------------------------------------ the loop
def fit(model: nn.Module, x, y: np.ndarray, cfg: TrainConfig | None = None,
        sample_weights: np.ndarray | None = None,
        on_epoch_end: Callable[[int, nn.Module], dict | None] | None = None, *,
        sampler: Sampler | None = None, batch_loss: BatchLoss | None = None) -> TrainResult:
    """Train ``model`` with (optionally weighted) cross-entropy; returns history and checkpoints.

    ``on_epoch_end(epoch, model)`` may return a dict of metrics that is added to the history.
    ``sampler`` gives each epoch's indices (default: a seeded permutation); ``batch_loss``
    replaces the (weighted) mean with any reduction of the per-example losses (Group DRO).
    """
    cfg = cfg or TrainConfig()
    device = resolve_device(cfg.device)
    if len(x) != len(y):
        raise SpurlabError(f"x has {len(x)} rows but y has {len(y)}")
    check_params("TrainConfig", TRAIN_CONSTRAINTS, {name: getattr(cfg, name) for name in TRAIN_CONSTRAINTS})
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(device)
    yt = torch.as_tensor(np.array(y, dtype=np.int64))
    wt = None if sample_weights is None else torch.as_tensor(np.array(sample_weights, dtype=np.float32))
    sampler = sampler or shuffled_sampler(len(yt))
    source, scaler = batch_source(x), InputScaler()
    opt = make_optimizer(model.parameters(), cfg)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    result = TrainResult(model)
    for epoch in progress(range(1, cfg.epochs + 1), "training", total=cfg.epochs):
        model.train()
        order = sampler(gen)
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            xb, yb = input_batch(source, idx, scaler).to(device), yt[idx].to(device)
            losses = loss_fn(model(xb), yb)
            if batch_loss is not None:
                loss = batch_loss(losses, idx)
            elif wt is not None:
                wb = wt[idx].to(device)
                loss = (losses * wb).sum() / wb.sum()
            else:
                loss = losses.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        record = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        if on_epoch_end is not None:
            record.update(on_epoch_end(epoch, model) or {})
        result.history.append(record)
        if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            result.checkpoints[epoch] = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    model.eval()
    return result


@torch.no_grad()
def predict_logits(model: nn.Module, x, batch_size: int = 1024, device: str = "auto") -> np.ndarray:
    device = resolve_device(device)
    model.eval().to(device)
    scaler = InputScaler()
    out = [model(input_batch(x, np.arange(i, min(i + batch_size, len(x))), scaler).to(device)).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.empty((0, 0), np.float32)


def predict(model: nn.Module, x, batch_size: int = 1024, device: str = "auto") -> np.ndarray:
    return predict_logits(model, x, batch_size, device).argmax(axis=1)

