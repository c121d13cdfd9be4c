"""A small, seeded, device-aware trainer for classifiers on GroupedDatasets or arrays."""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from spurlab.errors import SpurlabError
from spurlab.utils import progress, resolve_device


@dataclass
class TrainConfig:
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"  # adam | sgd | adamw
    momentum: float = 0.9
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
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise SpurlabError(f"unknown optimizer {cfg.optimizer!r}", hint="use adam, adamw or sgd")


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig | None = None,
        sample_weights: np.ndarray | None = None,
        on_epoch_end: Callable[[int, nn.Module], dict | None] | None = None) -> TrainResult:
    """Train ``model`` with (optionally weighted) cross-entropy; returns history and checkpoints.

    ``on_epoch_end(epoch, model)`` may return a dict of metrics that is added to the history.
    """
    cfg = cfg or TrainConfig()
    device = resolve_device(cfg.device)
    if len(x) != len(y):
        raise SpurlabError(f"x has {len(x)} rows but y has {len(y)}")
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(device)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    wt = None if sample_weights is None else torch.as_tensor(sample_weights, dtype=torch.float32)
    opt = make_optimizer(model.parameters(), cfg)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    result = TrainResult(model)
    for epoch in progress(range(1, cfg.epochs + 1), "training", total=cfg.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            losses = loss_fn(model(xb), yb)
            loss = (losses * wt[idx].to(device)).sum() / wt[idx].sum() if wt is not None else losses.mean()
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
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 1024, device: str = "auto") -> np.ndarray:
    device = resolve_device(device)
    model.eval().to(device)
    out = [model(torch.as_tensor(x[i:i + batch_size], dtype=torch.float32, device=device)).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.empty((0, 0), np.float32)


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1024, device: str = "auto") -> np.ndarray:
    return predict_logits(model, x, batch_size, device).argmax(axis=1)
