"""Group DRO (Sagawa, Koh, Hashimoto, Liang, ICLR 2020): minimize the worst group's loss.

Online version of the paper's Algorithm 1, as in the released code (``kohpangwei/group_DRO``,
``loss.py``): the adversary keeps a distribution ``q`` over groups and, after every
minibatch, moves it towards the groups with the highest (optionally size-adjusted) loss by
exponentiated gradient ascent, ``q_g <- q_g * exp(eta * (loss_g + C / sqrt(n_g)))``; the
model then descends on ``sum_g q_g * loss_g``.

Minibatches are group-balanced by default (``group_balanced=True``: the released runs'
``--reweight_groups``, SpuCo's GroupDRO sampler): indices are drawn with replacement, every
group equally likely, one training-set size per epoch. With uniform minibatches a group of a
few hundred examples in tens of thousands is absent from most batches and ``q`` never learns
about it. ``eta`` defaults to the released code's 0.01.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from spurlab.data.grouped import GroupedDataset
from spurlab.params import Boolean, Interval
from spurlab.train.methods.method_base import Method, register_method
from spurlab.train.methods.hparams import Hparam, choice, log_uniform
from spurlab.train.trainer import TrainConfig, fit, group_balanced_sampler
from spurlab.utils import resolve_device


def batch_group_losses(losses: torch.Tensor, groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss per group in one minibatch (0 for absent groups) and the per-group counts."""
    counts = torch.bincount(groups, minlength=n_groups).to(losses.dtype)
    sums = torch.zeros(n_groups, dtype=losses.dtype, device=losses.device).index_add_(0, groups, losses)
    return sums / counts.clamp(min=1), counts


class GroupDROLoss:
    """The adversary: the group weights ``q`` and the robust loss of one minibatch.

    ``q`` starts uniform over the groups that have training examples (empty groups keep 0);
    groups absent from a minibatch keep their weight before renormalization.
    """

    def __init__(self, group_counts: np.ndarray, eta: float, adjustment: float, device: str):
        counts = torch.as_tensor(np.asarray(group_counts), dtype=torch.float32, device=device)
        self.n_groups = len(counts)
        self.eta = float(eta)
        # The size adjustment C / sqrt(n_g) favours small groups, which generalize worse.
        self.adjustment = float(adjustment) / counts.clamp(min=1).sqrt()
        present = (counts > 0).to(torch.float32)
        self.q = present / present.sum().clamp(min=1)

    def __call__(self, losses: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        group_loss, counts = batch_group_losses(losses, groups, self.n_groups)
        present = (counts > 0).to(group_loss.dtype)
        step = self.eta * (group_loss.detach() + self.adjustment) * present
        self.q = self.q * torch.exp(step)
        self.q = self.q / self.q.sum()
        return (self.q * group_loss).sum()


def groupdro_batch_loss(adversary: GroupDROLoss, groups: np.ndarray, device: str):
    """``batch_loss`` for :func:`spurlab.train.trainer.fit`: the robust loss of the batch's groups."""
    gt = torch.as_tensor(np.asarray(groups), dtype=torch.long)
    return lambda losses, idx: adversary(losses, gt[idx].to(device))


def train_groupdro(model: nn.Module, x, y: np.ndarray, groups: np.ndarray, n_groups: int,
                   cfg: TrainConfig, eta: float, adjustment: float = 0.0,
                   on_epoch_end: Callable[[int, nn.Module], dict | None] | None = None,
                   group_balanced: bool = True) -> list[dict]:
    """Train ``model`` with the Group DRO objective; returns the per-epoch history (with ``q``)."""
    device = resolve_device(cfg.device)
    adversary = GroupDROLoss(np.bincount(groups, minlength=n_groups), eta, adjustment, device)

    def end_of_epoch(epoch: int, net: nn.Module) -> dict:
        return {"q": adversary.q.cpu().tolist(), **((on_epoch_end(epoch, net) if on_epoch_end else None) or {})}

    result = fit(model, x, y, cfg, on_epoch_end=end_of_epoch,
                 sampler=group_balanced_sampler(groups) if group_balanced else None,
                 batch_loss=groupdro_batch_loss(adversary, groups, device))
    return result.history


@register_method
class GroupDRO(Method):
    name = "groupdro"
    summary = "online group DRO on group-balanced minibatches: descend on the q-weighted group losses"
    reference = "Sagawa et al., ICLR 2020 (arXiv 1911.08731)"
    needs_groups = ("train",)
    extra_space = {
        "eta": Hparam(0.01, log_uniform(-3, -1), "step size of the adversary's exponentiated-gradient update "
                      "(released code: 0.01)", Interval(float, 0, None, closed="neither")),
        "adjustment": Hparam(0.0, choice([0.0, 1.0, 2.0, 4.0]), "group adjustment C (adds C / sqrt(n_g))",
                             Interval(float, 0, None)),
        "group_balanced": Hparam(True, choice([True]), "draw group-balanced minibatches (released code: "
                                 "--reweight_groups) instead of a uniform shuffle", Boolean()),
    }

    def _fit(self, train: GroupedDataset, val: GroupedDataset | None) -> None:
        hp = self.hparams_
        adversary = GroupDROLoss(train.group_counts(), hp["eta"], hp["adjustment"], self.device_)
        sampler = group_balanced_sampler(train.g) if hp["group_balanced"] else None
        self.model_ = self.train_network(
            train.x, train.y, val, stage="groupdro", sampler=sampler,
            batch_loss=groupdro_batch_loss(adversary, train.g, self.device_),
            on_epoch_end=lambda epoch, net: {"q": adversary.q.cpu().tolist()})
        self.details_["final_q"] = {train.group_name(g): float(q) for g, q in enumerate(adversary.q.cpu().tolist())}
