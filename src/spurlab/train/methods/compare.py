"""Running methods: evaluation on every split, hyper-parameter search, side-by-side comparison."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from spurlab.data.grouped import GroupedDataset
from spurlab.errors import SpurlabError
from spurlab.models.model_registry import as_model_spec
from spurlab.params import Interval, NumberList, OptionList, check_params, positive_int
from spurlab.train.methods.method_base import Method, get_method, get_method_class, has_split, method_registry
from spurlab.train.methods.hparams import space_defaults, space_sample
from spurlab.train.methods.selection import score_dataset
from spurlab.utils import log

SUMMARY_METRICS = ("worst_group_acc", "mean_group_acc", "average_acc", "accuracy")
GROUP_PREFIX = "acc:"
FINAL_PREFIX = "final_"

SEED = Interval(int, 0, None)
# What the tuning functions accept (spurlab.params), checked by name before any training.
TRIAL_CONSTRAINTS = {"n_trials": positive_int(), "seed": SEED}


def default_hparams(method: str) -> dict[str, Any]:
    """The defaults of method ``method``."""
    return space_defaults(get_method_class(method).hparam_space())


def random_hparams(method: str, seed: int) -> dict[str, Any]:
    """A seeded random draw from method ``method``'s space."""
    return space_sample(get_method_class(method).hparam_space(), seed)


