"""The pruned-copy contrastive framework (You et al., 2025), wrapped as a training method.

ERM is trained first; then the model is fine-tuned jointly with a pruned copy
of itself (shared weights, the smallest weights masked, mask recomputed each
epoch) under NT-Xent between the two paths plus a cross-entropy term. Training
needs no group labels.

The fine-tuning is :func:`spurlab.train.engines.pruned_copy_contrastive.train_pruned_contrastive`
(the critical-neurons module), imported when the method is fitted.
"""
from __future__ import annotations

import copy

from spurlab.data.grouped import GroupedDataset
from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, positive_int, probability
from spurlab.train.methods.method_base import Method, register_method
from spurlab.train.methods.hparams import Hparam, choice, log_uniform
from spurlab.train.methods.selection import EpochSelector
from spurlab.train.engines.pruned_copy_contrastive import MASK_METHODS, REPRESENTATIONS, train_pruned_contrastive


@register_method
class PrunedContrastive(Method):
    name = "pruned_contrastive"
    summary = "ERM, then fine-tune with a pruned copy of itself: NT-Xent both ways + lam x CE"
    reference = "You et al., Nature Communications 2025 (arXiv 2501.00961)"
    extra_space = {
        "finetune_epochs": Hparam(10, choice([5, 10, 20]), "epochs of the contrastive fine-tuning", positive_int()),
        "finetune_lr": Hparam(2e-4, log_uniform(-4.5, -3), "Adam learning rate of the fine-tuning",
                              Interval(float, 0, None, closed="neither")),
        "prune_fraction": Hparam(0.01, choice([0.005, 0.01, 0.02, 0.05]), "share of weights the copy masks",
                                 probability(closed="neither")),
        "temperature": Hparam(0.5, choice([0.1, 0.5, 1.0]), "NT-Xent temperature",
                              Interval(float, 0, None, closed="neither")),
        "lam": Hparam(0.2, choice([0.1, 0.2, 0.5, 1.0]), "weight of the cross-entropy term", Interval(float, 0, None)),
        "representation": Hparam("softmax", choice(["softmax", "logits"]),
                                 "softmax: the authors' head (NT-Xent on softmax, CE on that softmax); "
                                 "logits or features: NT-Xent on those, CE on the logits", Options(*REPRESENTATIONS)),
        "mask_method": Hparam("magnitude", choice(["magnitude"]),
                              "magnitude (smallest |w|, the authors' default) or gradient", Options(*MASK_METHODS)),
    }

    def check_hparams(self, hp: dict) -> None:
        super().check_hparams(hp)
        if int(hp["batch_size"]) < 2:
            raise SpurlabError("the contrastive loss needs batch_size >= 2 (the rest of the batch are negatives)")

    def _fit(self, train: GroupedDataset, val: GroupedDataset | None) -> None:
        framework = train_pruned_contrastive
        hp = self.hparams_
        model = self.train_network(train.x, train.y, None, stage="erm", selection="last")
        selector = EpochSelector(self.selection_, val, self.device_)
        history = framework(model, train, epochs=int(hp["finetune_epochs"]), lr=float(hp["finetune_lr"]),
                            batch_size=int(hp["batch_size"]), prune_fraction=float(hp["prune_fraction"]),
                            temperature=float(hp["temperature"]), lam=float(hp["lam"]),
                            representation=hp["representation"], mask_method=hp["mask_method"],
                            seed=self.seed, device=self.device_, on_epoch_end=selector)
        self.record_history("pruned_contrastive", list(history or []))
        self.record_selection(selector)
        self.final_model_ = copy.deepcopy(model)
        self.model_ = selector.restore(model)
