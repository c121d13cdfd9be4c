"""Image networks for the memorization studies: a flatten-head CNN and a small ResNet.

Both expose ``features(x)`` (the penultimate layer) and ``head`` like the nets in
:mod:`spurlab.models.nets`; they are registered as ``flatcnn`` and ``resnet`` in the
models registry (:mod:`spurlab.models.model_registry`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from spurlab.errors import SpurlabError
from spurlab.models.model_registry import no_pretrained_weights, register_model

IMAGE_MODELS = ("lenet", "flatcnn", "cnn", "resnet", "torchvision:resnet18", "torchvision:resnet50")


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


class LeNet(nn.Module):
    """LeNet-5 as SpuCo builds it: conv 5x5 (6, padding 2) - ReLU - max-pool, conv 5x5 (16) - ReLU - max-pool,
    then 120 and 84 fully connected ReLU units; ``features`` are the 84 units, ``head`` the linear classifier.

    The flattened map keeps *where* things are (no global pooling), so the features carry the digit's
    shape as well as a background colour: what last-layer retraining (DFR) needs. Any image of at least
    12x12 pixels works (SpuCo's is fixed to 28x28, where the map is 16x5x5).
    """

    def __init__(self, input_shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        c_in, h, w = input_shape
        h2, w2 = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        if h2 < 1 or w2 < 1:
            raise SpurlabError(f"lenet needs images of at least 12x12 pixels, got {h}x{w}",
                               hint="use model=cnn for smaller images")
        self.body = nn.Sequential(
            nn.Conv2d(c_in, 6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * h2 * w2, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.head = nn.Linear(84, n_classes)

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


@register_model("flatcnn", "conv-pool blocks and a dense layer on the flattened map (options channels, hidden)",
                inputs="images")
def build_flatcnn(input_shape, n_classes, pretrained=False, channels=(8, 16), hidden=64):
    no_pretrained_weights("flatcnn", pretrained)
    return FlatCNN(tuple(input_shape), n_classes, channels=tuple(int(c) for c in channels), hidden=int(hidden))


@register_model("lenet", "LeNet-5 as in SpuCo: two 5x5 conv + pool blocks, 120 and 84 ReLU units (84 features)",
                inputs="images")
def build_lenet(input_shape, n_classes, pretrained=False):
    no_pretrained_weights("lenet", pretrained)
    return LeNet(tuple(input_shape), n_classes)


@register_model("resnet", "spurlab's small ResNet, one basic block per stage (option channels: stage widths)",
                inputs="images")
def build_resnet(input_shape, n_classes, pretrained=False, channels=(32, 64, 128, 256)):
    no_pretrained_weights("resnet", pretrained)
    return SmallResNet(input_shape[0], n_classes, widths=tuple(int(c) for c in channels))


def n_parameters(model: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in model.parameters()))
