"""``spurlab audit``: diagnose -> explain -> fix -> report, behind one facade.

>>> audit = Audit("spurious-digits").find_issues()   # doctest: +SKIP
>>> audit.report("runs/my-audit")                    # doctest: +SKIP

``find_issues`` runs the audit's steps in order (train, evaluate, ...); each
step reads and extends ``self.results_``. ``report`` writes ``summary.json``
(every number shown), ``results.csv`` (one row per split x group x metric) and
a self-contained ``report.html``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurlab import metrics
from spurlab.data.grouped import DatasetSplits
from spurlab.data.registry import load_splits
from spurlab.errors import SpurlabError
from spurlab.models import make_model
from spurlab.report.html import HtmlReport
from spurlab.report.plots import plot_group_accuracies
from spurlab.studies.base import default_out_dir, package_versions
from spurlab.train import TrainConfig, fit, predict
from spurlab.utils import atomic_write_csv, atomic_write_json, log, resolve_device, seed_everything

GAP_THRESHOLD = 0.10  # worst group this far below the mean group counts as a failure


@dataclass
class AuditReport:
    out_dir: Path
    summary: dict[str, Any]
    group_table: pd.DataFrame
    verdict: str


class Audit:
    """Audit a model trained on ``dataset`` for reliance on spurious features."""

    def __init__(self, dataset: str = "spurious-digits", model: str = "auto", epochs: int = 30,
                 lr: float = 1e-3, batch_size: int = 64, seed: int = 0, device: str = "auto",
                 data_dir: str | Path | None = None, dataset_params: dict[str, Any] | None = None):
        self.dataset = dataset
        self.model = model
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.data_dir = data_dir
        self.dataset_params = dict(dataset_params or {})

    # ------------------------------------------------------------ steps
    def find_issues(self) -> Audit:
        self.device_ = resolve_device(self.device)
        self.timings_: dict[str, float] = {}
        self.results_: dict[str, Any] = {}
        for step in (self._load, self._train, self._evaluate, self._diagnose):
            start = time.perf_counter()
            step()
            self.timings_[step.__name__.strip("_")] = time.perf_counter() - start
        return self

    def _load(self) -> None:
        log(f"[spurlab] loading {self.dataset} ...")
        self.splits_: DatasetSplits = load_splits(self.dataset, data_dir=self.data_dir, seed=self.seed,
                                                  **self.dataset_params)
        for required in ("train", "test"):
            if required not in self.splits_:
                raise SpurlabError(f"dataset {self.dataset!r} has no {required!r} split",
                                   hint="the audit trains on 'train' and reports on 'test'")
        train = self.splits_["train"]
        counts = train.group_counts()
        if train.has_groups and (counts == 0).any():
            empty = [train.group_name(g) for g in np.flatnonzero(counts == 0)]
            raise SpurlabError(f"training group(s) {', '.join(empty)} have no examples",
                               hint="raise the minority size or lower p below 1")

    def _model_name(self) -> str:
        if self.model != "auto":
            return self.model
        shape = self.splits_["train"].input_shape
        return "cnn" if len(shape) == 3 else "mlp"

    def _train(self) -> None:
        seed_everything(self.seed)
        train = self.splits_["train"]
        self.model_name_ = self._model_name()
        self.model_ = make_model(self.model_name_, train.input_shape, train.n_classes, seed=self.seed)
        log(f"[spurlab] training {self.model_name_} (ERM, {self.epochs} epochs) ...")
        cfg = TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
                          device=self.device_)
        self.history_ = fit(self.model_, train.x, train.y, cfg).history

    def _evaluate(self) -> None:
        rows, per_split = [], {}
        train_g = self.splits_["train"].g
        for split, ds in self.splits_.items():
            pred = predict(self.model_, ds.x, device=self.device_)
            accs = metrics.group_accuracies(ds.y, pred, ds.g, ds.n_groups)
            counts = ds.group_counts()
            for g, acc in accs.items():
                rows.append({"split": split, "group": g, "name": ds.group_name(g), "count": int(counts[g]),
                             "accuracy": acc})
            per_split[split] = {
                **metrics.summarize_predictions(ds.y, pred, ds.g, train_groups=train_g),
                "group_accuracy": {ds.group_name(g): a for g, a in accs.items()},
            }
        self.group_table_ = pd.DataFrame(rows)
        self.results_["splits"] = per_split
        train_accs = per_split["train"]["group_accuracy"]
        test_accs = per_split["test"]["group_accuracy"]
        self.results_["train_test_gap"] = {k: train_accs[k] - test_accs[k] for k in train_accs if k in test_accs}

    def _diagnose(self) -> None:
        test = self.splits_["test"]
        table = self.group_table_[self.group_table_["split"] == "test"]
        worst = table.loc[table["accuracy"].idxmin()]
        mean_acc = float(table["accuracy"].mean())
        train_counts = self.splits_["train"].group_counts()
        minority = set(self.splits_["train"].minority_groups()) if test.has_groups else set()
        relies = (mean_acc - float(worst["accuracy"]) >= GAP_THRESHOLD) and int(worst["group"]) in minority
        attribute = self._attribute_label()
        best_majority = table[~table["group"].isin(minority)]["accuracy"].max() if minority else mean_acc
        if relies:
            verdict = (f"The model relies on {attribute}: the minority group {worst['name']} "
                       f"({int(train_counts[int(worst['group'])])} training examples) is at "
                       f"{worst['accuracy']:.0%} test accuracy, against {best_majority:.0%} for the best "
                       f"majority group; the mean group accuracy is {mean_acc:.0%}.")
        else:
            verdict = (f"No strong reliance on {attribute} was found: the worst group {worst['name']} is at "
                       f"{worst['accuracy']:.0%} test accuracy, within {GAP_THRESHOLD:.0%} of the mean group "
                       f"accuracy {mean_acc:.0%}.")
        self.results_["verdict"] = {"relies_on_spurious": bool(relies), "attribute": attribute,
                                    "worst_group": worst["name"], "worst_group_acc": float(worst["accuracy"]),
                                    "mean_group_acc": mean_acc, "text": verdict}
        self.verdict_ = verdict

    def _attribute_label(self) -> str:
        train = self.splits_["train"]
        if train.a is None:
            return "a spurious attribute"
        names = train.attr_names
        kind = names[0].split("=")[0] if "=" in names[0] else "the attribute"
        return f"the spurious attribute '{kind}' ({', '.join(names)})"

    # ------------------------------------------------------------ outputs
    def summary(self) -> dict[str, Any]:
        train = self.splits_["train"]
        return {
            "dataset": self.dataset, "dataset_params": self.splits_.params, "seed": self.seed,
            "device": self.device_, "model": self.model_name_, "epochs": self.epochs,
            "groups": [{"group": g, "name": train.group_name(g),
                        **{split: int(ds.group_counts()[g]) for split, ds in self.splits_.items()}}
                       for g in range(train.n_groups)],
            **self.results_,
            "timings_s": self.timings_, "versions": package_versions(),
        }

    def report(self, out_dir: str | Path | None = None) -> AuditReport:
        if not hasattr(self, "results_"):
            raise SpurlabError("the audit has not run yet", hint="call find_issues() first")
        out = Path(out_dir) if out_dir is not None else default_out_dir("audit")
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        long = self.group_table_.melt(id_vars=["split", "group", "name"], value_vars=["accuracy", "count"],
                                      var_name="metric")
        atomic_write_csv(out / "results.csv", long)
        html = HtmlReport(f"spurlab audit: {self.dataset}",
                          subtitle=f"model {self.model_name_} (ERM) · seed {self.seed} · device {self.device_}")
        html.heading("Verdict").raw(f'<p class="verdict">{self.verdict_}</p>')
        split_rows = [{"split": s, **{k: v for k, v in d.items() if k != "group_accuracy"}}
                      for s, d in self.results_["splits"].items()]
        html.table(pd.DataFrame(split_rows), caption="accuracy, worst-group, mean-group and "
                   "train-weighted accuracy (test group accuracies weighted by training group shares)")
        html.heading("Accuracy per group")
        html.figure("group_accuracy", plot_group_accuracies(self.group_table_),
                    "Per-group accuracy on every split; a large train-test gap on a small group is the "
                    "signature of memorized minority examples.")
        pivot = self.group_table_.pivot_table(index="name", columns="split", values="accuracy")
        html.table(pivot[list(self.splits_)].reset_index(), caption="accuracy per group and split")
        html.heading("Dataset")
        html.table(self.splits_.summary(), caption="examples per group and split")
        self.timings_["report"] = time.perf_counter() - start
        summary = self.summary()
        html.write(out / "report.html", save_figures=True)
        atomic_write_json(out / "summary.json", summary)
        return AuditReport(out, summary, self.group_table_, self.verdict_)


def run_audit(dataset: str = "spurious-digits", out_dir: str | Path | None = None, **kwargs: Any) -> AuditReport:
    return Audit(dataset, **kwargs).find_issues().report(out_dir)
