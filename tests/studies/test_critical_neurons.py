"""Critical neurons: selectors, interventions, batched ablations, the pruned-copy framework, the study."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from spurlab import SpurlabError
from spurlab.models import make_model
from spurlab.models.convnets import FlatCNN, SmallResNet
from spurlab.models.batched_edits import Scorer
from spurlab.models.editing import Intervention, edited, intervene, plan_edits, rewind_reference
from spurlab.models.batched_edits import evaluate_interventions
from spurlab.models.layers import prunable_layers
from spurlab.models.units import CriticalUnits
from spurlab.probes.neurons import find_critical_units
from spurlab.probes.unit_evidence import UnitSet, minority_contrast, unit_evidence
from spurlab.studies.study_base import apply_overrides, get_study, run_study
from spurlab.train.engines.pruned_copy_contrastive import (PrunedContrastiveConfig, compute_masks, nt_xent,
                                                           pruned_contrastive_loss, pruned_fraction,
                                                           train_pruned_contrastive)

torch.set_num_threads(1)


def tiny_cnn(seed=0):
    return make_model("cnn", (3, 12, 12), 2, seed=seed, channels=(4, 6, 8))


def random_images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 2, n)
    a = rng.integers(0, 2, n)
    return x, y, y * 2 + a


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model, saved):
    return all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def single_units(units: CriticalUnits) -> list[CriticalUnits]:
    return [CriticalUnits(units.layers[i:i + 1], units.indices[i:i + 1], units.scores[i:i + 1], units.granularity)
            for i in range(len(units))]


# ------------------------------------------------------------------ selectors
def test_weight_norm_ranks_channels_globally_by_their_norm():
    model = tiny_cnn()
    units = find_critical_units(model, method="weight_norm", k=5)
    norms = [(float(m.weight.detach().flatten(1).norm(dim=1)[c]), name, c)
             for name, m in prunable_layers(model, include_output=False).items()
             for c in range(m.weight.shape[0])]
    expected = sorted(norms, key=lambda t: -t[0])[:5]
    assert units.units == [(name, c) for _, name, c in expected]
    np.testing.assert_allclose(units.scores, [s for s, _, _ in expected], rtol=1e-6)
    assert "head" not in set(units.layers)  # the classifier's output neurons are left out by default
    table = units.table()
    assert list(table["rank"]) == [1, 2, 3, 4, 5] and set(table.columns) >= {"layer", "index", "score"}


def test_layers_option_and_fraction_counts():
    model = tiny_cnn()
    conv_only = find_critical_units(model, method="weight_norm", k=30, layers="conv")
    assert len(conv_only) == 4 + 6 + 8 and set(conv_only.layers) == {"body.0", "body.3", "body.6"}
    n_weights = sum(m.weight.numel() for m in prunable_layers(model).values())
    smallest = find_critical_units(model, method="magnitude", fraction=0.05)
    assert smallest.granularity == "weight" and len(smallest) == math.ceil(0.05 * n_weights)
    all_abs = torch.cat([m.weight.detach().abs().flatten() for m in prunable_layers(model).values()])
    assert smallest.scores.max() <= float(all_abs.sort().values[len(smallest) - 1]) + 1e-9


def test_group_gradient_matches_a_manual_gradient_and_leaves_grads_alone():
    model = tiny_cnn()
    x, y, g = random_images()
    units = find_critical_units(model, (x, y, g), "group_gradient", k=3, group=1, n_worst=5)
    assert model.body[0].weight.grad is None  # the caller's .grad buffers were not used
    idx = np.flatnonzero(g == 1)
    with torch.no_grad():
        losses = F.cross_entropy(model(torch.as_tensor(x[idx])), torch.as_tensor(y[idx]), reduction="none")
    worst = idx[np.argsort(-losses.numpy(), kind="stable")[:5]]
    loss = F.cross_entropy(model(torch.as_tensor(x[worst])), torch.as_tensor(y[worst]), reduction="sum")
    layers = prunable_layers(model, include_output=False)
    grads = torch.autograd.grad(loss, [m.weight for m in layers.values()])
    scores = {(name, c): float(gr.flatten(1).norm(dim=1)[c]) for name, gr in zip(layers, grads)
              for c in range(gr.shape[0])}
    expected = sorted(scores, key=lambda u: -scores[u])[:3]
    assert units.units == expected and units.group == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "nope"}, "unknown selector"),
    ({"method": "weight_norm", "k": 2, "fraction": 0.1}, "not both"),
    ({"method": "magnitude", "granularity": "channel"}, "single weights"),
    ({"method": "weight_norm", "k": 0}, "at least 1"),
    ({"method": "group_gradient", "k": 2}, "needs examples"),
    ({"method": "weight_norm", "layers": ["nope"]}, "no selectable layer"),
])
def test_selector_rejects_bad_input(kwargs, message):
    with pytest.raises(SpurlabError, match=message):
        find_critical_units(tiny_cnn(), **kwargs)


def test_group_gradient_needs_a_present_group():
    x, y, g = random_images()
    with pytest.raises(SpurlabError, match="no examples"):
        find_critical_units(tiny_cnn(), (x, y, g), "group_gradient", group=7)
    with pytest.raises(SpurlabError, match="no group labels"):
        find_critical_units(tiny_cnn(), (x, y), "group_gradient", group=1)


# ------------------------------------------------------------------ interventions
@pytest.mark.parametrize("mode", ["zero", "random_init", "random_noise", "rewind"])
def test_interventions_never_change_the_callers_model(mode):
    model = tiny_cnn()
    reference = state(tiny_cnn(seed=5))
    units = find_critical_units(model, method="weight_norm", k=3)
    saved = state(model)
    copy_ = intervene(model, units, mode, sigma=0.1, reference=reference)
    assert same_state(model, saved) and not same_state(copy_, saved)
    with edited(model, units, mode, sigma=0.1, reference=reference) as m:
        assert m is model and not same_state(model, saved)
    assert same_state(model, saved)
    with pytest.raises(RuntimeError, match="boom"), edited(model, units, mode, sigma=0.1, reference=reference):
        raise RuntimeError("boom")
    assert same_state(model, saved)


def test_intervention_values_per_mode():
    model = tiny_cnn()
    reference = state(tiny_cnn(seed=5))
    units = CriticalUnits(["body.3"], [3], [1.0])
    zero = intervene(model, units, "zero")
    assert torch.all(zero.body[3].weight[3] == 0) and zero.body[3].bias[3] == 0
    torch.testing.assert_close(zero.body[3].weight[2], model.body[3].weight[2])  # other channels untouched
    rewound = intervene(model, units, "rewind", reference=reference)
    torch.testing.assert_close(rewound.body[3].weight[3], reference["body.3.weight"][3])
    noisy_a = intervene(model, units, "random_noise", sigma=0.05, seed=3)
    noisy_b = intervene(model, units, "random_noise", sigma=0.05, seed=3)
    torch.testing.assert_close(noisy_a.body[3].weight, noisy_b.body[3].weight)  # same seed, same edit
    diff = (noisy_a.body[3].weight - model.body[3].weight).detach()
    assert diff[3].abs().sum() > 0 and diff[[0, 1, 2, 4, 5]].abs().sum() == 0
    assert 0.02 < float(diff[3].std()) < 0.1
    weights = find_critical_units(model, method="magnitude", fraction=0.1)
    zeroed = intervene(model, weights, "zero")
    masks = weights.weight_masks(model)
    for layer, mask in masks.items():
        assert torch.all(dict(zeroed.named_modules())[layer].weight[mask] == 0)


def test_intervention_input_errors():
    units = CriticalUnits(["body.3"], [3], [1.0])
    with pytest.raises(SpurlabError, match="sigma > 0"):
        Intervention(units, "random_init", sigma=0)
    with pytest.raises(SpurlabError, match="reference weights"):
        Intervention(units, "rewind")
    with pytest.raises(SpurlabError, match="unknown intervention mode"):
        Intervention(units, "melt")
    with pytest.raises(SpurlabError, match="out of range"):
        intervene(tiny_cnn(), CriticalUnits(["body.3"], [99], [1.0]), "zero")
    with pytest.raises(SpurlabError, match="no checkpoint for epoch"):
        rewind_reference({1: {}, 2: {}}, 5)


def balanced(model, x):
    """Shift the head's bias so a random network predicts both classes (ablations then move accuracy)."""
    with torch.no_grad():
        model.head.bias -= model(torch.as_tensor(x)).median(dim=0).values
    return model


