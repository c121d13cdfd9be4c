"""Fine-tune a model jointly with a pruned copy of itself (You et al., 2025, the training framework).

The copy shares every weight with the model and multiplies a mask into the
prunable ones. At the start of each epoch the mask is rebuilt the way the
authors' ``Mask`` utility builds it: over the weights of the feature extractor
(every conv/linear layer except the classifier head; ``mask_layers``), either
the globally smallest ``prune_fraction`` of single weights (``magnitude``, their
default) or the units with the largest gradient of the loss on the
``mask_batch`` worst-predicted training examples (``gradient``: whole conv
channels by ``||dL/dW[c]||``, single linear weights by ``|dL/dw|``, ranked in one
list as their ``activation_pruning`` does). Each minibatch minimizes

    NT-Xent(full.detach(), pruned) + NT-Xent(full, pruned.detach()) + lam * CE

with temperature 0.5: the same input through the two paths is the positive
pair, the rest of the batch are negatives.

``representation`` places the loss. ``softmax`` (default) is the authors' code:
the head is ``Linear -> Softmax``; NT-Xent compares the softmax outputs, and
``CrossEntropyLoss`` is applied to those same softmax outputs, so the CE term
applies softmax a second time (for two classes it floors at ``ln(1 + e^-1)``).
``logits`` and ``features`` (the model's ``features(x)``) are alternatives: NT-Xent
on those, CE on the logits.

How far the pruned copy is from the model is measured every epoch
(:func:`pruned_divergence`); a copy that changes nothing makes the positive pair
the same vector twice, which ``on_vacuous_mask`` reports (``warn``), refuses
(``error``) or lets pass (``ignore``).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from spurlab.data.lazy_images import is_lazy
from spurlab.errors import SpurlabError
from spurlab.models.layers import prunable_layers
from spurlab.models.penultimate import float_batch
from spurlab.params import Interval, Options, check_params, positive_int, probability
from spurlab.probes.neurons import as_arrays, find_critical_units, worst_predicted
from spurlab.utils import progress, resolve_device

REPRESENTATIONS = ("softmax", "logits", "features")
MASK_METHODS = ("magnitude", "gradient")
MASK_LAYERS = ("hidden", "conv", "all")
VACUOUS_POLICIES = ("warn", "error", "ignore")
NON_NEGATIVE = Interval(float, 0, None)
# What PrunedContrastiveConfig accepts (spurlab.params), checked before training.
CONFIG_CONSTRAINTS = {
    "epochs": positive_int(), "lr": Interval(float, 0, None, closed="neither"),
    "batch_size": Interval(int, 2, None),  # an example's negatives are the other examples of its batch
    "lam": NON_NEGATIVE, "contrastive_weight": NON_NEGATIVE, "temperature": Interval(float, 0, None, closed="neither"),
    "prune_fraction": probability("neither"), "mask_method": Options(*MASK_METHODS),
    "mask_layers": Options(*MASK_LAYERS), "mask_granularity": Options("weight", "channel"),
    "mask_batch": positive_int(), "representation": Options(*REPRESENTATIONS), "lr_factor": probability("neither"),
    "lr_patience": Interval(int, 0, None), "weight_decay": NON_NEGATIVE, "divergence_examples": positive_int(),
    "min_divergence": NON_NEGATIVE, "on_vacuous_mask": Options(*VACUOUS_POLICIES), "seed": Interval(int, 0, None),
}


class VacuousPrunedCopyWarning(UserWarning):
    """The pruned copy computes what the model computes: the contrastive pair is one vector twice."""


@dataclass
class PrunedContrastiveConfig:
    epochs: int = 21
    lr: float = 2e-4
    batch_size: int = 100
    lam: float = 0.2  # weight of the cross-entropy term
    contrastive_weight: float = 1.0  # weight of the two NT-Xent terms (0: the CE term alone, an ablation)
    temperature: float = 0.5
    prune_fraction: float = 0.01
    mask_method: str = "magnitude"  # magnitude: smallest |w|; gradient: largest gradient on the worst examples
    mask_layers: str = "hidden"  # hidden: every conv/linear layer but the head (the authors'); conv; all
    mask_granularity: str = "weight"  # magnitude only: single weights (the authors') or whole channels
    mask_batch: int = 200  # worst-predicted training examples the gradient mask is computed on
    representation: str = "softmax"  # softmax (the authors' head) | logits | features
    lr_factor: float = 0.5  # LR multiplier when the epoch loss plateaus
    lr_patience: int = 1  # the authors' ReduceLROnPlateau patience
    weight_decay: float = 0.0
    divergence_examples: int = 512  # training examples the full-vs-pruned divergence is measured on
    min_divergence: float = 1e-3  # mean |Δ probability| below which (with no flipped prediction) the copy is vacuous
    on_vacuous_mask: str = "warn"  # warn | error | ignore
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        """The declared constraints (CONFIG_CONSTRAINTS), each value kept in its checked form."""
        checked = check_params("PrunedContrastiveConfig", CONFIG_CONSTRAINTS,
                               {name: getattr(self, name) for name in CONFIG_CONSTRAINTS})
        for name, value in checked.items():
            setattr(self, name, value)


# ------------------------------------------------------------------ loss pieces
def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalized-temperature cross-entropy: row i of ``a`` and row i of ``b`` are a positive
    pair, every other row of both is a negative; averaged over the 2n anchors."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a.flatten(1), b.flatten(1)]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class _Outputs(nn.Module):
    """Wraps a model so one forward returns (what NT-Xent compares, what CE is applied to)."""

    def __init__(self, model: nn.Module, representation: str):
        super().__init__()
        self.model = model
        self.representation = representation

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.representation == "features":
            feats = self.model.features(x)
            head = getattr(self.model, "head", None)
            return feats, head(feats) if isinstance(head, nn.Module) else self.model(x)
        logits = self.model(x)
        if self.representation == "softmax":
            probs = F.softmax(logits, dim=1)  # the authors' head ends in Softmax: both terms see its output
            return probs, probs
        return logits, logits


def classification_loss(ce_input: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``CrossEntropyLoss`` on what the head outputs (softmax probabilities in the authors' variant)."""
    return F.cross_entropy(ce_input, y)


