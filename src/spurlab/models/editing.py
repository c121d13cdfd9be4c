"""Edit selected units of a network without ever silently changing the caller's model.

An :class:`Intervention` says what to do to a set of units
(:class:`~spurlab.probes.neurons.CriticalUnits`):

* ``zero`` — set the weights (and, for channels, the bias) to 0;
* ``random_init`` — redraw them from ``N(0, sigma^2)``;
* ``random_noise`` — add ``N(0, sigma^2)`` noise;
* ``rewind`` — put back their values from a reference state dict, e.g. a
  checkpoint ``r`` epochs earlier (:func:`rewind_reference`).

:func:`intervene` returns an edited deep copy; :func:`edited` edits in place
inside a ``with`` block and restores the weights on exit, errors included.
:func:`evaluate_interventions` scores many interventions at once; the batched
strategies live in :mod:`spurlab.models.batched_edits`.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from spurlab.errors import SpurlabError, UnknownNameError
from spurlab.models.units import CriticalUnits

MODES = ("zero", "random_init", "random_noise", "rewind")


@dataclass(eq=False)
class Intervention:
    """One edit: ``mode`` applied to ``units`` (``sigma`` and ``seed`` for the random modes)."""

    units: CriticalUnits
    mode: str = "zero"
    sigma: float = 0.01
    seed: int = 0
    reference: Mapping[str, torch.Tensor] | None = None  # state dict the rewind mode reads
    include_bias: bool = True  # channel edits also edit the channel's bias
    tags: dict = field(default_factory=dict)  # free-form labels for the caller (k, selector, ...)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UnknownNameError("intervention mode", self.mode, list(MODES))
        if self.mode in ("random_init", "random_noise") and not float(self.sigma) > 0:
            raise SpurlabError(f"{self.mode} needs sigma > 0, got {self.sigma}",
                               hint="the paper sweeps sigma over 0.005 ... 0.15")
        if self.mode == "rewind" and self.reference is None:
            raise SpurlabError("the rewind mode needs reference weights",
                               hint="pass reference=rewind_reference(checkpoints, epochs_back) "
                                    "(train with TrainConfig(checkpoint_every=1))")


@dataclass(eq=False)
class ParamEdit:
    """New values for some rows (``channel``) or flat positions (``weight``) of one parameter."""

    name: str  # qualified parameter name, e.g. "body.0.weight"
    param: nn.Parameter
    index: torch.Tensor
    values: torch.Tensor
    by_rows: bool

    def apply_to(self, tensor: torch.Tensor) -> None:
        if self.by_rows:
            tensor[self.index] = self.values
        else:
            tensor.view(-1)[self.index] = self.values


# ------------------------------------------------------------------ planning edits
def _new_values(current: torch.Tensor, mode: str, sigma: float, gen: torch.Generator,
                reference: torch.Tensor | None) -> torch.Tensor:
    if mode == "zero":
        return torch.zeros_like(current)
    if mode == "rewind":
        return reference.to(device=current.device, dtype=current.dtype)
    # Noise is drawn on the CPU so the same seed gives the same edit on every device.
    noise = (torch.randn(current.shape, generator=gen) * float(sigma)).to(current.device, current.dtype)
    return noise if mode == "random_init" else current + noise


def _reference_slice(reference: Mapping[str, torch.Tensor], name: str, index: torch.Tensor,
                     by_rows: bool, shape: torch.Size) -> torch.Tensor:
    if name not in reference:
        raise SpurlabError(f"the rewind reference has no entry {name!r}",
                           hint="pass a state dict of the same architecture (a trainer checkpoint)")
    ref = reference[name].detach()
    if ref.shape != shape:
        raise SpurlabError(f"the rewind reference's {name!r} has shape {tuple(ref.shape)}, "
                           f"the model's {tuple(shape)}")
    index = index.to(ref.device)
    return ref[index] if by_rows else ref.reshape(-1)[index]


def plan_edits(model: nn.Module, intervention: Intervention) -> list[ParamEdit]:
    """The parameter edits ``intervention`` makes on ``model`` (nothing is changed yet)."""
    units = intervention.units
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(int(intervention.seed))
    by_rows = units.granularity == "channel"
    edits = []
    for layer, idx in units.by_layer().items():
        module = modules.get(layer)
        if module is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise SpurlabError(f"the model has no layer {layer!r} with a weight",
                               hint="select the units on this same model (find_critical_units)")
        names = ["weight"]
        if by_rows and intervention.include_bias and getattr(module, "bias", None) is not None:
            names.append("bias")
        for pname in names:
            param = getattr(module, pname)
            size = param.shape[0] if by_rows else param.numel()
            if idx.min() < 0 or idx.max() >= size:
                raise SpurlabError(f"unit index {int(idx.max())} is out of range for {layer}.{pname} "
                                   f"({size} {'channels' if by_rows else 'weights'})")
            index = torch.as_tensor(idx, device=param.device)
            current = param.detach()[index] if by_rows else param.detach().reshape(-1)[index]
            qualified = f"{layer}.{pname}"
            ref = (_reference_slice(intervention.reference, qualified, index, by_rows, param.shape)
                   if intervention.mode == "rewind" else None)
            values = _new_values(current, intervention.mode, intervention.sigma, gen, ref)
            edits.append(ParamEdit(qualified, param, index, values, by_rows))
    return edits


def _as_intervention(units: CriticalUnits | Intervention, mode: str, sigma: float, seed: int,
                     reference: Mapping[str, torch.Tensor] | None, include_bias: bool) -> Intervention:
    if isinstance(units, Intervention):
        return units
    return Intervention(units, mode=mode, sigma=sigma, seed=seed, reference=reference, include_bias=include_bias)


# ------------------------------------------------------------------ applying edits
@contextlib.contextmanager
def edited(model: nn.Module, units: CriticalUnits | Intervention, mode: str = "zero", sigma: float = 0.01,
           seed: int = 0, reference: Mapping[str, torch.Tensor] | None = None,
           include_bias: bool = True) -> Iterator[nn.Module]:
    """Edit ``model`` in place for the duration of the block; its weights are restored on exit.

    >>> with edited(model, units.top(3), "zero") as m:   # doctest: +SKIP
    ...     acc = evaluate(m)
    """
    edits = plan_edits(model, _as_intervention(units, mode, sigma, seed, reference, include_bias))
    with applied_edits(edits):
        yield model


@contextlib.contextmanager
def applied_edits(edits: list[ParamEdit]) -> Iterator[None]:
    """Apply planned edits in place; restore every touched parameter on exit."""
    saved: dict[str, tuple[nn.Parameter, torch.Tensor]] = {}
    for e in edits:
        saved.setdefault(e.name, (e.param, e.param.detach().clone()))
    try:
        with torch.no_grad():
            for e in edits:
                e.apply_to(e.param.data)
        yield
    finally:
        with torch.no_grad():
            for param, original in saved.values():
                param.data.copy_(original)


def intervene(model: nn.Module, units: CriticalUnits | Intervention, mode: str = "zero", sigma: float = 0.01,
              seed: int = 0, reference: Mapping[str, torch.Tensor] | None = None,
              include_bias: bool = True) -> nn.Module:
    """An edited deep copy of ``model``; the caller's model is left as it was."""
    clone = copy.deepcopy(model)
    intervention = _as_intervention(units, mode, sigma, seed, reference, include_bias)
    with torch.no_grad():
        for e in plan_edits(clone, intervention):
            e.apply_to(e.param.data)
    return clone


def rewind_reference(checkpoints: Mapping[int, Mapping[str, torch.Tensor]], epochs_back: int,
                     current_epoch: int | None = None) -> Mapping[str, torch.Tensor]:
    """The checkpoint ``epochs_back`` epochs before ``current_epoch`` (default: the last one kept)."""
    if not checkpoints:
        raise SpurlabError("no checkpoints were kept",
                           hint="train with TrainConfig(checkpoint_every=1) to rewind units")
    current = max(checkpoints) if current_epoch is None else int(current_epoch)
    target = current - int(epochs_back)
    if target not in checkpoints:
        raise SpurlabError(f"no checkpoint for epoch {target} ({epochs_back} epochs before {current})",
                           hint=f"checkpoints kept: {sorted(checkpoints)}; lower the rewind epochs "
                                f"or keep a checkpoint every epoch")
    return checkpoints[target]