@pytest.mark.parametrize("make", [tiny_cnn, lambda: FlatCNN((3, 12, 12), 2, channels=(4, 6), hidden=8)])
def test_batched_strategies_match_the_loop_and_restore_weights(make):
    x, y, g = random_images(40)
    model = balanced(make(), x)
    every = find_critical_units(model, method="weight_norm", k=100)  # conv channels and hidden neurons
    ivs = [Intervention(u, "zero") for u in single_units(every)]
    ivs += [Intervention(every.top(k), mode, sigma=0.2, seed=k) for k in (2, 7) for mode in ("random_init", "zero")]
    saved = state(model)
    loop = evaluate_interventions(model, ivs, x, y, g, strategy="loop")
    for strategy in ("shared", "vmap", "auto"):
        fast = evaluate_interventions(model, ivs, x, y, g, strategy=strategy, batch_size=16, chunk_size=5)
        np.testing.assert_allclose(fast, loop)
    assert loop.shape == (len(ivs), 4) and same_state(model, saved)
    assert np.any(loop != loop[0])  # the ablations do differ
    plans = [plan_edits(model, iv) for iv in ivs]
    probe = torch.as_tensor(x[:8])
    with torch.no_grad():
        reference = Scorer(model, plans, "loop", 1)
        expected = torch.cat([reference.logits(c, probe) for c in range(len(reference.chunks))])
        for strategy in ("shared", "vmap"):
            scorer = Scorer(model, plans, strategy, chunk_size=4)
            got = torch.zeros_like(expected)
            for c, members in enumerate(scorer.chunks):
                got[members] = scorer.logits(c, probe)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_auto_strategy_handles_residual_nets_and_single_weights():
    torch.manual_seed(0)
    x, y, g = random_images(12)
    model = balanced(SmallResNet(3, 2, widths=(4, 8)).eval(), x)
    units = find_critical_units(model, method="weight_norm", k=4, layers="conv")
    weights = find_critical_units(model, method="magnitude", fraction=0.02, largest=True)
    ivs = [Intervention(u, "zero") for u in single_units(units)] + [Intervention(weights, "zero")]
    loop = evaluate_interventions(model, ivs, x, y, g, strategy="loop")
    np.testing.assert_allclose(evaluate_interventions(model, ivs, x, y, g, strategy="auto"), loop)
    with pytest.raises(SpurlabError, match="unknown strategy"):
        evaluate_interventions(model, ivs, x, y, g, strategy="fast")


