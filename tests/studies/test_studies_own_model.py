"""The critical-neurons and failure-directions studies take any model the models registry takes."""
import numpy as np
import torch
from torch import nn

from spurlab.data.grouped import GroupedDataset
from spurlab.studies.critical_neurons.neurons_study import make_network
from spurlab.train.engines.upweighting import Retrainer
from spurlab.train.trainer import TrainConfig


def tiny_images(n=40):
    rng = np.random.default_rng(0)
    return GroupedDataset(x=rng.random((n, 3, 12, 12), dtype=np.float32), y=rng.integers(0, 2, n),
                          a=rng.integers(0, 2, n))


def conv_factory(input_shape, n_classes):
    net = nn.Sequential(nn.Conv2d(input_shape[0], 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, n_classes))
    net.made_by = "factory"
    return net


def test_critical_neurons_builds_names_factories_files_and_modules(tmp_path):
    train = tiny_images()
    cfg = {"model": "auto", "channels": [4, 8]}
    assert type(make_network(cfg, train, seed=0)).__name__ == "FlatCNN"
    assert make_network({**cfg, "model": conv_factory}, train, seed=0).made_by == "factory"
    mine = conv_factory((3,), 2)
    copy = make_network({**cfg, "model": mine}, train, seed=0)
    assert copy is not mine and torch.equal(copy[0].weight, mine[0].weight)
    path = tmp_path / "mine.pt"
    torch.jit.save(torch.jit.script(mine), str(path))
    loaded = make_network({**cfg, "model": str(path)}, train, seed=0)
    assert torch.equal(loaded(torch.as_tensor(train.x)), mine(torch.as_tensor(train.x)))


def test_failure_directions_retrainer_trains_a_factory():
    train = tiny_images()
    retrainer = Retrainer(conv_factory, TrainConfig(epochs=1, batch_size=16, device="cpu"))
    model = retrainer.train(train.x, train.y, train.n_classes)
    assert model.made_by == "factory"
    named = Retrainer("mlp", TrainConfig(epochs=1, device="cpu"), model_options={"hidden": (5,)})
    assert named.train(train.x, train.y, 2).head.in_features == 5
