"""feature-contamination: two-layer model and trainer, contamination probes, distillation, the study."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from spurlab.data.synthetic import structured_features
from spurlab.errors import SpurlabError
from spurlab.models.two_layer import ACTIVATION_NAMES, TwoLayerNet, two_layer_forward
from spurlab.probes.contamination import (LinearProbe, activation_asymmetry,
                                          background_probe_accuracy, background_variance_share, border_mask,
                                          colour_response, core_background_norms)
from spurlab.studies.study_base import apply_overrides, get_study, run_study
from spurlab.train.engines.distill import FeatureOutput, RepresentationDistiller, probe_accuracies, representations
from spurlab.utils import signed_labels
from spurlab.train.engines.two_layer_trainer import TwoLayerTrainer, loss_values, two_layer_gradients

STUDY = "feature-contamination"
# the theory setting at 1/40 of the steps and 40x the learning rate (same lr x steps = 20)
THEORY = {"experiments": ["dynamics", "activations", "shift"], "activations": ["relu", "identity"],
          "steps": 500, "lr": 0.04, "log_every": 50}


def metric(frame: pd.DataFrame, experiment: str, name: str, **where) -> pd.Series:
    sub = frame[(frame["experiment"] == experiment) & (frame["metric"] == name)]
    for key, value in where.items():
        sub = sub[sub[key] == value]
    return sub.sort_values([c for c in ("step", "shift_scale") if sub[c].notna().any()] or ["value"])["value"]


# ------------------------------------------------------------------ model and trainer
@pytest.mark.parametrize("loss", ["hinge", "logistic", "mse"])
def test_hand_written_gradients_match_autograd(loss):
    net = TwoLayerNet(12, 10, list(ACTIVATION_NAMES), seed=list(range(6)), frozen_output=False)
    x, y = torch.randn(40, 12), torch.sign(torch.randn(40))
    leaves = [p.detach().clone().requires_grad_(True) for p in (net.weight, net.bias, net.output)]
    loss_values(two_layer_forward(x, *leaves, net.activations), y, loss).mean(dim=1).sum().backward()
    grads = two_layer_gradients(x, y, net.weight.detach(), net.bias.detach(), net.output.detach(),
                                net.activations, loss, output_grad=True)
    for grad, leaf in zip(grads, leaves):
        torch.testing.assert_close(grad, leaf.grad, rtol=1e-4, atol=1e-7)


def test_stacked_replicas_train_exactly_like_single_networks():
    data = structured_features(200, d_in=96, seed=3)
    stacked = TwoLayerNet(96, 32, ["relu", "tanh"], seed=[5, 6])
    TwoLayerTrainer(steps=60, lr=0.05, log_every=30, device="cpu").fit(stacked, data.x, data.y)
    single = TwoLayerNet(96, 32, "tanh", seed=6)
    TwoLayerTrainer(steps=60, lr=0.05, log_every=30, device="cpu").fit(single, data.x, data.y)
    torch.testing.assert_close(stacked.replica(1).weight, single.weight)
    assert single(torch.zeros(3, 96)).shape == (3,) and stacked(torch.zeros(3, 96)).shape == (2, 3)
    assert stacked.features(torch.zeros(3, 96)).shape == (2, 3, 32)


def test_row_space_fast_path_is_the_same_sgd_trajectory():
    train = structured_features(300, seed=0)
    ood = structured_features(300, shift_scale=2.0, seed=1, transform=train.transform)
    runs = []
    for fast in (True, False):
        net = TwoLayerNet(256, 64, ["relu", "identity"], seed=1)
        trainer = TwoLayerTrainer(steps=150, lr=0.02, log_every=50, use_row_space=fast, device="cpu")
        trainer.fit(net, train.x, train.y, eval_sets={"ood": (ood.x, ood.y)})
        runs.append((net.weight.detach().clone(), trainer))
    assert runs[0][1].row_space_rank_ == 64 and runs[1][1].row_space_rank_ is None
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=2e-5)
    np.testing.assert_allclose(runs[0][1].history_["ood_loss"], runs[1][1].history_["ood_loss"], atol=1e-4)
    adam = TwoLayerTrainer(optimizer="adam", steps=5, log_every=5, device="cpu")
    assert adam.fit(TwoLayerNet(256, 8), train.x, train.y).row_space_rank_ is None  # Adam is not rotation-invariant


def test_trainer_history_output_layer_and_minibatches():
    data = structured_features(120, d_in=80, seed=2)
    frozen = TwoLayerNet(80, 16, "gelu", seed=0)
    assert "output" not in dict(frozen.named_parameters())
    np.testing.assert_allclose(frozen.output[0].numpy(), np.r_[np.ones(8), -np.ones(8)] / 16)
    free = TwoLayerNet(80, 16, "gelu", seed=0, frozen_output=False)
    trainer = TwoLayerTrainer(loss="logistic", optimizer="adamw", lr=1e-2, steps=45, batch_size=32, log_every=20,
                              device="cpu").fit(free, data.x, data.y)
    assert trainer.history_["step"].tolist() == [0, 20, 40, 45]
    assert not torch.allclose(free.output, frozen.output)
    assert trainer.history_["train_loss"].iloc[-1] < trainer.history_["train_loss"].iloc[0]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(SpurlabError, match="activation"):
        TwoLayerNet(4, 4, "swish")
    with pytest.raises(SpurlabError, match="replicas"):
        TwoLayerNet(4, 4, ["relu", "tanh"], seed=[0, 1, 2])
    with pytest.raises(SpurlabError, match="binary"):
        signed_labels(np.array([0, 1, 2]))
    with pytest.raises(SpurlabError, match="loss"):
        TwoLayerTrainer(loss="huber").fit(TwoLayerNet(4, 4), np.zeros((4, 4)), np.array([0, 1, 0, 1]))
    with pytest.raises(SpurlabError, match="rows"):
        TwoLayerTrainer(steps=1).fit(TwoLayerNet(4, 4), np.zeros((5, 4)), np.array([0, 1, 0, 1]))
    with pytest.raises(SpurlabError, match="features"):
        TwoLayerNet(4, 4)(torch.zeros(2, 5))


# ------------------------------------------------------------------ probes
def test_contamination_probes_on_known_inputs():
    T = np.eye(6, 4)  # feature coordinates are the first four input coordinates
    weight = torch.zeros(1, 2, 6)
    weight[0, :, 0] = 3.0  # core block: norm 3 for both neurons
    weight[0, 0, 3] = 4.0  # background block: norm 4 for neuron 0, 0 for neuron 1
    core, bg = core_background_norms(weight, T, d_core=2)
    assert core.item() == pytest.approx(3.0) and bg.item() == pytest.approx(2.0)
    preact = torch.tensor([[[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0]]])  # 4 examples, 2 neurons
    y = torch.tensor([1.0, 1.0, -1.0, -1.0])
    # neuron 0 (a > 0) fires on +1 only: +1; neuron 1 (a < 0) fires on 1/2 of +1, all of -1: -(0.5 - 1) = +0.5
    assert activation_asymmetry(preact, y, torch.tensor([[0.5, -0.5]])).item() == pytest.approx(0.75)


def test_background_probes():
    rng = np.random.default_rng(0)
    domains = np.repeat(np.arange(3), 100)
    separated = rng.normal(size=(300, 5)) + 4.0 * np.eye(5)[domains]
    noise = rng.normal(size=(300, 5))
    assert background_probe_accuracy(separated, domains) > 0.95
    assert background_probe_accuracy(noise, domains) < 0.5
    assert background_probe_accuracy(separated, domains, kind="logistic") > 0.95
    assert background_variance_share(separated, domains) > 0.5 > background_variance_share(noise, domains)
    probe = LinearProbe().fit(separated, domains)
    assert probe.score(separated, domains) > 0.95
    with pytest.raises(SpurlabError, match="parameter .kind. must be one of"):
        background_probe_accuracy(separated, domains, kind="svm")
    with pytest.raises(SpurlabError, match="not fitted"):
        LinearProbe().predict(separated)


def test_colour_response_sees_only_the_masked_region():
    layer = nn.Linear(3 * 6 * 6, 2, bias=True)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight.view(2, 3, 6, 6)[0, 0, 0, 0] = 2.0  # red channel, a border pixel
        layer.weight.view(2, 3, 6, 6)[1, 0, 3, 3] = 5.0  # red channel, an inner pixel
    mask = border_mask(6, 6, 1)
    assert mask.sum() == 20 and not mask[1:5, 1:5].any()
    assert colour_response(layer, (3, 6, 6), mask, np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)  # |2| and 0


# ------------------------------------------------------------------ distillation code
def test_distiller_fits_any_module_and_checks_widths():
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(256, 10)).astype(np.float32)
    teacher = nn.Sequential(nn.Linear(10, 6), nn.Tanh())
    student = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 6))
    distiller = RepresentationDistiller(epochs=40, lr=3e-3, batch_size=64, device="cpu").fit(teacher, student, x)
    assert distiller.history_["mse"].iloc[-1] < 0.2 * distiller.history_["mse"].iloc[0]
    assert representations(student, x, device="cpu").shape == (256, 6)
    with pytest.raises(SpurlabError, match="dimensions"):
        RepresentationDistiller(epochs=1, device="cpu").fit(teacher, nn.Linear(10, 4), x)
    with pytest.raises(SpurlabError, match="features"):
        FeatureOutput(nn.Linear(3, 3))
    y = (x[:, 0] > 0).astype(int)
    accs = probe_accuracies(x, y, {"same": (x, y)})
    assert accs["same"] > 0.95


# ------------------------------------------------------------------ the study: what the paper predicts
@pytest.fixture(scope="module")
def theory_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fc-theory")
    result, path = run_study(STUDY, out_dir=out, quick=True, seed=0, device="cpu", overrides=THEORY)
    return result.frame(), path


def test_relu_learns_background_features_and_linear_does_not(theory_run):
    frame, _ = theory_run
    bg = {a: metric(frame, "dynamics", "bg_norm", activation=a) for a in ("relu", "identity")}
    assert bg["relu"].iloc[-1] > 1.5 * bg["relu"].iloc[0]  # grows (paper: 0.20 -> 0.36)
    assert bg["identity"].iloc[-1] < 0.9 * bg["identity"].iloc[0]  # shrinks (paper: 0.20 -> 0.17)
    for act in ("relu", "identity"):  # both learn the core features
        core = metric(frame, "dynamics", "core_norm", activation=act)
        assert core.iloc[-1] > 2 * core.iloc[0]
    final = {(a, m): metric(frame, "activations", m, activation=a).iloc[0]
             for a in ("relu", "identity") for m in ("id_loss", "ood_loss")}
    assert final["relu", "id_loss"] < 0.02 and final["relu", "ood_loss"] >= 10 * final["relu", "id_loss"]
    assert final["identity", "ood_loss"] == pytest.approx(final["identity", "id_loss"], abs=0.01)


def test_activation_asymmetry_rises_for_relu(theory_run):
    frame, _ = theory_run
    asym = metric(frame, "dynamics", "activation_asymmetry", activation="relu")
    assert abs(asym.iloc[0]) < 0.1 and asym.iloc[-1] > 0.6


def test_relu_fails_under_larger_background_shift(theory_run):
    frame, _ = theory_run
    relu = metric(frame, "shift", "ood_acc", activation="relu").to_numpy()
    linear = metric(frame, "shift", "ood_acc", activation="identity").to_numpy()
    assert len(relu) == 5 and np.all(linear > 0.99)
    assert np.all(relu[1:] < linear[1:] - 0.3)  # s >= 2: well below the linear network


def test_authors_toy_setting_is_reported_beside_the_theory_setting_with_its_fit():
    """toy.py's defaults (non-linear core, logistic loss, AdamW, free output layer) grow the background
    weights of tanh more than ReLU's; runs that do not fit their training set are named in the notes."""
    overrides = {"experiments": ["activations", "activations_toy"], "n": 300, "n_test": 300, "d_core": 8,
                 "d_bg": 8, "d_in": 64, "width": 64, "steps": 300, "lr": 0.04, "log_every": 100, "toy_steps": 200,
                 "activations": ["relu", "sigmoid"], "toy_activations": ["relu", "tanh"]}
    result, _ = run_study(STUDY, quick=True, seed=0, device="cpu", overrides=overrides, write=False)
    frame = result.frame()
    toy = frame[frame.experiment == "activations_toy"].pivot_table(index="activation", columns="metric",
                                                                  values="value")
    assert set(toy.index) == {"relu", "tanh"} and "train_acc" in toy
    assert np.all(toy["bg_norm"] > 2 * toy["bg_norm_init"])        # every toy network grows its background
    assert toy.loc["tanh", "bg_norm"] > toy.loc["relu", "bg_norm"]
    theory = frame[frame.experiment == "activations"].pivot_table(index="activation", columns="metric",
                                                                 values="value")
    assert "train_acc" in theory and set(theory.index) == {"relu", "sigmoid"}
    for experiment, table in (("activations", theory), ("activations_toy", toy)):
        for act, row in table.iterrows():
            unfitted = row["train_acc"] < 0.99 or row["train_loss"] > 0.1
            assert unfitted == any(n.startswith(f"UNDERTRAINED ({experiment}): {act} ") for n in result.notes)
    headline = result.headline
    assert {"activations_toy"} <= set(headline.experiment)
    assert not headline[(headline.setting == "sigmoid") & (headline.metric == "train_acc")].empty