def hparam_grid(method: str, n_trials: int, seed: int = 0,
                fixed_hparams: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``n_trials`` configurations: the defaults, then seeded random draws.

    ``fixed_hparams`` (e.g. from ``--set``) override every trial.
    """
    n_trials, seed = check_params("hparam_grid", TRIAL_CONSTRAINTS, {"n_trials": n_trials, "seed": seed}).values()
    fixed_hparams = dict(fixed_hparams or {})
    trials = [default_hparams(method)]
    trials += [random_hparams(method, seed=seed * 1000 + i) for i in range(1, int(n_trials))]
    return [{**trial, **fixed_hparams} for trial in trials]


def evaluate_splits(method: Method, splits: Mapping[str, GroupedDataset]) -> dict[str, dict[str, Any]]:
    """``{split: method.evaluate(split)}`` for every split."""
    return {name: method.evaluate(ds) for name, ds in splits.items()}


def trial_score(method: Method, splits: Mapping[str, GroupedDataset]) -> float:
    """How a fitted trial ranks: its own selection score, else its score on ``val``."""
    if method.val_score_ is not None:
        return float(method.val_score_)
    if not has_split(splits, "val") or method.selection_ == "last":
        raise SpurlabError("comparing hyper-parameter trials needs a validation split and a selection criterion",
                           hint="use n_trials=1, or a dataset with a 'val' split and selection != 'last'")
    return score_dataset(method.selection_, method.model_, splits["val"], method.device_)


def tune_method(name: str, splits: Mapping[str, GroupedDataset], n_trials: int = 1, seed: int = 0,
                hparams: dict[str, Any] | None = None, **settings: Any) -> tuple[Method, pd.DataFrame]:
    """Fit ``n_trials`` hyper-parameter draws (trial 0: the defaults) and keep the best on validation.

    ``hparams`` are fixed in every trial; ``settings`` go to the constructor (model,
    epochs, selection, device). Returns the best fitted method and one row per trial.
    """
    n_trials, seed = check_params("tune_method", TRIAL_CONSTRAINTS, {"n_trials": n_trials, "seed": seed}).values()
    get_method_class(name)(**dict(hparams or {}))  # unknown names fail before any training
    rows, best, best_trial, best_score = [], None, 0, -np.inf
    for trial, hp in enumerate(hparam_grid(name, n_trials, seed, fixed_hparams=hparams)):
        method = get_method(name, seed=seed, **settings, **hp).fit(splits)
        score = trial_score(method, splits) if n_trials > 1 else method.val_score_
        rows.append({"trial": trial, **hp, "val_score": score, "best_epoch": method.best_epoch_,
                     "fit_time_s": method.fit_time_s_})
        if best is None or score > best_score:
            best, best_trial, best_score = method, trial, score
    table = pd.DataFrame(rows)
    table["selected"] = table["trial"] == best_trial
    return best, table


def _result_row(method: Method, split: str, scores: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    row = {"method": method.name, "seed": method.seed, "split": split, "epochs": method.epochs,
           **{k: scores[k] for k in SUMMARY_METRICS},
           **{f"{FINAL_PREFIX}{k}": final[k] for k in SUMMARY_METRICS},
           "selection": method.selection_, "val_score": method.val_score_, "best_epoch": method.best_epoch_,
           "fit_time_s": method.fit_time_s_}
    row.update({f"{GROUP_PREFIX}{g}": acc for g, acc in scores["group_accuracy"].items()})
    return row


def epochs_for(epochs: int | Mapping[str, int], name: str, default: int = 20) -> int:
    """The epoch count of method ``name``: ``epochs`` itself, or its entry in a ``{method: epochs}`` mapping
    (methods it does not name get ``default``)."""
    if isinstance(epochs, Mapping):
        return int(epochs.get(name, default))
    return int(epochs)


def compare_methods(splits: Mapping[str, GroupedDataset], methods: Sequence[str], seeds: Sequence[int] = (0,),
                    *, model: str = "auto", epochs: int | Mapping[str, int] = 20, selection: str = "auto",
                    hparams: dict[str, dict[str, Any]] | None = None, device: str = "auto",
                    score_splits: Sequence[str] = ("test",),
                    on_fit: Callable[[Method], None] | None = None) -> pd.DataFrame:
    """Fit every method with every seed; one row per method x seed x scored split.

    Columns: method, seed, split, worst_group_acc, mean_group_acc, average_acc
    (test group accuracies weighted by the training group shares), accuracy,
    selection, val_score, best_epoch, fit_time_s, the same metrics of the last epoch's
    weights (``final_worst_group_acc``, ...: what peer libraries report) and one ``acc:<group>``
    column per group. ``epochs`` is one count for all, or ``{method: epochs}`` (an epoch of
    ``upsample`` is a pass over the upsampled set, several times longer than ERM's; give
    it fewer to compare at the same number of steps). ``hparams`` maps a method name to its
    fixed hyper-parameters; ``on_fit(method)`` is called with every fitted method (to keep
    models, plot, log).
    """
    hparams = dict(hparams or {})
    methods, seeds = check_params("compare_methods", {"methods": OptionList(*method_registry()),
                                                      "seeds": NumberList(SEED)},
                                  {"methods": methods, "seeds": seeds}).values()
    _check_comparison(splits, methods, seeds, hparams, score_splits)
    settings = {"model": model, "selection": selection, "device": device}
    instances = [get_method(name, seed=int(seed), epochs=epochs_for(epochs, name), **settings,
                            **hparams.get(name, {}))
                 for name in methods for seed in seeds]
    for method in instances:  # group-label needs are checked for all methods before any training
        method._check_splits(splits)
    rows, erm_runs = [], {}
    for method in instances:
        shared = _share_erm_stage(method, erm_runs, hparams)
        log(f"[spurlab] fitting {method.name} (seed {method.seed})"
            f"{', last layer refit on the erm run of the same seed' if shared else ''} ...")
        method.fit(splits)
        if shared:
            method.details_["base_model"] = f"the erm run of seed {method.seed} (shared ERM stage)"
        if method.name == "erm":
            erm_runs[(method.seed, method.epochs)] = method
        if on_fit is not None:
            on_fit(method)
        rows += [_result_row(method, split, method.evaluate(splits[split]),
                             method.evaluate(splits[split], final=True)) for split in score_splits]
    return pd.DataFrame(rows)


def _share_erm_stage(method: Method, erm_runs: dict[tuple[int, int], Method],
                     hparams: dict[str, dict[str, Any]]) -> bool:
    """Let DFR refit the last layer of the ERM run already fitted with its seed and epochs.

    DFR's first stage is that very run (same seed, epochs, defaults; last epoch kept), so the result is
    identical and the ERM stage is trained once per seed instead of twice. Only for a registered model name
    trained whole, and not when either method has hyper-parameters of its own or DFR was given a network.
    """
    erm = erm_runs.get((method.seed, method.epochs))
    if (method.name != "dfr" or erm is None or getattr(method, "base_model", None) is not None
            or hparams.get("dfr") or hparams.get("erm") or not isinstance(method.model, str)
            or as_model_spec(method.model).frozen):
        return False
    method.base_model = erm.final_model_
    return True


def _check_comparison(splits, methods, seeds, hparams, score_splits) -> None:
    """The rules that span several arguments (each argument's own constraints are checked before)."""
    if len(set(methods)) != len(methods):
        raise SpurlabError(f"compare_methods: parameter 'methods' repeats a name: {list(methods)}")
    for name in hparams:
        if name not in methods:
            raise SpurlabError(f"hyper-parameters given for {name!r}, which is not among the compared methods")
    for split in score_splits:
        if not has_split(splits, split):
            raise SpurlabError(f"cannot score split {split!r}: the dataset has {', '.join(splits)}")


def summarize_comparison(frame: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Mean and standard deviation over seeds per method (the seeds' spread), in the frame's order."""
    if frame.empty:
        raise SpurlabError("nothing to summarize: the comparison has no rows")
    part = frame[frame["split"] == split]
    metric_columns = [c for c in (*SUMMARY_METRICS, *(f"{FINAL_PREFIX}{m}" for m in SUMMARY_METRICS))
                      if c in part.columns]
    stats = part.groupby("method", sort=False)[metric_columns].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats["n_seeds"] = part.groupby("method", sort=False)["seed"].nunique()
    return stats.fillna({c: 0.0 for c in stats.columns if c.endswith("_std")}).reset_index()
