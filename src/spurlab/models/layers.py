"""Layer-level helpers for any ``torch.nn.Module``: its selectable conv/linear layers and its device."""
from __future__ import annotations

import torch
from torch import nn

from spurlab.errors import SpurlabError

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_layers(model: nn.Module, include_output: bool = True,
                    only: str | list[str] | tuple[str, ...] | None = None) -> dict[str, nn.Module]:
    """The conv and linear layers of ``model`` in registration order, by module name.

    ``include_output=False`` leaves out the last of them (the classifier head):
    removing a class's logit is not a finding about memorization. ``only`` keeps
    the layers named in it, or all ``"conv"`` / all ``"linear"`` layers.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    if not layers:
        raise SpurlabError(f"{type(model).__name__} has no conv or linear layer to select units from",
                           hint="critical-unit selectors work on nn.Conv1d/2d/3d and nn.Linear layers")
    if not include_output:
        layers.pop(list(layers)[-1])
    if only is not None:
        layers = _restrict(layers, only)
    if not layers:
        raise SpurlabError("no conv/linear layer is left to select units from",
                           hint="pass include_output=True, or check the layers asked for")
    return layers


def _restrict(layers: dict[str, nn.Module], only: str | list[str] | tuple[str, ...]) -> dict[str, nn.Module]:
    if only == "conv":
        return {n: m for n, m in layers.items() if not isinstance(m, nn.Linear)}
    if only == "linear":
        return {n: m for n, m in layers.items() if isinstance(m, nn.Linear)}
    names = [only] if isinstance(only, str) else list(only)
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise SpurlabError(f"no selectable layer named {', '.join(map(repr, unknown))}",
                           hint=f"selectable layers: {', '.join(layers)} (or 'conv' / 'linear')")
    return {n: layers[n] for n in names}


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
