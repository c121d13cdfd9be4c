"""The robust methods' recipes (issue #19): balanced sampling, Group DRO's q, JTT's error set, DFR's draws,
the optimizer space, final-epoch reporting, uint8 scaling, one group numbering across splits, spuco-mnist."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spurlab import SpurlabError, load_splits
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.spuco_mnist import colour_backgrounds, correlated_attributes, hue_palette
from spurlab.models import make_model
from spurlab.train.methods import compare_methods, get_method
from spurlab.metrics import worst_group_accuracy
from spurlab.train.methods.dfr import (balanced_draws, balanced_subsample, fit_balanced_head, fit_balanced_heads,
                                      head_logits)
from spurlab.train.methods.groupdro import GroupDROLoss
from spurlab.train.trainer import (InputScaler, TrainConfig, fit, group_balanced_sampler, predict,
                                   repeated_sampler, weighted_sampler)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def skewed_vectors(seed: int = 0, n_train: int = 600) -> DatasetSplits:
    """Two classes; a weak core feature and a strong spurious one, aligned with y for 95% of train."""
    rng = np.random.default_rng(seed)

    def split(n: int, p: float) -> GroupedDataset:
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < p, y, 1 - y)
        core = (2 * y - 1)[:, None] * 0.8 + rng.normal(0, 1, (n, 3))
        spur = (2 * a - 1)[:, None] * 2.0 + rng.normal(0, 0.2, (n, 2))
        return GroupedDataset(x=np.hstack([core, spur]).astype(np.float32), y=y, a=a)

    return DatasetSplits({"train": split(n_train, 0.95), "val": split(300, 0.5), "test": split(300, 0.5)},
                         name="skewed")


# ------------------------------------------------------------------ group-balanced sampling
def test_balanced_batches_hold_every_group_at_the_expected_rate():
    groups = np.repeat([0, 1, 2, 3], [5000, 400, 80, 20])
    order = group_balanced_sampler(groups)(torch.Generator().manual_seed(0)).numpy()
    assert len(order) == len(groups)  # one training-set size per epoch, as the released code
    batches = order[: len(order) // 64 * 64].reshape(-1, 64)
    per_batch = np.stack([np.bincount(groups[b], minlength=4) for b in batches])
    np.testing.assert_allclose(per_batch.mean(axis=0), 16.0, atol=0.8)  # 64 / 4 groups
    assert (per_batch > 0).all(axis=1).mean() > 0.98  # nearly every batch sees every group
    uniform = np.random.default_rng(0).permutation(len(groups))[:64 * 50].reshape(-1, 64)
    assert np.mean([np.isin(3, groups[b]) for b in uniform]) < 0.3  # a uniform shuffle rarely does


def test_weighted_sampler_draws_in_proportion_to_the_weights():
    weights = np.r_[np.ones(990), np.full(10, 99.0)]  # the last 10 examples carry half the mass
    order = weighted_sampler(weights)(torch.Generator().manual_seed(0)).numpy()
    assert np.mean(order >= 990) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(SpurlabError, match="weights"):
        weighted_sampler(np.zeros(5))


def test_repeated_sampler_shuffles_the_same_multiset_every_epoch():
    idx = np.array([0, 0, 0, 1, 2, 2])
    sampler, gen = repeated_sampler(idx), torch.Generator().manual_seed(1)
    first, second = sampler(gen).numpy(), sampler(gen).numpy()
    assert sorted(first) == sorted(second) == sorted(idx)


def test_reweight_by_sampler_and_by_loss_are_both_available():
    splits = skewed_vectors()
    erm = get_method("erm", model="linear", epochs=8, seed=0, lr=1e-2).fit(splits)
    for by in ("sampler", "loss"):
        method = get_method("reweight", model="linear", epochs=8, seed=0, lr=1e-2, by=by).fit(splits)
        assert method.score(splits["test"]) > erm.score(splits["test"]) + 0.1, by
    with pytest.raises(SpurlabError, match="by"):
        get_method("reweight", by="weights")


# ------------------------------------------------------------------ Group DRO
def test_q_moves_towards_the_worst_group():
    adversary = GroupDROLoss(np.array([100, 100, 100]), eta=0.01, adjustment=0.0, device="cpu")
    groups = torch.tensor([0, 1, 2] * 10)
    losses = torch.tensor([0.2, 2.0, 0.5] * 10)
    for _ in range(200):
        adversary(losses, groups)
    q = adversary.q.numpy()
    assert q.argmax() == 1 and q[1] > q[2] > q[0]
    assert q.sum() == pytest.approx(1.0)


def test_groupdro_defaults_follow_the_released_code():
    method = get_method("groupdro")
    space = method.hparam_space()
    assert space["eta"].default == 0.01 and space["group_balanced"].default is True
    assert space["adjustment"].default == 0.0


def test_groupdro_q_ends_on_a_minority_group():
    splits = skewed_vectors()
    method = get_method("groupdro", model="linear", epochs=6, seed=0, lr=1e-2, eta=0.05).fit(splits)
    q = method.details_["final_q"]
    assert max(q, key=q.get) in ("y=0,a=1", "y=1,a=0")
    assert all("q" in row for row in method.history_)


# ------------------------------------------------------------------ JTT
def test_jtt_error_set_is_the_stage_one_models_training_errors():
    splits = skewed_vectors()
    method = get_method("jtt", model="linear", epochs=4, seed=0, lr=1e-2, first_epochs=2, lambda_up=10)
    method.fit(splits)
    train = splits["train"]
    stage_one = make_model("linear", train.input_shape, 2, seed=0)
    fit(stage_one, train.x, train.y, method.train_config(epochs=2))
    expected = np.flatnonzero(predict(stage_one, train.x, device="cpu") != train.y)
    np.testing.assert_array_equal(method.error_set_, expected)
    minority = train.is_minority()
    assert minority[method.error_set_].mean() > 5 * minority.mean()  # the errors are mostly the minority


# ------------------------------------------------------------------ DFR
def test_dfr_draws_are_group_balanced_and_differ():
    keys = np.repeat([0, 1, 2, 3], [300, 12, 40, 7])
    rng = np.random.default_rng(0)
    draws = [balanced_subsample(keys, rng) for _ in range(3)]
    for idx in draws:
        assert np.bincount(keys[idx]).tolist() == [7, 7, 7, 7] and len(set(idx)) == len(idx)
    assert not np.array_equal(np.sort(draws[0]), np.sort(draws[1]))


def test_dfr_draws_hold_the_smallest_group_times_the_groups_and_every_c_shares_them():
    keys = np.repeat([0, 1, 2, 3, 4], [480, 470, 452, 505, 490])  # spuco-mnist's val: ~480 per group
    draws = balanced_draws(keys, 4, seed=3)
    rng = np.random.default_rng(3)
    for idx in draws:
        assert len(idx) == 452 * 5 and np.bincount(keys[idx]).tolist() == [452] * 5
        np.testing.assert_array_equal(idx, balanced_subsample(keys, rng))  # one seeded stream, draw after draw
    feats = np.random.default_rng(0).normal(size=(len(keys), 3)) + keys[:, None] * 0.5
    y = keys % 2
    together = fit_balanced_heads(feats, y, keys, 2, [1.0, 0.1], n_draws=2, seed=0, solver="liblinear")
    alone = fit_balanced_heads(feats, y, keys, 2, [0.1], n_draws=2, seed=0, solver="liblinear")
    np.testing.assert_array_equal(together[1][0], alone[0][0])  # C = 0.1 saw the same draws either way


def test_dfr_head_averages_its_draws():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    keys = y * 2 + (rng.random(400) < 0.1)
    feats = np.c_[y + rng.normal(0, 1, 400), rng.normal(0, 1, 400)]
    one = fit_balanced_head(feats, y, keys, 2, 1.0, n_draws=1, seed=0)
    several = fit_balanced_head(feats, y, keys, 2, 1.0, n_draws=8, seed=0)
    singles = [fit_balanced_head(feats, y, keys, 2, 1.0, n_draws=1, seed=s) for s in range(8)]
    assert not np.allclose(one[0], several[0])
    assert np.abs(several[0]).sum() > 0 and len(singles) == 8


def three_class_features(seed: int = 0, n: int = 900):
    """Three classes, a spurious attribute per class at 90%, nearly collinear core features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = np.where(rng.random(n) < 0.9, y, rng.integers(0, 3, n))
    core = np.eye(3)[y] * 0.8 + rng.normal(0, 1, (n, 3))
    feats = np.hstack([core, core[:, :1] + rng.normal(0, 0.05, (n, 1)), np.eye(3)[a] * 2 + rng.normal(0, 0.3, (n, 3))])
    return feats, y, y * 3 + a


