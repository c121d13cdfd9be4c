"""spurious-memorization: Hermite coefficients, RF/NTK kernels, the LOO identity, gamma and the study."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from spurlab import SpurlabError
from spurlab.data.synthetic import gaussian_core_spurious, signed, spurious_query
from spurlab.models.features import (NTKFeatures, RandomFeatures, get_activation, hermite_activation,
                                     hermite_coefficients)
from spurlab.probes.memorization import (KernelMemorization, gamma, gammas, refit_memorization,
                                         solve_memorization)
from spurlab.studies.study_base import run_study
from spurlab.studies.spurious_memorization.memorization_study import (frame_fraction, frame_images, load_binary_images,
                                                   synthetic_setting, train_to_interpolation)

ALPHAS = (0.25, 0.5)


pytestmark = pytest.mark.usefixtures("one_thread")  # many small BLAS calls: one thread is faster


def small_problem(n=30, d=40, alpha=0.5, seed=0):
    data = gaussian_core_spurious(n, d=d, alpha=alpha, seed=seed)
    return data.z, spurious_query(data, "fresh", seed=seed + 1), signed(data.y)


# ------------------------------------------------------------------ activations
def test_hermite_coefficients_of_named_activations():
    relu = get_activation("relu").hermite(4)
    assert relu[:4] == pytest.approx([1 / math.sqrt(2 * math.pi), 0.5, 1 / math.sqrt(4 * math.pi), 0.0], abs=1e-10)
    assert get_activation("phi2").hermite(4) == pytest.approx([0, 1, 1, 0, 0])
    assert get_activation("phi4").hermite() == pytest.approx([0, 1, 0, 0, 1])
    # relu' is the step function: mu_0 = 1/2, mu_1 = phi(0) = 1/sqrt(2 pi)
    assert get_activation("relu'").hermite(1) == pytest.approx([0.5, 1 / math.sqrt(2 * math.pi)], abs=1e-10)
    # exact derivative of a Hermite sum: h_l' = sqrt(l) h_{l-1}
    assert get_activation("phi4'").hermite() == pytest.approx([1, 0, 0, 2])
    assert get_activation("0.5*h1-h2").hermite() == pytest.approx([0, 0.5, -1])
    assert get_activation("h0+h3").hermite() == pytest.approx([1, 0, 0, 1])


def test_numerical_coefficients_recover_any_hermite_sum():
    coefs = [0.3, -0.2, 0.0, 0.7, 0.1, 0.0, 0.05]
    act = hermite_activation(coefs)
    assert hermite_coefficients(act.fn, 8) == pytest.approx(coefs + [0, 0], abs=1e-10)
    assert act.second_moment() == pytest.approx(sum(c * c for c in coefs))
    tanh = get_activation("tanh")
    assert np.sum(tanh.hermite(60) ** 2) == pytest.approx(tanh.second_moment(), rel=1e-6)


@pytest.mark.parametrize("spec", ["swish", "h1+", "2*hx", [np.nan, 1.0], 7])
def test_unknown_or_bad_activation_is_a_clear_error(spec):
    with pytest.raises(SpurlabError):
        get_activation(spec)


# ------------------------------------------------------------------ feature maps
@pytest.mark.parametrize("cls, activation", [(RandomFeatures, "phi4"), (RandomFeatures, "relu"),
                                             (NTKFeatures, "h0+h3"), (NTKFeatures, "relu'")])
def test_blockwise_kernels_equal_the_explicit_feature_map(cls, activation):
    Z, Zq, _ = small_problem(20, 24)
    fm = cls(n_features=150, activation=activation, seed=3, block_size=64).fit(Z)
    K, Kq = fm.gram(Z, Zq)
    Phi, Phi_q = fm.transform(Z), fm.transform(Zq)
    assert Phi.shape == (20, fm.n_params_)
    assert fm.n_params_ == (150 if cls is RandomFeatures else 150 * 24)
    np.testing.assert_allclose(K, Phi @ Phi.T, atol=1e-12)
    np.testing.assert_allclose(Kq, Phi_q @ Phi.T, atol=1e-12)
    again, _ = cls(n_features=150, activation=activation, seed=3, block_size=64).fit(Z).gram(Z, Zq)
    other, _ = cls(n_features=150, activation=activation, seed=4, block_size=64).fit(Z).gram(Z, Zq)
    np.testing.assert_array_equal(K, again)
    assert np.abs(K - other).max() > 1e-3


@pytest.mark.parametrize("cls, activation, k", [(RandomFeatures, "phi2", 60_000), (NTKFeatures, "h0+h1", 8_000)])
def test_wide_feature_maps_approach_the_kernel_limit(cls, activation, k):
    Z, Zq, _ = small_problem(12, 200)
    K, Kq = cls(n_features=k, activation=activation, seed=0).fit(Z).gram(Z, Zq)
    K_lim, Kq_lim = cls(n_features=0, activation=activation).fit(Z).gram(Z, Zq)
    scale = np.abs(np.diag(K_lim)).mean()
    assert np.abs(K - K_lim).max() / scale < 0.05
    assert np.abs(Kq - Kq_lim).max() / scale < 0.05


def test_feature_map_input_errors():
    fm = RandomFeatures(10, "phi2")
    with pytest.raises(SpurlabError, match="not fitted"):
        fm.gram(np.ones((3, 4)))
    fm.fit(np.ones((3, 4)))
    with pytest.raises(SpurlabError, match="columns"):
        fm.gram(np.ones((3, 5)))
    with pytest.raises(SpurlabError, match="NaN"):
        fm.gram(np.full((3, 4), np.nan))
    with pytest.raises(SpurlabError, match="explicit"):
        RandomFeatures(0, "phi2").fit(np.ones((3, 4))).transform(np.ones((3, 4)))
    for bad in (-1, 2.5, True):
        with pytest.raises(SpurlabError, match="n_features"):
            NTKFeatures(bad, "h0+h1").fit(np.ones((3, 4)))


# ------------------------------------------------------------------ the identity
@pytest.mark.parametrize("fm", [RandomFeatures(600, "phi2", seed=1), NTKFeatures(20, "h0+h3", seed=1),
                                RandomFeatures(600, "relu", seed=2)], ids=["rf-phi2", "ntk-h0+h3", "rf-relu"])
def test_loo_identity_holds_against_refitting_without_the_sample(fm):
    """f(z^s, θ*) − f(z^s, θ*₋₁) = F · (g₁ − f(z₁, θ*₋₁)), θ*₋₁ refit by pseudo-inverse without the sample."""
    Z, Zq, g = small_problem(30, 40)
    fm.fit(Z)
    K, Kq = fm.gram(Z, Zq)
    sol = solve_memorization(K, Kq, g)
    ref = refit_memorization(fm.transform(Z), g, fm.transform(Zq), indices=[0, 7, 29])
    idx = ref["indices"]
    np.testing.assert_allclose(ref["spurious_change"], sol.feature_alignment[idx] * ref["loo_residuals"], atol=1e-8)
    np.testing.assert_allclose(sol.loo_residuals[idx], ref["loo_residuals"], atol=1e-8)
    np.testing.assert_allclose(sol.feature_alignment[idx], ref["feature_alignment"], atol=1e-8)
    # the min-norm interpolator fits every training label
    np.testing.assert_allclose(K @ sol.dual_coef, g, atol=1e-8)


def test_ridge_identities_hold_against_refitting():
    Z, Zq, g = small_problem(25, 30)
    K, Kq = RandomFeatures(400, "phi4", seed=0).fit(Z).gram(Z, Zq)
    ridge = 0.3
    sol = solve_memorization(K, Kq, g, ridge=ridge)
    for i in (0, 11):
        keep = np.arange(len(g)) != i
        dual = np.linalg.solve(K[np.ix_(keep, keep)] + ridge * np.eye(len(g) - 1), g[keep])
        residual = g[i] - K[i, keep] @ dual
        change = sol.spurious_outputs[i] - Kq[i, keep] @ dual
        assert sol.loo_residuals[i] == pytest.approx(residual, abs=1e-10)
        assert change == pytest.approx(sol.feature_alignment[i] * residual, abs=1e-10)


def test_estimator_and_solver_contracts():
    Z, Zq, g = small_problem(20, 30)
    probe = KernelMemorization(RandomFeatures(500, "phi2", seed=0)).fit(Z, g, Zq, Z_test=Zq)
    sol = probe.solution_
    np.testing.assert_allclose(probe.predict(Z), g, atol=1e-8)
    np.testing.assert_allclose(probe.predict(Zq), sol.spurious_outputs, atol=1e-10)
    np.testing.assert_allclose(sol.test_outputs, sol.spurious_outputs, atol=1e-10)
    assert set(sol.metrics(g)) == {"test_acc", "spurious_acc", "memorization_cov", "loo_error", "feature_alignment"}
    with pytest.raises(SpurlabError, match="singular"):
        solve_memorization(np.ones((3, 3)), np.ones((3, 3)), [1.0, -1.0, 1.0])
    with pytest.raises(SpurlabError, match="K_query"):
        solve_memorization(np.eye(3), np.ones((2, 3)), [1.0, -1.0, 1.0])
    with pytest.raises(SpurlabError, match="ridge"):
        solve_memorization(np.eye(3), np.eye(3), [1.0, -1.0, 1.0], ridge=-1)


# ------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("alpha", ALPHAS)
def test_gamma_closed_forms_of_the_paper(alpha):
    assert gamma("rf", "phi2", alpha, "high_n") == pytest.approx(alpha**2)
    assert gamma("rf", "phi4", alpha, "high_n") == pytest.approx(alpha**4)
    assert gamma("rf", "phi2", alpha, "low_n") == pytest.approx((alpha + alpha**2) / 2)
    assert gamma("rf", "phi4", alpha, "low_n") == pytest.approx((alpha + alpha**4) / 2)
    # RF phi2 and NTK h0+h1 share their gammas, so do RF phi4 and NTK h0+h3
    assert gammas("ntk", "h0+h1", alpha) == pytest.approx(gammas("rf", "phi2", alpha))
    assert gammas("ntk", "h0+h3", alpha) == pytest.approx(gammas("rf", "phi4", alpha))
    relu = gammas("rf", "relu", alpha)
    assert alpha**4 < relu["gamma_high_n"] < alpha**2 < relu["gamma_low_n"] < alpha


def test_gamma_errors():
    with pytest.raises(SpurlabError, match="regime"):
        gamma("rf", "phi2", 0.5, "mid_n")
    with pytest.raises(SpurlabError, match="no Hermite energy"):
        gamma("rf", "linear", 0.5, "high_n")
    with pytest.raises(SpurlabError, match="model"):
        gamma("cnn", "phi2", 0.5)


@pytest.mark.parametrize("model, activation, d", [("rf", "phi2", 300), ("ntk", "h0+h1", 200)])
def test_measured_alignment_matches_gamma_when_n_much_larger_than_d(model, activation, d):
    """N/d = 10, infinite width (k >> N)."""
    (row,) = synthetic_setting(model, activation, 0, 0.5, d, [10 * d], 0, seed=0)
    assert row["feature_alignment"] == pytest.approx(row["gamma_high_n"], rel=0.15)
    assert abs(row["feature_alignment"] - row["gamma_high_n"]) < abs(row["feature_alignment"] - row["gamma_low_n"])


@pytest.mark.parametrize("activation", ["phi2", "phi4"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_measured_alignment_matches_gamma_when_n_much_smaller_than_d(activation, alpha):
    """d = 1000, N = 50, random features k = 10 000."""
    (row,) = synthetic_setting("rf", activation, 10_000, alpha, 1000, [50], 0, seed=0)
    assert row["feature_alignment"] == pytest.approx(row["gamma_low_n"], rel=0.15)


# ------------------------------------------------------------------ trends
def test_spurious_accuracy_falls_with_n_and_orders_as_the_paper():
    Ns = [10, 60, 200, 600]
    curves = {(act, a): [r["spurious_acc"] for r in synthetic_setting("rf", act, 0, a, 600, Ns, 200, seed=0)]
              for act, a in [("phi2", 0.5), ("phi4", 0.5), ("phi2", 0.25)]}
    for curve in curves.values():
        assert curve[0] >= 0.95
        assert curve[-1] < curve[0] - 0.2
        assert all(b <= a + 0.03 for a, b in zip(curve, curve[1:]))
    assert curves[("phi2", 0.5)][-1] > curves[("phi4", 0.5)][-1] + 0.02
    assert curves[("phi2", 0.5)][-1] > curves[("phi2", 0.25)][-1] + 0.02


def test_finite_random_features_reproduce_the_limit_spurious_outputs():
    rows = synthetic_setting("rf", "phi2", 8000, 0.5, 200, [20, 100], 100, seed=1)
    limit = synthetic_setting("rf", "phi2", 0, 0.5, 200, [20, 100], 100, seed=1)
    for finite, exact in zip(rows, limit):
        assert finite["spurious_acc"] == pytest.approx(exact["spurious_acc"], abs=0.08)
        assert finite["feature_alignment"] == pytest.approx(exact["feature_alignment"], rel=0.1)
        assert finite["memorization_cov"] == pytest.approx(finite["feature_alignment"] * finite["loo_error"],
                                                           abs=0.1)


# ------------------------------------------------------------------ images and networks
def test_noise_framed_mnist_and_its_spurious_query(data_dir):
    x, y, x_test, y_test = load_binary_images("mnist-1v7", 40, 20, seed=0, data_dir=data_dir)
    assert x.shape == (40, 1, 28, 28) and set(np.unique(y)) == {0, 1} and len(x_test) == 20
    framed, query, test = frame_images(x, x_test, 10, seed=5)
    assert framed.shape == (40, 1, 48, 48) and test.shape == (20, 1, 48, 48)
    assert frame_fraction(framed.shape, 10) == pytest.approx(1 - 784 / 2304)
    core = (slice(None), slice(None), slice(10, 38), slice(10, 38))
    np.testing.assert_array_equal(framed[core], x)
    assert np.all(query[core] == 0)
    frame_mask = np.ones((48, 48), bool)
    frame_mask[10:38, 10:38] = False
    np.testing.assert_array_equal(query[:, :, frame_mask], framed[:, :, frame_mask])


def test_cifar_cats_vs_ships_with_an_8_pixel_frame(tmp_path):
    replicas = pytest.importorskip("spurlab.data.replicas")
    replicas.write_cifar_replica(tmp_path, "cifar10", layout="binary", n_train=250, n_test=100, seed=0)
    x, y, x_test, _ = load_binary_images("cifar10:3/8", 30, 20, seed=0, data_dir=tmp_path)
    framed, query, _ = frame_images(x, x_test, 8, seed=0)
    assert framed.shape == (30, 3, 48, 48) and set(np.unique(y)) <= {0, 1}
    assert np.all(query[:, :, 8:40, 8:40] == 0)


def test_image_dataset_spec_errors():
    with pytest.raises(SpurlabError, match="binary"):
        load_binary_images("digits", 20, 10, seed=0)
    with pytest.raises(SpurlabError, match="unknown dataset"):
        load_binary_images("no-such-data:1/2", 20, 10, seed=0)


def test_fully_connected_net_trains_to_interpolation():
    x, y, _, _ = load_binary_images("digits:1/7", 24, 10, seed=0)
    framed, _, _ = frame_images(x, x[:2], 4, seed=0)
    from spurlab.studies.spurious_memorization.memorization_study import make_net

    net = make_net("fc", framed.shape[1:], seed=0)
    fit = train_to_interpolation(net, framed, signed(y), max_epochs=50, seed=0)
    assert fit["train_acc"] == 1.0 and fit["epochs"] < 50


# ------------------------------------------------------------------ the study
def test_paper_network_setting_ten_classes_cross_entropy_and_step_schedule():
    from spurlab.studies.spurious_memorization.memorization_networks import paper_fit_config, paper_net

    cnn = paper_net("cnn", (1, 48, 48), 10, seed=0)
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in cnn.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [16, 32] and [l.out_features for l in linears] == [256, 10]
    assert linears[0].in_features == 32 * 12 * 12
    cfg = {"nn_epochs": 1000, "nn_batch_size": 1024, "nn_lr": 1e-3, "nn_lr_step": 100, "nn_lr_gamma": 0.8}
    fit = paper_fit_config(cfg, 5000, seed=0, device="cpu")
    assert fit.optimizer == "adam" and fit.max_steps == 1000 * 5 and not fit.stop_when_fitted
    assert (fit.lr_step_epochs, fit.lr_gamma) == (100, 0.8)
    overrides = {"experiments": ["networks"], "nn_dataset": "digits", "frame_width": [2], "nn_N": [20, 200],
                 "nn_epochs": 100, "nn_lr_step": 50, "n_image_test": 200, "nn_models": ["fc"]}
    result, _ = run_study("spurious-memorization", quick=True, device="cpu", overrides=overrides, write=False)
    table = result.frame().pivot_table(index="N", columns="metric", values="value")
    assert np.all(table["chance_acc"] == 0.1) and np.all(table["train_acc"] == 1.0)
    assert table.loc[20, "spurious_acc"] > 0.5 > 0.1                # the frame alone recalls the class
    assert table.loc[200, "spurious_acc"] < table.loc[20, "spurious_acc"]
    assert table.loc[200, "test_acc"] > table.loc[20, "test_acc"]


def test_quick_study_writes_the_contract(tmp_path):
    overrides = {"experiments": ["synthetic", "alignment", "images", "networks"], "d": 60, "N": [5, 20, 40],
                 "rf_k": 400, "ntk_k": 5, "n_test": 50, "alignment_d": 30, "alignment_alpha": [0.25, 0.5],
                 "alignment_n_over_d": [0.2, 2], "image_datasets": ["digits:1/7"], "frame_width": [2],
                 "image_N": [10, 40], "image_rf_k": 200, "n_image_test": 30, "nn_models": ["fc", "cnn"],
                 "nn_N": [12], "nn_epochs": 3}
    result, out = run_study("spurious-memorization", out_dir=tmp_path / "run", quick=True, seed=0,
                            device="cpu", overrides=overrides)
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns[:4]) == ["experiment", "metric", "value", "seed"]
    assert {"model", "activation", "alpha", "N", "k", "dataset"} <= set(frame.columns)
    assert set(frame["experiment"]) == {"synthetic", "alignment", "images", "networks"}
    synthetic = frame[frame["experiment"] == "synthetic"]
    assert set(synthetic["metric"]) == {"test_acc", "spurious_acc", "memorization_cov", "loo_error",
                                        "feature_alignment", "gamma_high_n", "gamma_low_n"}
    # 2 models x 2 activations x 2 alphas x 3 N x 7 metrics
    assert len(synthetic) == 2 * 2 * 2 * 3 * 7
    assert set(frame.loc[frame["experiment"] == "networks", "model"]) == {"fc", "cnn"}
    assert frame["value"].notna().all()
    pngs = {"synthetic_accuracy_vs_n", "memorization_vs_alignment_x_loo", "image_accuracy_vs_n",
            "alignment_vs_alpha", "alignment_vs_n_over_d"}
    assert {p.stem for p in out.glob("*.png")} == pngs
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["d"] == 60 and manifest["study"] == "spurious-memorization"
    assert not result.headline.empty


@pytest.mark.parametrize("overrides, message", [
    ({"alpha": [0.5, 1.2]}, "alpha"),
    ({"rf_k": 100, "N": [10, 500]}, "rf_k"),
    ({"experiments": ["synthetic", "nope"]}, "experiment"),
    ({"rf_activations": ["swish"]}, "activation"),
    ({"image_norm": "zscore"}, "image_norm"),
    ({"query": "other"}, "query"),
])
def test_bad_study_configs_are_clear_errors(overrides, message):
    with pytest.raises(SpurlabError, match=message):
        run_study("spurious-memorization", quick=True, overrides=overrides, write=False)
