"""Find the few units (channels, neurons or single weights) a network memorizes with.

Three selectors from *The Silent Majority* (You et al., 2025), each ranked
globally across every conv and linear layer of any ``torch.nn.Module``:

* ``weight_norm`` — structured: output channel / neuron ``c`` of a layer scores
  ``||W[c]||_2``; the largest are the most critical (greedy top-k).
* ``group_gradient`` — structured: ``||dL/dW[c]||_2`` with ``L`` the cross-entropy
  summed over the ``n_worst`` worst-predicted examples of one group; repeated per
  group it gives group-specific units.
* ``magnitude`` — unstructured: individual weights ranked by ``|w|``; the
  smallest (default) or largest ``fraction`` of them.

Units are named ``(layer, index)``: the module name and the output channel, or
the flat index of one weight inside ``layer.weight``.

>>> units = find_critical_units(model, splits["train"], "group_gradient", k=3, group=1)  # doctest: +SKIP
>>> units.table()                                                                       # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spurlab.data.grouped import GroupedDataset
from spurlab.data.lazy_images import is_lazy, take_rows
from spurlab.errors import SpurlabError, UnknownNameError
from spurlab.models.layers import model_device, prunable_layers
from spurlab.models.units import GRANULARITIES, CriticalUnits
from spurlab.params import Boolean, Interval, Options, check_params, optional, positive_int
from spurlab.utils import check_labels, check_same_length

METHODS = ("weight_norm", "group_gradient", "magnitude")
GRAD_BATCH = 32  # examples per backward pass of group_loss_gradients (the summed gradient does not depend on it)
DEFAULT_GRANULARITY = {"weight_norm": "channel", "group_gradient": "channel", "magnitude": "weight"}


def as_arrays(data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(x, y, g)`` from a GroupedDataset or an ``(x, y[, g])`` tuple."""
    if isinstance(data, GroupedDataset):
        return data.x, data.y, data.g if data.has_groups else None
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        x, y = data[0] if is_lazy(data[0]) else np.asarray(data[0]), check_labels("y", data[1])  # lazy: per batch
        g = check_labels("groups", data[2]) if len(data) == 3 and data[2] is not None else None
        check_same_length(x=x, y=y, groups=g)
        return x, y, g
    raise SpurlabError(f"cannot read examples from a {type(data).__name__}",
                       hint="pass a GroupedDataset or a tuple (x, y[, groups])")


