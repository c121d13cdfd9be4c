"""``spurlab train``: fit one training method on one dataset and write what it scores.

    spurlab train --method groupdro --dataset spurious-digits --set eta=0.05 --out runs/gdro
    spurlab train --method list

``--set key=value`` goes to the method's hyper-parameters or to the dataset's
parameters, whichever has the key (``method.key`` / ``data.key`` when both do);
``pretrained``, ``freeze``, ``feature_layer`` and ``model.key`` go to the model
(``--model`` also takes a TorchScript file or ``pkg.module:factory``).
The output folder gets ``summary.json`` (per split: per-group accuracies,
worst_group_acc, mean_group_acc, average_acc, accuracy; the hyper-parameters,
trials and history), ``results.csv`` (long format) and ``model.pt`` (weights).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spurlab.errors import SpurlabError

RESULT_FIELDS = ("split", "group", "metric", "value")


@dataclass
class TrainRun:
    out_dir: Path
    summary: dict[str, Any]
    method: Any  # the fitted spurlab.train.methods.Method


# ------------------------------------------------------------------ overrides
def model_overrides(model: str, sets: list[str] | None) -> tuple[Any, list[str]]:
    """``--model TEXT`` with the model's ``--set`` options (a ModelSpec), and the other ``--set`` items."""
    from spurlab.models.model_registry import as_model_spec, model_from_text, split_model_options
    from spurlab.runs import parse_sets, split_key_values

    options, others = split_model_options(parse_sets(sets))
    rest = [f"{k}={v}" for k, v in split_key_values(sets).items() if k in others]
    return as_model_spec(model_from_text(model), **options), rest


def split_overrides(method_name: str, dataset: str, sets: list[str] | None) -> tuple[dict, dict]:
    """``--set`` items -> (method hyper-parameters, dataset parameters), values parsed."""
    from spurlab.data.dataset_registry import get_entry
    from spurlab.runs import parse_value, split_key_values
    from spurlab.train.methods import get_method_class

    space = get_method_class(method_name).hparam_space()
    data_params = get_entry(dataset).parameters()
    hparams, params = {}, {}
    for key, text in split_key_values(sets).items():
        target, key = _route(key, space, data_params, method_name, dataset)
        default = space[key].default if target == "method" else data_params.get(key)
        value = parse_value(text, default if isinstance(default, bool) else None)
        (hparams if target == "method" else params)[key] = value
    return hparams, params


def _route(key: str, space: dict, data_params: dict, method_name: str, dataset: str) -> tuple[str, str]:
    if key.startswith("method.") or key.startswith("data."):
        target, bare = key.split(".", 1)
        known = space if target == "method" else data_params
        if bare not in known:
            owner = f"method {method_name!r}" if target == "method" else f"dataset {dataset!r}"
            raise SpurlabError(f"{owner} has no parameter {bare!r}", hint=f"its parameters: {', '.join(known)}")
        return target, bare
    in_method, in_data = key in space, key in data_params
    if in_method and in_data:
        raise SpurlabError(f"--set {key}=... is both a hyper-parameter of {method_name!r} and a parameter of "
                           f"dataset {dataset!r}", hint=f"write method.{key}=... or data.{key}=...")
    if not (in_method or in_data):
        raise SpurlabError(f"--set {key}=... is neither a hyper-parameter of {method_name!r} nor a parameter "
                           f"of dataset {dataset!r}",
                           hint=f"hyper-parameters: {', '.join(space)}; dataset parameters: {', '.join(data_params)}")
    return ("method" if in_method else "data"), key


# ------------------------------------------------------------------ running
def run_training(method: str, dataset: str = "spurious-digits", out_dir: str | Path | None = None, *,
                 model: Any = "auto", epochs: int = 20, selection: str = "auto", n_trials: int = 1,
                 seed: int = 0, device: str = "auto", data_dir: str | Path | None = None,
                 hparams: dict[str, Any] | None = None, dataset_params: dict[str, Any] | None = None) -> TrainRun:
    """Load ``dataset``, fit ``method`` (best of ``n_trials`` on validation), write the outputs."""
    from spurlab.data.dataset_registry import load_splits
    from spurlab.runs import default_out_dir
    from spurlab.params import check_params
    from spurlab.train.methods import get_method, tune_method
    from spurlab.train.methods.compare import TRIAL_CONSTRAINTS

    get_method(method, model=model, epochs=epochs, selection=selection, **dict(hparams or {}))
    check_params("run_training", TRIAL_CONSTRAINTS, {"n_trials": n_trials, "seed": seed})  # before the data load
    start = time.perf_counter()
    splits = load_splits(dataset, data_dir=data_dir, seed=seed, **dict(dataset_params or {}))
    load_s = time.perf_counter() - start
    fitted, trials = tune_method(method, splits, n_trials=n_trials, seed=seed, hparams=hparams, model=model,
                                 epochs=epochs, selection=selection, device=device)
    out = Path(out_dir) if out_dir is not None else default_out_dir(f"train-{method}")
    summary = _summary(fitted, splits, dataset, trials, {"load": load_s, "fit_total": time.perf_counter() - start})
    _write_outputs(out, fitted, summary)
    return TrainRun(out, summary, fitted)


def _summary(fitted, splits, dataset: str, trials, timings: dict[str, float]) -> dict[str, Any]:
    from spurlab.runs import package_versions
    from spurlab.train.methods import evaluate_splits

    return {
        "method": fitted.name, "dataset": dataset, "dataset_params": dict(splits.params),
        "seed": fitted.seed, "device": fitted.device_, "model": fitted.model_name_, "epochs": int(fitted.epochs),
        "selection": fitted.selection_, "group_labels_used": list(fitted.group_label_needs()),
        "hparams": fitted.hparams_, "selected_epoch": fitted.best_epoch_, "val_score": fitted.val_score_,
        "splits": evaluate_splits(fitted, splits), "details": fitted.details_,
        "trials": trials.to_dict(orient="records"), "history": fitted.history_,
        "timings_s": {**timings, "fit": fitted.fit_time_s_}, "versions": package_versions(),
        "files": ["summary.json", "results.csv", "model.pt"],
    }


def results_frame(split_scores: dict[str, dict[str, Any]]):
    """Long table ``split, group, metric, value``: per-group accuracy and count, then the
    split-level metrics under group ``all``."""
    import pandas as pd

    rows = []
    for split, scores in split_scores.items():
        for name, acc in scores["group_accuracy"].items():
            rows.append({"split": split, "group": name, "metric": "accuracy", "value": acc})
            rows.append({"split": split, "group": name, "metric": "count", "value": scores["group_count"][name]})
        for metric in ("worst_group_acc", "mean_group_acc", "average_acc", "accuracy"):
            rows.append({"split": split, "group": "all", "metric": metric, "value": scores[metric]})
    return pd.DataFrame(rows, columns=list(RESULT_FIELDS))


def _write_outputs(out: Path, fitted, summary: dict[str, Any]) -> None:
    import torch

    from spurlab.utils import atomic_path, atomic_write_csv, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in fitted.model_.state_dict().items()}, tmp)
    atomic_write_csv(out / "results.csv", results_frame(summary["splits"]))
    atomic_write_json(out / "summary.json", summary)