# ------------------------------------------------------------------ the framework
def test_nt_xent_prefers_aligned_pairs():
    a = torch.eye(4)
    assert nt_xent(a, a) < nt_xent(a, a[[1, 2, 3, 0]])
    torch.testing.assert_close(nt_xent(a, a * 3.0), nt_xent(a, a))  # cosine similarity: scale free
    by_hand = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 6.0))
    torch.testing.assert_close(nt_xent(a, a, temperature=0.5), by_hand)


@pytest.mark.parametrize("method, granularity", [("magnitude", "weight"), ("gradient", "weight"),
                                                 ("magnitude", "channel")])
def test_mask_has_the_requested_fraction(method, granularity):
    model = FlatCNN((3, 12, 12), 2, channels=(4, 8), hidden=16)
    x, y, _ = random_images(60)
    cfg = PrunedContrastiveConfig(prune_fraction=0.05, mask_method=method, mask_granularity=granularity)
    masks = compute_masks(model, (x, y), cfg)
    total = sum(m.weight.numel() for m in prunable_layers(model).values())
    if granularity == "weight":
        assert pruned_fraction(model, masks) == pytest.approx(math.ceil(0.05 * total) / total)
    else:
        assert 0 < pruned_fraction(model, masks) < 0.2
    if method == "magnitude" and granularity == "weight":
        pruned = torch.cat([model.get_parameter(n)[m == 0].abs().flatten() for n, m in masks.items()])
        kept = torch.cat([model.get_parameter(n)[m == 1].abs().flatten() for n, m in masks.items()])
        assert pruned.max() <= kept.min()  # the globally smallest weights