# ------------------------------------------------------------------ the selector
class CriticalUnitSelector:
    """Rank every unit of a model by a selector and keep the top ``k`` (or a ``fraction``).

    Parameters
    ----------
    method : ``weight_norm``, ``group_gradient`` or ``magnitude``.
    granularity : ``channel`` (output channels / neurons) or ``weight`` (single
        weights); ``None`` picks channel for the structured selectors and weight
        for ``magnitude``.
    k, fraction : how many units to keep: a count, or a fraction of all candidate
        units (at least one). Give at most one; the default is ``k=10`` for the
        structured selectors and ``fraction=0.05`` for ``magnitude``.
    group : the group whose worst-predicted examples define the loss of
        ``group_gradient`` (``None``: the worst-predicted examples of any group).
    largest : keep the highest scores (default, except ``magnitude``: the smallest).
    n_worst : size of the worst-predicted batch for ``group_gradient`` (paper: 200).
    include_output : also rank units of the output layer (default: only for
        ``granularity="weight"``).
    layers : rank only these layers (module names), or ``"conv"`` / ``"linear"``
        (default: every conv and linear layer).

    After ``fit(model, data)``: ``units_`` (a :class:`CriticalUnits`), ``scores_``
    (``{layer: per-unit scores}``) and ``n_candidates_``.
    """

    def __init__(self, method: str = "weight_norm", granularity: str | None = None, k: int | None = None,
                 fraction: float | None = None, group: int | None = None, largest: bool | None = None,
                 n_worst: int = 200, include_output: bool | None = None,
                 layers: str | list[str] | tuple[str, ...] | None = None, batch_size: int = 512):
        self.method = method
        self.granularity = granularity
        self.k = k
        self.fraction = fraction
        self.group = group
        self.largest = largest
        self.n_worst = n_worst
        self.include_output = include_output
        self.layers = layers
        self.batch_size = batch_size

    # ------------------------------------------------------------ validation
    _parameter_constraints = {
        "granularity": optional(Options(*GRANULARITIES)), "k": optional(positive_int()),
        "fraction": optional(Interval(float, 0, 1, closed="right")), "group": optional(Interval(int, 0, None)),
        "largest": optional(Boolean()), "n_worst": positive_int(), "include_output": optional(Boolean()),
        "batch_size": positive_int(),
    }

    def _resolved(self) -> dict[str, Any]:
        """The declared constraints (spurlab.params), then the rules that span several settings; before any work."""
        if self.method not in METHODS:
            raise UnknownNameError("selector", self.method, list(METHODS))
        opts = check_params("CriticalUnitSelector", self._parameter_constraints,
                            {name: getattr(self, name) for name in self._parameter_constraints})
        granularity = opts["granularity"] or DEFAULT_GRANULARITY[self.method]
        if self.method == "magnitude" and granularity != "weight":
            raise SpurlabError("the magnitude selector ranks single weights",
                               hint="use method='weight_norm' to rank whole channels by their norm")
        if opts["k"] is not None and opts["fraction"] is not None:
            raise SpurlabError("give k or fraction, not both")
        if opts["k"] is None and opts["fraction"] is None:
            opts["k"], opts["fraction"] = (None, 0.05) if self.method == "magnitude" else (10, None)
        largest = opts["largest"] if opts["largest"] is not None else self.method != "magnitude"
        include_output = opts["include_output"] if opts["include_output"] is not None else granularity == "weight"
        return {**opts, "granularity": granularity, "largest": largest, "include_output": include_output}

    # ------------------------------------------------------------ fitting
    def fit(self, model: nn.Module, data: Any = None) -> CriticalUnitSelector:
        opts = self._resolved()
        layers = prunable_layers(model, opts["include_output"], self.layers)
        if self.method == "group_gradient":
            if data is None:
                raise SpurlabError("group_gradient needs examples to compute the loss on",
                                   hint="pass the training split (a GroupedDataset or (x, y, groups))")
            tensors = group_loss_gradients(model, layers, data, opts["group"], opts["n_worst"],
                                           opts["batch_size"])
        else:
            tensors = {name: m.weight.detach() for name, m in layers.items()}
        self.scores_ = {name: unit_scores(t, opts["granularity"]).cpu() for name, t in tensors.items()}
        self.n_candidates_ = int(sum(s.numel() for s in self.scores_.values()))
        n_keep = opts["k"] if opts["k"] is not None else math.ceil(opts["fraction"] * self.n_candidates_)
        self.units_ = rank_globally(self.scores_, min(int(n_keep), self.n_candidates_), opts["largest"],
                                    opts["granularity"], self.method, opts["group"])
        return self


def unit_scores(tensor: torch.Tensor, granularity: str) -> torch.Tensor:
    """Per-unit score of a weight-shaped tensor: row L2 norms (channel) or absolute values (weight)."""
    tensor = tensor.detach().float()
    if granularity == "channel":
        return tensor.reshape(tensor.shape[0], -1).norm(dim=1)
    return tensor.reshape(-1).abs()


def rank_globally(scores: dict[str, torch.Tensor], n_keep: int, largest: bool, granularity: str,
                  method: str = "", group: int | None = None) -> CriticalUnits:
    """The ``n_keep`` best units over all layers; ties are broken by layer order, then index."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).double() for n in names])
    layer_of = torch.cat([torch.full((scores[n].numel(),), i, dtype=torch.long) for i, n in enumerate(names)])
    offsets = torch.cat([torch.arange(scores[n].numel()) for n in names])
    # A stable sort keeps ties in layer/index order, so the ranking is deterministic.
    order = torch.sort(-flat if largest else flat, stable=True).indices[:n_keep]
    return CriticalUnits(layers=np.array([names[i] for i in layer_of[order].tolist()], dtype=object),
                         indices=offsets[order].numpy(), scores=flat[order].numpy(),
                         granularity=granularity, method=method, group=group)


# ------------------------------------------------------------------ gradients on a group
@torch.no_grad()
def per_example_losses(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Cross-entropy of every example (model in eval mode, on the model's device)."""
    device = model_device(model)
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[start:start + batch_size], dtype=torch.float32, device=device)
        yb = torch.as_tensor(y[start:start + batch_size], dtype=torch.long, device=device)
        out.append(F.cross_entropy(model(xb), yb, reduction="none").cpu())
    return torch.cat(out).numpy() if out else np.empty(0, np.float32)


