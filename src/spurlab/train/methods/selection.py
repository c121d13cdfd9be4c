"""Model selection on the validation split: which epoch (and which trial) to keep.

Criteria, best is highest:

* ``worst_group`` — worst-group validation accuracy (needs validation group labels);
* ``worst_class`` — worst-class validation accuracy: the variant that needs no
  group labels at all (class labels only);
* ``accuracy`` — plain validation accuracy;
* ``last`` — no selection: keep the last epoch;
* ``auto`` — ``worst_group`` when the validation split has group labels, else
  ``worst_class``.
"""
from __future__ import annotations

import copy

import numpy as np
from torch import nn

from spurlab import metrics
from spurlab.data.grouped import GroupedDataset
from spurlab.errors import SpurlabError
from spurlab.params import Options, check_param

CRITERIA = ("auto", "worst_group", "worst_class", "accuracy", "last")
LABEL_FREE_CRITERIA = ("worst_class", "accuracy", "last")


def resolve_criterion(criterion: str, val: GroupedDataset | None) -> str:
    """The concrete criterion for ``val`` (``auto`` resolved), validated."""
    criterion = check_param("resolve_criterion", "selection", Options(*CRITERIA), criterion)
    if val is None:
        if criterion not in ("auto", "last"):
            raise SpurlabError(f"selection {criterion!r} needs a 'val' split, and the dataset has none",
                               hint="use selection='last' or a dataset with a validation split")
        return "last"
    if criterion == "auto":
        return "worst_group" if val.has_groups else "worst_class"
    if criterion == "worst_group" and not val.has_groups:
        raise SpurlabError("selection 'worst_group' needs group labels on the validation split",
                           hint="use selection='worst_class' (class labels only) or 'accuracy'")
    return criterion


def selection_score(criterion: str, y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> float:
    """Score of predictions under ``criterion`` (higher is better)."""
    if criterion == "worst_group":
        return metrics.worst_group_accuracy(y, pred, groups)
    if criterion == "worst_class":
        return metrics.worst_group_accuracy(y, pred, y)
    if criterion == "accuracy":
        return metrics.accuracy(y, pred)
    raise SpurlabError(f"criterion {criterion!r} does not score predictions")


def score_dataset(criterion: str, model: nn.Module, ds: GroupedDataset, device: str) -> float:
    from spurlab.train.trainer import predict

    return selection_score(criterion, ds.y, predict(model, ds.x, device=device), ds.g)


class EpochSelector:
    """``on_epoch_end`` callback keeping the weights of the best validation epoch.

    Ties keep the earlier epoch. With criterion ``last`` it only records nothing
    and :meth:`restore` leaves the final weights in place.
    """

    def __init__(self, criterion: str, val: GroupedDataset | None, device: str):
        self.criterion = criterion
        self.val = val
        self.device = device
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self._best_state: dict | None = None

    def __call__(self, epoch: int, model: nn.Module) -> dict | None:
        if self.criterion == "last" or self.val is None:
            self.best_epoch = epoch
            return None
        score = score_dataset(self.criterion, model, self.val, self.device)
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self._best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return {f"val_{self.criterion}": score}

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the best epoch's weights into ``model`` (no-op for ``last``)."""
        if self._best_state is not None:
            model.load_state_dict(self._best_state)
        return model
