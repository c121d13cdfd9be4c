"""Group reweighting and group-balanced upsampling: every group gets the same total mass."""
from __future__ import annotations

import numpy as np

from spurlab.data.grouped import GroupedDataset
from spurlab.errors import SpurlabError
from spurlab.params import Options
from spurlab.train.methods.hparams import Hparam, choice
from spurlab.train.methods.method_base import Method, register_method
from spurlab.train.trainer import group_balanced_sampler, repeated_sampler


def group_balanced_weights(groups: np.ndarray) -> np.ndarray:
    """Per-example weights ``1 / n_g``, scaled to mean 1, so each present group has equal mass."""
    groups = np.asarray(groups)
    counts = np.bincount(groups)
    weights = 1.0 / counts[groups]
    return weights * (len(groups) / weights.sum())


def group_balanced_indices(groups: np.ndarray, seed: int) -> np.ndarray:
    """Indices that upsample every present group to the size of the largest one.

    Each example appears ``size // n_g`` times; the remainder is drawn without
    replacement, so every example is kept at least once.
    """
    groups = np.asarray(groups)
    if groups.size == 0:
        raise SpurlabError("cannot balance an empty set of examples")
    rng = np.random.default_rng(seed)
    present = np.unique(groups)
    target = max(int(np.sum(groups == g)) for g in present)
    parts = []
    for g in present:
        members = np.flatnonzero(groups == g)
        copies, rest = divmod(target, len(members))
        parts += [np.tile(members, copies), rng.choice(members, size=rest, replace=False)]
    return rng.permutation(np.concatenate(parts))


@register_method
class GroupReweight(Method):
    name = "reweight"
    summary = "every group the same total mass: group-balanced minibatches (default) or loss weights 1 / n_g"
    reference = "importance weighting / group-balanced sampling; Sagawa et al. 2020, Idrissi et al. 2022"
    needs_groups = ("train",)
    extra_space = {
        "by": Hparam("sampler", choice(["sampler", "loss"]),
                     "sampler: minibatches drawn with replacement, every group equally likely (one training-set "
                     "size per epoch); loss: uniform minibatches, each loss weighted 1 / n_g",
                     Options("sampler", "loss")),
    }

    def _fit(self, train: GroupedDataset, val: GroupedDataset | None) -> None:
        weights = group_balanced_weights(train.g)
        self.details_["group_weight"] = {train.group_name(g): float(weights[train.g == g][0])
                                         for g in np.unique(train.g)}
        if self.hparams_["by"] == "sampler":
            self.model_ = self.train_network(train.x, train.y, val, stage="reweight",
                                             sampler=group_balanced_sampler(train.g))
        else:
            self.model_ = self.train_network(train.x, train.y, val, stage="reweight", sample_weights=weights)


@register_method
class GroupUpsample(Method):
    name = "upsample"
    summary = "every group upsampled (repeated) to the size of the largest group"
    reference = "group-balanced sampling; Idrissi et al. 2022 (SUBG/SUBY's upsampling sibling)"
    needs_groups = ("train",)

    def _fit(self, train: GroupedDataset, val: GroupedDataset | None) -> None:
        idx = group_balanced_indices(train.g, seed=self.seed)
        self.details_["n_upsampled"] = int(len(idx))
        # An epoch is one pass over the upsampled set (n_groups x the largest group: longer than ERM's).
        self.model_ = self.train_network(train.x, train.y, val, stage="upsample", sampler=repeated_sampler(idx))
