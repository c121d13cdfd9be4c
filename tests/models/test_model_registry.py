"""The models registry: names, options, factories, trained modules, model files and the features convention."""
import importlib.util
import sys

import numpy as np
import pytest
import torch
from torch import nn

from spurlab.errors import SpurlabError, UnknownNameError
from spurlab.models import MODELS, ModelSpec, as_model_spec, make_model, model_names, penultimate_features
from spurlab.models.model_registry import (load_model_file, model_from_text, register_model, resolve_model_name,
                                           split_model_options)
from spurlab.models.penultimate import LinearHead, attach_head, feature_function


class HookNet(nn.Module):
    """A user's network without the features/head split: features only by feature_layer."""

    def __init__(self, d_in=6, n_classes=2):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, 5), nn.ReLU())
        self.fc = nn.Linear(5, n_classes)

    def forward(self, x):
        return self.fc(self.body(x))


class ExportedNet(HookNet):
    @torch.jit.export
    def features(self, x):
        return self.body(x)


def test_registry_lists_the_built_in_networks_and_prefixes():
    names = model_names()
    assert names[0] == "auto"
    assert {"linear", "mlp", "cnn", "flatcnn", "resnet", "efficientnet-lite0"} <= set(names)
    assert "torchvision:<name>" in names and "timm:<name>" in names


@pytest.mark.parametrize("name", ["linear", "mlp", "cnn", "flatcnn", "resnet"])
def test_every_small_network_builds_with_features_and_a_head(name):
    net = make_model(name, (3, 16, 16), 3, seed=1)
    x = torch.rand(4, 3, 16, 16)
    assert net(x).shape == (4, 3)
    feats = feature_function(net)(x)
    assert torch.allclose(net.head(feats), net(x), atol=1e-6)