def test_study_writes_the_contract_files(theory_run):
    frame, path = theory_run
    assert list(frame.columns[:4]) == ["experiment", "metric", "value", "seed"]
    assert {"activation", "step", "shift_scale", "role"} <= set(frame.columns)
    assert set(frame["experiment"]) == {"dynamics", "activations", "shift"}
    n_logs = THEORY["steps"] // THEORY["log_every"] + 1
    assert (metric(frame, "dynamics", "bg_norm", activation="relu").size == n_logs)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["study"] == STUDY and manifest["config"]["steps"] == THEORY["steps"]
    for name in ("id_vs_ood_loss", "core_vs_bg_norm", "bg_norm_by_activation", "ood_acc_vs_shift"):
        assert (path / f"{name}.png").stat().st_size > 1000
    assert "Headline numbers" in (path / "report.html").read_text()
    assert pd.read_csv(path / "results.csv").shape[0] == len(frame)


def test_distilled_student_matches_in_distribution_but_not_out(data_dir):
    result, _ = run_study(STUDY, quick=True, seed=0, device="cpu", write=False,
                          overrides={"experiments": ["distillation"], "data_dir": str(data_dir)})
    table = result.frame().pivot_table(index="role", columns="metric", values="value")
    teacher, student = table.loc["teacher"], table.loc["student"]
    assert student["id_acc"] > 0.8 and abs(student["id_acc"] - teacher["id_acc"]) < 0.04
    assert student["ood_acc"] < teacher["ood_acc"] - 0.15
    assert student["bg_probe_acc"] > teacher["bg_probe_acc"] + 0.05
    assert student["bg_variance_share"] > teacher["bg_variance_share"]
    assert "distillation_table" in result.figures


