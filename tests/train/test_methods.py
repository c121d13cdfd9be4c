"""Robust training methods: registry, hyper-parameter grids, selection, the methods' effects, ``spurlab train``."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from spurlab import SpurlabError, load_splits
from spurlab.cli import app
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.errors import UnknownNameError
from spurlab.models import make_model, penultimate_features
from spurlab.train.methods import (EpochSelector, compare_methods, default_hparams, get_method, hparam_grid,
                                   method_registry, random_hparams, resolve_criterion, selection_score,
                                   summarize_comparison, tune_method)
from spurlab.train.methods.dfr import C_GRID, DFR, balanced_subsample, stratified_halves
from spurlab.train.methods.groupdro import GroupDROLoss, batch_group_losses
from spurlab.train.methods.jtt import upsampled_indices
from spurlab.train.methods.reweighting import group_balanced_indices, group_balanced_weights
from spurlab.train.training_run import split_overrides

METHODS = {"erm", "reweight", "upsample", "groupdro", "jtt", "dfr", "failure_directions", "pruned_contrastive"}


# ------------------------------------------------------------------ small data
def vector_splits(seed: int = 0, n_train: int = 400, with_groups: bool = True) -> DatasetSplits:
    """Two classes; a noisy core feature and a clean spurious one aligned with y 90% of the time in train."""
    rng = np.random.default_rng(seed)

    def split(n: int, p: float) -> GroupedDataset:
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < p, y, 1 - y)
        core = (2 * y - 1)[:, None] * 0.6 + rng.normal(0, 1, (n, 4))
        spur = (2 * a - 1)[:, None] * 2.0 + rng.normal(0, 0.1, (n, 2))
        return GroupedDataset(x=np.hstack([core, spur]).astype(np.float32), y=y, a=a if with_groups else None)

    return DatasetSplits({"train": split(n_train, 0.9), "val": split(200, 0.5), "test": split(400, 0.5)},
                         name="vectors")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small CNNs gain nothing from a second thread, and on a busy machine two OpenMP threads spin
    against the other processes (the comparison took 3 min instead of 15 s at load ~3)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_splits("spurious-digits", seed=0)


@pytest.fixture(scope="module")
def comparison_run(digits):
    """ERM against GroupDRO, JTT, DFR and failure-direction upweighting on the planted dataset, seed 0."""
    fitted = []
    frame = compare_methods(digits, ["erm", "groupdro", "jtt", "dfr", "failure_directions"], seeds=[0], epochs=20,
                            score_splits=("val", "test"), on_fit=fitted.append)
    return frame, fitted


@pytest.fixture(scope="module")
def comparison(comparison_run):
    return comparison_run[0]


# ------------------------------------------------------------------ registry and hyper-parameters
def test_registry_has_every_method_with_a_summary():
    registry = method_registry()
    assert METHODS <= set(registry)
    for name, cls in registry.items():
        assert cls.name == name and cls.summary and cls.reference
        assert {"lr", "weight_decay", "batch_size"} <= set(cls.hparam_space())


def test_unknown_method_and_hparam_are_refused_with_the_known_names():
    with pytest.raises(UnknownNameError, match="unknown method 'gdro'") as info:
        get_method("gdro")
    assert "groupdro" in str(info.value)
    with pytest.raises(SpurlabError, match="no hyper-parameter.*step"):
        get_method("groupdro", step=0.1)


def test_hparam_grid_starts_with_defaults_and_is_seeded():
    defaults = default_hparams("groupdro")
    assert defaults["eta"] == 0.01 and defaults["lr"] == 1e-3
    assert random_hparams("groupdro", seed=3) == random_hparams("groupdro", seed=3)
    assert random_hparams("groupdro", seed=3) != random_hparams("groupdro", seed=4)
    grid = hparam_grid("jtt", 4, seed=1, fixed_hparams={"lambda_up": 7})
    assert len(grid) == 4 and all(trial["lambda_up"] == 7 for trial in grid)
    assert {k: v for k, v in grid[0].items() if k != "lambda_up"} == \
        {k: v for k, v in default_hparams("jtt").items() if k != "lambda_up"}
    assert len({json.dumps(t, sort_keys=True) for t in grid}) == 4
    with pytest.raises(SpurlabError, match="n_trials"):
        hparam_grid("erm", 0)


@pytest.mark.parametrize("name, bad", [("groupdro", {"eta": -1.0}), ("jtt", {"lambda_up": 0}),
                                       ("dfr", {"balance": "both"}), ("erm", {"lr": 0.0}),
                                       ("erm", {"lr": "fast"}), ("dfr", {"C": -1.0})])
def test_impossible_hparams_fail_before_training(name, bad):
    with pytest.raises(SpurlabError):
        get_method(name, epochs=1, **bad).fit(vector_splits())


# ------------------------------------------------------------------ building blocks
def test_group_weights_and_upsampling_balance_the_groups():
    groups = np.array([0] * 90 + [1] * 10 + [2] * 30)
    weights = group_balanced_weights(groups)
    mass = np.bincount(groups, weights=weights)
    np.testing.assert_allclose(mass, mass[0])
    np.testing.assert_allclose(weights.mean(), 1.0)
    idx = group_balanced_indices(groups, seed=0)
    assert np.bincount(groups[idx]).tolist() == [90, 90, 90]
    assert set(idx.tolist()) == set(range(len(groups)))  # every example kept at least once
    np.testing.assert_array_equal(idx, group_balanced_indices(groups, seed=0))


def test_jtt_upsampling_repeats_only_the_error_set():
    flagged = np.array([False, True, False, True])
    counts = np.bincount(upsampled_indices(flagged, 5), minlength=4)
    assert counts.tolist() == [1, 5, 1, 5]


def test_dfr_subsamples_are_balanced_and_halves_disjoint():
    keys = np.array([0] * 40 + [1] * 6 + [2] * 9)
    rng = np.random.default_rng(0)
    idx = balanced_subsample(keys, rng)
    assert np.bincount(keys[idx]).tolist() == [6, 6, 6] and len(set(idx.tolist())) == 18
    first, second = stratified_halves(keys, rng)
    assert not set(first) & set(second) and len(first) + len(second) == len(keys)
    assert np.bincount(keys[first]).tolist() == [20, 3, 4]


def test_group_losses_match_a_per_group_loop():
    torch.manual_seed(0)
    losses, groups = torch.rand(50), torch.randint(0, 3, (50,))  # group 3 absent
    means, counts = batch_group_losses(losses, groups, 4)
    for g in range(3):
        assert means[g].item() == pytest.approx(losses[groups == g].mean().item(), rel=1e-6)
    assert means[3].item() == 0 and counts.tolist() == np.bincount(groups.numpy(), minlength=4).tolist()


def test_groupdro_adversary_moves_weight_to_the_worst_group():
    adversary = GroupDROLoss(np.array([100, 10]), eta=0.5, adjustment=0.0, device="cpu")
    losses, groups = torch.tensor([0.1, 0.1, 2.0, 2.0]), torch.tensor([0, 0, 1, 1])
    for _ in range(5):
        loss = adversary(losses, groups)
    q = adversary.q.tolist()
    assert q[1] > 0.9 and sum(q) == pytest.approx(1.0)
    assert loss.item() == pytest.approx(q[0] * 0.1 + q[1] * 2.0, rel=1e-5)


# ------------------------------------------------------------------ selection
def test_selection_criteria_and_their_label_needs():
    splits = vector_splits()
    assert resolve_criterion("auto", splits["val"]) == "worst_group"
    no_groups = replace(splits["val"], a=None)
    assert resolve_criterion("auto", no_groups) == "worst_class"
    assert resolve_criterion("auto", None) == "last"
    with pytest.raises(SpurlabError, match="needs group labels"):
        resolve_criterion("worst_group", no_groups)
    with pytest.raises(SpurlabError, match="parameter .selection. must be one of"):
        resolve_criterion("best", splits["val"])
    y, pred, g = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), np.array([0, 1, 2, 3])
    assert selection_score("worst_group", y, pred, g) == 0.0
    assert selection_score("worst_class", y, pred, g) == 0.5
    assert selection_score("accuracy", y, pred, g) == 0.75


def test_epoch_selector_restores_the_best_epoch():
    splits = vector_splits()
    model = make_model("mlp", (6,), 2, seed=0)
    selector = EpochSelector("worst_group", splits["val"], "cpu")
    scores, states = [], []
    for epoch in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        scores.append(selector(epoch, model)["val_worst_group"])
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    best = int(np.argmax(scores))
    selector.restore(model)
    assert selector.best_epoch == best + 1 and selector.best_score == max(scores)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, states[best][key])


# ------------------------------------------------------------------ fitting contracts
def test_fit_is_seeded_and_exposes_learned_state():
    splits = vector_splits()
    first = get_method("groupdro", model="mlp", epochs=3, seed=5).fit(splits)
    second = get_method("groupdro", model="mlp", epochs=3, seed=5).fit(splits)
    np.testing.assert_array_equal(first.predict_logits(splits["test"].x), second.predict_logits(splits["test"].x))
    assert first.selection_ == "worst_group" and 1 <= first.best_epoch_ <= 3
    assert [row["stage"] for row in first.history_] == ["groupdro"] * 3
    assert sum(first.details_["final_q"].values()) == pytest.approx(1.0)
    scores = first.evaluate(splits["test"])
    assert scores["worst_group_acc"] == min(scores["group_accuracy"].values())
    assert scores["mean_group_acc"] == pytest.approx(np.mean(list(scores["group_accuracy"].values())))
    with pytest.raises(SpurlabError, match="not fitted"):
        get_method("erm").predict(splits["test"].x)


def test_label_free_methods_run_without_any_group_labels():
    splits = vector_splits(with_groups=False)
    jtt = get_method("jtt", model="mlp", epochs=3, selection="worst_class").fit(splits)
    assert jtt.selection_ == "worst_class" and jtt.group_label_needs() == ()
    assert jtt.details_["error_set_size"] == len(jtt.error_set_)
    dfr = get_method("dfr", model="mlp", epochs=3, balance="class", n_draws=2).fit(splits)
    assert dfr.group_label_needs() == () and dfr.details_["C"] in C_GRID
    for name in ("reweight", "upsample", "groupdro"):
        with pytest.raises(SpurlabError, match="needs group labels on the 'train' split"):
            get_method(name, epochs=1).fit(splits)
    with pytest.raises(SpurlabError, match="needs group labels on the 'val' split"):
        get_method("dfr", epochs=1).fit(splits)


def test_failure_directions_upweights_without_group_labels():
    splits = vector_splits(with_groups=False)
    method = get_method("failure_directions", model="mlp", epochs=2, base_epochs=1, selection="worst_class").fit(splits)
    assert method.group_label_needs() == () and method.selection_ == "worst_class"
    assert method.weights_.shape == (len(splits["train"]),) and method.weights_.mean() == pytest.approx(1.0)
    assert [row["stage"] for row in method.history_] == ["base", "upweighted", "upweighted"]
    y = splits["train"].y
    assert method.details_["n_upweighted"] == sum(int((method.weights_[y == c] > method.weights_[y == c].min()
                                                        + 1e-9).sum()) for c in (0, 1))


def test_pruned_contrastive_fine_tunes_the_erm_model():
    splits = vector_splits()
    method = get_method("pruned_contrastive", model="mlp", epochs=2, finetune_epochs=2, prune_fraction=0.05).fit(splits)
    stages = [row["stage"] for row in method.history_]
    assert stages == ["erm", "erm", "pruned_contrastive", "pruned_contrastive"]
    assert method.history_[-1]["pruned_fraction"] == pytest.approx(0.05, abs=0.01)
    assert method.best_epoch_ in (1, 2) and "val_worst_group" in method.history_[-1]


def test_dfr_head_folds_the_standardization_into_the_network():
    model = make_model("mlp", (6,), 3, seed=0, hidden=(8,))
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    feats = penultimate_features(model, x)
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(size=(3, 8)), rng.normal(size=3)
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 0.5
    DFR._write_head(model, (weight, bias), mean, std)
    with torch.no_grad():
        logits = model(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(logits, ((feats - mean) / std) @ weight.T + bias, rtol=1e-4, atol=1e-4)


def test_tune_method_keeps_the_best_trial():
    splits = vector_splits()
    best, table = tune_method("erm", splits, n_trials=3, seed=0, model="mlp", epochs=2)
    assert len(table) == 3 and table["selected"].sum() == 1
    assert table.loc[table["selected"], "val_score"].item() == table["val_score"].max()
    assert best.val_score_ == table["val_score"].max()
    assert table.loc[0, "lr"] == default_hparams("erm")["lr"]


def test_compare_methods_validates_before_training():
    splits = vector_splits(with_groups=False)
    with pytest.raises(SpurlabError, match="parameter .methods. must be a list of at least 1"):
        compare_methods(splits, [])
    with pytest.raises(SpurlabError, match="cannot score split 'ood'"):
        compare_methods(splits, ["erm"], score_splits=("ood",))
    with pytest.raises(SpurlabError, match="not among the compared"):
        compare_methods(splits, ["erm"], hparams={"jtt": {"lambda_up": 3}})
    with pytest.raises(SpurlabError, match="needs group labels"):
        compare_methods(splits, ["erm", "groupdro"])


# ------------------------------------------------------------------ the effect on the planted dataset
def test_comparison_has_one_row_per_method_seed_and_split(comparison_run, digits):
    comparison, fitted = comparison_run
    assert len(comparison) == 5 * 2
    assert {"method", "seed", "split", "worst_group_acc", "mean_group_acc", "average_acc"} <= set(comparison)
    group_cols = [c for c in comparison if c.startswith("acc:")]
    assert len(group_cols) == digits["test"].n_groups
    np.testing.assert_allclose(comparison["worst_group_acc"], comparison[group_cols].min(axis=1))
    assert [m.name for m in fitted] == ["erm", "groupdro", "jtt", "dfr", "failure_directions"]
    dfr = fitted[3]
    assert dfr.evaluate(digits["test"])["worst_group_acc"] == pytest.approx(
        comparison.query("method == 'dfr' and split == 'test'")["worst_group_acc"].item())
    summary = summarize_comparison(comparison)
    assert summary["method"].tolist() == ["erm", "groupdro", "jtt", "dfr", "failure_directions"]
    assert (summary["n_seeds"] == 1).all()


def test_erm_fails_a_minority_group_of_the_planted_dataset(comparison, digits):
    erm = comparison[(comparison["method"] == "erm") & (comparison["split"] == "test")].iloc[0]
    group_cols = [c for c in comparison if c.startswith("acc:")]
    worst = min(group_cols, key=lambda c: erm[c])
    y_name, a_name = worst[len("acc:"):].split(",")
    test = digits["test"]
    y = [f"y={n}" for n in test.class_names].index(y_name)
    a = [f"a={n}" for n in test.attr_names].index(a_name)
    assert a != y  # the failing group is a minority (attribute not aligned with the class)
    assert erm["worst_group_acc"] < erm["mean_group_acc"] - 0.15
    assert erm["average_acc"] > 0.9  # the training distribution hides the failure


@pytest.mark.parametrize("method", ["groupdro", "dfr", "jtt", "failure_directions"])
def test_robust_methods_lift_worst_group_test_accuracy_over_erm(comparison, method):
    test = comparison[comparison["split"] == "test"].set_index("method")
    assert test.loc[method, "worst_group_acc"] > test.loc["erm", "worst_group_acc"] + 0.15
    assert test.loc[method, "mean_group_acc"] > test.loc["erm", "mean_group_acc"]


# ------------------------------------------------------------------ spurlab train
def test_split_overrides_routes_keys_to_method_or_dataset():
    hparams, params = split_overrides("groupdro", "spurious-digits", ["eta=0.05", "p=0.9", "method.lr=0.002",
                                                                       "data.spurious=line"])
    assert hparams == {"eta": 0.05, "lr": 0.002} and params == {"p": 0.9, "spurious": "line"}
    with pytest.raises(SpurlabError, match="neither a hyper-parameter"):
        split_overrides("groupdro", "spurious-digits", ["etta=1"])
    with pytest.raises(SpurlabError, match="has no parameter 'eta'"):
        split_overrides("groupdro", "spurious-digits", ["data.eta=1"])


def test_train_command_writes_summary_results_and_weights(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--method", "reweight", "--dataset", "spurious-digits",
                                      "--model", "mlp", "--epochs", "2", "--out", str(out),
                                      "--set", "p=0.9", "--set", "lr=0.002"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "reweight" and summary["hparams"]["lr"] == 0.002
    assert summary["dataset_params"]["p"] == 0.9 and summary["group_labels_used"] == ["train"]
    assert set(summary["splits"]) == {"train", "val", "test"}
    for scores in summary["splits"].values():
        assert {"worst_group_acc", "mean_group_acc", "average_acc", "accuracy"} <= set(scores)
        assert len(scores["group_accuracy"]) == 4
        assert scores["worst_group_acc"] == min(scores["group_accuracy"].values())
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns) == ["split", "group", "metric", "value"] and len(frame) == 3 * (4 * 2 + 4)
    model = make_model("mlp", (3, 8, 8), 2)
    model.load_state_dict(torch.load(out / "model.pt"))


def test_train_command_lists_methods_and_reports_bad_input(tmp_path):
    runner = CliRunner()
    listing = runner.invoke(app, ["train", "--method", "list"])
    assert listing.exit_code == 0 and all(name in listing.output for name in ("groupdro", "dfr", "jtt"))
    bad = runner.invoke(app, ["train", "--method", "erm", "--set", "nonsense=1", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "neither a hyper-parameter" in bad.output
    assert not (tmp_path / "x").exists()


def test_dfr_refits_the_erm_run_of_its_seed_and_gets_the_same_result():
    splits = load_splits("spurious-digits", seed=0)
    fitted = []
    shared = compare_methods(splits, ["erm", "dfr"], seeds=[0], epochs=3, device="cpu", on_fit=fitted.append)
    alone = compare_methods(splits, ["dfr"], seeds=[0], epochs=3, device="cpu")
    assert "shared ERM stage" in fitted[1].details_["base_model"]
    columns = ["worst_group_acc", "mean_group_acc", "accuracy"]
    assert shared[shared["method"] == "dfr"][columns].to_numpy() == pytest.approx(alone[columns].to_numpy())
