"""Critical neurons: selectors, interventions, batched ablations, the pruned-copy framework, the study."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import functional_call
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
from spurlab.train.engines.pruned_copy_contrastive import (PrunedContrastiveConfig, VacuousPrunedCopyWarning,
                                                           classification_loss, compute_masks, is_vacuous, nt_xent,
                                                           pruned_contrastive_loss, pruned_divergence,
                                                           train_pruned_contrastive)
from spurlab.studies.critical_neurons import neurons_framework as fw

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
    ({"method": "weight_norm", "k": 0}, "parameter .k. must be an integer >= 1"),
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
    with pytest.raises(SpurlabError, match="parameter .strategy. must be one of"):
        evaluate_interventions(model, ivs, x, y, g, strategy="fast")


# ------------------------------------------------------------------ the framework
def test_nt_xent_prefers_aligned_pairs():
    a = torch.eye(4)
    assert nt_xent(a, a) < nt_xent(a, a[[1, 2, 3, 0]])
    torch.testing.assert_close(nt_xent(a, a * 3.0), nt_xent(a, a))  # cosine similarity: scale free
    by_hand = -torch.log(torch.exp(torch.tensor(2.0)) / (torch.exp(torch.tensor(2.0)) + 6.0))
    torch.testing.assert_close(nt_xent(a, a, temperature=0.5), by_hand)


LN_1_PLUS_E_MINUS_1 = math.log(1 + math.exp(-1))


def small_flatcnn():
    return FlatCNN((3, 12, 12), 2, channels=(4, 8), hidden=16)


def masked_forward(model, masks, x):
    return functional_call(model, {n: p * masks[n] if n in masks else p for n, p in model.named_parameters()}, (x,))


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_magnitude_mask_covers_the_hidden_layers_never_the_head(granularity):
    # The authors' Mask prunes the feature extractor's conv/linear weights; the classifier head is outside it.
    model = small_flatcnn()
    x, y, _ = random_images(60)
    masks = compute_masks(model, (x, y), PrunedContrastiveConfig(prune_fraction=0.05, mask_granularity=granularity))
    assert "head.weight" not in masks and not any(n.endswith(".bias") for n in masks)
    total = sum(m.weight.numel() for m in prunable_layers(model, include_output=False).values())
    removed = sum(int((m == 0).sum()) for m in masks.values())
    if granularity == "weight":
        assert removed == math.ceil(0.05 * total)
        pruned = torch.cat([model.get_parameter(n)[m == 0].abs().flatten() for n, m in masks.items()])
        kept = torch.cat([model.get_parameter(n)[m == 1].abs().flatten() for n, m in masks.items()])
        assert pruned.max() <= kept.min()  # the globally smallest weights
    else:
        assert 0 < removed / total < 0.2
    conv_only = compute_masks(model, (x, y), PrunedContrastiveConfig(prune_fraction=0.05, mask_layers="conv"))
    assert set(conv_only) == {"body.0.weight", "body.3.weight"}


def test_gradient_mask_removes_whole_conv_channels_and_single_linear_weights():
    model = small_flatcnn()
    x, y, _ = random_images(60)
    cfg = PrunedContrastiveConfig(prune_fraction=0.1, mask_method="gradient", mask_batch=200)
    masks = compute_masks(model, (x, y), cfg)
    assert set(masks) == {"body.0.weight", "body.3.weight", "body.7.weight"}
    conv = {n: masks[n].flatten(1) for n in ("body.0.weight", "body.3.weight")}
    for rows in conv.values():  # a conv channel is kept or removed whole
        assert torch.all((rows == 0).all(dim=1) | (rows == 1).all(dim=1))
    pruned_channels = sum(int((rows == 0).all(dim=1).sum()) for rows in conv.values())
    assert pruned_channels == math.ceil(0.1 * (4 + 8))
    assert int((masks["body.7.weight"] == 0).sum()) == math.ceil(0.1 * masks["body.7.weight"].numel())
    # The removed channel has the largest gradient norm of the CE on the softmax head (all 60 examples).
    loss = F.cross_entropy(F.softmax(model(torch.as_tensor(x)), 1), torch.as_tensor(y))
    grads = torch.autograd.grad(loss, [model.body[0].weight, model.body[3].weight])
    norms = torch.cat([g.flatten(1).norm(dim=1) for g in grads])
    removed = torch.cat([(rows == 0).all(dim=1) for rows in conv.values()])
    assert torch.equal(removed, norms >= norms.topk(pruned_channels).values[-1])


# ------------------------------------------------------------------ the authors' loss placement
def test_authors_variant_feeds_softmax_once_to_nt_xent_and_to_ce():
    model = small_flatcnn()
    x, y, _ = random_images(20)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    cfg = PrunedContrastiveConfig(prune_fraction=0.2, representation="softmax")
    masks = compute_masks(model, (x, y), cfg)
    _, parts = pruned_contrastive_loss(model, masks, xt, yt, cfg)
    with torch.no_grad():
        p, q = F.softmax(model(xt), 1), F.softmax(masked_forward(model, masks, xt), 1)
    torch.testing.assert_close(parts["to_pruned"], nt_xent(p, q))  # softmax applied once
    torch.testing.assert_close(parts["to_full"], nt_xent(p, q))
    torch.testing.assert_close(parts["ce"], F.cross_entropy(p, yt))  # CE on the softmax output: softmax twice
    _, by_logits = pruned_contrastive_loss(model, masks, xt, yt, replace_cfg(cfg, representation="logits"))
    torch.testing.assert_close(by_logits["ce"], F.cross_entropy(model(xt), yt))


def replace_cfg(cfg, **changes):
    from dataclasses import replace

    return replace(cfg, **changes)


def test_softmax_then_cross_entropy_floors_at_ln_1_plus_e_minus_1():
    logits = torch.tensor([[60.0, -60.0], [-60.0, 60.0], [0.3, -0.2], [-2.0, 1.0]])
    y = torch.tensor([0, 1, 0, 0])
    per_example = [float(classification_loss(F.softmax(logits[i:i + 1], 1), y[i:i + 1])) for i in range(4)]
    assert per_example[0] == pytest.approx(LN_1_PLUS_E_MINUS_1, abs=1e-6)
    assert per_example[1] == pytest.approx(LN_1_PLUS_E_MINUS_1, abs=1e-6)
    assert min(per_example) >= LN_1_PLUS_E_MINUS_1 - 1e-7
    assert per_example[3] > per_example[2] > LN_1_PLUS_E_MINUS_1  # still ordered by how wrong the prediction is
    # On a confident, correct network the framework's CE term sits at the floor, not at 0.
    net, x, labels = one_hot_net(20, scale=60.0)
    cfg = PrunedContrastiveConfig(representation="softmax")
    _, parts = pruned_contrastive_loss(net, {}, x, labels, cfg)
    assert float(parts["ce"].detach()) == pytest.approx(LN_1_PLUS_E_MINUS_1, abs=1e-5)
    _, by_logits = pruned_contrastive_loss(net, {}, x, labels, replace_cfg(cfg, representation="logits"))
    assert float(by_logits["ce"].detach()) < 1e-6


def one_hot_net(n, scale):
    """A two-class 'network' whose logits are ``scale`` x one-hot(label): x is the one-hot label."""
    labels = torch.arange(n) % 2
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2) * scale)
    return net, F.one_hot(labels, 2).float(), labels


def test_nt_xent_of_the_authors_variant_varies_with_its_inputs():
    # Softmax once: confident two-class outputs are (1, 0) / (0, 1), orthogonal across classes. With n = 20
    # balanced rows and tau = 0.5, each anchor has its positive and 18 same-class rows at similarity 2 and 20
    # rows at 0: NT-Xent = log(19 + 20 e^-2). Uncertain outputs are all alike: log(2n - 1).
    cfg = PrunedContrastiveConfig(representation="softmax")
    values = {}
    for scale in (60.0, 1e-4):
        net, x, labels = one_hot_net(20, scale)
        _, parts = pruned_contrastive_loss(net, {}, x, labels, cfg)
        values[scale] = float(parts["to_pruned"].detach())
    assert values[60.0] == pytest.approx(math.log(19 + 20 * math.exp(-2)), abs=1e-4)
    assert values[1e-4] == pytest.approx(math.log(39), abs=1e-4)
    assert values[1e-4] - values[60.0] > 0.5


# ------------------------------------------------------------------ full vs pruned
def test_a_pruned_copy_that_changes_nothing_is_reported():
    model = small_flatcnn()
    x, y, g = random_images(40)
    with torch.no_grad():  # the smallest 10% of the hidden weights are exact zeros: pruning 5% removes nothing
        for layer in prunable_layers(model, include_output=False).values():
            w = layer.weight
            w[w.abs() <= w.abs().flatten().quantile(0.1)] = 0.0
    masks = compute_masks(model, (x, y), PrunedContrastiveConfig(prune_fraction=0.05))
    divergence = pruned_divergence(model, masks, x, g)
    assert divergence["mask_dlogit"] == 0 and divergence["mask_flips"] == 0 and is_vacuous(divergence)
    assert divergence["mask_cosine"] == pytest.approx(1.0) and set(divergence) >= {"mask_flips_g0", "mask_flips_g3"}
    with pytest.warns(VacuousPrunedCopyWarning, match="indistinguishable"):
        history = train_pruned_contrastive(copy_of(model), (x, y, g), epochs=1, batch_size=20, prune_fraction=0.05,
                                           device="cpu")
    assert history[0]["mask_flips"] == 0 and "mask_flips_g1" in history[0]
    with pytest.raises(SpurlabError, match="indistinguishable"):
        train_pruned_contrastive(copy_of(model), (x, y), epochs=1, prune_fraction=0.05, on_vacuous_mask="error",
                                 device="cpu")
    flipped = {n: torch.zeros_like(m) for n, m in masks.items()}  # everything pruned: the copy is a constant
    assert not is_vacuous(pruned_divergence(model, flipped, x, g))


def copy_of(model):
    import copy

    return copy.deepcopy(model)


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
    history = train_pruned_contrastive(model, (x, y), epochs=2, batch_size=16, device="cpu", on_vacuous_mask="ignore",
                                       on_epoch_end=lambda e, m: calls.append(e) or {"seen": e})
    assert [h["epoch"] for h in history] == [1, 2] and calls == [1, 2] and history[-1]["seen"] == 2
    assert set(history[0]) >= {"loss", "to_pruned", "to_full", "ce", "lr", "pruned_fraction"}
    hidden = sum(m.weight.numel() for m in prunable_layers(model, include_output=False).values())
    total = sum(m.weight.numel() for m in prunable_layers(model).values())
    assert history[0]["pruned_fraction"] == pytest.approx(math.ceil(0.01 * hidden) / total)
    assert {"mask_dlogit", "mask_dprob", "mask_cosine", "mask_flips"} <= set(history[0])
    assert not same_state(model, before)
    with pytest.raises(SpurlabError, match="representation"):
        train_pruned_contrastive(model, (x, y), representation="pixels")
    with pytest.raises(SpurlabError, match="prune_fraction"):
        train_pruned_contrastive(model, (x, y), prune_fraction=1.5)
    with pytest.raises(SpurlabError, match="unknown pruned-contrastive setting"):
        train_pruned_contrastive(model, (x, y), lamda=0.3)
    with pytest.raises(SpurlabError, match="parameter .on_vacuous_mask. must be one of"):
        train_pruned_contrastive(model, (x, y), on_vacuous_mask="shrug")
    with pytest.raises(SpurlabError, match="no hidden layer"):  # a linear model: only the head, never masked
        train_pruned_contrastive(nn.Linear(4, 2), (x.reshape(len(x), -1)[:, :4], y), device="cpu")


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


def test_the_authors_masks_on_the_study_model(planted):
    # Their default (smallest 1% of single weights) leaves the study's ERM network unchanged; their gradient
    # option removes the units the worst-predicted (minority) examples need, and the copy diverges there.
    splits, erm, minority = planted
    model, train = erm["model"], splits["train"]
    by_magnitude = pruned_divergence(model, compute_masks(model, train, PrunedContrastiveConfig()), train.x, train.g)
    assert is_vacuous(by_magnitude) and by_magnitude["mask_dlogit"] < 1e-2
    by_gradient = pruned_divergence(model, compute_masks(model, train, PrunedContrastiveConfig(mask_method="gradient")),
                                    train.x, train.g)
    assert not is_vacuous(by_gradient) and by_gradient["mask_dlogit"] > 0.1 and by_gradient["mask_cosine"] < 0.99
    minority_flips = max(by_gradient[f"mask_flips_g{g}"] for g in minority)
    majority_flips = max(by_gradient[f"mask_flips_g{g}"] for g in (0, 3))
    assert minority_flips > 0.2 and minority_flips > 3 * majority_flips


# ------------------------------------------------------------------ framework selection and verdicts
def fake_curves():
    rows = []
    for seed in (0, 1, 2):
        for method, lift in (("erm", 0.0), ("pruned_contrastive", 0.1)):
            for epoch in range(4):
                # val is best at epoch 2; test follows val, so the selected test number differs from the final one
                val = 0.5 + (0.2 if epoch == 2 else 0.0) + lift
                rows.append({"seed": seed, "method": method, "epoch": epoch, "train_g0": 1.0, "train_g1": 0.9,
                             "val_g0": 0.9, "val_g1": val, "test_g0": 0.9, "test_g1": val - 0.05 + 0.01 * seed})
    return pd.DataFrame(rows)


def test_selection_on_worst_group_validation_and_the_verdict():
    summary = fw.selected_metrics(fake_curves(), np.array([90, 10]))
    test_worst = summary[(summary.split == "test") & (summary.metric == "worst_group_acc")]
    final = test_worst[(test_worst.selection == "final") & (test_worst.method == "erm")]
    chosen = test_worst[(test_worst.selection == "val_worst_group") & (test_worst.method == "erm")]
    assert set(final.epoch) == {3} and set(chosen.epoch) == {2}
    np.testing.assert_allclose(chosen.sort_values("seed").value, [0.65, 0.66, 0.67])
    assert {"erm_start"} <= set(summary.method) and set(summary[summary.method == "erm_start"].epoch) == {0}
    weighted = summary[(summary.metric == "train_weighted_acc") & (summary.split == "train")]
    np.testing.assert_allclose(weighted.value, 0.99)
    table = fw.difference_table(summary, ["pruned_contrastive"]).set_index("selection")
    assert table.loc["final", "diff_mean"] == pytest.approx(0.1) and table.loc["final", "n_seeds"] == 3
    assert table.loc["final", "diff_std"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc["final", "verdict"] == "improved"
    assert table.loc["val_worst_group", "train_worst"] == pytest.approx(0.9)
    assert fw.verdict_word(0.01, 0.02) == "no clear change" and fw.verdict_word(-0.1, 0.01) == "lowered"


# ------------------------------------------------------------------ the study contract
def test_study_config_overrides_parse():
    study = get_study("critical-neurons")
    cfg = apply_overrides(study.default_config(True), ["ks=1,2", "modes=zero,rewind", "sigmas=0.01,0.1"])
    assert cfg["ks"] == [1, 2] and cfg["modes"] == ["zero", "rewind"] and cfg["sigmas"] == [0.01, 0.1]
    with pytest.raises(SpurlabError, match="parameter 'selectors'"):
        run_study("critical-neurons", quick=True, device="cpu", overrides={"selectors": "psychic"}, write=False)
    with pytest.raises(SpurlabError, match="rewind_epochs"):
        study.validate({**cfg, "rewind_epochs": [50]})


def test_the_paper_edit_skips_residual_shortcuts_as_the_authors_do():
    from spurlab.studies.critical_neurons.neurons_study import paper_edit_layers

    cfg = get_study("critical-neurons").default_config(True)
    model = SmallResNet(3, 2, widths=(4, 8))
    with torch.no_grad():  # make a shortcut channel the largest: the paper's edit must still not pick it
        model.stages[1].shortcut[0].weight[0] *= 100
    layers = paper_edit_layers(model, cfg)
    assert layers and not any("shortcut" in n for n in layers)
    top = find_critical_units(model, method="weight_norm", k=1, layers=layers)
    assert "shortcut" not in top.layers[0]
    assert "shortcut" in find_critical_units(model, method="weight_norm", k=1, layers="conv").layers[0]
    assert paper_edit_layers(FlatCNN((3, 12, 12), 2, channels=(4, 8), hidden=16), cfg) == ["body.0", "body.3"]


def test_a_presets_own_spurious_attribute_is_kept(data_dir):
    from spurlab.studies.critical_neurons.neurons_study import load_task

    cfg = {**get_study("critical-neurons").default_config(True), "n_train": 200, "n_test": 100}
    colored, _ = load_task({**cfg, "dataset": "colored-mnist"}, seed=0)
    assert colored["train"].attr_names[0].startswith("foreground_colour")  # not the study's patch
    patched, _ = load_task(cfg, seed=0)
    assert patched["train"].attr_names[0].startswith("patch")


def test_study_writes_its_outputs(data_dir, tmp_path):
    overrides = {"n_train": 500, "n_test": 300, "erm_epochs": 3, "ks": [1, 2], "modes": ["zero", "random_init",
                 "rewind"], "repeats": 2, "rewind_epochs": [1], "n_seeds": 1, "framework_epochs": 1,
                 "magnitude_fractions": [0.02], "paper_edit_repeats": 3}
    result, out = run_study("critical-neurons", out_dir=tmp_path, quick=True, seed=1, device="cpu",
                            overrides=overrides)
    frame = pd.read_csv(out / "results.csv")
    assert set(frame["experiment"]) == {"evidence", "paper_edit", "framework"}
    delta = frame[(frame["metric"] == "delta_acc") & (frame["experiment"] == "evidence")]
    assert {"group", "split", "selector", "mode", "k", "sigma"} <= set(delta.columns)
    assert set(delta["split"]) == {"train", "test"} and set(delta["mode"]) == {"zero", "random_init", "rewind"}
    assert set(delta["selector"]) == {"weight_norm", "group_gradient", "magnitude"}
    assert delta[delta["mode"] == "random_init"]["sigma"].notna().all()
    assert frame["value"].notna().all()  # no placeholder rows
    gaps = frame[(frame["metric"] == "train_test_gap") & (frame["mode"] != "none")]
    assert len(gaps) == len(delta[delta["split"] == "train"])  # one gap per edited (setting, group)
    framework = frame[frame["experiment"] == "framework"]
    assert {"worst_group_acc", "mean_group_acc", "train_weighted_acc", "mask_dlogit", "mask_cosine",
            "mask_flips"} <= set(framework["metric"])
    assert set(framework["method"].dropna()) == {"erm", "erm_start", "pruned_contrastive",
                                                 "pruned_contrastive_gradient", "ce_term_only"}
    assert set(framework["selection"].dropna()) == {"final", "val_worst_group"}
    flips = framework[(framework["metric"] == "mask_flips") & framework["group"].notna()]
    assert set(flips["group"]) == {0, 1, 2, 3}  # prediction flips per group
    scored = framework[framework["metric"] == "worst_group_acc"]
    assert set(scored["split"]) == {"train", "val", "test"}  # training accuracy beside every test number
    edit = frame[frame["experiment"] == "paper_edit"]
    assert len(edit) == 3 * 4 * 2 and set(edit["rep"]) == {0, 1, 2} and set(edit["mode"]) == {"random_init"}
    head = result.headline["result"].tolist()
    assert head[0].startswith("paper's edit") and "top-1 weight-norm" in head[0]
    assert any("MAXIMUM" in r for r in head)
    for name in ("delta_vs_k", "top_units", "framework_curves", "group_gap"):
        assert (out / f"{name}.png").stat().st_size > 1000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["study"] == "critical-neurons" and manifest["rows"] == len(frame)
    assert any("Framework vs ERM" in note for note in result.notes)


def test_a_vacuous_copy_is_warned_once_per_run_not_every_epoch():
    model = small_flatcnn()
    x, y, g = random_images(40)
    with torch.no_grad():
        for layer in prunable_layers(model, include_output=False).values():
            w = layer.weight
            w[w.abs() <= w.abs().flatten().quantile(0.1)] = 0.0
    with pytest.warns(VacuousPrunedCopyWarning) as caught:
        history = train_pruned_contrastive(copy_of(model), (x, y, g), epochs=3, batch_size=20, prune_fraction=0.05,
                                           device="cpu", lr=1e-12)
    assert len([w for w in caught if issubclass(w.category, VacuousPrunedCopyWarning)]) == 1
    assert len(history) == 3 and all(h["mask_flips"] == 0 for h in history)
