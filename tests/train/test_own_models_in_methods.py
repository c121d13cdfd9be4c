"""Methods train your models: factories, your trained module as the starting point, frozen pretrained backbones."""
import numpy as np
import pytest
import torch
from torch import nn

from spurlab.data.dataset_registry import load_splits
from spurlab.data.grouped import DatasetSplits
from spurlab.data.replicas import write_waterbirds_replica
from spurlab.errors import SpurlabError
from spurlab.models import ModelSpec
from spurlab.train.feature_cache import CACHE_STATS
from spurlab.train.methods import get_method


class TwoLayer(nn.Module):
    """A user's network with the features/head convention."""

    def __init__(self, d_in: int, n_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(d_in, 16), nn.ReLU())
        self.head = nn.Linear(16, n_classes)
        self.built = True

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def factory(input_shape, n_classes):
    return TwoLayer(int(np.prod(input_shape)), n_classes)


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.9, y, 1 - y)
    x = np.stack([y + rng.normal(0, 0.8, n), 2.0 * a + rng.normal(0, 0.2, n), rng.normal(0, 1, n)], 1)
    return DatasetSplits.from_arrays(x.astype(np.float32), y, attributes=a, seed=0)


def test_a_factory_model_is_trained_by_erm_groupdro_and_dfr(splits, one_thread):
    """Each method trains the factory's network; as the papers predict on a 90%-spurious task, ERM fits the
    majority (high accuracy, worst group near 0) and GroupDRO and DFR lift the worst group above it."""
    fitted = {m: get_method(m, model=factory, epochs=6, seed=0, device="cpu", lr=1e-2, selection="last").fit(splits)
              for m in ("erm", "groupdro", "dfr")}
    torch.manual_seed(0)  # how the methods seed the factory (seed 0)
    init = factory((3,), 2)
    for method in fitted.values():
        assert isinstance(method.model_, TwoLayer)
        assert method.model_name_ == f"your factory ({__name__}.factory)"
        assert not torch.equal(method.model_.body[1].weight, init.body[1].weight)
    test = {m: f.evaluate(splits["test"]) for m, f in fitted.items()}
    assert fitted["erm"].evaluate(splits["train"])["accuracy"] > 0.85 and test["erm"]["accuracy"] > 0.85
    assert test["erm"]["worst_group_acc"] < 0.2
    assert test["groupdro"]["worst_group_acc"] > test["erm"]["worst_group_acc"] + 0.3
    assert test["dfr"]["worst_group_acc"] > test["erm"]["worst_group_acc"] + 0.3


def test_your_trained_module_is_the_starting_point_and_stays_untouched(splits, one_thread):
    mine = factory((3,), 2)
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    fitted = get_method("erm", model=mine, epochs=1, device="cpu").fit(splits)
    assert fitted.model_ is not mine and fitted.model_name_ == "your model (TwoLayer)"
    assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())


def test_a_factory_that_raises_is_named_at_fit(splits):
    def broken(input_shape, n_classes):
        raise ValueError("no GPU here")

    with pytest.raises(SpurlabError, match="factory .*broken raised ValueError: no GPU here"):
        get_method("erm", model=broken, epochs=1, device="cpu").fit(splits)


def test_a_frozen_backbone_without_features_is_named(splits):
    plain = lambda shape, k: nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), k))  # noqa: E731
    with pytest.raises(SpurlabError, match="cannot find the penultimate features") as err:
        get_method("dfr", model=ModelSpec(plain, freeze="backbone"), epochs=1, device="cpu").fit(splits)
    assert "feature_layer" in str(err.value)


def test_a_named_layer_gives_dfr_its_features(splits, one_thread):
    hooked = lambda shape, k: nn.Sequential(nn.Flatten(), nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, k))  # noqa: E731
    spec = ModelSpec(hooked, feature_layer="2")
    fitted = get_method("dfr", model=spec, epochs=3, device="cpu").fit(splits)
    assert fitted.model_.head.in_features == 8
    assert fitted.evaluate(splits["test"])["accuracy"] > 0.6
    upweighted = get_method("failure_directions", model=spec, epochs=2, base_epochs=1, device="cpu").fit(splits)
    assert upweighted.weights_.shape == (len(splits["train"]),)  # its SVMs read the named layer's features


@pytest.mark.parametrize("method", ["reweight", "groupdro"])
def test_head_only_methods_train_on_cached_features_of_a_frozen_backbone(splits, method, tmp_path, monkeypatch):
    monkeypatch.setenv("SPURLAB_CACHE", str(tmp_path))
    spec = ModelSpec(factory, freeze="backbone")
    torch.manual_seed(0)
    backbone = factory((3,), 2)  # what the spec builds with seed 0
    runs = [get_method(method, model=spec, epochs=3, seed=0, device="cpu", lr=1e-2).fit(splits) for _ in range(2)]
    assert runs[0].features_from_cache_ == {"train": False, "val": False}
    assert runs[1].features_from_cache_ == {"train": True, "val": True}
    model = runs[1].model_
    assert isinstance(model, TwoLayer) and torch.equal(model.body[1].weight, backbone.body[1].weight)
    assert not torch.equal(model.head.weight, backbone.head.weight)  # only the head trained
    torch.testing.assert_close(model.head.weight, runs[0].model_.head.weight)


def test_efficientnet_lite0_frozen_with_dfr_on_a_waterbirds_replica_reuses_cached_features(tmp_path, monkeypatch):
    """End to end on WILDS-layout JPEGs: the second fit takes every feature from the cache."""
    monkeypatch.setenv("SPURLAB_CACHE", str(tmp_path / "features"))
    write_waterbirds_replica(tmp_path / "data", image_size=(40, 30))
    splits = load_splits("waterbirds", data_dir=tmp_path / "data", image_size=32)
    spec = ModelSpec("efficientnet-lite0", freeze="backbone")
    hits = CACHE_STATS.hits
    first = get_method("dfr", model=spec, epochs=2, seed=0, device="cpu", n_draws=5).fit(splits)
    assert first.features_from_cache_ == {"train": False, "val": False}
    second = get_method("dfr", model=spec, epochs=2, seed=0, device="cpu", n_draws=5).fit(splits)
    assert second.features_from_cache_ == {"train": True, "val": True} and CACHE_STATS.hits == hits + 2
    for fitted in (first, second):
        assert type(fitted.model_).__name__ == "EfficientNetLite0Classifier"
    np.testing.assert_allclose(first.model_.head.weight.detach(), second.model_.head.weight.detach())
    test = second.evaluate(splits["test"])
    assert test["accuracy"] > 0.5 and second.evaluate(splits["train"])["accuracy"] > 0.5


def test_a_head_on_cached_features_trains_on_one_cpu_thread_and_restores_the_setting(splits, tmp_path, monkeypatch):
    """Tiny minibatch ops: a second thread on a busy core only spins (3x slower at CelebA size); the
    backbone's own passes keep the user's thread count, and it is restored after the head's training."""
    import spurlab.train.methods.method_base as method_base

    monkeypatch.setenv("SPURLAB_CACHE", str(tmp_path))
    seen, real_fit = [], method_base.fit

    def recording_fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(method_base, "fit", recording_fit)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        get_method("erm", model=ModelSpec(factory, freeze="backbone"), epochs=1, seed=0, device="cpu").fit(splits)
        assert seen == [1] and torch.get_num_threads() == 2
        seen.clear()
        get_method("erm", model=factory, epochs=1, seed=0, device="cpu").fit(splits)  # a whole network: unchanged
        assert seen == [2]
    finally:
        torch.set_num_threads(previous)