def test_dfr_fast_heads_equal_liblinears_per_c():
    """The batched solver and liblinear (DFR's code) fit the same heads: same scores per C, hence the same C."""
    feats, y, groups = three_class_features()
    test_feats, test_y, test_groups = three_class_features(seed=1)
    grid = [1.0, 0.3, 0.1, 0.03]
    fast = fit_balanced_heads(feats, y, groups, 3, grid, n_draws=3, seed=0, solver="newton")
    slow = fit_balanced_heads(feats, y, groups, 3, grid, n_draws=3, seed=0, solver="liblinear")
    for (w_fast, b_fast), (w_slow, b_slow) in zip(fast, slow):
        np.testing.assert_allclose(w_fast, w_slow, atol=2e-3)
        np.testing.assert_allclose(b_fast, b_slow, atol=2e-3)
        predicted = [head_logits(test_feats, head).argmax(1) for head in ((w_fast, b_fast), (w_slow, b_slow))]
        same = predicted[0] == predicted[1]
        assert same.mean() >= 0.995
    scores = [[worst_group_accuracy(test_y, head_logits(test_feats, h).argmax(1), test_groups) for h in heads]
              for heads in (fast, slow)]
    assert np.argmax(scores[0]) == np.argmax(scores[1]) and scores[0] == pytest.approx(scores[1], abs=0.01)


