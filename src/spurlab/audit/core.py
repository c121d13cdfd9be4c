"""``spurlab audit``: diagnose -> explain -> fix -> report, behind one facade.

>>> audit = Audit("spurious-digits", quick=True).find_issues()   # doctest: +SKIP
>>> audit.report("runs/my-audit")                                # doctest: +SKIP

``find_issues`` runs the steps in order: load, train (ERM), evaluate every
group on every split, failure directions over the model's embeddings, critical
units and what editing them does, the robust methods compared, and a verdict.
With ``embeddings=FILE`` the steps that need a model are skipped (and the
report says so). ``report`` writes ``summary.json`` (every number shown),
``results.csv`` (one row per split x group x metric) and ``report.html``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurlab import metrics
from spurlab.audit import explain, fix
from spurlab.audit.verdict import write_verdict
from spurlab.data.grouped import DatasetSplits
from spurlab.data.dataset_registry import load_splits
from spurlab.errors import SpurlabError
from spurlab.models import make_model, penultimate_features
from spurlab.train import TrainConfig, fit, predict
from spurlab.utils import log, resolve_device, seed_everything

STEPS = ("load", "train", "evaluate", "directions", "units", "fixes", "verdict")


@dataclass
class AuditReport:
    out_dir: Path
    summary: dict[str, Any]
    group_table: pd.DataFrame
    verdict: str


class Audit:
    """Audit a model trained on ``dataset`` (or a file of embeddings) for reliance on spurious features.

    ``quick`` keeps the fixes to two seeds and fewer epochs (a first look);
    ``skip`` names steps to leave out (``directions``, ``units``, ``fixes``).
    """

    def __init__(self, dataset: str = "spurious-digits", model: str = "auto", epochs: int | None = None,
                 lr: float = 1e-3, batch_size: int = 64, seed: int = 0, device: str = "auto",
                 data_dir: str | Path | None = None, dataset_params: dict[str, Any] | None = None,
                 embeddings: str | Path | None = None, quick: bool = False, seeds: int | None = None,
                 methods: tuple[str, ...] | list[str] | None = None, skip: tuple[str, ...] | list[str] = ()):
        self.dataset = dataset
        self.model = model
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.data_dir = data_dir
        self.dataset_params = dict(dataset_params or {})
        self.embeddings = embeddings
        self.quick = quick
        self.seeds = seeds
        self.methods = methods
        self.skip = tuple(skip)

    # ------------------------------------------------------------ settings
    def _validate(self) -> None:
        unknown = [s for s in self.skip if s not in ("directions", "units", "fixes")]
        if unknown:
            raise SpurlabError(f"cannot skip step(s) {unknown}", hint="skippable: directions, units, fixes")
        if self.epochs is not None and self.epochs < 1:
            raise SpurlabError(f"epochs must be at least 1, got {self.epochs}")
        if self.seeds is not None and self.seeds < 1:
            raise SpurlabError(f"seeds must be at least 1, got {self.seeds}")
        if self.methods is not None:
            from spurlab.train.methods import method_registry

            unknown = [m for m in self.methods if m not in method_registry()]
            if unknown:
                raise SpurlabError(f"unknown method(s) {unknown}",
                                   hint=f"known: {', '.join(method_registry())}")

    @property
    def epochs_(self) -> int:
        return self.epochs if self.epochs is not None else (15 if self.quick else 40)

    @property
    def methods_(self) -> tuple[str, ...]:
        if self.methods is not None:
            return tuple(self.methods)
        return fix.QUICK_METHODS if self.quick else fix.FULL_METHODS

    @property
    def seeds_(self) -> tuple[int, ...]:
        n = self.seeds if self.seeds is not None else (2 if self.quick else 3)
        return tuple(self.seed + i for i in range(n))

    # ------------------------------------------------------------ steps
    def find_issues(self) -> Audit:
        self._validate()
        self.device_ = resolve_device(self.device)
        self.timings_: dict[str, float] = {}
        self.results_: dict[str, Any] = {"skipped_steps": {}}
        self.figures_: dict[str, tuple[Any, str]] = {}
        self.model_ = None
        for name in STEPS:
            reason = self._skip_reason(name)
            if reason:
                self.results_["skipped_steps"][name] = reason
                continue
            start = time.perf_counter()
            log(f"[spurlab] audit: {name} ...")
            getattr(self, f"_{name}")()
            self.timings_[name] = time.perf_counter() - start
        return self

    def _skip_reason(self, step: str) -> str | None:
        if step in self.skip:
            return "skipped on request"
        if self.embeddings is not None and step in ("train", "units", "fixes"):
            return "needs a model: the audit was given embeddings and predictions only"
        if step in ("units", "fixes") and not self.splits_["train"].has_groups:
            return "needs group labels on the training split"
        return None

    def _load(self) -> None:
        if self.embeddings is not None:
            self.dataset = "embeddings"
            self.dataset_params = {"path": str(self.embeddings)}
        self.splits_: DatasetSplits = load_splits(self.dataset, data_dir=self.data_dir, seed=self.seed,
                                                  **self.dataset_params)
        if self.embeddings is not None:
            self._check_embedding_splits()
        for required in ("train", "test"):
            if required not in self.splits_:
                raise SpurlabError(f"dataset {self.dataset!r} has no {required!r} split",
                                   hint="the audit trains on 'train' and reports on 'test' "
                                        "(embedding files: add a 'split' column)")
        train = self.splits_["train"]
        counts = train.group_counts()
        if train.has_groups and (counts == 0).any():
            empty = [train.group_name(g) for g in np.flatnonzero(counts == 0)]
            raise SpurlabError(f"training group(s) {', '.join(empty)} have no examples",
                               hint="raise the minority size or lower p below 1")

    def _check_embedding_splits(self) -> None:
        for split, ds in self.splits_.items():
            if ds.metadata is None or "prediction" not in ds.metadata.columns:
                raise SpurlabError(f"the embeddings file has no 'predictions' (split {split!r})",
                                   hint="the audit of a bring-your-own model needs its predictions")

    def _model_name(self) -> str:
        if self.model != "auto":
            return self.model
        return "cnn" if len(self.splits_["train"].input_shape) == 3 else "mlp"

    def _train(self) -> None:
        seed_everything(self.seed)
        train = self.splits_["train"]
        self.model_name_ = self._model_name()
        self.model_ = make_model(self.model_name_, train.input_shape, train.n_classes, seed=self.seed)
        cfg = TrainConfig(epochs=self.epochs_, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
                          device=self.device_)
        self.history_ = fit(self.model_, train.x, train.y, cfg).history
        self.model_.to("cpu")

    def _predictions(self) -> dict[str, np.ndarray]:
        if self.model_ is None:
            return {s: ds.metadata["prediction"].to_numpy() for s, ds in self.splits_.items()}
        return {s: predict(self.model_, ds.x, device="cpu") for s, ds in self.splits_.items()}

    def _evaluate(self) -> None:
        self.predictions_ = self._predictions()
        rows, per_split = [], {}
        train_g = self.splits_["train"].g
        for split, ds in self.splits_.items():
            pred = self.predictions_[split]
            accs = metrics.group_accuracies(ds.y, pred, ds.g, ds.n_groups)
            counts = ds.group_counts()
            rows += [{"split": split, "group": g, "name": ds.group_name(g), "count": int(counts[g]),
                      "accuracy": acc} for g, acc in accs.items()]
            per_split[split] = {**metrics.summarize_predictions(ds.y, pred, ds.g, train_groups=train_g),
                                "group_accuracy": {ds.group_name(g): a for g, a in accs.items()}}
        self.group_table_ = pd.DataFrame(rows)
        self.results_["splits"] = per_split
        train_accs, test_accs = per_split["train"]["group_accuracy"], per_split["test"]["group_accuracy"]
        self.results_["train_test_gap"] = {k: train_accs[k] - test_accs[k] for k in train_accs if k in test_accs}

    def _embeddings(self) -> dict[str, np.ndarray]:
        if self.model_ is None:
            return {s: ds.x for s, ds in self.splits_.items()}
        return {s: penultimate_features(self.model_, ds.x) for s, ds in self.splits_.items()}

    def _directions(self) -> None:
        out = explain.explain_directions(self.splits_, self._embeddings(), self.predictions_, self.seed,
                                         self.device_)
        self.figures_.update(out.pop("figures"))
        self.directions_ = out

    def _units(self) -> None:
        out = explain.explain_units(self.model_, self.splits_, self.seed)
        self.figures_.update(out.pop("figures"))
        self.units_ = out

    def _fixes(self) -> None:
        out = fix.compare_fixes(self.splits_, self.methods_, self.seeds_, self._model_name(), self.epochs_,
                                self.device_)
        self.figures_.update(out.pop("figures"))
        self.fixes_ = out

    def _verdict(self) -> None:
        self.results_["verdict"] = write_verdict(self)
        self.verdict_ = self.results_["verdict"]["text"]

    # ------------------------------------------------------------ outputs
    def summary(self) -> dict[str, Any]:
        from spurlab.audit.render import summary_dict

        return summary_dict(self)

    def report(self, out_dir: str | Path | None = None) -> AuditReport:
        from spurlab.audit.render import write_report

        if not hasattr(self, "results_"):
            raise SpurlabError("the audit has not run yet", hint="call find_issues() first")
        return write_report(self, out_dir)


def run_audit(dataset: str = "spurious-digits", out_dir: str | Path | None = None, **kwargs: Any) -> AuditReport:
    return Audit(dataset, **kwargs).find_issues().report(out_dir)
