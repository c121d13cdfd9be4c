"""CUDA paths, checked against the same computation on the CPU (opt-in: skipped without a GPU).

Every test runs a tiny version of a GPU path on ``GPU`` (``cuda``) and, where the
computation is deterministic, compares it with the CPU: same seeds, same initial
weights (models are built on the CPU), tolerances for float32 reordering. Paths
that draw their randomness on the device (random-feature weights, SGD batches of
:class:`BatchedLinearGD`) differ from the CPU by design; there the tests check the
contract (shapes, finite values, what the computation must achieve) instead.

To exercise this file without a GPU (CPU against CPU)::

    SPURLAB_TEST_GPU_DEVICE=cpu pytest -q tests/test_cuda_paths.py
"""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from spurlab import FailureDirections
from spurlab.data.planted import encoder_view, planted_subgroups
from spurlab.data.dataset_registry import load_splits
from spurlab.data.synthetic import gaussian_core_spurious, signed, spurious_query, structured_features
from spurlab.models import make_model, penultimate_features
from spurlab.models.batched_edits import choose_strategy
from spurlab.models.editing import plan_edits
from spurlab.models.batched_edits import evaluate_interventions
from spurlab.models.features import NTKFeatures, RandomFeatures
from spurlab.models.two_layer import TwoLayerNet
from spurlab.probes.contamination import ContaminationTracker
from spurlab.probes.memorization import KernelMemorization, solve_memorization
from spurlab.probes.neurons import CriticalUnitSelector
from spurlab.probes.unit_evidence import UnitSet, build_interventions
from spurlab.studies.study_base import run_study
from spurlab.train.engines.linear_gd import BatchedLinearGD
from spurlab.train.methods.method_base import get_method
from spurlab.train.methods.groupdro import train_groupdro
from spurlab.train.methods.selection import EpochSelector
from spurlab.train.trainer import TrainConfig, fit, predict_logits
from spurlab.train.engines.two_layer_trainer import TwoLayerTrainer

GPU = os.environ.get("SPURLAB_TEST_GPU_DEVICE", "cuda")
ON_CUDA = GPU.startswith("cuda")
pytestmark = [
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                       reason="needs CUDA (SPURLAB_TEST_GPU_DEVICE=cpu runs these paths on the CPU)"),
    pytest.mark.usefixtures("one_thread"),
]


