"""One contract battery over every registry entry (in the manner of scikit-learn's ``test_common.py``).

The cases come from the registries, so whoever registers a method, a file-free dataset or a study gets these
tests for free:

* methods: fit on a tiny built-in dataset for 2 epochs, ``evaluate`` returns the documented keys, the same seed
  gives the same predictions, a bad hyper-parameter is refused at construction with its name;
* datasets that need no files: load with their defaults, every split is a well-formed grouped dataset, the
  same seed gives the same arrays, a bad parameter is refused with its name;
* networks that need no weight files: built by name for images and vectors, the logits have one column per
  class, the same seed gives the same weights, an unknown option is refused with its name;
* studies: a quick run with the smallest settings (``SMOKE`` below; a study without an entry runs its plain
  quick configuration) follows the results contract, the same seed gives the same results.csv, a bad parameter
  is refused with its name.
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from spurlab.data.dataset_registry import dataset_entries, load_splits
from spurlab.data.grouped import GroupedDataset
from spurlab.errors import SpurlabError
from spurlab.models.model_registry import MODELS, as_model_spec, make_model
from spurlab.studies.study_base import RESULT_COLUMNS, get_study, run_study, study_registry
from spurlab.train.methods import get_method, get_method_class, method_registry

# Values that most declared constraints refuse; each case uses those its constraint really refuses.
BAD_VALUES = ("not-a-value", -1.5, 1e15, "")
EVALUATE_KEYS = {"n", "accuracy", "worst_group_acc", "mean_group_acc", "average_acc", "group_accuracy",
                 "group_count"}
TINY = ("spurious-digits", {"n_train": 300})  # built in, images, groups on every split, val for selection

# The smallest settings that still exercise each study's code (seconds on a 2-core laptop, no data files).
SMOKE: dict[str, dict] = {
    "ood-failure-modes": {"experiments": ["norm_growth", "geometric", "statistical"], "n_seeds": 1,
                          "norm_ns": [4, 16], "D": 50, "geo_n_maj": 30, "geo_n_min": [10, 3], "geo_n_test": 30,
                          "stat_steps": 300, "stat_logged": 5, "stat_p": [0.5, 0.9]},
    "feature-contamination": {"experiments": ["dynamics"], "activations": ["relu"], "steps": 50, "log_every": 25,
                              "n": 100, "n_test": 100, "width": 32},
    "spurious-memorization": {"experiments": ["synthetic"], "d": 30, "N": [5, 10], "rf_k": 100, "ntk_k": 5,
                              "n_test": 30},
    "critical-neurons": {"dataset": "spurious-digits", "n_train": 300, "n_test": 200, "erm_epochs": 2, "ks": [1],
                         "modes": ["zero"], "repeats": 1, "rewind_epochs": [1], "n_seeds": 1, "framework_epochs": 1,
                         "magnitude_fractions": [0.02], "n_worst": 20},
    "failure-directions": {"dataset": "spurious-digits", "correlation": [0.9], "n_train": 400, "n_test": 150,
                           "epochs": 2, "k_select": 10, "embedders": ["own"], "intervention_embedders": ["own"],
                           "interventions": ["erm", "select_svm"]},
}

METHODS = sorted(method_registry())
FILE_FREE = sorted(name for name, entry in dataset_entries().items() if not entry.needs_files)
STUDIES = sorted(study_registry())
MODEL_NAMES = sorted(name for name, entry in MODELS.entries().items() if not entry.pretrained_default)


def refused_values(constraint) -> list:
    out = []
    for value in BAD_VALUES:
        try:
            constraint.convert(value)
        except (ValueError, TypeError, OverflowError):
            out.append(value)
    return out


def assert_refused_by_name(call, name: str, value) -> None:
    with pytest.raises(SpurlabError) as info:
        call()
    assert repr(name) in str(info.value) or name in str(info.value), f"{value!r} for {name}: {info.value}"


# ------------------------------------------------------------------ methods
@functools.lru_cache(maxsize=1)
def tiny_splits():
    name, params = TINY
    return load_splits(name, seed=0, **params)


@functools.lru_cache(maxsize=None)
def fitted(name: str, seed: int = 0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. pruned_contrastive's vacuous-mask warning after 2 epochs
        return get_method(name, epochs=2, seed=seed, device="cpu").fit(tiny_splits())


@pytest.mark.parametrize("name", METHODS)
def test_method_fits_and_evaluates_with_the_documented_keys(name, one_thread):
    method = fitted(name)
    test = tiny_splits()["test"]
    scores = method.evaluate(test)
    assert set(scores) >= EVALUATE_KEYS
    assert scores["n"] == len(test)
    assert 0.0 <= scores["worst_group_acc"] <= scores["mean_group_acc"] <= 1.0
    assert scores["worst_group_acc"] == min(scores["group_accuracy"].values())
    predictions = method.predict(test.x)
    assert predictions.shape == (len(test),) and set(np.unique(predictions)) <= set(range(test.n_classes))
    assert scores["accuracy"] == pytest.approx(float(np.mean(predictions == test.y)))


@pytest.mark.parametrize("name", METHODS)
def test_method_is_deterministic_for_a_seed(name, one_thread):
    x = tiny_splits()["test"].x
    first = fitted(name).predict_logits(x)
    fitted.cache_clear()
    again = fitted(name).predict_logits(x)
    np.testing.assert_array_equal(first.argmax(1), again.argmax(1))
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_method_refuses_bad_hyper_parameters_by_name(name):
    assert_refused_by_name(lambda: get_method(name, no_such_hparam=1), "no_such_hparam", 1)
    space = get_method_class(name).hparam_space()
    checked = 0
    for hparam, spec in space.items():
        if spec.constraint is None:
            continue
        for value in refused_values(spec.constraint):
            assert_refused_by_name(lambda: get_method(name, **{hparam: value}), hparam, value)
            checked += 1
    assert checked or not space, f"method {name!r}: no hyper-parameter declares a constraint"
    assert_refused_by_name(lambda: get_method(name, epochs=0), "epochs", 0)


# ------------------------------------------------------------------ networks that need no weight files
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_builds_seeded_and_refuses_unknown_options(name, one_thread):
    import torch

    shapes = [(3, 16, 16)] if MODELS.get(name).inputs == "images" else [(3, 16, 16), (20,)]
    for shape in shapes:
        first, again = make_model(name, shape, 3, seed=5), make_model(name, shape, 3, seed=5)
        x = torch.rand(4, *shape)
        with torch.no_grad():
            logits = first.eval()(x)
            assert logits.shape == (4, 3)
            torch.testing.assert_close(logits, again.eval()(x))
    assert_refused_by_name(lambda: as_model_spec(name, no_such_option=1).build(shapes[0], 3, seed=0),
                           "no_such_option", 1)


# ------------------------------------------------------------------ datasets that need no files
def check_split(name: str, split: str, ds: GroupedDataset) -> None:
    assert isinstance(ds, GroupedDataset), f"{name}[{split}]"
    assert len(ds) > 0 and len(ds.y) == len(ds) == len(ds.x)
    assert np.isfinite(np.asarray(ds.x, dtype=np.float64)).all()
    assert set(np.unique(ds.y)) <= set(range(ds.n_classes))
    if ds.has_groups:
        assert len(ds.g) == len(ds) and ds.group_counts().sum() == len(ds)


@pytest.mark.parametrize("name", FILE_FREE)
def test_dataset_loads_and_is_deterministic(name):
    first, again = load_splits(name, seed=3), load_splits(name, seed=3)
    assert list(first) == list(again) and len(list(first)) >= 2
    for split in first:
        check_split(name, split, first[split])
        np.testing.assert_array_equal(np.asarray(first[split].x), np.asarray(again[split].x))
        np.testing.assert_array_equal(first[split].y, again[split].y)
        if first[split].has_groups:
            np.testing.assert_array_equal(first[split].g, again[split].g)


@pytest.mark.parametrize("name", FILE_FREE)
def test_dataset_refuses_bad_parameters_by_name(name):
    assert_refused_by_name(lambda: load_splits(name, no_such_param=1), "no_such_param", 1)
    entry = dataset_entries()[name]
    for param, constraint in (entry.constraints or {}).items():
        for value in refused_values(constraint):
            assert_refused_by_name(lambda: load_splits(name, **{param: value}), param, value)


# ------------------------------------------------------------------ studies
def smoke_run(name: str, seed: int = 0) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, _ = run_study(name, quick=True, seed=seed, device="cpu", overrides=SMOKE.get(name), write=False)
    return result.frame()


@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_quick_and_is_deterministic(name, one_thread):
    frame = smoke_run(name)
    assert list(frame.columns[:len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS) and len(frame) > 0
    assert frame["value"].map(lambda v: isinstance(v, float) and not math.isinf(v)).all()
    # results.csv is exactly frame.to_csv(index=False): the same seed must give the same file
    assert smoke_run(name).to_csv(index=False) == frame.to_csv(index=False)


@pytest.mark.parametrize("name", STUDIES)
def test_study_refuses_bad_parameters_by_name(name):
    def run(overrides):
        return lambda: run_study(name, quick=True, device="cpu", overrides={**SMOKE.get(name, {}), **overrides},
                                 write=False)

    assert_refused_by_name(run({"no_such_param": 1}), "no_such_param", 1)
    study = get_study(name)
    for param, constraint in study.parameter_constraints.items():
        for value in refused_values(constraint):
            assert_refused_by_name(run({param: value}), param, value)
    for param, default in study.default_config(quick=True).items():
        if param not in study.parameter_constraints and isinstance(default, (bool, int, float)):
            assert_refused_by_name(run({param: "not-a-value"}), param, "not-a-value")
