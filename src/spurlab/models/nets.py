"""Small networks for images and vectors, each exposing ``features(x)`` (penultimate layer)."""
from __future__ import annotations

import math

import torch
from torch import nn

from spurlab.errors import UnknownNameError


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


def make_model(name: str, input_shape: tuple[int, ...], n_classes: int, seed: int = 0, **kwargs) -> nn.Module:
    """``linear``, ``mlp`` or ``cnn`` for inputs of ``input_shape`` (without the batch axis)."""
    torch.manual_seed(seed)
    n_in = int(math.prod(input_shape))
    if name == "linear":
        return MLP(n_in, n_classes, hidden=())
    if name == "mlp":
        return MLP(n_in, n_classes, hidden=tuple(kwargs.get("hidden", (256, 128))))
    if name == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"cnn needs image inputs (C, H, W), got {input_shape}")
        return SmallCNN(input_shape[0], n_classes, channels=tuple(kwargs.get("channels", (16, 32, 64))))
    raise UnknownNameError("model", name, ["linear", "mlp", "cnn"])


@torch.no_grad()
def penultimate_features(model: nn.Module, x, batch_size: int = 512, device: str = "cpu"):
    """The model's ``features(x)`` (its penultimate layer) as a numpy array."""
    import numpy as np

    if not hasattr(model, "features"):
        raise TypeError(f"{type(model).__name__} has no features() method; wrap it or pass embeddings")
    model.eval().to(device)
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[start:start + batch_size], dtype=torch.float32, device=device)
        out.append(model.features(xb).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)
