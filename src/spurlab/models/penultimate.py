"""Penultimate features of any model: the convention every step that needs them follows.

Failure directions, DFR, the units step and the feature cache read a model's
*penultimate features*: the activations its last linear layer (its ``head``)
receives. spurlab finds them in this order:

1. ``feature_layer="name"`` given: the output of the submodule ``name``
   (a name from ``model.named_modules()``, e.g. ``"avgpool"`` or ``"body.3"``),
   caught by a forward hook during ``model(x)`` and flattened to (N, D);
2. the model has a ``features(x)`` method (or a ``features`` submodule): its
   output, flattened to (N, D). spurlab's own networks split into
   ``features`` + ``head`` this way, and so should yours::

       class MyNet(nn.Module):
           def features(self, x): return self.body(x)      # (N, D)
           def forward(self, x): return self.head(self.features(x))

   TorchScript models cannot be hooked: export the method
   (``@torch.jit.export def features(self, x): ...``) before ``torch.jit.save``.

Anything else raises a :class:`SpurlabError` that says which of the two to add.
Inputs are read batch by batch (``x[index_array]``), so ``x`` may be a lazy
array-like of images that decodes per batch.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from spurlab.errors import SpurlabError
from spurlab.models.layers import model_device
from spurlab.utils import progress

FEATURES_HINT = ("give the model a features(x) method returning the activations its last linear layer receives "
                 "(and call that layer 'head'), or pass feature_layer='<submodule name>'")


def is_script_module(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def _hooked_features(model: nn.Module, feature_layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    modules = dict(model.named_modules())
    if feature_layer not in modules or not feature_layer:
        names = [n for n in modules if n][:40]
        raise SpurlabError(f"{type(model).__name__} has no submodule {feature_layer!r} to take features from",
                           hint=f"feature_layer must name one of: {', '.join(names)}")
    if is_script_module(model):
        raise SpurlabError(f"feature_layer={feature_layer!r} cannot be used on a TorchScript model (no hooks)",
                           hint="export a features method before saving: @torch.jit.export def features(self, x)")
    layer = modules[feature_layer]

    def run(x: torch.Tensor) -> torch.Tensor:
        caught: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: caught.append(out))
        try:
            model(x)
        finally:
            handle.remove()
        if not caught or not isinstance(caught[0], torch.Tensor):
            raise SpurlabError(f"submodule {feature_layer!r} did not produce a tensor during forward",
                               hint="name a layer the forward pass runs and that returns one tensor")
        return torch.flatten(caught[0], 1)

    return run


def feature_function(model: nn.Module, feature_layer: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(x) -> (N, D)`` penultimate features of ``model`` by the convention above."""
    if feature_layer:
        return _hooked_features(model, feature_layer)
    features = getattr(model, "features", None)
    if callable(features):
        return lambda x: torch.flatten(features(x), 1)
    script_hint = " (TorchScript: @torch.jit.export the features method)" if is_script_module(model) else ""
    raise SpurlabError(f"cannot find the penultimate features of {type(model).__name__}{script_hint}",
                       hint=FEATURES_HINT)


def check_features(model: nn.Module, feature_layer: str | None = None) -> None:
    """Raise the convention's error now rather than halfway through a run."""
    feature_function(model, feature_layer)


def float_batch(batch, device) -> torch.Tensor:
    """One batch of inputs as float32 on ``device``; uint8 pixels scaled to [0, 1] as the trainer does."""
    tensor = torch.as_tensor(np.asarray(batch))
    if tensor.dtype == torch.uint8:
        return tensor.to(device=device, dtype=torch.float32).div_(255.0)
    return tensor.to(device=device, dtype=torch.float32)


def batch_indices(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield np.arange(start, min(start + batch_size, n))


@torch.no_grad()
def penultimate_features(model: nn.Module, x, batch_size: int = 512, device: str = "cpu",
                         feature_layer: str | None = None) -> np.ndarray:
    """The model's penultimate features as float32 (N, D).

    ``x`` is read one batch of indices at a time, never converted whole; the output is allocated
    once (no list of batches concatenated at the end, which would hold the features twice).
    """
    fn = feature_function(model, feature_layer)
    model.eval().to(device)
    out: np.ndarray | None = None
    for idx in progress(batch_indices(len(x), batch_size), "penultimate features", total=-(-len(x) // batch_size)):
        f = fn(float_batch(x[idx], device)).float().cpu().numpy()
        if out is None:
            out = np.empty((len(x), f.shape[1]), dtype=np.float32)
        out[idx] = f
    return out if out is not None else np.empty((0, 0), np.float32)


class LinearHead(nn.Module):
    """A linear classifier on precomputed features: ``features`` is the identity, ``head`` the layer.

    Methods train one on cached features when the backbone is frozen; DFR and failure
    directions then read the features straight through.
    """

    def __init__(self, in_features: int, n_classes: int):
        super().__init__()
        self.head = nn.Linear(in_features, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BackboneWithHead(nn.Module):
    """A (frozen) backbone's penultimate features followed by a new linear ``head``."""

    def __init__(self, backbone: nn.Module, head: nn.Linear, feature_layer: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_layer = feature_layer
        self._features = feature_function(backbone, feature_layer)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def attach_head(backbone: nn.Module, head: nn.Linear, feature_layer: str | None = None) -> nn.Module:
    """``backbone`` with ``head`` as its last layer: written into ``backbone.head`` when it has a linear
    head of the same shape (and no other feature layer is named), else wrapped."""
    own = getattr(backbone, "head", None)
    if (not feature_layer and isinstance(own, nn.Linear) and not is_script_module(backbone)
            and own.weight.shape == head.weight.shape):
        with torch.no_grad():
            own.weight.copy_(head.weight.to(own.weight))
            own.bias.copy_(head.bias.to(own.bias))
        return backbone
    return BackboneWithHead(backbone, head.to(model_device(backbone)), feature_layer)