def test_dfr_fast_path_selects_the_same_c_and_predictions_as_liblinear():
    """On DFR's own grid (1 ... 0.01). Above it, at C = 30 on 150 examples, liblinear's default tolerance stops
    short of the optimum and one held-out example flips; liblinear at tol 1e-10 agrees with the fast path."""
    splits = skewed_vectors()
    base = get_method("erm", model="mlp", epochs=3, seed=0, lr=1e-2).fit(splits).model_
    fitted = {solver: get_method("dfr", seed=0, base_model=base, n_draws=4, solver=solver,
                                 C_grid=[1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]).fit(splits)
              for solver in ("newton", "liblinear")}
    assert fitted["newton"].details_["C"] == fitted["liblinear"].details_["C"]
    assert fitted["newton"].details_["C_scores"] == fitted["liblinear"].details_["C_scores"]
    x_test = splits["test"].x
    same = predict(fitted["newton"].model_, x_test, device="cpu") == predict(fitted["liblinear"].model_, x_test,
                                                                             device="cpu")
    assert same.mean() >= 0.99


def test_dfr_refits_a_given_model_without_training_erm():
    splits = skewed_vectors()
    base = get_method("erm", model="mlp", epochs=3, seed=0, lr=1e-2).fit(splits).model_
    before = {k: v.clone() for k, v in base.state_dict().items()}
    dfr = get_method("dfr", epochs=50, seed=0, base_model=base, n_draws=3, C_grid=[1.0, 0.1]).fit(splits)
    assert not any(row["stage"] == "erm" for row in dfr.history_)
    assert dfr.details_["base_model"] == "given" and set(dfr.details_["C_scores"]) == {"1.0", "0.1"}
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the caller's model untouched
    with pytest.raises(SpurlabError, match="base_model"):
        get_method("dfr", base_model="not a model")


# ------------------------------------------------------------------ optimizer, final epoch, epochs per method
def test_the_optimizer_is_in_every_methods_space():
    for name in ("erm", "groupdro", "reweight", "upsample", "jtt", "dfr", "failure_directions"):
        space = get_method(name).hparam_space()
        assert {"optimizer", "momentum", "nesterov", "lr", "weight_decay"} <= set(space), name
    method = get_method("erm", optimizer="sgd", lr=1e-2, nesterov=True, momentum=0.9)
    method.hparams_ = {**{k: s.default for k, s in method.hparam_space().items()}, **method.hparams}
    method.device_ = "cpu"
    cfg = method.train_config()
    assert (cfg.optimizer, cfg.nesterov, cfg.momentum, cfg.lr) == ("sgd", True, 0.9, 1e-2)
    with pytest.raises(SpurlabError, match="optimizer"):
        get_method("erm", optimizer="rmsprop")


def test_final_epoch_is_reported_beside_the_selected_one():
    splits = skewed_vectors()
    frame = compare_methods(splits, ["erm", "upsample"], seeds=[0], model="linear", epochs={"erm": 4, "upsample": 1},
                            device="cpu")
    assert frame.set_index("method")["epochs"].to_dict() == {"erm": 4, "upsample": 1}
    assert {"final_worst_group_acc", "final_average_acc", "final_accuracy"} <= set(frame.columns)
    method = get_method("erm", model="linear", epochs=4, seed=0, lr=1e-2).fit(splits)
    last = method.evaluate(splits["test"], final=True)
    assert method.best_epoch_ <= 4
    pred = predict(method.final_model_, splits["test"].x, device="cpu")
    assert last["accuracy"] == pytest.approx(float(np.mean(pred == splits["test"].y)))


