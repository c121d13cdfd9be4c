"""Empirical risk minimization: the baseline every robust method is compared with."""
from __future__ import annotations

from spurlab.data.grouped import GroupedDataset
from spurlab.train.methods.method_base import Method, register_method


@register_method
class ERM(Method):
    name = "erm"
    summary = "plain cross-entropy on the training split (the baseline; needs no group labels)"
    reference = "Vapnik 1992"

    def _fit(self, train: GroupedDataset, val: GroupedDataset | None) -> None:
        self.model_ = self.train_network(train.x, train.y, val, stage="erm")
