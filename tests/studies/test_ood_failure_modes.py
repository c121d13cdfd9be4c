"""ood-failure-modes: solvers, skew probes, the four experiments, the table mode and the study contract."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spurlab.data.synthetic import duplicate_majority, easy_task
from spurlab.errors import SpurlabError, UnknownNameError
from spurlab.probes.skew import (linear_group_accuracies, spurious_ratio, spurious_share, theory_spurious_ratio,
                                 theory_spurious_share)
from spurlab.studies.study_base import run_study, study_registry
from spurlab.studies.ood_failure_modes.ood_images import ImageSpec, images_experiment
from spurlab.studies.ood_failure_modes.ood_linear import (geometric_experiment, max_margin_norms,
                                                          norm_growth_experiment, statistical_experiment)
from spurlab.studies.ood_failure_modes.ood_table import load_table_task, table_geometric_experiment
from spurlab.train.engines.linear_gd import BatchedLinearGD, log_spaced_steps
from spurlab.train.engines.max_margin import MaxMarginClassifier

STUDY = "ood-failure-modes"


# ------------------------------------------------------------------ max-margin solver
def test_max_margin_hand_cases():
    # 1-D, no bias: constraints 2w >= 1 and w >= 1 -> w = 1
    svm = MaxMarginClassifier().fit(np.array([[2.0], [-1.0]]), np.array([1, -1]))
    assert svm.coef_ == pytest.approx([1.0], abs=1e-12) and svm.intercept_ == 0.0
    # with a bias: 2w + b = 1 and w - b = 1 -> w = 2/3, b = -1/3
    svm = MaxMarginClassifier(fit_intercept=True).fit(np.array([[2.0], [-1.0]]), np.array([1, -1]))
    assert svm.coef_ == pytest.approx([2 / 3], abs=1e-12)
    assert svm.intercept_ == pytest.approx(-1 / 3, abs=1e-12)
    # 2-D: (2, 0) positive, (0, 2) negative, no bias -> w = (1/2, -1/2), margin sqrt(2)
    svm = MaxMarginClassifier().fit(np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([1, 0]))
    assert svm.coef_ == pytest.approx([0.5, -0.5], abs=1e-12)
    assert svm.margin_ == pytest.approx(np.sqrt(2.0))
    assert list(svm.predict(np.array([[3.0, 1.0], [1.0, 3.0]]))) == [1, 0]


def primal_svm_reference(x, y, fit_intercept):
    """The primal QP min ||w||^2/2 s.t. y (w.x + b) >= 1 with a general-purpose solver (SLSQP)."""
    from scipy.optimize import minimize

    s = 2.0 * y - 1.0
    d = x.shape[1]
    aug = np.column_stack([s[:, None] * x, s if fit_intercept else np.zeros_like(s)])
    res = minimize(lambda v: 0.5 * v[:d] @ v[:d], np.zeros(d + 1), jac=lambda v: np.r_[v[:d], 0.0],
                   constraints=[{"type": "ineq", "fun": lambda v: aug @ v - 1.0, "jac": lambda v: aug}],
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    return res.x[:d], res.x[d]


def test_max_margin_kkt_and_reference_agreement():
    data = easy_task(40, 12, D=30, seed=3)
    for fit_intercept in (False, True):
        svm = MaxMarginClassifier(fit_intercept=fit_intercept).fit(data.x, data.y)
        margins = (2 * data.y - 1) * svm.decision_function(data.x)
        assert margins.min() == pytest.approx(1.0, abs=1e-8)          # feasible and tight
        assert np.allclose(margins[svm.support_], 1.0, atol=1e-8)     # support vectors on the margin
        assert np.all(svm.dual_coef_ >= 0)
        assert np.allclose(svm.coef_, ((2 * data.y - 1) * svm.dual_coef_) @ data.x)
        ref_w, ref_b = primal_svm_reference(data.x, data.y, fit_intercept)
        assert np.abs(ref_w - svm.coef_).max() < 1e-5 * np.abs(svm.coef_).max()
        assert svm.intercept_ == pytest.approx(ref_b if fit_intercept else 0.0, abs=1e-5)


def test_max_margin_rejects_non_separable_and_bad_input():
    with pytest.raises(SpurlabError, match="not linearly separable"):
        MaxMarginClassifier().fit(np.array([[2.0], [3.0], [0.0]]), np.array([1, 1, 0]))  # x=0 needs a bias
    with pytest.raises(SpurlabError, match="not linearly separable"):
        MaxMarginClassifier(fit_intercept=True).fit(np.array([[1.0], [1.0]]), np.array([1, 0]))
    with pytest.raises(SpurlabError, match="two label values"):
        MaxMarginClassifier().fit(np.ones((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(SpurlabError, match="NaN"):
        MaxMarginClassifier().fit(np.array([[np.nan], [1.0]]), np.array([0, 1]))
    with pytest.raises(SpurlabError, match="not fitted"):
        MaxMarginClassifier().predict(np.ones((1, 1)))


# ------------------------------------------------------------------ batched GD
def reference_gd(z: np.ndarray, weights: np.ndarray, lr: float, n_steps: int, loss: str = "logistic"):
    """The textbook loop for one problem: w <- w - lr grad of the weighted mean loss."""
    w = np.zeros(z.shape[1])
    omega = weights / weights.sum()
    for _ in range(n_steps):
        m = z @ w
        g = 1.0 / (1.0 + np.exp(m)) if loss == "logistic" else np.exp(-m)
        w += lr * (omega * g) @ z
    return w


@pytest.mark.parametrize("parametrization", ["primal", "kernel"])
@pytest.mark.parametrize("loss", ["logistic", "exponential"])
def test_batched_gd_matches_per_run_loop(parametrization, loss):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 12, 5))
    y = np.sign(x[..., 0] + 0.1)
    weights = rng.integers(1, 4, size=(3, 12)).astype(float)
    gd = BatchedLinearGD(loss=loss, lr=0.3, n_steps=200, n_logged=10, parametrization=parametrization,
                         device="cpu").fit(x, y, weights)
    assert gd.parametrization_ == parametrization
    assert gd.coef_path_.shape == (3, len(gd.steps_), 5)
    for r in range(3):
        expected = reference_gd(y[r][:, None] * x[r], weights[r], 0.3, 200, loss)
        assert np.allclose(gd.coef_[r], expected, atol=1e-10)
    assert np.all(np.diff(gd.loss_path_, axis=1) <= 1e-12)  # small steps: the loss decreases


def test_batched_gd_collapsing_duplicates_is_exact():
    data = duplicate_majority(5, 0.9, D=8, seed=1)
    y = 2.0 * data.y - 1
    fast = BatchedLinearGD(n_steps=300, device="cpu").fit(data.x, y)
    slow = BatchedLinearGD(n_steps=300, collapse_duplicates=False, parametrization="primal",
                           device="cpu").fit(data.x, y)
    assert fast.n_distinct_ == 10 and slow.n_distinct_ == len(y)
    assert np.allclose(fast.coef_path_, slow.coef_path_, atol=1e-12)
    weights = np.stack([np.ones(len(y)), np.r_[np.ones(len(y) - 1), 5.0]])  # one design, two weightings
    shared = BatchedLinearGD(n_steps=100, device="cpu").fit(data.x, y, weights)
    per_run = BatchedLinearGD(n_steps=100, collapse_duplicates=False, parametrization="primal",
                              device="cpu").fit(np.stack([data.x] * 2), np.stack([y] * 2), weights)
    assert np.allclose(shared.coef_path_, per_run.coef_path_, atol=1e-12)
    assert not np.allclose(shared.coef_[0], shared.coef_[1])


def test_log_steps_sgd_intercept_and_validation():
    steps = log_spaced_steps(10_000, 20)
    assert steps[0] == 0 and steps[-1] == 10_000 and {1, 10, 100, 1000} <= set(steps.tolist())
    assert np.all(np.diff(steps) > 0)
    x = np.array([[2.0], [3.0], [0.0], [-1.0]])
    y = np.array([1, 1, 0, 0])
    gd = BatchedLinearGD(n_steps=2000, fit_intercept=True, device="cpu").fit(x + 5.0, y)  # needs the bias
    assert np.all(gd.predict(x + 5.0)[0] == 2 * y - 1) and gd.intercept_[0] < 0
    runs = np.stack([easy_task(20, 5, D=4, seed=s).x for s in range(2)])
    labels = np.stack([2 * easy_task(20, 5, D=4, seed=s).y - 1 for s in range(2)])
    sgd = [BatchedLinearGD(n_steps=300, batch_size=4, seed=s, device="cpu").fit(runs, labels).coef_ for s in (0, 0, 1)]
    assert np.array_equal(sgd[0], sgd[1]) and not np.allclose(sgd[0], sgd[2])
    with pytest.raises(SpurlabError, match="parameter .loss. must be one of"):
        BatchedLinearGD(loss="hinge").fit(x, y)
    with pytest.raises(SpurlabError, match="sample weights"):
        BatchedLinearGD().fit(x, y, sample_weight=-np.ones(4))
    with pytest.raises(SpurlabError, match="expected"):
        BatchedLinearGD().fit(x, y, sample_weight=np.ones(3))
    with pytest.raises(SpurlabError, match="labels"):
        BatchedLinearGD().fit(x, np.array([0, 1, 2, 3]))


def test_one_dimensional_statistical_skew_matches_the_paper():
    """x_inv = y, B = 1, lr 0.5, p = 0.75: w_sp/w_inv ~ 0.155 at t=1e2 and 0.066 at t=1e4."""
    data = duplicate_majority(4, 0.75, D=1, margin=1.0, seed=0)
    gd = BatchedLinearGD(lr=0.5, n_steps=10_000, device="cpu").fit(data.x, 2.0 * data.y - 1)
    ratio = dict(zip(gd.steps_.tolist(), spurious_ratio(gd.coef_path_[0])))
    assert ratio[100] == pytest.approx(0.155, abs=0.002)
    assert ratio[10_000] == pytest.approx(0.066, abs=0.001)


# ------------------------------------------------------------------ probes
def test_skew_probes():
    w = np.array([[3.0, 0.0, 4.0], [0.0, 0.0, 0.0]])
    assert spurious_share(w) == pytest.approx([0.8, 0.0])
    assert spurious_ratio(w) == pytest.approx([4 / 3, 0.0])
    assert theory_spurious_ratio(0.5, 1.0, [10, 1e4]) == pytest.approx([0.0, 0.0])
    assert theory_spurious_ratio(0.75, 1.0, 1e4) == pytest.approx(np.log(3) / (2 * np.log(1e4)))
    assert theory_spurious_ratio(0.75, 2.0, 1e4, margin=0.5) == pytest.approx(np.log(3) / (8 * np.log(1e4)))
    r = theory_spurious_ratio(0.9, 1.0, 100)
    assert theory_spurious_share(0.9, 1.0, 100) == pytest.approx(r / np.sqrt(1 + r * r))
    x = np.array([[1.0, 1.0], [1.0, -1.0]])
    accs = linear_group_accuracies(np.array([0.0, 1.0]), x, np.array([1, 1]), np.array([False, True]))
    assert accs == {"majority_acc": 1.0, "minority_acc": 0.0}
    with pytest.raises(SpurlabError):
        theory_spurious_ratio(1.0, 1.0, 10)


def test_norm_growth_increases_and_approaches_inverse_margin():
    frame = norm_growth_experiment([4, 16, 64, 256, 1024], seeds=[0], D=1000, margin=0.1)
    norms = frame.sort_values("n")["value"].to_numpy()
    assert np.all(np.diff(norms) > 0)
    assert norms[0] == pytest.approx(2.0, rel=0.1) and norms[1] == pytest.approx(3.9, rel=0.1)
    assert 0.97 * 10 < norms[-1] <= 10 + 1e-9                     # saturates at 1/gamma
    assert set(frame.columns) >= {"experiment", "metric", "value", "seed", "n"}
    assert max_margin_norms([8], D=50, seeds=[0, 1])["maxmargin_norm"].nunique() == 2


def test_geometric_skew_trend():
    frame = geometric_experiment(500, [500, 100, 20, 5], seeds=[0], n_test=300)
    table = frame.pivot_table(index="n_min", columns="metric", values="value").sort_index(ascending=False)
    share, minority = table["spurious_share"].to_numpy(), table["minority_acc"].to_numpy()
    assert abs(share[0]) < 0.01 and np.all(np.diff(share) > 0)       # rises from ~0 as n_min shrinks
    assert minority[0] == 1.0 and np.all(np.diff(minority) <= 0) and minority[-1] < 0.1
    assert np.all(table["majority_acc"] == 1.0)


def test_statistical_skew_trend_and_overlay():
    frame = statistical_experiment([0.5, 0.75, 0.85, 0.99], seeds=[0], n_steps=30_000, n_logged=20)
    last = frame[(frame.step == frame.step.max()) & (frame.metric == "spurious_share")].set_index("p")["value"]
    assert abs(last[0.5]) < 1e-9
    assert 0 < last[0.75] < last[0.85] < last[0.99]
    wide = frame[frame.step >= 10_000].pivot_table(index=["p", "step"], columns="metric", values="value")
    for p in (0.75, 0.85):
        theory = wide.loc[p, "theory_spurious_share"]
        rel = (wide.loc[p, "spurious_share"] - theory).abs() / theory
        assert rel.max() < 0.3
    mm = frame[frame.metric == "maxmargin_spurious_share"]["value"]
    assert np.all(np.abs(mm) < 1e-9)                              # the max-margin classifier ignores x_sp


# ------------------------------------------------------------------ images
def test_high_dimensional_statistical_skew_drops_ood_accuracy():
    """In the 1-D check the minority is always classified correctly; in D = 1000 duplication costs OOD accuracy."""
    kwargs = dict(seeds=[0, 1], n_unique=10, n_steps=3000, n_logged=8, n_test=300)
    high = statistical_experiment([0.5, 0.75], D=1000, margin=0.1, experiment="statistical_highd", **kwargs)
    low = statistical_experiment([0.5, 0.75], **kwargs)
    assert set(high.experiment) == {"statistical_highd"}

    def final(frame, metric):
        return frame[frame.metric == metric].groupby("p")["value"].mean()

    assert np.all(final(low, "minority_acc") == 1.0)
    minority = final(high, "minority_acc")
    assert minority[0.5] > 0.8 and minority[0.5] - minority[0.75] > 0.2
    assert np.all(final(high, "train_acc") == 1.0)                 # every unique point fitted: not underfitting


def image_spec(**changes) -> ImageSpec:
    return ImageSpec(**{"lr": 0.1, "mlp_hidden": (32,), "batch_size": 32, "max_steps": 4000, "norm_steps": 40,
                        "device": "cpu", **changes})


def test_image_runs_train_on_copies_until_every_unique_point_is_fitted():
    spec = image_spec()
    assert spec.duplication == "copies" and spec.optimizer == "sgd" and spec.momentum == 0.0
    frame, notes = images_experiment(["digits"], ["mlp"], ["statistical"], [0], spec, n_maj=0, n_mins=[],
                                     n_unique=20, ps=[0.5, 0.8], norm_ns=[], n_test=200)
    table = frame.pivot_table(index="p", columns="metric", values="value")
    assert np.all(table["train_acc"] == 1.0) and np.all(table["fitted"] == 1.0)
    assert table.loc[0.8, "steps"] > table.loc[0.5, "steps"]       # real copies: 4x the points per pass
    assert frame["n"].nunique() == 1                                # the unique points are unchanged
    assert not any("NOT FITTED" in n for n in notes) and any("binarized" in n for n in notes)
    short, notes = images_experiment(["digits"], ["mlp"], ["statistical"], [0], image_spec(max_steps=3, norm_steps=1),
                                     n_maj=0, n_mins=[], n_unique=30, ps=[0.5], norm_ns=[], n_test=50)
    fit = short.set_index("metric")["value"]
    assert fit["fitted"] == 0.0 and fit["train_acc"] < 1.0 and any("NOT FITTED" in n for n in notes)
    with pytest.raises(UnknownNameError):
        images_experiment(["no-such-dataset"], ["mlp"], ["norm"], [0], spec, n_maj=0, n_mins=[], n_unique=1,
                          ps=[], norm_ns=[10], n_test=10)
    with pytest.raises(SpurlabError, match="label-correlated"):
        ImageSpec(spurious="noise_frame")
    with pytest.raises(SpurlabError, match="parameter .models. must be a list"):
        images_experiment(["digits"], ["resnet"], ["norm"], [0], spec, n_maj=0, n_mins=[], n_unique=1, ps=[],
                          norm_ns=[10], n_test=10)


def test_distance_from_init_is_also_compared_at_equal_steps():
    frame, _ = images_experiment(["digits"], ["mlp"], ["norm"], [0], image_spec(), n_maj=0, n_mins=[],
                                 n_unique=0, ps=[], norm_ns=[30, 150], n_test=100)
    table = frame.pivot_table(index="n", columns="metric", values="value")
    assert np.all(table["fitted"] == 1.0) and np.all(table["steps"] >= 40)
    assert table.loc[150, "steps"] > table.loc[30, "steps"]        # more points take more steps to fit ...
    assert np.all(np.isfinite(table["w_dist_equal_steps"]))        # ... so the norm is also read at step 40
    assert np.all(table["w_dist_equal_steps"] <= table["w_dist_from_init"] + 1e-9)
    auto, _ = images_experiment(["digits"], ["mlp"], ["norm"], [0], image_spec(norm_steps=0), n_maj=0, n_mins=[],
                                n_unique=0, ps=[], norm_ns=[150, 30], n_test=100)
    table = auto.pivot_table(index="n", columns="metric", values="value")
    assert np.all(table["equal_steps"] == table.loc[30, "steps"])  # read where the smallest set has fitted
    assert table.loc[30, "w_dist_equal_steps"] == table.loc[30, "w_dist_from_init"]


def test_convnet_learns_the_digits_not_only_the_patch(data_dir):
    frame, _ = images_experiment(["binary-mnist"], ["convnet"], ["statistical"], [0], image_spec(), n_maj=0,
                                 n_mins=[], n_unique=30, ps=[0.5], norm_ns=[], n_test=300, data_dir=data_dir)
    result = frame.set_index("metric")["value"]
    assert result["fitted"] == 1.0
    assert result["ood_acc"] > 0.65 and result["majority_acc"] > 0.65  # the patch alone would give 0 OOD


# ------------------------------------------------------------------ table mode and the study contract
def write_table(path, n: int = 400, seed: int = 0):
    """A separable table: label grade in 0..3 (>= 2 positive), a bus column agreeing with the label 90%."""
    rng = np.random.default_rng(seed)
    f1, f2 = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    score = f1 + 0.3 * f2 - 0.65
    keep = np.abs(score) > 0.02
    f1, f2, score = f1[keep], f2[keep], score[keep]
    positive = score > 0
    grade = np.where(positive, rng.integers(2, 4, len(score)), rng.integers(0, 2, len(score)))
    agree = rng.uniform(size=len(score)) < 0.9
    bus = np.where(agree == positive, "yes", "no")
    colour = rng.choice(["red", "blue"], len(score))
    pd.DataFrame({"f1": f1, "f2": f2, "colour": colour, "bus": bus, "grade": grade}).to_csv(path, index=False)


def test_table_loading(tmp_path):
    csv = tmp_path / "t.csv"
    write_table(csv)
    task = load_table_task(csv, "grade", "bus", positive="2,3")
    assert task.x.shape[1] == 5 and task.feature_names[-1] == "bus"  # f1, f2, 2 one-hot colours, bus
    assert task.x[:, :-1].min() == 0.0 and task.x[:, :-1].max() == 1.0
    assert set(np.unique(task.x[:, -1])) == {-0.5, 0.5}
    assert 0.05 < task.minority.mean() < 0.2
    with pytest.raises(SpurlabError, match="not in"):
        load_table_task(csv, "grade", "nope", positive="2,3")
    with pytest.raises(SpurlabError, match="--positive"):
        load_table_task(csv, "grade", "bus")
    with pytest.raises(SpurlabError, match="not found"):
        load_table_task(tmp_path / "missing.csv", "grade", "bus")
    rng = np.random.default_rng(1)  # random labels: not linearly separable
    pd.DataFrame({"f": rng.uniform(size=80), "s": rng.integers(0, 2, 80), "y": rng.integers(0, 2, 80)}).to_csv(
        tmp_path / "noise.csv", index=False)
    with pytest.raises(SpurlabError, match="not linearly separable"):
        table_geometric_experiment(load_table_task(tmp_path / "noise.csv", "y", "s"), [0], seeds=[0])


def test_table_study_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from spurlab.cli import app

    csv = tmp_path / "t.csv"
    write_table(csv)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["study", STUDY, "--quick", "--out", str(out), "--device", "cpu",
                                   "--table", str(csv), "--label", "grade", "--spurious", "bus", "--positive", "2,3",
                                   "--set", "table_steps=3000", "--set", "n_seeds=1", "--set", "table_n_min=0,3"])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out / "results.csv")
    assert set(frame.experiment) == {"geometric", "statistical"} and set(frame.table) == {"t.csv"}
    geo = frame[frame.experiment == "geometric"].pivot_table(index="n_min", columns="metric", values="value")
    assert geo["spurious_share"].iloc[0] > geo["spurious_share"].iloc[-1]  # fewer minority rows: more spurious
    last = frame[(frame.experiment == "statistical") & (frame.metric == "spurious_share")]
    last = last[last.step == last.step.max()].set_index("p")["value"]
    assert last[0.99] > last[0.5]
    bad = CliRunner().invoke(app, ["study", STUDY, "--quick", "--out", str(out), "--table", str(csv),
                                   "--label", "grade", "--spurious", "missing"])
    assert bad.exit_code == 2 and "not in" in bad.output


def test_study_contract_files(tmp_path):
    assert STUDY in study_registry()
    overrides = {"experiments": ["norm_growth", "geometric", "statistical"], "n_seeds": 1,
                 "norm_ns": [4, 32], "D": 100, "geo_n_maj": 60, "geo_n_min": [20, 3], "geo_n_test": 50,
                 "stat_steps": 2000, "stat_logged": 10, "stat_p": [0.5, 0.9]}
    result, out = run_study(STUDY, out_dir=tmp_path / "run", quick=True, device="cpu", overrides=overrides)
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns[:4]) == ["experiment", "metric", "value", "seed"]
    assert {"n", "n_min", "n_maj", "p", "step"} <= set(frame.columns)
    assert set(frame.experiment) == {"norm_growth", "geometric", "statistical"}
    assert "theory_spurious_share" in set(frame.metric)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["stat_p"] == [0.5, 0.9] and manifest["device"] == "cpu"
    for name in ("norm_growth", "geometric", "statistical"):
        assert (out / f"{name}.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "Headline numbers" in html and html.count("data:image/png;base64") == 3
    assert not result.headline.empty
    for bad in ({"stat_p": [0.3]}, {"experiments": ["nope"]}, {"label": "y"}, {"geo_n_min": [0]},
                {"image_optimizer": "rmsprop"}, {"image_norm_steps": -1}):
        with pytest.raises(SpurlabError):
            run_study(STUDY, quick=True, device="cpu", overrides=bad, write=False)
