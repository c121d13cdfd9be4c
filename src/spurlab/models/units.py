"""A ranked set of a network's units (channels, neurons or single weights), shared by probes and edits."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from spurlab.params import Options, check_param, positive_int
from spurlab.utils import check_same_length

GRANULARITIES = ("channel", "weight")


@dataclass
class CriticalUnits:
    """A ranked set of units, most critical first.

    ``layers[i]`` and ``indices[i]`` name unit ``i``: an output channel (neuron)
    of that layer for ``granularity="channel"``, a flat index into
    ``layer.weight`` for ``granularity="weight"``.
    """

    layers: np.ndarray  # module names (object array)
    indices: np.ndarray  # int64
    scores: np.ndarray  # float64, the selector's score of each unit
    granularity: str = "channel"
    method: str = ""
    group: int | None = None

    def __post_init__(self) -> None:
        self.layers = np.asarray(self.layers, dtype=object)
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        check_same_length(layers=self.layers, indices=self.indices, scores=self.scores)
        self.granularity = check_param("CriticalUnits", "granularity", Options(*GRANULARITIES), self.granularity)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def units(self) -> list[tuple[str, int]]:
        return [(str(layer), int(i)) for layer, i in zip(self.layers, self.indices)]

    def top(self, k: int) -> CriticalUnits:
        """The ``k`` most critical units."""
        k = check_param("CriticalUnits.top", "k", positive_int(), k)
        return replace(self, layers=self.layers[:k], indices=self.indices[:k], scores=self.scores[:k])

    def by_layer(self) -> dict[str, np.ndarray]:
        """``{layer: indices}`` in first-appearance order."""
        out: dict[str, list[int]] = {}
        for layer, index in zip(self.layers, self.indices):
            out.setdefault(str(layer), []).append(int(index))
        return {layer: np.asarray(idx, dtype=np.int64) for layer, idx in out.items()}

    def weight_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``{layer: bool tensor shaped like layer.weight}``, True where a selected unit lies."""
        modules = dict(model.named_modules())
        masks = {}
        for layer, idx in self.by_layer().items():
            weight = modules[layer].weight
            mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
            if self.granularity == "weight":
                mask[torch.as_tensor(idx, device=weight.device)] = True
                masks[layer] = mask.view_as(weight)
            else:
                mask = mask.view(weight.shape[0], -1)
                mask[torch.as_tensor(idx, device=weight.device)] = True
                masks[layer] = mask.view_as(weight)
        return masks

    def table(self) -> pd.DataFrame:
        """One row per unit: rank, layer, index, score (and the group it was selected for)."""
        frame = pd.DataFrame({"rank": np.arange(1, len(self) + 1), "layer": self.layers.astype(str),
                              "index": self.indices, "score": self.scores})
        frame["granularity"] = self.granularity
        frame["method"] = self.method
        if self.group is not None:
            frame["group"] = self.group
        return frame

    def labels(self) -> list[str]:
        """``layer[index]`` strings for plots and reports."""
        return [f"{layer}[{index}]" for layer, index in self.units]