def test_training_only_padding_leaves_a_red_tint(data_dir):
    result, _ = run_study(STUDY, quick=True, seed=0, device="cpu", write=False,
                          overrides={"experiments": ["padding"], "data_dir": str(data_dir),
                                     "n_train_images": 1500, "n_test_images": 1000, "pad_epochs": 3})
    table = result.frame().pivot_table(index="role", columns="metric", values="value")
    padded, control = table.loc["padded"], table.loc["control"]
    assert control["red_response_ratio"] == pytest.approx(1.0)  # black padding gives no gradient there
    assert padded["red_response_ratio"] > 3.0
    assert padded["feature_red_shift"] > 5 * control["feature_red_shift"]
    assert padded["acc_plain"] < padded["acc_padded"]  # removing the training-only padding hurts


def test_study_config_is_validated():
    study = get_study(STUDY)
    quick, full = study.default_config(quick=True), study.default_config(quick=False)
    assert full["steps"] == 20_000 and full["lr"] == 1e-3
    assert quick["steps"] * quick["lr"] == pytest.approx(full["steps"] * full["lr"])  # same gradient-flow time
    study.validate(quick)
    for bad in ({"experiments": ["dynamics", "nope"]}, {"activations": ["softplus"]}, {"n_domains": 11},
                {"d_core": 250}, {"shift_scales": [0.0]}, {"teacher_view": "oracle"}, {"steps": 0},
                {"experiments": []}):
        with pytest.raises(SpurlabError):
            study.validate(apply_overrides(quick, bad))
    with pytest.raises(SpurlabError, match="unknown study parameter"):
        apply_overrides(quick, ["nosuchkey=1"])