# ------------------------------------------------------------------ inputs
def test_uint8_images_are_scaled_to_unit_range():
    batch = np.full((2, 1, 4, 4), 255, dtype=np.uint8)
    assert float(InputScaler()(batch).max()) == 1.0
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (64, 1, 12, 12), dtype=np.uint8)
    y = rng.integers(0, 2, 64)
    cfg = TrainConfig(epochs=1, batch_size=16, device="cpu", seed=0)
    a, b = make_model("lenet", (1, 12, 12), 2, seed=0), make_model("lenet", (1, 12, 12), 2, seed=0)
    fit(a, x8, y, cfg)
    fit(b, x8.astype(np.float32) / 255.0, y, cfg)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_float_pixels_in_0_255_get_a_warning(monkeypatch):
    messages = []
    monkeypatch.setattr("spurlab.train.trainer.log", messages.append)
    scaler = InputScaler()
    scaler(np.full((2, 1, 4, 4), 200.0, dtype=np.float32))
    scaler(np.full((2, 1, 4, 4), 200.0, dtype=np.float32))
    assert len(messages) == 1 and "0..255" in messages[0]


def test_lenet_has_spucos_shape():
    net = make_model("lenet", (3, 28, 28), 5, seed=0)
    assert net.features(torch.zeros(2, 3, 28, 28)).shape == (2, 84) and net.head.out_features == 5
    assert sum(p.numel() for p in net.parameters()) == 456 + 2416 + 48120 + 10164 + 425  # 61,581
    with pytest.raises(SpurlabError, match="12x12"):
        make_model("lenet", (1, 8, 8), 2)


# ------------------------------------------------------------------ one group numbering across splits
def test_splits_built_without_names_share_one_group_numbering():
    train = GroupedDataset(x=np.zeros((6, 2)), y=np.array([0, 0, 1, 1, 0, 1]), a=np.array([0, 1, 2, 0, 2, 1]))
    val = GroupedDataset(x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), a=np.array([0, 1, 1, 0]))
    assert val.n_attrs == 2 and val.group_of(1, 1) == 3  # alone it numbers its groups differently
    splits = DatasetSplits({"train": train, "val": val})
    assert splits["val"].n_attrs == 3 and splits["val"].n_groups == splits["train"].n_groups == 6
    assert splits["val"].g.tolist() == [0, 4, 1, 3]  # y * 3 + a, as in train


def test_splits_with_different_names_are_refused():
    train = GroupedDataset(x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), a=np.array([0, 1, 1, 0]),
                           attr_names=("land", "water"))
    val = GroupedDataset(x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), a=np.array([0, 1, 1, 0]),
                         attr_names=("water", "land"))
    with pytest.raises(SpurlabError, match="disagree on their attr_names"):
        DatasetSplits({"train": train, "val": val})


# ------------------------------------------------------------------ spuco-mnist
def test_spuco_attributes_follow_the_strength():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 4000)
    a = correlated_attributes(labels, 5, 0.99, rng)
    for c in range(5):
        in_class = a[labels == c]
        assert int((in_class == c).sum()) == 3960
        assert set(np.unique(in_class[in_class != c])) == set(range(5)) - {c}


def test_spuco_backgrounds_colour_only_background_pixels():
    digits = np.zeros((2, 28, 28), dtype=np.uint8)
    digits[:, 10:18, 12:16] = 200
    palette = hue_palette(5)
    easy = colour_backgrounds(digits, np.array([0, 2]), palette, "easy")
    assert easy.shape == (2, 3, 28, 28) and easy.dtype == np.uint8
    assert easy[0, :, 0, 0].tolist() == [255, 0, 0] and easy[0, :, 12, 13].tolist() == [200, 200, 200]
    hard = colour_backgrounds(digits, np.array([0, 2]), palette, "hard")
    assert hard[1, :, 1, 1].tolist() == easy[1, :, 1, 1].tolist() and hard[1, :, 2, 2].tolist() == [0, 0, 0]
    medium = colour_backgrounds(digits, np.array([0, 2]), palette, "medium")
    assert (medium[0, 0, :4, :4] == 255).all() and medium[0, 0, 4:, 4:].max() == 200


def test_spuco_mnist_splits(data_dir):
    splits = load_splits("spuco-mnist", data_dir=data_dir, n_train=6000, n_test=1000, seed=0)
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert train.x.dtype == np.uint8 and train.input_shape == (3, 28, 28) and train.n_groups == 25
    assert len(val) == pytest.approx(1200, abs=5)  # 20% of MNIST train
    minority = train.is_minority()
    assert 0 < minority.sum() <= 0.01 * len(train)  # strength 0.995
    for ds in (val, test):
        counts = ds.group_counts().reshape(5, 5)
        assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()  # balanced within every class
    with pytest.raises(SpurlabError, match="difficulty"):
        load_splits("spuco-mnist", data_dir=data_dir, difficulty="extreme")
