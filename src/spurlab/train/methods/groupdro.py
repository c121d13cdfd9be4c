"""Group DRO (Sagawa, Koh, Hashimoto, Liang, ICLR 2020): minimize the worst group's loss.

Online version of the paper's Algorithm 1: the adversary keeps a distribution
``q`` over groups and, after every minibatch, moves it towards the groups with
the highest (optionally size-adjusted) loss by exponentiated gradient ascent,
``q_g <- q_g * exp(eta * (loss_g + C / sqrt(n_g)))``; the model then descends on
``sum_g q_g * loss_g``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from spurlab.data.grouped import GroupedDataset
from spurlab.params import Interval
from spurlab.train.methods.method_base import Method, register_method
from spurlab.train.methods.hparams import Hparam, choice, log_uniform
from spurlab.train.methods.selection import EpochSelector
from spurlab.train.trainer import TrainConfig, make_optimizer
from spurlab.utils import progress, resolve_device


def batch_group_losses(losses: torch.Tensor, groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss per group in one minibatch (0 for absent groups) and the per-group counts."""
    counts = torch.bincount(groups, minlength=n_groups).to(losses.dtype)
    sums = torch.zeros(n_groups, dtype=losses.dtype, device=losses.device).index_add_(0, groups, losses)
    return sums / counts.clamp(min=1), counts


class GroupDROLoss:
    """The adversary: the group weights ``q`` and the robust loss of one minibatch."""

    def __init__(self, group_counts: np.ndarray, eta: float, adjustment: float, device: str):
        counts = torch.as_tensor(np.asarray(group_counts), dtype=torch.float32, device=device)
        self.n_groups = len(counts)
        self.eta = float(eta)
        # The size adjustment C / sqrt(n_g) favours small groups, which generalize worse.
        self.adjustment = float(adjustment) / counts.clamp(min=1).sqrt()
        self.q = torch.full((self.n_groups,), 1.0 / self.n_groups, device=device)

    def __call__(self, losses: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        group_loss, counts = batch_group_losses(losses, groups, self.n_groups)
        present = (counts > 0).to(group_loss.dtype)
        step = self.eta * (group_loss.detach() + self.adjustment) * present
        self.q = self.q * torch.exp(step)
        self.q = self.q / self.q.sum()
        return (self.q * group_loss).sum()


def train_groupdro(model: nn.Module, x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_groups: int,
                   cfg: TrainConfig, eta: float, adjustment: float = 0.0,
                   on_epoch_end: Callable[[int, nn.Module], dict | None] | None = None) -> list[dict]:
    """Train ``model`` with the Group DRO objective; returns the per-epoch history (with ``q``)."""
    device = resolve_device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(device)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    gt = torch.as_tensor(groups, dtype=torch.long)
    adversary = GroupDROLoss(np.bincount(groups, minlength=n_groups), eta, adjustment, device)
    opt = make_optimizer(model.parameters(), cfg)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    history = []
    for epoch in progress(range(1, cfg.epochs + 1), "group DRO", total=cfg.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            xb, yb, gb = xt[idx].to(device), yt[idx].to(device), gt[idx].to(device)
            loss = adversary(loss_fn(model(xb), yb), gb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        record = {"epoch": epoch, "train_loss": total / len(xt), "q": adversary.q.cpu().tolist()}
        if on_epoch_end is not None:
            record.update(on_epoch_end(epoch, model) or {})
        history.append(record)
    model.eval()
    return history


@register_method
class GroupDRO(Method):
    name = "groupdro"
    summary = "online group DRO: descend on the q-weighted group losses, q pushed to the worst group"
    reference = "Sagawa et al., ICLR 2020 (arXiv 1911.08731)"
    needs_groups = ("train",)
    extra_space = {
        "eta": Hparam(0.1, log_uniform(-3, -0.5), "step size of the adversary's exponentiated-gradient update",
                      Interval(float, 0, None, closed="neither")),
        "adjustment": Hparam(0.0, choice([0.0, 1.0, 2.0, 4.0]), "group adjustment C (adds C / sqrt(n_g))",
                             Interval(float, 0, None)),
    }

    def _fit(self, train: GroupedDataset, val: GroupedDataset | None) -> None:
        model = self.new_model(train.input_shape)
        selector = EpochSelector(self.selection_, val, self.device_)
        history = train_groupdro(model, train.x, train.y, train.g, train.n_groups, self.train_config(),
                                 eta=self.hparams_["eta"], adjustment=self.hparams_["adjustment"],
                                 on_epoch_end=selector)
        self.record_history("groupdro", history)
        self.record_selection(selector)
        self.details_["final_q"] = {train.group_name(g): q for g, q in enumerate(history[-1]["q"])}
        self.model_ = selector.restore(model)