@pytest.fixture
def full_precision():
    """TF32 off, so comparisons of trained values see device placement and float32 reordering only."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def digits():
    """spurious-digits: 3x8x8 images, 1007 training examples in four groups (two of 25)."""
    return load_splits("spurious-digits", seed=0)


def on_device(tensor: torch.Tensor, device: str) -> bool:
    return tensor.device.type == torch.device(device).type


# ------------------------------------------------------------------ BatchedLinearGD
def linear_problem(n=40, d=6, runs=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=d) > 0).astype(int)  # separable
    weights = rng.integers(1, 4, size=(runs, n)).astype(float)
    return x, y, weights


@pytest.mark.parametrize("parametrization", ["primal", "kernel"])
@pytest.mark.parametrize("per_run_design", [False, True])
def test_linear_gd_full_batch_matches_cpu(parametrization, per_run_design):
    x, y, weights = linear_problem()
    X = np.stack([x, 1.5 * x, -x]) if per_run_design else x
    kwargs = dict(lr=0.5, n_steps=300, n_logged=8, fit_intercept=True, parametrization=parametrization)
    cpu = BatchedLinearGD(device="cpu", **kwargs).fit(X, y, weights)
    gpu = BatchedLinearGD(device=GPU, **kwargs).fit(X, y, weights)
    assert gpu.parametrization_ == parametrization and gpu.coef_path_.shape == cpu.coef_path_.shape
    np.testing.assert_allclose(gpu.coef_path_, cpu.coef_path_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(gpu.loss_path_, cpu.loss_path_, rtol=1e-7, atol=1e-12)
    np.testing.assert_array_equal(gpu.predict(x), cpu.predict(x))


@pytest.mark.parametrize("per_run_design", [False, True])
def test_linear_gd_sgd_keeps_the_contract(per_run_design):
    x, y, weights = linear_problem(runs=2)
    X = np.stack([x, 2.0 * x]) if per_run_design else x
    # 600 steps > 2 chunks of SGD draws; GPU batches come from the GPU generator, so values differ from the CPU
    model = BatchedLinearGD(lr=0.5, n_steps=600, n_logged=6, batch_size=5, device=GPU, seed=3).fit(X, y, weights)
    assert model.coef_path_.shape == (2, len(model.steps_), 6) and np.isfinite(model.coef_path_).all()
    assert (model.loss_path_[:, -1] < 0.3 * model.loss_path_[:, 0]).all()
    assert (model.predict(x) == 2 * y - 1).mean() > 0.9
    again = BatchedLinearGD(lr=0.5, n_steps=600, n_logged=6, batch_size=5, device=GPU, seed=3).fit(X, y, weights)
    np.testing.assert_allclose(again.coef_path_, model.coef_path_, rtol=1e-9, atol=1e-12)  # seeded on the device


# ------------------------------------------------------------------ feature maps and kernel memorization
def gaussian_inputs(n=24, d=12, seed=0):
    data = gaussian_core_spurious(n, d=d, alpha=0.5, seed=seed)
    return data.z, spurious_query(data, "fresh", seed=seed + 1), signed(data.y)


@pytest.mark.parametrize("make", [lambda dev: RandomFeatures(0, "phi2", device=dev),
                                  lambda dev: RandomFeatures(0, "relu", device=dev, limit_degree=12),
                                  lambda dev: NTKFeatures(0, "h0+h1", device=dev)])
def test_limit_kernels_match_cpu(make):
    z, zq, _ = gaussian_inputs()
    K_cpu, Kq_cpu = make("cpu").fit(z).gram(z, zq)
    tensors = make(GPU).fit(z).gram_tensors(z, zq)
    assert all(on_device(t, GPU) and t.dtype == torch.float64 for t in tensors)
    np.testing.assert_allclose(tensors[0].cpu().numpy(), K_cpu, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tensors[1].cpu().numpy(), Kq_cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls, k, activation", [(RandomFeatures, 6000, "phi2"), (NTKFeatures, 2000, "h0+h1")])
def test_finite_feature_maps_approach_the_same_kernel(cls, k, activation):
    z, zq, _ = gaussian_inputs()
    limit = cls(0, activation, device="cpu").fit(z).gram(z)[0]
    gpu = cls(k, activation, seed=1, device=GPU, dtype="float64", block_size=1024).fit(z)
    K = gpu.gram(z, zq)[0]
    phi = gpu.transform(z)  # the explicit features reproduce the blockwise kernel
    assert phi.shape == (len(z), gpu.n_params_)
    np.testing.assert_allclose(phi @ phi.T, K, rtol=1e-8, atol=1e-10)
    # the GPU draws its own weights (device generator): compare with the kernel limit, not the CPU draw
    assert np.linalg.norm(K - limit) < 0.2 * np.linalg.norm(limit)  # CPU draws: at most 0.09 over 20 seeds
    assert cls(k, activation, device=GPU).fit(z).dtype_ == (torch.float32 if ON_CUDA else torch.float64)


def test_kernel_memorization_matches_cpu_and_takes_device_tensors():
    z, zq, g = gaussian_inputs(n=30, d=16)
    cpu = KernelMemorization(RandomFeatures(0, "phi2", device="cpu")).fit(z, g, zq, z[:5])
    gpu = KernelMemorization(RandomFeatures(0, "phi2", device=GPU)).fit(z, g, zq, z[:5])
    for name in ("dual_coef", "loo_residuals", "feature_alignment", "spurious_outputs", "test_outputs"):
        np.testing.assert_allclose(getattr(gpu.solution_, name), getattr(cpu.solution_, name), rtol=1e-7, atol=1e-9)
    as_tensors = [torch.as_tensor(a, device=GPU) for a in (z, g, zq)]
    from_tensors = KernelMemorization(RandomFeatures(0, "phi2", device=GPU)).fit(*as_tensors)
    np.testing.assert_allclose(from_tensors.solution_.dual_coef, cpu.solution_.dual_coef, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gpu.predict(z[:3]), cpu.predict(z[:3]), rtol=1e-7, atol=1e-9)
    K, Kq = (torch.as_tensor(a, device=GPU) for a in RandomFeatures(0, "phi2", device="cpu").fit(z).gram(z, zq))
    direct = solve_memorization(K, Kq, g)  # kernels already on the device, targets as numpy
    np.testing.assert_allclose(direct.feature_alignment, cpu.solution_.feature_alignment, rtol=1e-7, atol=1e-9)
    finite = KernelMemorization(RandomFeatures(3000, "phi2", device=GPU, dtype="float64")).fit(z, g, zq)
    assert np.isfinite(finite.solution_.feature_alignment).all() and 0 < finite.solution_.mean_alignment < 1


# ------------------------------------------------------------------ two-layer contamination trainer
def contamination_data(seed=0):
    train = structured_features(120, d_core=6, d_bg=6, d_in=40, seed=seed)
    test = structured_features(60, d_core=6, d_bg=6, d_in=40, shift_scale=2.0, seed=seed + 1,
                               transform=train.transform)
    return train, test


def train_two_layer(device, data, as_tensors=False, **options):
    train, test = data
    x, y = (torch.as_tensor(train.x, device=device), torch.as_tensor(train.y, device=device)) if as_tensors \
        else (train.x, train.y)
    model = TwoLayerNet(40, 16, activation=["relu", "gelu", "tanh"], seed=[0, 1, 2],
                        frozen_output=options.pop("frozen_output", True))
    trainer = TwoLayerTrainer(steps=120, log_every=40, lr=0.05, device=device, **options)
    trainer.fit(model, x, y, eval_sets={"ood": (test.x, test.y)},
                track=ContaminationTracker(train.transform, 6, x, y))
    return trainer


@pytest.mark.parametrize("options", [{"optimizer": "sgd"},  # full batch, row-space fast path
                                     {"optimizer": "sgd", "use_row_space": False, "batch_size": 32},
                                     {"optimizer": "adam", "batch_size": 32, "frozen_output": False}],
                         ids=["sgd-row-space", "sgd-minibatch", "adam-trainable-output"])
def test_two_layer_trainer_matches_cpu(options, full_precision):
    data = contamination_data()
    cpu = train_two_layer("cpu", data, **dict(options))
    gpu = train_two_layer(GPU, data, **dict(options))
    assert on_device(gpu.model_.weight, GPU) and gpu.row_space_rank_ == cpu.row_space_rank_
    numeric = [c for c in cpu.history_.columns if c not in ("activation", "seed", "step", "replica")]
    assert {"core_norm", "bg_norm", "activation_asymmetry", "ood_acc"} <= set(numeric)
    for column in numeric:  # counts of signs (accuracies, asymmetry) may move by one example near zero
        atol = 0.02 if column.endswith("_acc") else 3e-3 if column == "activation_asymmetry" else 2e-4
        np.testing.assert_allclose(gpu.history_[column], cpu.history_[column], rtol=2e-3, atol=atol,
                                   err_msg=column)


def test_two_layer_trainer_takes_device_tensors(full_precision):
    data = contamination_data()
    arrays = train_two_layer(GPU, data, optimizer="sgd")
    tensors = train_two_layer(GPU, data, as_tensors=True, optimizer="sgd")
    pd.testing.assert_frame_equal(tensors.history_, arrays.history_, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ failure directions
@pytest.fixture(scope="module")
def planted_embeddings():
    splits = planted_subgroups(n_train=300, n_val=400, n_pool=10, n_test=10, p=0.9, core=0.6, spurious=2.0,
                               dim=16, seed=0)
    val, train = splits["val"], splits["train"]
    emb_val, emb_train = encoder_view(val, seed=0), encoder_view(train, seed=0)
    wrong = (val.a != val.y) & (np.random.default_rng(0).random(len(val)) < 0.8)  # errors on the minority
    wrong |= np.random.default_rng(1).random(len(val)) < 0.05
    return emb_val, val.y, np.where(wrong, 1 - val.y, val.y), emb_train


def test_failure_directions_match_cpu(planted_embeddings):
    emb, labels, preds, train_emb = planted_embeddings
    exact = dict(Cs=(0.01, 0.1, 1.0), dtype="float64", tol=1e-10, max_iter=100)
    cpu = FailureDirections(device="cpu", **exact).fit(emb, labels, preds, train_embeddings=train_emb)
    gpu = FailureDirections(device=GPU, **exact).fit(emb, labels, preds, train_embeddings=train_emb)
    np.testing.assert_array_equal(gpu.C_, cpu.C_)
    np.testing.assert_allclose(gpu.cv_scores_, cpu.cv_scores_, atol=1e-9)
    np.testing.assert_allclose(gpu.coef_, cpu.coef_, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gpu.decision_function(emb, labels), cpu.decision_function(emb, labels),
                               rtol=1e-5, atol=1e-6)
    fast = FailureDirections(device=GPU).fit(emb, labels, preds, train_embeddings=train_emb)  # float32 default
    dv, reference = fast.decision_function(emb, labels), cpu.decision_function(emb, labels)
    if np.array_equal(fast.C_, cpu.C_):
        assert np.corrcoef(dv, reference)[0, 1] > 0.999
    assert np.isfinite(dv).all() and (fast.predict(emb, labels) == (preds != labels)).mean() > 0.8


# ------------------------------------------------------------------ the trainer, methods
def test_trainer_fit_predict_smallcnn_matches_cpu(digits, full_precision):
    train, val = digits["train"], digits["val"]
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(train))
    results = {}
    for device in ("cpu", GPU):
        model = make_model("cnn", train.input_shape, 2, seed=0, channels=(8, 16))
        cfg = TrainConfig(epochs=2, lr=0.05, batch_size=64, optimizer="sgd", seed=0, device=device,
                          checkpoint_every=1)
        selector = EpochSelector("worst_group", val, device)
        result = fit(model, train.x, train.y, cfg, sample_weights=weights, on_epoch_end=selector)
        selector.restore(model)
        assert all(on_device(p, device) for p in model.parameters())
        assert all(t.device.type == "cpu" for ckpt in result.checkpoints.values() for t in ckpt.values())
        results[device] = (result, predict_logits(model, val.x, device=device),
                           penultimate_features(model, val.x, device=device), selector.best_epoch)
    (cpu, cpu_logits, cpu_feats, cpu_best), (gpu, gpu_logits, gpu_feats, gpu_best) = results["cpu"], results[GPU]
    np.testing.assert_allclose([r["train_loss"] for r in gpu.history], [r["train_loss"] for r in cpu.history],
                               rtol=1e-3)
    # a 1e-6 relative nudge of the initial weights moves single weights by up to 3e-4 after these 32 steps
    for epoch, ckpt in cpu.checkpoints.items():
        for name, value in ckpt.items():
            torch.testing.assert_close(gpu.checkpoints[epoch][name], value, rtol=1e-2, atol=2e-3)
    np.testing.assert_allclose(gpu_logits, cpu_logits, rtol=1e-2, atol=5e-3)
    np.testing.assert_allclose(gpu_feats, cpu_feats, rtol=1e-2, atol=5e-3)
    assert gpu_best == cpu_best


def fit_method(name, device, splits, **hparams):
    return get_method(name, model="cnn", epochs=2, seed=0, device=device, batch_size=64, lr=3e-3, **hparams).fit(splits)


@pytest.mark.parametrize("name, hparams", [("groupdro", {"eta": 0.1}),
                                           ("pruned_contrastive", {"finetune_epochs": 1, "prune_fraction": 0.05})])
def test_robust_methods_match_cpu(digits, full_precision, name, hparams):
    cpu = fit_method(name, "cpu", digits, **hparams)
    gpu = fit_method(name, GPU, digits, **hparams)
    assert gpu.device_ == GPU and all(on_device(p, GPU) for p in gpu.model_.parameters())
    test = digits["test"]
    cpu_eval, gpu_eval = cpu.evaluate(test), gpu.evaluate(test)
    # Adam: a near-zero gradient may take another sign on the device, so compare with some slack
    assert abs(gpu_eval["worst_group_acc"] - cpu_eval["worst_group_acc"]) <= 0.05
    assert (gpu.predict(test.x) == cpu.predict(test.x)).mean() >= 0.95
    loss = "train_loss" if name == "groupdro" else "loss"
    np.testing.assert_allclose([r[loss] for r in gpu.history_ if loss in r],
                               [r[loss] for r in cpu.history_ if loss in r], rtol=0.02)
    if name == "groupdro":
        np.testing.assert_allclose(list(gpu.details_["final_q"].values()), list(cpu.details_["final_q"].values()),
                                   atol=0.02)
    else:
        assert [r["pruned_fraction"] for r in gpu.history_ if "pruned_fraction" in r] == \
            pytest.approx([r["pruned_fraction"] for r in cpu.history_ if "pruned_fraction" in r])


def test_groupdro_resolves_an_auto_device(digits):
    train = digits["train"]
    model = make_model("mlp", train.input_shape, 2, seed=0, hidden=(16,))
    history = train_groupdro(model, train.x, train.y, train.g, train.n_groups, TrainConfig(epochs=1, device="auto"),
                             eta=0.1)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(model.parameters()).device.type == expected and len(history[0]["q"]) == 4


# ------------------------------------------------------------------ critical units and interventions
@pytest.fixture(scope="module")
def flatcnn(digits):
    """A FlatCNN trained for two epochs on the CPU (the same weights are then copied to each device)."""
    train = digits["train"]
    model = make_model("flatcnn", train.input_shape, 2, seed=0, channels=(8, 16))
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    fit(model, train.x, train.y, TrainConfig(epochs=2, lr=3e-3, batch_size=32, seed=0, device="cpu"))
    return model, init


def on(model, device):
    return copy.deepcopy(model).to(device)


SELECTORS = [{"method": "weight_norm", "k": 6, "layers": "conv"},
             {"method": "group_gradient", "k": 6, "group": 1, "n_worst": 500},
             {"method": "magnitude", "fraction": 0.02}]


@pytest.mark.parametrize("options", SELECTORS, ids=[s["method"] for s in SELECTORS])
def test_critical_unit_selectors_match_cpu(digits, flatcnn, options, full_precision):
    model, _ = flatcnn
    cpu = CriticalUnitSelector(**options).fit(on(model, "cpu"), digits["train"])
    gpu = CriticalUnitSelector(**options).fit(on(model, GPU), digits["train"])
    assert set(gpu.scores_) == set(cpu.scores_) and gpu.n_candidates_ == cpu.n_candidates_
    for layer, scores in cpu.scores_.items():
        assert gpu.scores_[layer].device.type == "cpu"
        torch.testing.assert_close(gpu.scores_[layer], scores, rtol=1e-4, atol=1e-7)
    # near-ties may swap places; the kept scores may not
    np.testing.assert_allclose(gpu.units_.scores, cpu.units_.scores, rtol=1e-4, atol=1e-7)
    if options["method"] != "group_gradient":
        assert gpu.units_.units == cpu.units_.units


@pytest.fixture(scope="module")
def interventions(digits, flatcnn):
    model, init = flatcnn
    channels = CriticalUnitSelector("weight_norm", k=4).fit(model).units_
    weights = CriticalUnitSelector("magnitude", fraction=0.01, largest=True).fit(model).units_
    ivs = build_interventions([UnitSet("weight_norm", channels), UnitSet("magnitude", weights)],
                              modes=("zero", "random_init", "random_noise", "rewind"), ks=(1, 3), sigmas=(0.2,),
                              repeats=1, rewinds={2: init}, seed=0)
    channel_ivs = [iv for iv in ivs if iv.units.granularity == "channel"]
    return ivs, channel_ivs


@pytest.mark.parametrize("strategy", ["loop", "shared", "vmap", "auto"])
def test_evaluate_interventions_strategies_match_cpu(digits, flatcnn, interventions, strategy, full_precision):
    model, _ = flatcnn
    ds = digits["train"]
    ivs = interventions[1] if strategy == "shared" else interventions[0]  # shared takes channel edits only
    reference = evaluate_interventions(on(model, "cpu"), ivs, ds.x, ds.y, ds.g, ds.n_groups, strategy="loop")
    gpu_model = on(model, GPU)
    saved = {k: v.detach().clone() for k, v in gpu_model.state_dict().items()}
    got = evaluate_interventions(gpu_model, ivs, ds.x, ds.y, ds.g, ds.n_groups, strategy=strategy, batch_size=256,
                                 chunk_size=5)
    assert got.shape == reference.shape == (len(ivs), 4)
    # float32 reordering may flip the prediction of an example on the boundary: one per group
    np.testing.assert_allclose(got, reference, rtol=0, atol=1.0 / ds.group_counts().min() + 1e-12)
    assert np.abs(got - reference).mean() < 0.01 and np.ptp(reference, axis=0).max() > 0.05
    assert all(torch.equal(saved[k], v) for k, v in gpu_model.state_dict().items())


def test_auto_strategy_batches_the_edits_on_the_device(digits, flatcnn, interventions):
    model, _ = flatcnn
    gpu_model, x = on(model, GPU).eval(), digits["train"].x
    ivs, channel_ivs = interventions
    channel_plans = [plan_edits(gpu_model, iv) for iv in channel_ivs]
    weight_plans = [plan_edits(gpu_model, iv) for iv in ivs if iv.units.granularity == "weight"]
    # auto keeps a strategy only if it reproduces the loop's logits (rtol 1e-3, atol 1e-4) on 4 examples;
    # if this fails on a GPU, TF32 convolutions are a suspect: the check should then run at full fp32
    assert choose_strategy(gpu_model, channel_plans, x) == "shared"
    assert choose_strategy(gpu_model, weight_plans, x) == ("vmap" if ON_CUDA else "loop")


# ------------------------------------------------------------------ the studies' quick runs on the device
STUDY_OVERRIDES = {
    "spurious-memorization": {
        "experiments": ["synthetic", "alignment", "images", "networks"], "d": 60, "N": [5, 20, 40], "rf_k": 400,
        "ntk_k": 5, "n_test": 50, "alignment_d": 30, "alignment_alpha": [0.25, 0.5], "alignment_n_over_d": [0.2, 2],
        "image_datasets": ["digits:1/7"], "frame_width": [2], "image_N": [10, 40], "image_rf_k": 200,
        "n_image_test": 30, "nn_models": ["fc", "cnn"], "nn_N": [12], "nn_epochs": 3},
    "ood-failure-modes": {
        "experiments": ["norm_growth", "geometric", "statistical", "images"], "n_seeds": 1, "norm_ns": [4, 32],
        "D": 100, "geo_n_maj": 60, "geo_n_min": [20, 3], "geo_n_test": 50, "stat_steps": 600, "stat_logged": 10,
        "stat_p": [0.5, 0.9], "stat_batch_size": 4, "image_datasets": ["spurious-digits"],
        "image_models": ["mlp", "cnn"], "image_n_maj": 60, "image_n_min": [10], "image_n_unique": 30,
        "image_p": [0.5, 0.9], "image_norm_ns": [40], "image_n_test": 60, "image_max_steps": 20,
        "image_norm_steps": 5, "image_mlp_hidden": [16], "image_cnn_channels": [4, 8]},
    "feature-contamination": {
        "experiments": ["dynamics", "activations", "shift", "distillation", "padding"], "n": 200, "n_test": 200,
        "d_core": 8, "d_bg": 8, "d_in": 64, "width": 32, "activations": ["relu", "identity"], "steps": 100,
        "lr": 0.04, "log_every": 50, "shift_scales": [1.0, 4.0], "image_dataset": "digits",
        "n_train_images": 400, "n_test_images": 200, "image_model": "cnn", "teacher_epochs": 1,
        "distill_epochs": 1, "pad_epochs": 1},
    "critical-neurons": {
        "dataset": "spurious-digits", "n_train": 500, "erm_epochs": 3, "ks": [1, 2],
        "modes": ["zero", "random_init", "rewind"], "repeats": 1, "rewind_epochs": [1], "n_seeds": 1,
        "framework_epochs": 1, "magnitude_fractions": [0.02]},
    "failure-directions": {
        "dataset": "spurious-digits", "correlation": [0.9], "n_train": 800, "epochs": 2, "k_select": 10,
        "embedders": ["own"], "intervention_embedders": ["own"],
        "interventions": ["erm", "svm_balanced", "confidence", "oracle_groups", "select_svm", "select_confidence"]},
}


@pytest.mark.parametrize("name", list(STUDY_OVERRIDES))
def test_study_quick_run_on_the_device(name, tmp_path):
    result, out = run_study(name, out_dir=tmp_path, quick=True, seed=0, device=GPU, overrides=STUDY_OVERRIDES[name])
    frame = pd.read_csv(out / "results.csv")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"] == GPU and manifest["rows"] == len(frame) > 0
    values = pd.to_numeric(frame["value"], errors="coerce")
    assert not np.isinf(values).any()
    measured = values.notna().groupby([frame["experiment"], frame["metric"]]).any()
    assert measured.all(), f"metrics without any value: {list(measured[~measured].index)}"
    assert (out / "report.html").stat().st_size > 1000