def test_make_model_is_seeded_and_auto_picks_by_input_shape():
    a, b = make_model("mlp", (5,), 2, seed=3), make_model("mlp", (5,), 2, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert resolve_model_name("auto", (3, 8, 8)) == "cnn" and resolve_model_name("auto", (7,)) == "mlp"
    assert resolve_model_name("auto", (3, 28, 28)) == "lenet"


def test_bad_names_options_and_inputs_are_named():
    with pytest.raises(UnknownNameError, match="unknown model 'resnett'") as err:
        make_model("resnett", (3, 8, 8), 2)
    assert "resnet" in str(err.value)
    with pytest.raises(SpurlabError, match="no option"):
        ModelSpec("mlp", options={"channels": (4,)}).build((5,), 2)
    with pytest.raises(SpurlabError, match="needs image inputs"):
        make_model("cnn", (5,), 2)
    with pytest.raises(SpurlabError, match="parameter .freeze. must be one of"):
        ModelSpec("mlp", freeze="all")
    with pytest.raises(SpurlabError, match="no pretrained weights"):
        ModelSpec("resnet", pretrained=True).build((3, 8, 8), 2)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_a_missing_library_names_the_extra_to_install():
    with pytest.raises(SpurlabError, match=r"spurlab\[torchvision\]"):
        make_model("torchvision:resnet18", (3, 32, 32), 2)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_missing_names_its_extra():
    with pytest.raises(SpurlabError, match=r"spurlab\[timm\]"):
        make_model("timm:resnet18", (3, 32, 32), 2)


def test_efficientnet_lite0_has_imagenet_features_and_a_new_head():
    net = make_model("efficientnet-lite0", (1, 16, 16), 3, seed=0)
    assert net.image_size == 32 and net.head.out_features == 3  # small inputs are resized to 32
    x = torch.rand(2, 1, 16, 16)
    assert feature_function(net)(x).shape == (2, 1280)
    untrained = ModelSpec("efficientnet-lite0", pretrained=False).build((3, 32, 32), 3)
    trained_w = net.backbone.state_dict()["_conv_stem.weight"]
    assert not torch.equal(untrained.backbone.state_dict()["_conv_stem.weight"], trained_w)


def test_a_registered_user_network_is_buildable_by_name():
    @register_model("test-tiny", "a test network", inputs="any")
    def build_tiny(input_shape, n_classes, pretrained=False, width=3):
        return make_model("mlp", input_shape, n_classes, hidden=(width,))

    try:
        assert "test-tiny" in model_names()
        net = make_model("test-tiny", (4,), 2, width=7)
        assert net.head.in_features == 7
        assert MODELS.get("test-tiny").options() == {"width": 3}
    finally:
        MODELS._entries.pop("test-tiny", None)


def test_specs_copy_a_trained_module_and_call_a_factory():
    trained = HookNet()
    spec = as_model_spec(trained, feature_layer="body")
    assert spec.kind == "module" and spec.label == "your model (HookNet)"
    copy = spec.build((6,), 2)
    assert copy is not trained and torch.equal(copy.fc.weight, trained.fc.weight)
    factory_spec = as_model_spec(lambda shape, k: HookNet(shape[0], k))
    assert factory_spec.kind == "factory" and factory_spec.build((6,), 3).fc.out_features == 3


def test_a_factory_that_raises_or_returns_junk_is_named():
    def broken(input_shape, n_classes):
        raise RuntimeError("out of cheese")

    with pytest.raises(SpurlabError, match="factory .*broken raised RuntimeError: out of cheese"):
        as_model_spec(broken).build((6,), 2)
    with pytest.raises(SpurlabError, match="returned int, not an nn.Module"):
        as_model_spec(lambda s, k: 3).build((6,), 2)


def test_features_by_method_by_named_layer_or_a_clear_error():
    net = HookNet()
    x = torch.rand(3, 6)
    assert torch.allclose(feature_function(net, "body")(x), net.body(x))
    with pytest.raises(SpurlabError, match="cannot find the penultimate features of HookNet") as err:
        feature_function(net)
    assert "feature_layer" in str(err.value) and "features(x)" in str(err.value)
    with pytest.raises(SpurlabError, match="no submodule 'bodyy'") as err:
        feature_function(net, "bodyy")
    assert "body" in str(err.value)
    feats = penultimate_features(net, np.random.rand(10, 6).astype(np.float32), batch_size=4, feature_layer="body")
    assert feats.shape == (10, 5) and feats.dtype == np.float32


def test_penultimate_features_index_per_batch_and_never_convert_x_whole():
    class Lazy:
        shape, dtype = (9, 6), np.float32
        calls = []

        def __len__(self):
            return 9

        def __getitem__(self, idx):
            assert isinstance(idx, np.ndarray)  # an index array, never the whole thing at once
            self.calls.append(len(idx))
            return np.ones((len(idx), 6), np.float32)

        def __array__(self, *args, **kwargs):
            raise AssertionError("converted whole")

    lazy = Lazy()
    feats = penultimate_features(make_model("mlp", (6,), 2, hidden=(4,)), lazy, batch_size=4)
    assert feats.shape == (9, 4) and lazy.calls == [4, 4, 1]


def test_a_head_goes_back_on_a_backbone():
    backbone = make_model("mlp", (6,), 2, hidden=(4,))
    head = LinearHead(4, 2).head
    assert attach_head(backbone, head) is backbone and torch.equal(backbone.head.weight, head.weight)
    wrapped = attach_head(HookNet(), nn.Linear(5, 2), "body")
    x = torch.rand(2, 6)
    assert torch.allclose(wrapped(x), wrapped.head(wrapped.backbone.body(x)))


def test_torchscript_files_load_and_other_files_are_refused(tmp_path):
    scripted = torch.jit.script(ExportedNet())
    path = tmp_path / "net.pt"
    torch.jit.save(scripted, str(path))
    spec = model_from_text(str(path))
    assert spec.kind == "module" and feature_function(spec.model)(torch.rand(2, 6)).shape == (2, 5)
    with pytest.raises(SpurlabError, match="TorchScript model"):
        feature_function(spec.model, "body")
    state = tmp_path / "weights.pt"
    torch.save(HookNet().state_dict(), state)
    with pytest.raises(SpurlabError, match="is not a TorchScript model") as err:
        load_model_file(state)
    assert "torch.jit.save" in str(err.value)
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    with pytest.raises(SpurlabError, match="is not a TorchScript model"):
        load_model_file(text)
    with pytest.raises(SpurlabError, match="model file not found"):
        load_model_file(tmp_path / "missing.pt")


def test_pkg_module_factory_is_imported(tmp_path, monkeypatch):
    (tmp_path / "my_factories.py").write_text(
        "from torch import nn\n"
        "def make(input_shape, n_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], n_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        spec = model_from_text("my_factories:make")
        assert spec.kind == "factory" and spec.build((4,), 3)(torch.rand(2, 4)).shape == (2, 3)
        with pytest.raises(SpurlabError, match="cannot import the model 'my_factories:nothing'"):
            model_from_text("my_factories:nothing")
    finally:
        sys.modules.pop("my_factories", None)
    with pytest.raises(UnknownNameError):
        model_from_text("no-such-model")


def test_model_options_are_split_from_data_options():
    model, rest = split_model_options({"freeze": "backbone", "model.image_size": 64, "image_size": 32, "p": 0.9})
    assert model == {"freeze": "backbone", "image_size": 64} and rest == {"image_size": 32, "p": 0.9}
    spec = as_model_spec("efficientnet-lite0", **model)
    assert spec.frozen and spec.options == {"image_size": 64} and spec.label.endswith("(frozen backbone)")
