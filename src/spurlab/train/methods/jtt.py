"""Just Train Twice (Liu et al., ICML 2021): upweight what a briefly trained ERM model gets wrong.

Stage one trains ERM for ``first_epochs`` epochs; its training errors form the
*error set*. Stage two trains a fresh model on the training set with every
error-set example repeated ``lambda_up`` times (the paper's upsampling) or, with
``upweight="loss"``, weighted ``lambda_up`` in the loss. Training needs no group
labels; selection can avoid them too (``selection="worst_class"``).
"""
from __future__ import annotations

import numpy as np

from spurlab.data.grouped import GroupedDataset
from spurlab.params import Options, positive_int
from spurlab.train.methods.method_base import Method, register_method
from spurlab.train.methods.hparams import Hparam, choice
from spurlab.train.trainer import predict, repeated_sampler
from spurlab.utils import log


def upsampled_indices(flagged: np.ndarray, factor: int) -> np.ndarray:
    """All indices once, plus ``factor - 1`` extra copies of the flagged ones."""
    flagged = np.asarray(flagged, dtype=bool)
    extra = np.repeat(np.flatnonzero(flagged), int(factor) - 1)
    return np.concatenate([np.arange(len(flagged)), extra])


@register_method
class JTT(Method):
    name = "jtt"
    summary = "ERM for a few epochs, then retrain with its training errors upsampled lambda_up times"
    reference = "Liu et al., ICML 2021 (arXiv 2107.09044)"
    extra_space = {
        "first_epochs": Hparam(4, choice([1, 2, 4, 8]), "epochs of the stage-one ERM model (T)", positive_int()),
        "lambda_up": Hparam(20, choice([5, 10, 20, 50]), "how many times an error-set example counts",
                            positive_int()),
        "upweight": Hparam("upsample", choice(["upsample"]), "upsample (the paper) or loss (weighted loss)",
                           Options("upsample", "loss")),
    }

    def _fit(self, train: GroupedDataset, val: GroupedDataset | None) -> None:
        hp = self.hparams_
        first = self.train_network(train.x, train.y, None, stage="identify", epochs=int(hp["first_epochs"]),
                                   selection="last")
        errors = predict(first, train.x, device=self.device_) != train.y
        self.error_set_ = np.flatnonzero(errors)
        self.details_.update(error_set_size=int(errors.sum()), **self._error_set_groups(train, errors))
        if not errors.any():
            log("[spurlab] jtt: the stage-one model makes no training error; stage two is plain ERM")
        if hp["upweight"] == "upsample":
            idx = upsampled_indices(errors, int(hp["lambda_up"]))
            self.model_ = self.train_network(train.x, train.y, val, stage="upweighted", seed_offset=1,
                                             sampler=repeated_sampler(idx))
        else:
            weights = np.where(errors, float(hp["lambda_up"]), 1.0)
            self.model_ = self.train_network(train.x, train.y, val, stage="upweighted", sample_weights=weights,
                                             seed_offset=1)

    @staticmethod
    def _error_set_groups(train: GroupedDataset, errors: np.ndarray) -> dict:
        """How the error set splits over groups (diagnostic only; not used in training)."""
        if not train.has_groups:
            return {}
        counts = np.bincount(train.g[errors], minlength=train.n_groups)
        return {"error_set_by_group": {train.group_name(g): int(n) for g, n in enumerate(counts)}}
