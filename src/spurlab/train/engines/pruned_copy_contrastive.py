"""Fine-tune a model jointly with a pruned copy of itself (You et al., 2025, the training framework).

The copy shares every weight with the model and multiplies a mask into the
prunable ones. At the start of each epoch the mask is recomputed (the globally
smallest ``prune_fraction`` of conv/linear weights by default, or the weights
with the largest gradient on a seeded batch). Each minibatch minimizes

    NT-Xent(full.detach(), pruned) + NT-Xent(full, pruned.detach()) + lam * CE(full, y)

with temperature 0.5: the same input through the two paths is the positive
pair, the rest of the batch are negatives. Removing the few weights the
network memorizes with should not change what it computes on typical examples,
so the loss pushes the memorization out of those weights.

``representation`` chooses what the contrastive loss compares: ``logits``
(default), ``features`` (the model's ``features(x)``) or ``softmax`` (the
authors' code: softmax applied twice to the outputs).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from spurlab.errors import SpurlabError
from spurlab.models.layers import prunable_layers
from spurlab.probes.neurons import as_arrays, find_critical_units
from spurlab.utils import progress, resolve_device

REPRESENTATIONS = ("logits", "features", "softmax")
MASK_METHODS = ("magnitude", "gradient")


@dataclass
class PrunedContrastiveConfig:
    epochs: int = 21
    lr: float = 2e-4
    batch_size: int = 100
    lam: float = 0.2  # weight of the cross-entropy term
    temperature: float = 0.5
    prune_fraction: float = 0.01
    mask_method: str = "magnitude"  # magnitude: smallest |w|; gradient: largest |dL/dw| on a batch
    mask_granularity: str = "weight"  # weight | channel
    mask_batch: int = 200  # examples the gradient mask is computed on
    representation: str = "logits"  # logits | features | softmax (the authors' variant)
    lr_factor: float = 0.5  # LR multiplier when the epoch loss plateaus
    lr_patience: int = 2
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise SpurlabError(f"unknown representation {self.representation!r}",
                               hint=f"use one of {', '.join(REPRESENTATIONS)}")
        if self.mask_method not in MASK_METHODS:
            raise SpurlabError(f"unknown mask_method {self.mask_method!r}", hint="use magnitude or gradient")
        if self.mask_granularity not in ("weight", "channel"):
            raise SpurlabError(f"unknown mask_granularity {self.mask_granularity!r}", hint="use weight or channel")
        if not 0.0 < self.prune_fraction < 1.0:
            raise SpurlabError(f"prune_fraction must lie in (0, 1), got {self.prune_fraction}")
        if not self.temperature > 0 or not self.lr > 0 or self.lam < 0:
            raise SpurlabError("temperature and lr must be positive and lam non-negative",
                               hint=f"got temperature={self.temperature}, lr={self.lr}, lam={self.lam}")
        if int(self.epochs) < 1 or int(self.batch_size) < 2:
            raise SpurlabError(f"need epochs >= 1 and batch_size >= 2 (negatives), got {self.epochs}, "
                               f"{self.batch_size}")


# ------------------------------------------------------------------ loss pieces
def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalized-temperature cross-entropy: row i of ``a`` and row i of ``b`` are a positive
    pair, every other row of both is a negative; averaged over the 2n anchors."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a.flatten(1), b.flatten(1)]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class _Outputs(nn.Module):
    """Wraps a model so one forward returns (representation input, logits) for functional_call."""

    def __init__(self, model: nn.Module, representation: str):
        super().__init__()
        self.model = model
        self.representation = representation

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.representation != "features":
            logits = self.model(x)
            rep = F.softmax(F.softmax(logits, dim=1), dim=1) if self.representation == "softmax" else logits
            return rep, logits
        feats = self.model.features(x)
        head = getattr(self.model, "head", None)
        return feats, head(feats) if isinstance(head, nn.Module) else self.model(x)


def compute_masks(model: nn.Module, data: Any, cfg: PrunedContrastiveConfig, epoch: int = 0) -> dict[str, torch.Tensor]:
    """``{parameter name: float mask}`` (0 on pruned entries) for this epoch."""
    by_weight = cfg.mask_granularity == "weight"
    # Whole output neurons of the classifier are never pruned: that would delete a class.
    common = {"granularity": cfg.mask_granularity, "fraction": cfg.prune_fraction, "include_output": by_weight}
    if cfg.mask_method == "magnitude":
        units = find_critical_units(model, method="magnitude" if by_weight else "weight_norm", largest=False,
                                    **common)
    else:
        x, y, _ = as_arrays(data)
        rng = np.random.default_rng([cfg.seed, epoch])
        batch = rng.choice(len(y), size=min(int(cfg.mask_batch), len(y)), replace=False)
        units = find_critical_units(model, (x[batch], y[batch]), "group_gradient", n_worst=len(batch), **common)
    masks = {}
    modules = dict(model.named_modules())
    for layer, selected in units.weight_masks(model).items():
        masks[f"{layer}.weight"] = (~selected).float()
        bias = getattr(modules[layer], "bias", None)
        if cfg.mask_granularity == "channel" and bias is not None:
            keep = (~selected).reshape(selected.shape[0], -1)[:, 0]
            masks[f"{layer}.bias"] = keep.float()
    return masks


def pruned_fraction(model: nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """Share of the prunable weights (conv/linear weights) the masks remove."""
    total = sum(m.weight.numel() for m in prunable_layers(model).values())
    removed = sum(float((1 - m).sum()) for name, m in masks.items() if name.endswith(".weight"))
    return removed / total


def pruned_contrastive_loss(model: nn.Module, masks: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
                            cfg: PrunedContrastiveConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The framework's loss on one minibatch and its parts (``to_pruned``, ``to_full``, ``ce``)."""
    wrapper = _Outputs(model, cfg.representation)
    full_rep, full_logits = wrapper(xb)
    params = {f"model.{name}": p * masks[name] if name in masks else p for name, p in model.named_parameters()}
    # Copies, so batch-norm running statistics are updated by the full path only.
    params.update({f"model.{name}": b.clone() for name, b in model.named_buffers()})
    pruned_rep, _ = functional_call(wrapper, params, (xb,))
    # Each term moves one path towards the other; their gradients add up to NT-Xent's full gradient.
    parts = {"to_pruned": nt_xent(full_rep.detach(), pruned_rep, cfg.temperature),
             "to_full": nt_xent(full_rep, pruned_rep.detach(), cfg.temperature),
             "ce": F.cross_entropy(full_logits, yb)}
    return parts["to_pruned"] + parts["to_full"] + cfg.lam * parts["ce"], parts


