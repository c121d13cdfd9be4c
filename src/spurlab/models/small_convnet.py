"""The small ConvNet of Bombari & Mondelli's network experiments (spurious-memorization).

Two 3x3 conv layers (16 and 32 channels, padding 1), each followed by ReLU and a 2x2
max-pool, then a flattening fully connected layer of 256 units and a linear head. Unlike
``SmallCNN`` (global average pooling) the head sees *where* things are, which is what
lets it fit digits next to a corner patch. Exposes ``features(x)`` and ``head``.
"""
from __future__ import annotations

import torch
from torch import nn

from spurlab.errors import SpurlabError


class SmallConvNet(nn.Module):
    """``conv(16)-pool-conv(32)-pool-fc(hidden)-head`` for images ``(C, H, W)``."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, channels: tuple[int, int] = (16, 32),
                 hidden: int = 256):
        super().__init__()
        if len(input_shape) != 3:
            raise SpurlabError(f"SmallConvNet needs image inputs (C, H, W), got shape {tuple(input_shape)}")
        c, h, w = (int(v) for v in input_shape)
        c1, c2 = (int(v) for v in channels)
        self.conv = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.body = nn.Sequential(self.conv, nn.Linear(c2 * (h // 4) * (w // 4), hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_convnet(input_shape: tuple[int, ...], n_classes: int, seed: int = 0, **options) -> SmallConvNet:
    """A seeded :class:`SmallConvNet`."""
    torch.manual_seed(int(seed))
    return SmallConvNet(tuple(input_shape), n_classes, **options)
