"""The training-method contract and its registry (DomainBed-style, scikit-learn manners).

A method is a :class:`Method` subclass decorated with :func:`register_method`.
Its constructor takes the run settings (model, epochs, selection, seed,
device) and its hyper-parameters; ``fit(splits)`` trains on ``splits["train"]``
and selects on ``splits["val"]``; the learned state ends in ``_`` (``model_``,
``history_``, ``best_epoch_``, ``val_score_``, ``details_``).

>>> method = get_method("groupdro", epochs=20, eta=0.1).fit(splits)   # doctest: +SKIP
>>> method.evaluate(splits["test"])["worst_group_acc"]                # doctest: +SKIP
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import copy
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from spurlab import metrics
from spurlab.data.grouped import GroupedDataset
from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, check_params, positive_int
from spurlab.models.model_registry import as_model_spec
from spurlab.models.model_registry import resolve_model_name as registered_model_name
from spurlab.models.penultimate import LinearHead, attach_head
from spurlab.train.methods.method_names import METHOD_MODULES, METHOD_NAMES, METHODS  # noqa: F401
from spurlab.train.methods.hparams import (OPTIMIZER_SPACE, Hparam, check_hparam_names, space_constraints,
                                         space_defaults)
from spurlab.train.feature_cache import embed_splits, logits_from_features, split_features
from spurlab.train.methods.selection import CRITERIA, EpochSelector, resolve_criterion
from spurlab.train.trainer import BatchLoss, Sampler, TrainConfig, fit, predict_logits
from spurlab.utils import resolve_device, seed_everything, torch_threads

SETTING_CONSTRAINTS = {"epochs": positive_int(), "seed": Interval(int, 0, None), "selection": Options(*CRITERIA)}


def resolve_model_name(model, input_shape: tuple[int, ...]) -> str:
    """How runs name the network a method (or the audit) trains: a registered name (``auto``: LeNet on
    images of at least 12 px, the small CNN on smaller ones, an MLP on vectors; see
    :func:`spurlab.models.model_registry.resolve_model_name`), or the label of a factory or of your module."""
    spec = as_model_spec(model)
    return registered_model_name(spec.model, tuple(input_shape)) if spec.kind == "name" else spec.label


def has_split(splits: Mapping[str, GroupedDataset], name: str) -> bool:
    # Iterate the names: DatasetSplits raises SpurlabError (not KeyError) for a missing split,
    # which Mapping.__contains__ does not catch.
    return name in list(splits)


class Method(ABC):
    """Base class: subclasses set the class attributes and implement ``_fit``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    needs_groups: ClassVar[tuple[str, ...]] = ()  # splits whose group labels training reads
    extra_space: ClassVar[dict[str, Hparam]] = {}

    def __init__(self, model: str = "auto", epochs: int = 20, selection: str = "auto", seed: int = 0,
                 device: str = "auto", **hparams: Any):
        check_hparam_names(self.name, self.hparam_space(), hparams)
        settings = check_params(f"method {self.name!r}", SETTING_CONSTRAINTS,
                                {"epochs": epochs, "seed": seed, "selection": selection})
        self.model = model
        self.epochs = settings["epochs"]
        self.selection = settings["selection"]
        self.seed = settings["seed"]
        self.device = device
        self.hparams = check_params(f"method {self.name!r}", space_constraints(self.hparam_space()), hparams)
        self.check_hparams({**space_defaults(self.hparam_space()), **self.hparams})  # fail here, not at fit

    # ------------------------------------------------------------ contract
    @classmethod
    def hparam_space(cls) -> dict[str, Hparam]:
        return {**OPTIMIZER_SPACE, **cls.extra_space}

    def group_label_needs(self) -> tuple[str, ...]:
        """The splits whose group labels this configuration trains with (``()``: none)."""
        return self.needs_groups

    def check_hparams(self, hp: dict[str, Any]) -> None:
        """Raise :class:`SpurlabError` on impossible values: the declared constraints (``Hparam.constraint``),
        a number for every undeclared numeric one; subclasses add checks that span several values."""
        check_params(f"method {self.name!r}", space_constraints(self.hparam_space()), hp)
        for name, spec in self.hparam_space().items():
            numeric_default = isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool)
            value = hp[name]
            if numeric_default and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
                raise SpurlabError(f"method {self.name!r}: hyper-parameter {name!r} must be a number, got {value!r}")

    @abstractmethod
    def _fit(self, train: GroupedDataset, val: GroupedDataset | None) -> None:
        ...

    # ------------------------------------------------------------ fitting
    def fit(self, splits: Mapping[str, GroupedDataset]) -> Method:
        """Train on ``splits["train"]``, select on ``splits["val"]`` (when present)."""
        train, val = self._check_splits(splits)
        self.hparams_ = {**space_defaults(self.hparam_space()), **self.hparams}
        self.check_hparams(self.hparams_)
        self.device_ = resolve_device(self.device)
        self.selection_ = resolve_criterion(self.selection, val)
        self.model_spec_ = as_model_spec(self.model)
        self.model_name_ = self._resolve_model_name(train)
        self.n_classes_ = train.n_classes
        self.train_groups_ = train.g
        self.history_: list[dict[str, Any]] = []
        self.details_: dict[str, Any] = {}
        self.best_epoch_: int | None = None
        self.val_score_: float | None = None
        seed_everything(self.seed)
        start = time.perf_counter()
        if self.model_spec_.frozen:
            train, val = self._cached_features(train, val)
        self._fit(train, val)
        if self.model_spec_.frozen:
            self._put_head_on_backbone()
        self.fit_time_s_ = time.perf_counter() - start
        return self

    def _check_splits(self, splits: Mapping[str, GroupedDataset]) -> tuple[GroupedDataset, GroupedDataset | None]:
        if not has_split(splits, "train"):
            raise SpurlabError("the splits have no 'train' split", hint="pass a DatasetSplits from load_splits()")
        # the settings may have changed since construction (scikit-learn manners): their constraints again
        self.epochs, self.seed, self.selection = check_params(
            f"method {self.name!r}", SETTING_CONSTRAINTS,
            {"epochs": self.epochs, "seed": self.seed, "selection": self.selection}).values()
        train, val = splits["train"], splits["val"] if has_split(splits, "val") else None
        if len(train) == 0:
            raise SpurlabError("the training split is empty")
        for split in self.group_label_needs():
            ds = train if split == "train" else val
            if ds is None:
                raise SpurlabError(f"method {self.name!r} needs a {split!r} split",
                                   hint="use a dataset with a validation split")
            if not ds.has_groups:
                raise SpurlabError(f"method {self.name!r} needs group labels on the {split!r} split",
                                   hint="use a method that needs none (erm, jtt, failure_directions, "
                                        "pruned_contrastive) or a dataset with a spurious attribute")
        return train, val

    def _resolve_model_name(self, train: GroupedDataset) -> str:
        return resolve_model_name(self.model, tuple(train.input_shape))

    # ------------------------------------------------------------ helpers for subclasses
    def new_model(self, input_shape: tuple[int, ...], seed_offset: int = 0) -> nn.Module:
        """A fresh network (a copy of your module, when ``model`` is one); a linear head on the cached
        features when the backbone is frozen."""
        if getattr(self, "backbone_", None) is not None:
            torch.manual_seed(self.seed + seed_offset)
            return LinearHead(int(input_shape[0]), self.n_classes_)
        spec = self.model_spec_
        if spec.kind == "name":
            spec = replace(spec, model=self.model_name_)
        return spec.build(input_shape, self.n_classes_, seed=self.seed + seed_offset)

    # ------------------------------------------------------------ frozen backbone: the last-layer fast path
    def _cached_features(self, train: GroupedDataset, val: GroupedDataset | None):
        """``freeze="backbone"``: the splits become their penultimate features (from the feature cache
        when seen before) and the method trains a linear head on them."""
        spec = self.model_spec_
        if spec.kind == "name":
            spec = replace(spec, model=self.model_name_)
        self.backbone_ = spec.build(train.input_shape, self.n_classes_, seed=self.seed)
        self.feature_token_ = spec.cache_token()
        splits = {"train": train} if val is None else {"train": train, "val": val}
        feats = embed_splits(self.backbone_, splits, token=self.feature_token_, device=self.device_)
        self.features_from_cache_ = {split: f.from_cache for split, f in feats.items()}
        return train.with_x(feats["train"].features), None if val is None else val.with_x(feats["val"].features)

    def _put_head_on_backbone(self) -> None:
        layer = self.model_spec_.feature_layer
        if hasattr(self, "final_model_"):
            self.final_model_ = attach_head(copy.deepcopy(self.backbone_), self.final_model_.head, layer)
        self.model_ = attach_head(self.backbone_, self.model_.head, layer)

    def train_config(self, epochs: int | None = None, seed_offset: int = 0) -> TrainConfig:
        hp = self.hparams_
        return TrainConfig(epochs=int(epochs or self.epochs), lr=float(hp["lr"]), batch_size=int(hp["batch_size"]),
                           optimizer=str(hp["optimizer"]), momentum=float(hp["momentum"]),
                           nesterov=bool(hp["nesterov"]), weight_decay=float(hp["weight_decay"]),
                           seed=self.seed + seed_offset, device=self.device_)

    def train_network(self, x, y: np.ndarray, val: GroupedDataset | None, *, stage: str = "train",
                      sample_weights: np.ndarray | None = None, epochs: int | None = None,
                      selection: str | None = None, seed_offset: int = 0, sampler: Sampler | None = None,
                      batch_loss: BatchLoss | None = None, on_epoch_end=None) -> nn.Module:
        """A fresh network trained by the (weighted) ERM trainer, best epoch restored.

        ``selection`` defaults to the method's criterion; stage-one models pass ``"last"``.
        The final epoch's weights are kept too (``final_model_``), as the peer libraries report them.
        """
        model = self.new_model(tuple(x.shape[1:]), seed_offset)
        selector = EpochSelector(selection or self.selection_, val, self.device_)

        def end_of_epoch(epoch: int, net: nn.Module) -> dict | None:
            extra = on_epoch_end(epoch, net) if on_epoch_end is not None else None
            return {**(selector(epoch, net) or {}), **(extra or {})}

        with torch_threads(self._head_threads()):
            result = fit(model, x, y, self.train_config(epochs, seed_offset), sample_weights=sample_weights,
                         on_epoch_end=end_of_epoch, sampler=sampler, batch_loss=batch_loss)
        self.record_history(stage, result.history)
        self.record_selection(selector)
        self.final_model_ = copy.deepcopy(model)
        return selector.restore(model)

    def _head_threads(self) -> int | None:
        """One thread for a linear head on cached features on the CPU: its minibatch ops are too small to share,
        and a second thread on a busy core made 15 epochs over 162,770 CelebA-sized features 3x slower."""
        return 1 if getattr(self, "backbone_", None) is not None and self.device_ == "cpu" else None

    def record_history(self, stage: str, history: list[dict[str, Any]]) -> None:
        self.history_ += [{"stage": stage, **row} for row in history]

    def record_selection(self, selector: EpochSelector) -> None:
        self.best_epoch_, self.val_score_ = selector.best_epoch, selector.best_score

    # ------------------------------------------------------------ using the fitted model
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise SpurlabError(f"method {self.name!r} is not fitted yet", hint="call fit(splits) first")

    def predict_logits(self, x, final: bool = False) -> np.ndarray:
        """Logits of the selected model (``final=True``: of the last epoch's weights)."""
        self._check_fitted()
        model = getattr(self, "final_model_", self.model_) if final else self.model_
        return predict_logits(model, x if hasattr(x, "__getitem__") else np.asarray(x), device=self.device_)

    def predict(self, x, final: bool = False) -> np.ndarray:
        return self.predict_logits(x, final=final).argmax(axis=1)

    def evaluate(self, ds: GroupedDataset, final: bool = False) -> dict[str, Any]:
        """Per-group accuracies, worst/mean group, plain and average accuracy on ``ds``.

        ``average_acc`` weights the per-group accuracies by the *training* group shares
        (see :func:`spurlab.metrics.train_weighted_accuracy`); it is ``None`` when ``ds``
        lacks a group that training had. ``final=True`` scores the last epoch's weights
        instead of the selected epoch's (the same model for methods without epoch selection).
        """
        self._check_fitted()
        pred = self._split_predictions(ds, final)
        accs = metrics.group_accuracies(ds.y, pred, ds.g, ds.n_groups)
        train_groups = set(np.unique(self.train_groups_).tolist())
        average = (metrics.train_weighted_accuracy(ds.y, pred, ds.g, self.train_groups_)
                   if train_groups <= set(accs) else None)
        return {
            "n": len(ds),
            "accuracy": metrics.accuracy(ds.y, pred),
            "worst_group_acc": min(accs.values()),
            "mean_group_acc": float(np.mean(list(accs.values()))),
            "average_acc": average,
            "group_accuracy": {ds.group_name(g): acc for g, acc in accs.items()},
            "group_count": {ds.group_name(g): int(n) for g, n in enumerate(ds.group_counts()) if n > 0},
        }

    def _split_predictions(self, ds: GroupedDataset, final: bool) -> np.ndarray:
        """Predictions on ``ds``; with a frozen backbone, the head applied to the split's cached features
        (the backbone runs once per split and data, not once per evaluation)."""
        if getattr(self, "backbone_", None) is None:
            return self.predict(ds.x, final=final)
        model = getattr(self, "final_model_", self.model_) if final else self.model_
        features = split_features(self.backbone_, ds, token=self.feature_token_, device=self.device_).features
        return logits_from_features(model, features, ds.x, self.model_spec_.feature_layer,
                                    device=self.device_).argmax(axis=1)

    def score(self, ds: GroupedDataset) -> float:
        """Worst-group accuracy on ``ds`` (higher is better)."""
        return float(self.evaluate(ds)["worst_group_acc"])

    def __repr__(self) -> str:
        settings = {"model": self.model, "epochs": self.epochs, "selection": self.selection, "seed": self.seed,
                    **self.hparams}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


# ------------------------------------------------------------------ registry


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available to ``get_method``, ``compare_methods`` and ``spurlab train``."""
    return METHODS.add(cls.name, cls)


def method_registry() -> dict[str, type[Method]]:
    """Every registered method class by name: the built-in ones in ``METHOD_MODULES`` order, then others."""
    return METHODS.entries()


def get_method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def get_method(name: str, **kwargs: Any) -> Method:
    """An unfitted instance of method ``name`` (settings and hyper-parameters as keywords)."""
    return get_method_class(name)(**kwargs)