def test_cli_runs_the_study_with_overrides(tmp_path):
    from typer.testing import CliRunner

    from spurlab.cli import app

    out = tmp_path / "run"
    args = ["study", STUDY, "--quick", "--device", "cpu", "--out", str(out), "--set", "experiments=shift",
            "--set", "activations=relu", "--set", "steps=20", "--set", "log_every=10", "--set", "width=16"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out / "results.csv")
    assert set(frame["experiment"]) == {"shift"} and set(frame["activation"]) == {"relu", "identity"}
    assert sorted(frame["shift_scale"].unique()) == [1.0, 2.0, 4.0, 8.0, 16.0]
    bad = CliRunner().invoke(app, ["study", STUDY, "--quick", "--set", "activations=swish"])
    assert bad.exit_code == 2 and "swish" in bad.output


def test_distiller_streams_batches_from_a_loader():
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    x = torch.randn(256, 10)
    loader = DataLoader(TensorDataset(x, torch.zeros(256)), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    teacher = nn.Sequential(nn.Linear(10, 6), nn.Tanh())
    student = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 6))
    distiller = RepresentationDistiller(epochs=30, lr=3e-3, device="cpu").fit(teacher, student, loader)
    assert distiller.history_["mse"].iloc[-1] < 0.2 * distiller.history_["mse"].iloc[0]
    assert representations(student, loader, device="cpu").shape == (256, 6)
    with pytest.raises(SpurlabError, match="teacher_x"):
        RepresentationDistiller(epochs=1, device="cpu").fit(teacher, student, loader, teacher_x=x)
