"""Small networks for images and vectors, each exposing ``features(x)`` (penultimate layer) and ``head``;
registered as ``linear``, ``mlp`` and ``cnn`` in the models registry."""
from __future__ import annotations

import math

import torch
from torch import nn

from spurlab.models.model_registry import no_pretrained_weights, register_model


class MLP(nn.Module):
    """Fully connected network; ``hidden=()`` gives a linear model."""

    def __init__(self, in_features: int, n_classes: int, hidden: tuple[int, ...] = (256, 128)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(nn.Module):
    """A few 3x3 conv blocks (conv-BN-free-ReLU, max-pool), global average pooling, linear head."""

    def __init__(self, in_channels: int, n_classes: int, channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(channels):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if i < len(channels) - 1:
                blocks.append(nn.MaxPool2d(2, ceil_mode=True))
            c_in = c_out
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("linear", "a linear classifier on the flattened inputs")
def build_linear(input_shape, n_classes, pretrained=False):
    no_pretrained_weights("linear", pretrained)
    return MLP(int(math.prod(input_shape)), n_classes, hidden=())


@register_model("mlp", "fully connected ReLU network on the flattened inputs (option hidden)")
def build_mlp(input_shape, n_classes, pretrained=False, hidden=(256, 128)):
    no_pretrained_weights("mlp", pretrained)
    return MLP(int(math.prod(input_shape)), n_classes, hidden=tuple(int(h) for h in hidden))


@register_model("cnn", "small CNN: 3x3 conv-ReLU blocks, max-pool, global average pooling (option channels)",
                inputs="images")
def build_cnn(input_shape, n_classes, pretrained=False, channels=(16, 32, 64)):
    no_pretrained_weights("cnn", pretrained)
    return SmallCNN(input_shape[0], n_classes, channels=tuple(int(c) for c in channels))