# ------------------------------------------------------------------ training
def train_pruned_contrastive(model: nn.Module, train_ds: Any, config: PrunedContrastiveConfig | None = None,
                             on_epoch_end: Callable[[int, nn.Module], dict | None] | None = None,
                             **overrides: Any) -> list[dict]:
    """Fine-tune ``model`` in place with the pruned-copy contrastive loss; returns the per-epoch history.

    ``train_ds`` is a GroupedDataset or ``(x, y)``; ``overrides`` replace fields of
    ``config`` (e.g. ``epochs=5``). ``on_epoch_end(epoch, model)`` may return
    metrics to add to that epoch's record (the model is in eval mode meanwhile).
    """
    known = set(PrunedContrastiveConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SpurlabError(f"unknown pruned-contrastive setting(s) {', '.join(unknown)}",
                           hint=f"settings: {', '.join(sorted(known))}")
    cfg = replace(config or PrunedContrastiveConfig(), **overrides)
    cfg.validate()
    x, y, _ = as_arrays(train_ds)
    if len(np.unique(y)) < 2:
        raise SpurlabError("the training data has a single class", hint="the framework fine-tunes a classifier")
    device = resolve_device(cfg.device)
    model.to(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    history = []
    for epoch in progress(range(1, cfg.epochs + 1), "pruned-contrastive", total=cfg.epochs):
        model.eval()
        masks = {k: v.to(device) for k, v in compute_masks(model, (x, y), cfg, epoch).items()}
        model.train()
        sums = {"loss": 0.0, "to_pruned": 0.0, "to_full": 0.0, "ce": 0.0}
        order = torch.randperm(len(yt), generator=gen)
        seen = 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:  # NT-Xent needs at least one negative
                continue
            loss, parts = pruned_contrastive_loss(model, masks, xt[idx].to(device), yt[idx].to(device), cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
            sums["loss"] += loss.item() * len(idx)
            for name, value in parts.items():
                sums[name] += value.item() * len(idx)
        record = {"epoch": epoch, **{k: v / max(seen, 1) for k, v in sums.items()},
                  "lr": opt.param_groups[0]["lr"], "pruned_fraction": pruned_fraction(model, masks)}
        plateau.step(record["loss"])
        if on_epoch_end is not None:
            model.eval()
            record.update(on_epoch_end(epoch, model) or {})
        history.append(record)
    model.eval()
    return history
