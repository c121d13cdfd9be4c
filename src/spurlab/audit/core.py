"""``spurlab audit``: diagnose -> explain -> fix -> report, behind one facade.

>>> audit = Audit("spurious-digits", quick=True).find_issues()   # doctest: +SKIP
>>> audit.report("runs/my-audit")                                # doctest: +SKIP

``find_issues`` runs the steps in order: load, train (ERM), evaluate every
group on every split, failure directions over the model's embeddings, critical
units and what editing them does, the robust methods compared, and a verdict.
With ``embeddings=FILE`` the steps that need a model are skipped (and the
report says so).

``dataset`` is a registered name or a :class:`DatasetSplits` you built
(``DatasetSplits.from_arrays``). ``model`` is anything the models registry takes
(:mod:`spurlab.models.model_registry`): a name, a factory that spurlab trains, or
your already trained ``nn.Module``, which is audited as it is (no training step;
the report says "your model") and is the starting point of the fixes. Penultimate
features come from the feature cache (:mod:`spurlab.train.feature_cache`) when the
same model, data and transform were embedded before. ``report`` writes ``summary.json`` (every number shown),
``results.csv`` (one row per split x group x metric) and ``report.html``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurlab import metrics
from spurlab.audit import explain, fix
from spurlab.audit.findings import AuditFindings, AuditReport
from spurlab.audit.render import summary_dict, write_report
from spurlab.audit.verdict import write_verdict
from spurlab.data.grouped import DatasetSplits
from spurlab.data.dataset_registry import load_splits
from spurlab.errors import SpurlabError
from spurlab.models.model_registry import ModelSpec, as_model_spec
from spurlab.models.penultimate import feature_function, is_script_module
from spurlab.params import Constraint, OptionList, check_params, optional, positive_int
from spurlab.train import TrainConfig, fit, predict
from spurlab.train.feature_cache import embed_model_splits
from spurlab.train.methods import get_method, method_registry
from spurlab.train.methods.hparams import OPTIMIZER_SPACE
from spurlab.train.methods.method_base import SETTING_CONSTRAINTS, resolve_model_name
from spurlab.utils import log, resolve_device, seed_everything

FEATURE_METHODS = ("dfr", "failure_directions")  # fixes that need the model's penultimate features
STEPS = ("load", "train", "evaluate", "directions", "units", "fixes", "verdict")
SKIPPABLE = ("directions", "units", "fixes")
# The two presets (``quick=True`` / ``False``); explicit epochs, seeds or methods override them.
PRESETS: dict[bool, dict[str, Any]] = {
    True: {"epochs": 15, "seeds": 2, "methods": fix.QUICK_METHODS},
    False: {"epochs": 40, "seeds": 3, "methods": fix.FULL_METHODS},
}

__all__ = ["Audit", "AuditFindings", "AuditReport", "STEPS", "run_audit"]


class Audit:
    """Audit a model trained on ``dataset`` (or a file of embeddings) for reliance on spurious features.

    ``quick`` keeps the fixes to two seeds and fewer epochs (a first look);
    ``skip`` names steps to leave out (``directions``, ``units``, ``fixes``).
    After ``find_issues()``: ``findings_`` (an :class:`AuditFindings`) and ``model_`` (the trained
    network, ``None`` for an embeddings file). ``feature_layer`` names the layer whose output is the
    penultimate features when the model has no ``features(x)`` method; ``model_options`` go to the
    model (``pretrained``, ``freeze``, builder options such as ``image_size``); ``cache`` is the
    feature-cache folder (``False``: no cache).
    """

    def __init__(self, dataset: str | DatasetSplits = "spurious-digits", model: Any = "auto",
                 epochs: int | None = None,
                 lr: float = 1e-3, batch_size: int = 64, seed: int = 0, device: str = "auto",
                 data_dir: str | Path | None = None, dataset_params: dict[str, Any] | None = None,
                 embeddings: str | Path | None = None, quick: bool = False, seeds: int | None = None,
                 methods: tuple[str, ...] | list[str] | None = None, skip: tuple[str, ...] | list[str] = (),
                 feature_layer: str | None = None, model_options: dict[str, Any] | None = None,
                 cache: str | Path | bool | None = None):
        self.dataset = dataset
        self.model = model
        self.feature_layer = feature_layer
        self.model_options = dict(model_options or {})
        self.cache = cache
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
    @staticmethod
    def parameter_constraints() -> dict[str, Constraint]:
        """What the settings accept (spurlab.params); ``methods``: the methods registered now."""
        return {"epochs": optional(SETTING_CONSTRAINTS["epochs"]), "seeds": optional(positive_int()),
                "seed": SETTING_CONSTRAINTS["seed"], "lr": OPTIMIZER_SPACE["lr"].constraint,
                "batch_size": OPTIMIZER_SPACE["batch_size"].constraint, "skip": OptionList(*SKIPPABLE, min_len=0),
                "methods": optional(OptionList(*method_registry(), min_len=0))}

    def _check_settings(self) -> None:
        """The declared constraints, then the rules that span several settings; before any work."""
        constraints = self.parameter_constraints()
        checked = check_params("Audit", constraints, {name: getattr(self, name) for name in constraints})
        self.epochs, self.seeds, self.seed = checked["epochs"], checked["seeds"], checked["seed"]
        self.lr, self.batch_size, self.skip = checked["lr"], checked["batch_size"], tuple(checked["skip"])
        self.methods = None if checked["methods"] is None else tuple(checked["methods"])
        options = {**self.model_options, **({"feature_layer": self.feature_layer} if self.feature_layer else {})}
        self.model_spec_: ModelSpec = as_model_spec(self.model, **options)
        if isinstance(self.dataset, DatasetSplits) and (self.dataset_params or self.embeddings is not None):
            raise SpurlabError("dataset_params and embeddings do not apply to splits you built",
                               hint="pass either DatasetSplits or a registered name with its parameters")

    @property
    def epochs_(self) -> int:
        return self.epochs if self.epochs is not None else PRESETS[self.quick]["epochs"]

    @property
    def methods_(self) -> tuple[str, ...]:
        return tuple(self.methods) if self.methods is not None else PRESETS[self.quick]["methods"]

    @property
    def seeds_(self) -> tuple[int, ...]:
        n = self.seeds if self.seeds is not None else PRESETS[self.quick]["seeds"]
        return tuple(self.seed + i for i in range(n))

    @property
    def mode_(self) -> str:
        """"quick" or "full" when the resolved settings are that preset's, else "custom"."""
        resolved = {"epochs": self.epochs_, "seeds": len(self.seeds_), "methods": self.methods_}
        for name, quick in (("quick", True), ("full", False)):
            if resolved == PRESETS[quick]:
                return name
        return "custom"

    # ------------------------------------------------------------ steps
    def find_issues(self) -> Audit:
        self._check_settings()
        self.model_ = None
        timings: dict[str, float] = {}
        start = time.perf_counter()
        log("[spurlab] audit: load ...")
        findings = self._load()
        timings["load"] = time.perf_counter() - start
        findings.timings = timings
        self.findings_ = findings
        steps = {"train": self._train, "evaluate": self._evaluate, "directions": self._directions,
                 "units": self._units, "fixes": self._fixes, "verdict": self._verdict}
        for name, step in steps.items():
            reason = self._skip_reason(name, findings)
            if reason:
                findings.skipped_steps[name] = reason
                continue
            start = time.perf_counter()
            log(f"[spurlab] audit: {name} ...")
            step(findings)
            timings[name] = time.perf_counter() - start
        return self

    def _skip_reason(self, step: str, findings: AuditFindings) -> str | None:
        if step in self.skip:
            return "skipped on request"
        if self.embeddings is not None and step in ("train", "units", "fixes"):
            return "needs a model: the audit was given embeddings and predictions only"
        if step == "units" and self.model_ is not None and is_script_module(self.model_):
            return ("edits conv/linear layers, which a TorchScript model does not expose; audit the nn.Module "
                    "itself (Audit(model=net)) for this step")
        if step == "directions" and self.model_ is not None and findings.features_missing:
            return f"the model's penultimate features cannot be found: {findings.features_missing}"
        if step in ("units", "fixes") and not findings.splits["train"].has_groups:
            return "needs group labels on the training split"
        return None

    def _load(self) -> AuditFindings:
        dataset, params = self.dataset, self.dataset_params
        if self.embeddings is not None:
            dataset, params = "embeddings", {"path": str(self.embeddings)}
        if isinstance(dataset, DatasetSplits):
            splits, dataset = dataset, dataset.name
        else:
            splits = load_splits(dataset, data_dir=self.data_dir, seed=self.seed, **params)
        if self.embeddings is not None:
            _check_embedding_splits(splits)
        for required in ("train", "test"):
            if required not in splits:
                raise SpurlabError(f"dataset {dataset!r} has no {required!r} split",
                                   hint="the audit trains on 'train' and reports on 'test' "
                                        "(embedding files: add a 'split' column)")
        train = splits["train"]
        counts = train.group_counts()
        if train.has_groups and (counts == 0).any():
            empty = [train.group_name(g) for g in np.flatnonzero(counts == 0)]
            raise SpurlabError(f"training group(s) {', '.join(empty)} have no examples",
                               hint="raise the minority size or lower p below 1")
        return AuditFindings(dataset=dataset, dataset_params=splits.params, splits=splits, seed=self.seed,
                             seeds=self.seeds_, device=resolve_device(self.device), quick=self.quick,
                             epochs=self.epochs_, mode=self.mode_)

    def _train(self, findings: AuditFindings) -> None:
        """ERM on the training split, or, for your trained module, nothing: it is audited as it is."""
        seed_everything(self.seed)
        train = findings.splits["train"]
        spec = self.model_spec_
        findings.model_name = spec.resolve(train.input_shape).label  # e.g. "efficientnet-lite0 (frozen backbone)"
        findings.model_source = "given" if spec.kind == "module" else "erm"
        if spec.kind == "module":
            self.model_ = spec.model
        elif spec.frozen:  # the last-layer fast path: a linear head trained on cached features
            erm = get_method("erm", model=spec, epochs=self.epochs_, selection="last", seed=self.seed,
                             device=findings.device, lr=self.lr, batch_size=self.batch_size)
            erm.fit(findings.splits)
            self.model_, findings.history = erm.model_, erm.history_
        else:
            self.model_ = spec.resolve(train.input_shape).build(train.input_shape, train.n_classes, seed=self.seed)
            cfg = TrainConfig(epochs=self.epochs_, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
                              device=findings.device)
            findings.history = fit(self.model_, train.x, train.y, cfg).history
        self.model_.to("cpu")
        findings.features_missing = self._features_missing()

    def _features_missing(self) -> str | None:
        try:
            feature_function(self.model_, self.model_spec_.feature_layer)
        except SpurlabError as exc:
            return str(exc).replace("\n  hint:", "; to fix it:")
        return None

    def _embedded(self, splits: DatasetSplits, device: str):
        """Features (from the feature cache when seen before) and predictions of every split, once."""
        if getattr(self, "embedded_", None) is None:
            token = self.model_spec_.cache_token()
            self.embedded_ = embed_model_splits(self.model_, splits, token=token, device=device, cache=self.cache)
        return self.embedded_

    def _predictions(self, findings: AuditFindings) -> dict[str, np.ndarray]:
        splits = findings.splits
        if self.model_ is None:
            return {s: ds.metadata["prediction"].to_numpy() for s, ds in splits.items()}
        if findings.features_missing:
            return {s: predict(self.model_, ds.x, device="cpu") for s, ds in splits.items()}
        embedded = self._embedded(splits, findings.device)
        findings.features_from_cache = {s: f.from_cache for s, f in embedded.features.items()}
        return embedded.predictions

    def _evaluate(self, findings: AuditFindings) -> None:
        splits = findings.splits
        self.embedded_ = None
        findings.predictions = self._predictions(findings)
        rows, per_split = [], {}
        train_g = splits["train"].g
        for split, ds in splits.items():
            pred = findings.predictions[split]
            accs = metrics.group_accuracies(ds.y, pred, ds.g, ds.n_groups)
            counts = ds.group_counts()
            rows += [{"split": split, "group": g, "name": ds.group_name(g), "count": int(counts[g]),
                      "accuracy": acc} for g, acc in accs.items()]
            per_split[split] = {**metrics.summarize_predictions(ds.y, pred, ds.g, train_groups=train_g),
                                "group_accuracy": {ds.group_name(g): a for g, a in accs.items()}}
        findings.group_table = pd.DataFrame(rows)
        findings.split_metrics = per_split
        train_accs, test_accs = per_split["train"]["group_accuracy"], per_split["test"]["group_accuracy"]
        findings.train_test_gap = {k: train_accs[k] - test_accs[k] for k in train_accs if k in test_accs}

    def _embeddings(self, findings: AuditFindings) -> dict[str, np.ndarray]:
        if self.model_ is None:
            return {s: ds.x for s, ds in findings.splits.items()}
        return {s: f.features for s, f in self._embedded(findings.splits, findings.device).features.items()}

    def _directions(self, findings: AuditFindings) -> None:
        findings.directions = explain.explain_directions(findings.splits, self._embeddings(findings),
                                                         findings.predictions, self.seed, findings.device)

    def _units(self, findings: AuditFindings) -> None:
        self.embedded_ = None  # every split's features (N x D floats) are read; free them for the later steps
        findings.units = explain.explain_units(self.model_, findings.splits, self.seed)

    def _fixes(self, findings: AuditFindings) -> None:
        self.embedded_ = None
        spec = self.model_spec_
        model = spec if spec.kind != "name" or spec.frozen or spec.options or spec.feature_layer else \
            resolve_model_name(spec, findings.splits["train"].input_shape)
        methods, notes = list(self.methods_), []
        if findings.features_missing:  # these read the penultimate features of the networks they train
            dropped = [m for m in methods if m in FEATURE_METHODS]
            methods = [m for m in methods if m not in FEATURE_METHODS]
            notes = [f"{m} skipped: it reads penultimate features, which the model does not expose" for m in dropped]
            if not methods:
                findings.skipped_steps["fixes"] = "every fix asked for reads penultimate features: " + notes[0]
                return
        findings.fixes = fix.compare_fixes(findings.splits, tuple(methods), self.seeds_, model, self.epochs_,
                                           findings.device)
        findings.fixes.notes[:0] = notes

    def _verdict(self, findings: AuditFindings) -> None:
        findings.verdict = write_verdict(findings)

    # ------------------------------------------------------------ outputs
    def _fitted(self) -> AuditFindings:
        if not hasattr(self, "findings_"):
            raise SpurlabError("the audit has not run yet", hint="call find_issues() first")
        return self.findings_

    def summary(self) -> dict[str, Any]:
        return summary_dict(self._fitted())

    def report(self, out_dir: str | Path | None = None) -> AuditReport:
        return write_report(self._fitted(), out_dir)


def _check_embedding_splits(splits: DatasetSplits) -> None:
    for split, ds in splits.items():
        if ds.metadata is None or "prediction" not in ds.metadata.columns:
            raise SpurlabError(f"the embeddings file has no 'predictions' (split {split!r})",
                               hint="the audit of a bring-your-own model needs its predictions")


def run_audit(dataset: str | DatasetSplits = "spurious-digits", out_dir: str | Path | None = None,
              **kwargs: Any) -> AuditReport:
    return Audit(dataset, **kwargs).find_issues().report(out_dir)