@pytest.mark.parametrize("representation", ["logits", "features", "softmax"])
def test_gradients_reach_both_paths(representation):
    model = FlatCNN((3, 12, 12), 2, channels=(4, 8), hidden=16)
    x, y, _ = random_images(20)
    cfg = PrunedContrastiveConfig(prune_fraction=0.2, representation=representation)
    masks = compute_masks(model, (x, y), cfg)
    _, parts = pruned_contrastive_loss(model, masks, torch.as_tensor(x), torch.as_tensor(y), cfg)
    name = next(n for n in masks if n.endswith(".weight"))
    param = model.get_parameter(name)
    to_pruned = torch.autograd.grad(parts["to_pruned"], param, retain_graph=True)[0]
    to_full = torch.autograd.grad(parts["to_full"], param, retain_graph=True)[0]
    ce = torch.autograd.grad(parts["ce"], param)[0]
    pruned = masks[name] == 0
    assert to_pruned[~pruned].abs().sum() > 0 and to_full.abs().sum() > 0 and ce.abs().sum() > 0
    assert torch.all(to_pruned[pruned] == 0)  # the pruned path never sees the masked weights
    assert to_full[pruned].abs().sum() > 0  # the full path does


def test_train_pruned_contrastive_history_and_errors():
    model = FlatCNN((3, 12, 12), 2, channels=(4, 8), hidden=16)
    x, y, g = random_images(50)
    before = state(model)
    calls = []
    history = train_pruned_contrastive(model, (x, y), epochs=2, batch_size=16, device="cpu",
                                       on_epoch_end=lambda e, m: calls.append(e) or {"seen": e})
    assert [h["epoch"] for h in history] == [1, 2] and calls == [1, 2] and history[-1]["seen"] == 2
    assert set(history[0]) >= {"loss", "to_pruned", "to_full", "ce", "lr", "pruned_fraction"}
    assert history[0]["pruned_fraction"] == pytest.approx(0.01, abs=0.002)
    assert not same_state(model, before)
    with pytest.raises(SpurlabError, match="representation"):
        train_pruned_contrastive(model, (x, y), representation="pixels")
    with pytest.raises(SpurlabError, match="prune_fraction"):
        train_pruned_contrastive(model, (x, y), prune_fraction=1.5)
    with pytest.raises(SpurlabError, match="unknown pruned-contrastive setting"):
        train_pruned_contrastive(model, (x, y), lamda=0.3)


# ------------------------------------------------------------------ the planted task (seeded)
@pytest.fixture(scope="module")
def planted(data_dir):
    from spurlab.studies.critical_neurons.neurons_study import load_task, minority_of, train_erm

    cfg = get_study("critical-neurons").default_config(quick=True)
    splits, _ = load_task(cfg, seed=0)
    erm = train_erm(cfg, splits["train"], seed=0, device="cpu")
    return splits, erm, minority_of(splits["train"])