# ------------------------------------------------------------------ the mask
def mask_layers_of(model: nn.Module, which: str) -> dict[str, nn.Module]:
    """The layers the mask may prune: ``hidden`` leaves out the classifier head, as the authors' models do."""
    if which == "all":
        return prunable_layers(model, include_output=True)
    try:
        return prunable_layers(model, include_output=False, only="conv" if which == "conv" else None)
    except SpurlabError:
        raise SpurlabError(f"{type(model).__name__} has no {'conv' if which == 'conv' else 'hidden'} layer "
                           f"for the pruned copy to mask (the classifier head is never masked by default)",
                           hint="use mask_layers=all to mask the head too, or a model with hidden layers") from None


def compute_masks(model: nn.Module, data: Any, cfg: PrunedContrastiveConfig, epoch: int = 0) -> dict[str, torch.Tensor]:
    """``{parameter name: float mask}`` (0 on pruned entries) for this epoch; biases are never masked."""
    layers = mask_layers_of(model, cfg.mask_layers)
    if cfg.mask_method == "gradient":
        return _gradient_masks(model, layers, data, cfg)
    by_weight = cfg.mask_granularity == "weight"
    units = find_critical_units(model, method="magnitude" if by_weight else "weight_norm", largest=False,
                                granularity=cfg.mask_granularity, fraction=cfg.prune_fraction,
                                include_output=cfg.mask_layers == "all", layers=list(layers))
    return {f"{layer}.weight": (~selected).float() for layer, selected in units.weight_masks(model).items()}


def _gradient_masks(model: nn.Module, layers: dict[str, nn.Module], data: Any,
                    cfg: PrunedContrastiveConfig) -> dict[str, torch.Tensor]:
    """The authors' gradient ("activation") pruning: conv output channels scored by the norm of their
    gradient, linear weights by |gradient|; the top ``prune_fraction`` of each kind is removed.

    The authors rank channel norms and single-weight values in one list; their models have one kind
    only (ResNet: convs, DeiT: linears). In a net with both, one list would remove every conv channel
    (channel norms dwarf single values), so each kind is ranked on its own."""
    x, y, _ = as_arrays(data)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        chosen = worst_predicted(model, x, y, None, None, int(cfg.mask_batch))
        xb = torch.as_tensor(x[chosen], dtype=torch.float32, device=device)
        yb = torch.as_tensor(y[chosen], dtype=torch.long, device=device)
        _, ce_input = _Outputs(model, cfg.representation)(xb)
        weights = [m.weight for m in layers.values()]
        grads = torch.autograd.grad(classification_loss(ce_input, yb), weights, allow_unused=True)
    finally:
        model.train(was_training)
    scores = {name: _unit_scores(g, m.weight) for (name, m), g in zip(layers.items(), grads)}
    masks = {}
    for kind in ("conv", "linear"):
        members = [n for n in scores if (layers[n].weight.dim() > 2) == (kind == "conv")]
        if not members:
            continue
        flat = torch.cat([scores[n] for n in members])
        n_prune = max(1, math.ceil(cfg.prune_fraction * flat.numel()))
        threshold = torch.topk(flat, n_prune).values[-1]
        for name in members:
            weight = layers[name].weight
            keep = (scores[name] < threshold).float()
            masks[f"{name}.weight"] = keep[:, None].expand(weight.shape[0], weight[0].numel()).reshape(
                weight.shape).clone() if kind == "conv" else keep.reshape(weight.shape)
    return masks