def worst_predicted(model: nn.Module, x: np.ndarray, y: np.ndarray, g: np.ndarray | None, group: int | None,
                    n_worst: int, batch_size: int = 512) -> np.ndarray:
    """Indices of the ``n_worst`` highest-loss examples of ``group`` (of all examples when None)."""
    pool = np.arange(len(y))
    if group is not None:
        if g is None:
            raise SpurlabError(f"group={group} was requested but the data has no group labels",
                               hint="pass a GroupedDataset with a spurious attribute, or (x, y, groups)")
        pool = np.flatnonzero(g == int(group))
        if pool.size == 0:
            raise SpurlabError(f"group {group} has no examples in the data",
                               hint=f"groups present: {sorted(set(np.unique(g).tolist()))}")
    losses = per_example_losses(model, take_rows(x, pool), y[pool], batch_size)  # lazy images stay lazy
    return pool[np.argsort(-losses, kind="stable")[:n_worst]]


def group_loss_gradients(model: nn.Module, layers: dict[str, nn.Module], data: Any, group: int | None,
                         n_worst: int, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """``dL/dW`` of every layer's weight, ``L`` the summed CE of the worst-predicted examples of ``group``.

    Gradients are taken with ``torch.autograd.grad``, so the caller's ``.grad``
    buffers are not touched; the model is evaluated in eval mode and its mode restored.
    """
    x, y, g = as_arrays(data)
    was_training = model.training
    model.eval()
    try:
        chosen = worst_predicted(model, x, y, g, group, n_worst, batch_size)
        weights = [m.weight for m in layers.values()]
        grads = [torch.zeros_like(w) for w in weights]
        device = model_device(model)
        step = min(batch_size, GRAD_BATCH)  # backprop keeps every activation: a few MB per image for a backbone
        for start in range(0, len(chosen), step):
            idx = chosen[start:start + step]
            xb = torch.as_tensor(x[idx], dtype=torch.float32, device=device)
            yb = torch.as_tensor(y[idx], dtype=torch.long, device=device)
            loss = F.cross_entropy(model(xb), yb, reduction="sum")
            for acc, grad in zip(grads, torch.autograd.grad(loss, weights, allow_unused=True)):
                if grad is not None:
                    acc += grad
    finally:
        model.train(was_training)
    return dict(zip(layers, grads))


# ------------------------------------------------------------------ facade
def find_critical_units(model: nn.Module, data: Any = None, method: str = "weight_norm",
                        granularity: str | None = None, k: int | None = None, fraction: float | None = None,
                        group: int | None = None, **options: Any) -> CriticalUnits:
    """The critical units of ``model`` by one selector (see :class:`CriticalUnitSelector`)."""
    selector = CriticalUnitSelector(method=method, granularity=granularity, k=k, fraction=fraction,
                                    group=group, **options)
    return selector.fit(model, data).units_


def critical_units_per_group(model: nn.Module, data: Any, k: int = 10, groups: list[int] | None = None,
                             **options: Any) -> dict[int, CriticalUnits]:
    """``group_gradient`` units for each group (every group present in ``data`` by default)."""
    _, _, g = as_arrays(data)
    if g is None:
        raise SpurlabError("per-group critical units need group labels",
                           hint="pass a GroupedDataset with a spurious attribute, or (x, y, groups)")
    groups = sorted(set(np.unique(g).tolist())) if groups is None else groups
    return {int(grp): find_critical_units(model, data, "group_gradient", k=k, group=int(grp), **options)
            for grp in groups}