def test_erm_memorizes_the_minority_groups(planted):
    from spurlab.probes.unit_evidence import group_accuracies_of

    splits, erm, minority = planted
    train_acc = group_accuracies_of(erm["model"], splits["train"])
    test_acc = group_accuracies_of(erm["model"], splits["test"])
    assert minority == [1, 2] and np.all(train_acc == 1.0)
    assert np.all(train_acc[minority] - test_acc[minority] > 0.15)  # the train - test gap of memorization
    assert np.all(train_acc[[0, 3]] - test_acc[[0, 3]] < 0.05)


def test_editing_few_units_hits_minority_training_accuracy(planted):
    splits, erm, minority = planted
    model, train = erm["model"], splits["train"]
    saved = state(model)
    sets = [UnitSet("weight_norm", find_critical_units(model, train, "weight_norm", k=3, layers="conv"))]
    sets += [UnitSet(f"group_gradient:g{g}", find_critical_units(model, train, "group_gradient", k=3, group=g,
                                                                 layers="conv")) for g in minority]
    evidence = unit_evidence(model, {"train": train}, sets, modes=["zero", "random_init"], ks=[1, 2, 3],
                             sigmas=[0.1], repeats=2, seed=0)
    assert same_state(model, saved)
    contrast = minority_contrast(evidence, minority, "train", max_k=3)
    best = contrast.iloc[0]
    assert best.minority_delta < -0.1 and best.majority_delta > -0.05
    assert best.contrast < -0.1


# ------------------------------------------------------------------ the study contract
def test_study_config_overrides_parse():
    study = get_study("critical-neurons")
    cfg = apply_overrides(study.default_config(True), ["ks=1,2", "modes=zero,rewind", "sigmas=0.01,0.1"])
    assert cfg["ks"] == [1, 2] and cfg["modes"] == ["zero", "rewind"] and cfg["sigmas"] == [0.01, 0.1]
    with pytest.raises(SpurlabError, match="unknown or no selectors"):
        study.validate({**cfg, "selectors": ["psychic"]})
    with pytest.raises(SpurlabError, match="rewind_epochs"):
        study.validate({**cfg, "rewind_epochs": [50]})


def test_study_writes_its_outputs(data_dir, tmp_path):
    overrides = {"n_train": 500, "n_test": 300, "erm_epochs": 3, "ks": [1, 2], "modes": ["zero", "random_init",
                 "rewind"], "repeats": 2, "rewind_epochs": [1], "n_seeds": 1, "framework_epochs": 1,
                 "magnitude_fractions": [0.02]}
    result, out = run_study("critical-neurons", out_dir=tmp_path, quick=True, seed=1, device="cpu",
                            overrides=overrides)
    frame = pd.read_csv(out / "results.csv")
    assert set(frame["experiment"]) == {"evidence", "framework"}
    delta = frame[frame["metric"] == "delta_acc"]
    assert {"group", "split", "selector", "mode", "k", "sigma"} <= set(delta.columns)
    assert set(delta["split"]) == {"train", "test"} and set(delta["mode"]) == {"zero", "random_init", "rewind"}
    assert set(delta["selector"]) == {"weight_norm", "group_gradient", "magnitude"}
    assert delta[delta["mode"] == "random_init"]["sigma"].notna().all()
    assert frame["value"].notna().all()  # no placeholder rows
    gaps = frame[(frame["metric"] == "train_test_gap") & (frame["mode"] != "none")]
    assert len(gaps) == len(delta[delta["split"] == "train"])  # one gap per edited (setting, group)
    fw = frame[frame["experiment"] == "framework"]
    assert {"worst_group_acc", "mean_group_acc", "train_weighted_acc"} <= set(fw["metric"])
    assert set(fw["method"].dropna()) == {"erm", "pruned_contrastive", "erm_start"}
    for name in ("delta_vs_k", "top_units", "framework_curves", "group_gap"):
        assert (out / f"{name}.png").stat().st_size > 1000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["study"] == "critical-neurons" and manifest["rows"] == len(frame)
    assert any("Framework vs ERM" in note for note in result.notes)