def _unit_scores(grad: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
    """Conv layers: the gradient norm of each output channel; linear layers: |gradient| of each weight."""
    grad = torch.zeros_like(weight) if grad is None else grad.detach()
    return grad.flatten(1).norm(dim=1) if weight.dim() > 2 else grad.abs().flatten()


def pruned_fraction(model: nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """Share of the conv/linear weights the masks remove."""
    total = sum(m.weight.numel() for m in prunable_layers(model).values())
    removed = sum(float((1 - m).sum()) for name, m in masks.items() if name.endswith(".weight"))
    return removed / total


def _masked_params(model: nn.Module, masks: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    params = {f"{prefix}{name}": p * masks[name] if name in masks else p for name, p in model.named_parameters()}
    # Copies, so batch-norm running statistics are updated by the full path only.
    params.update({f"{prefix}{name}": b.clone() for name, b in model.named_buffers()})
    return params


# ------------------------------------------------------------------ full vs pruned
@torch.no_grad()
def pruned_divergence(model: nn.Module, masks: dict[str, torch.Tensor], x: np.ndarray,
                      groups: np.ndarray | None = None, batch_size: int = 512) -> dict[str, float]:
    """How far the pruned copy is from the model on ``x`` (eval mode): mean |Δlogit|, mean |Δprobability|,
    mean cosine of the logit vectors, and the share of predictions the mask flips (overall and per group)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    full, pruned = [], []
    try:
        for start in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[start:start + batch_size], dtype=torch.float32, device=device)
            full.append(model(xb).float().cpu())
            pruned.append(functional_call(model, _masked_params(model, masks), (xb,)).float().cpu())
    finally:
        model.train(was_training)
    full_t, pruned_t = torch.cat(full), torch.cat(pruned)
    flips = (full_t.argmax(1) != pruned_t.argmax(1)).numpy()
    out = {"mask_dlogit": float((pruned_t - full_t).abs().mean()),
           "mask_dprob": float((F.softmax(pruned_t, 1) - F.softmax(full_t, 1)).abs().mean()),
           "mask_cosine": float(F.cosine_similarity(pruned_t, full_t, dim=1).mean()),
           "mask_flips": float(flips.mean())}
    if groups is not None:
        for g in np.unique(groups):
            out[f"mask_flips_g{int(g)}"] = float(flips[groups == g].mean())
    return out


def is_vacuous(divergence: dict[str, float], min_divergence: float = 1e-3) -> bool:
    """No prediction flips and the probabilities move by less than ``min_divergence`` on average."""
    return divergence["mask_flips"] == 0 and divergence["mask_dprob"] < min_divergence


def _report_vacuous(divergence: dict[str, float], cfg: PrunedContrastiveConfig, epoch: int,
                    warned: bool = False) -> bool:
    """Warn (once per run: ``warned`` says it was done) or refuse when the pruned copy is the model; returns
    whether a warning has been given. Every epoch's divergence is in the history either way."""
    if cfg.on_vacuous_mask == "ignore" or not is_vacuous(divergence, cfg.min_divergence):
        return warned
    message = (f"epoch {epoch}: the pruned copy ({cfg.mask_method} mask, {cfg.prune_fraction:g} of the "
               f"{cfg.mask_layers} weights) is indistinguishable from the model: mean |Δlogit| "
               f"{divergence['mask_dlogit']:.2e}, mean |Δp| {divergence['mask_dprob']:.2e}, no prediction flips; "
               f"the contrastive pair is the same vector twice")
    hint = "raise prune_fraction, use mask_method=gradient, or set on_vacuous_mask=ignore to run anyway"
    if cfg.on_vacuous_mask == "error":
        raise SpurlabError(message, hint=hint)
    if not warned:
        warnings.warn(f"{message} ({hint}; warned once per run, every epoch's divergence is in the history)",
                      VacuousPrunedCopyWarning, stacklevel=3)
    return True


# ------------------------------------------------------------------ the loss
def pruned_contrastive_loss(model: nn.Module, masks: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
                            cfg: PrunedContrastiveConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The framework's loss on one minibatch and its parts (``to_pruned``, ``to_full``, ``ce``)."""
    wrapper = _Outputs(model, cfg.representation)
    full_rep, ce_input = wrapper(xb)
    parts = {"ce": classification_loss(ce_input, yb)}
    if cfg.contrastive_weight == 0:
        zero = parts["ce"].new_zeros(())
        return cfg.lam * parts["ce"], {"to_pruned": zero, "to_full": zero, **parts}
    pruned_rep, _ = functional_call(wrapper, _masked_params(model, masks, prefix="model."), (xb,))
    # Each term moves one path towards the other; their gradients add up to NT-Xent's full gradient.
    parts["to_pruned"] = nt_xent(full_rep.detach(), pruned_rep, cfg.temperature)
    parts["to_full"] = nt_xent(full_rep, pruned_rep.detach(), cfg.temperature)
    contrastive = parts["to_pruned"] + parts["to_full"]
    return cfg.contrastive_weight * contrastive + cfg.lam * parts["ce"], parts


# ------------------------------------------------------------------ training
def train_pruned_contrastive(model: nn.Module, train_ds: Any, config: PrunedContrastiveConfig | None = None,
                             on_epoch_end: Callable[[int, nn.Module], dict | None] | None = None,
                             **overrides: Any) -> list[dict]:
    """Fine-tune ``model`` in place with the pruned-copy contrastive loss; returns the per-epoch history.

    ``train_ds`` is a GroupedDataset or ``(x, y[, g])``; ``overrides`` replace fields of
    ``config`` (e.g. ``epochs=5``). ``on_epoch_end(epoch, model)`` may return
    metrics to add to that epoch's record (the model is in eval mode meanwhile).
    Each record holds the mask's divergence (``mask_dlogit``, ``mask_dprob``,
    ``mask_cosine``, ``mask_flips[_g<k>]``) measured when the mask was built.
    """
    known = set(PrunedContrastiveConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SpurlabError(f"unknown pruned-contrastive setting(s) {', '.join(unknown)}",
                           hint=f"settings: {', '.join(sorted(known))}")
    cfg = replace(config or PrunedContrastiveConfig(), **overrides)
    cfg.validate()
    x, y, g = as_arrays(train_ds)
    if len(np.unique(y)) < 2:
        raise SpurlabError("the training data has a single class", hint="the framework fine-tunes a classifier")
    device = resolve_device(cfg.device)
    model.to(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    probe = np.random.default_rng(cfg.seed).permutation(len(y))[:int(cfg.divergence_examples)]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience)
    # in-memory inputs as one tensor; lazy images stay lazy and are read one batch at a time
    xt = x if is_lazy(x) else torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    history, warned = [], False
    for epoch in progress(range(1, cfg.epochs + 1), "pruned-contrastive", total=cfg.epochs):
        masks = {k: v.to(device) for k, v in compute_masks(model, (x, y), cfg, epoch).items()}
        divergence = pruned_divergence(model, masks, x[probe], None if g is None else g[probe])
        warned = _report_vacuous(divergence, cfg, epoch, warned)
        model.train()
        sums = {"loss": 0.0, "to_pruned": 0.0, "to_full": 0.0, "ce": 0.0}
        order = torch.randperm(len(yt), generator=gen)
        seen = 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:  # NT-Xent needs at least one negative
                continue
            xb = float_batch(xt[idx.numpy()], device) if is_lazy(xt) else xt[idx].to(device)
            loss, parts = pruned_contrastive_loss(model, masks, xb, yt[idx].to(device), cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
            sums["loss"] += loss.item() * len(idx)
            for name, value in parts.items():
                sums[name] += value.item() * len(idx)
        record = {"epoch": epoch, **{k: v / max(seen, 1) for k, v in sums.items()},
                  "lr": opt.param_groups[0]["lr"], "pruned_fraction": pruned_fraction(model, masks), **divergence}
        plateau.step(record["loss"])
        if on_epoch_end is not None:
            model.eval()
            record.update(on_epoch_end(epoch, model) or {})
        history.append(record)
    model.eval()
    return history
