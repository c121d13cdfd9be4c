"""Failure-direction upweighting (Jain et al., ICLR 2023), wrapped as a training method.

A base ERM model is trained for ``base_epochs``; per-class linear SVMs fit on the
validation split's embeddings predict where that model errs (its *failure
directions*); training examples on the failing side are upweighted and a fresh
model is retrained for ``epochs``. Only class labels and the model's own
predictions are used: no group labels anywhere (select with
``selection="worst_class"`` to stay label-free end to end).

Why a *briefly* trained base model: the paper embeds with CLIP, which never saw
the training labels. With the model's own penultimate layer, a model trained to
100% training accuracy has memorized its training examples onto the "correct"
side of every direction, so almost nothing gets flagged (on spurious-digits:
5 of 1007). After a few epochs the same directions flag the minority groups
almost exactly (45 of 50 minority examples, no majority one). ``embedding="input"``
uses the flattened inputs instead, an encoder independent of the model.

The directions and weights come from :func:`spurlab.train.engines.upweighting.failure_direction_weights`
(the failure-directions module), imported when the method is fitted.
"""
from __future__ import annotations

import numpy as np

from spurlab.data.grouped import GroupedDataset
from spurlab.data.lazy_images import is_lazy
from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, check_size, positive_int
from spurlab.models.penultimate import penultimate_features
from spurlab.train.methods.method_base import Method, register_method
from spurlab.train.methods.hparams import Hparam, choice
from spurlab.train.engines.upweighting import failure_direction_weights
from spurlab.train.trainer import predict, weighted_sampler

SCHEMES = ("flagged", "overweight", "balanced", "soft")  # overweight: the same as flagged
INPUT_BATCH = 256  # lazy images read per batch into the flattened-input embedding


def flattened_inputs(x) -> np.ndarray:
    """``embedding="input"``: every input flattened, float32 (N, D).

    The embedding is the whole split by definition; lazy images are read one batch at a time into
    it, after refusing (before allocating) a split whose floats would not fit in memory.
    """
    if not is_lazy(x):
        return np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    width = int(np.prod(x.shape[1:]))
    check_size(f"failure_directions embedding='input' over {len(x):,} images of shape {tuple(x.shape[1:])} "
               f"(flattened float32)", len(x) * width * 4,
               hint="use embedding='penultimate' (the model's features, read per batch), or lower "
                    "image_size / limit")
    out = np.empty((len(x), width), dtype=np.float32)
    for start in range(0, len(x), INPUT_BATCH):
        out[start:start + INPUT_BATCH] = x[start:start + INPUT_BATCH].reshape(-1, width)
    return out


@register_method
class FailureDirectionUpweight(Method):
    name = "failure_directions"
    summary = ("briefly trained ERM; training examples its validation-fit failure directions flag are "
               "upweighted; retrain (no group labels)")
    reference = "Jain, Lawrence, Moitra, Madry, ICLR 2023 (arXiv 2206.14754)"
    extra_space = {
        "scheme": Hparam("balanced", choice(["flagged", "balanced", "soft"]),
                         "flagged: weight `upweight` for decision value <= 0; balanced: in each class, flagged "
                         "and unflagged get equal mass; soft: extra weight grows with max(0, -decision value)",
                         Options(*SCHEMES)),
        "upweight": Hparam(2.0, choice([2.0, 3.0, 5.0]), "weight of a flagged example (flagged, soft)",
                           Interval(float, 1, None)),
        "base_epochs": Hparam(4, choice([2, 4, 8]), "epochs of the base model whose failures are distilled",
                              positive_int()),
        "by": Hparam("loss", choice(["loss", "sampler"]),
                     "loss: the weights multiply each example's loss (uniform minibatches); sampler: minibatches "
                     "drawn with probability proportional to the weights (same expected loss, less variance)",
                     Options("loss", "sampler")),
        "embedding": Hparam("penultimate", choice(["penultimate", "input"]),
                            "penultimate: the base model's features; input: the flattened inputs",
                            Options("penultimate", "input")),
    }

    def _fit(self, train: GroupedDataset, val: GroupedDataset | None) -> None:
        if val is None:
            raise SpurlabError("failure_directions fits its SVMs on a 'val' split, and the dataset has none",
                               hint="use a dataset with a validation split")
        weights_for = failure_direction_weights
        base = self.train_network(train.x, train.y, None, stage="base", epochs=int(self.hparams_["base_epochs"]),
                                  selection="last")
        weights = weights_for(
            val_embeddings=self._embed(base, val.x),
            val_labels=val.y,
            val_predictions=predict(base, val.x, device=self.device_),
            train_embeddings=self._embed(base, train.x),
            train_labels=train.y,
            scheme=self.hparams_["scheme"],
            upweight=float(self.hparams_["upweight"]),
            seed=self.seed,
        )
        weights = self._check_weights(np.asarray(weights, dtype=float), len(train))
        self.weights_ = weights
        self.flagged_ = np.flatnonzero(self._upweighted(train.y, weights))
        self.details_.update(self._flag_summary(train, self.flagged_))
        by_sampler = self.hparams_["by"] == "sampler"
        self.model_ = self.train_network(train.x, train.y, val, stage="upweighted", seed_offset=1,
                                         sample_weights=None if by_sampler else weights,
                                         sampler=weighted_sampler(weights) if by_sampler else None)

    def _embed(self, model, x: np.ndarray) -> np.ndarray:
        if self.hparams_["embedding"] == "input":
            return flattened_inputs(x)
        if self.model_spec_.frozen:  # x are the backbone's cached features, which the linear head reads as they are
            return np.asarray(x, dtype=np.float32)
        return penultimate_features(model, x, device=self.device_, feature_layer=self.model_spec_.feature_layer)

    @staticmethod
    def _upweighted(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The flagged set: examples weighted above the least-weighted of their class."""
        upweighted = np.zeros(len(weights), dtype=bool)
        for c in np.unique(y):
            in_class = y == c
            upweighted[in_class] = weights[in_class] > weights[in_class].min() + 1e-9
        return upweighted

    @staticmethod
    def _flag_summary(train: GroupedDataset, flagged: np.ndarray) -> dict:
        """How many training examples were flagged, and (diagnostic only) how they split over groups."""
        out = {"n_upweighted": int(len(flagged))}
        if train.has_groups:
            counts = np.bincount(train.g[flagged], minlength=train.n_groups)
            out["upweighted_by_group"] = {train.group_name(g): int(n) for g, n in enumerate(counts)}
            if train.a is not None and len(flagged):
                out["flagged_minority_share"] = float(np.mean(train.is_minority()[flagged]))
        return out

    @staticmethod
    def _check_weights(weights: np.ndarray, n: int) -> np.ndarray:
        if weights.shape != (n,) or not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.sum() <= 0:
            raise SpurlabError(f"failure_direction_weights returned invalid weights (shape {weights.shape}, "
                               f"expected ({n},), finite, non-negative, not all zero)")
        return weights
