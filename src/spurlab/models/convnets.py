"""Image networks for the memorization studies: a flatten-head CNN and a small ResNet.

Both expose ``features(x)`` (the penultimate layer) and ``head`` like the nets in
:mod:`spurlab.models.nets`. :func:`build_image_model` also reaches torchvision's
ResNets when torchvision is installed (it is optional and imported lazily).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from spurlab.errors import SpurlabError, UnknownNameError

IMAGE_MODELS = ("flatcnn", "cnn", "resnet", "torchvision:resnet18", "torchvision:resnet50")


class FlatCNN(nn.Module):
    """Conv-ReLU-max-pool blocks, then a fully connected hidden layer on the flattened map.

    Keeping the spatial layout (no global pooling) lets a few units tie a label to
    *where* something is, the way large networks memorize atypical examples.
    """

    def __init__(self, input_shape: tuple[int, int, int], n_classes: int, channels: tuple[int, ...] = (8, 16),
                 hidden: int = 64):
        super().__init__()
        c_in, h, w = input_shape
        blocks: list[nn.Module] = []
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, h, w = c_out, h // 2, w // 2
        if h < 1 or w < 1:
            raise SpurlabError(f"{len(channels)} pooling blocks shrink a {input_shape[1]}x{input_shape[2]} "
                               f"image to nothing", hint="use fewer conv channels entries")
        self.body = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(c_in * h * w, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet with one basic block per stage (ResNet-10-like) for 32-224 px images."""

    def __init__(self, in_channels: int, n_classes: int, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c_in = [], widths[0]
        for i, width in enumerate(widths):
            stages.append(BasicBlock(c_in, width, stride=1 if i == 0 else 2))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _TorchvisionResNet(nn.Module):
    """torchvision's ResNet with ``features``/``head`` split off its ``fc``."""

    def __init__(self, net: nn.Module, n_classes: int):
        super().__init__()
        self.head = nn.Linear(net.fc.in_features, n_classes)
        net.fc = nn.Identity()
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def torchvision_resnet(name: str, n_classes: int, pretrained: bool = False) -> nn.Module:
    try:
        import torchvision
    except ImportError:
        raise SpurlabError(f"model {name!r} needs torchvision, which is not installed",
                           hint="pip install torchvision, or use model=resnet (spurlab's own small ResNet)") from None
    arch = name.split(":", 1)[1]
    if not hasattr(torchvision.models, arch):
        raise SpurlabError(f"torchvision has no model {arch!r}")
    weights = "DEFAULT" if pretrained else None
    return _TorchvisionResNet(getattr(torchvision.models, arch)(weights=weights), n_classes)


def build_image_model(name: str, input_shape: tuple[int, ...], n_classes: int, seed: int = 0,
                      channels: tuple[int, ...] | None = None, pretrained: bool = False) -> nn.Module:
    """``flatcnn``, ``cnn`` (spurlab's SmallCNN), ``resnet`` or ``torchvision:<arch>`` for images (C, H, W)."""
    if len(input_shape) != 3:
        raise SpurlabError(f"image models need inputs (C, H, W), got {input_shape}")
    torch.manual_seed(seed)
    if name == "flatcnn":
        return FlatCNN(tuple(input_shape), n_classes, channels=tuple(channels or (8, 16)))
    if name == "cnn":
        from spurlab.models.nets import make_model

        return make_model("cnn", tuple(input_shape), n_classes, seed=seed, channels=tuple(channels or (16, 32, 64)))
    if name == "resnet":
        return SmallResNet(input_shape[0], n_classes, widths=tuple(channels or (32, 64, 128, 256)))
    if name.startswith("torchvision:"):
        return torchvision_resnet(name, n_classes, pretrained)
    raise UnknownNameError("image model", name, list(IMAGE_MODELS))


def n_parameters(model: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in model.parameters()))
