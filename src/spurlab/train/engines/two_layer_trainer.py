"""Train :class:`~spurlab.models.two_layer.TwoLayerNet` replicas and log their trajectories.

Losses hinge / logistic / MSE on labels ``y in {-1, +1}`` (class indices 0/1 are
mapped to -1/+1); optimizers SGD (momentum), Adam and AdamW; full-batch or
mini-batch. Every ``log_every`` steps (and at step 0 and the last step) the
trainer records, per replica, the loss and accuracy on the training set and on
every evaluation set, plus whatever a ``track(model)`` callback returns.

Fast path (SGD only): gradients of the first layer always lie in the row space
of the training inputs. When that space has rank ``r < d`` (the structured
feature model has ``r = d_core + d_bg = 64`` in ``R^256``), the trainer runs the
first layer in the ``r``-dimensional basis and moves the orthogonal remainder,
which only feels weight decay and momentum, by an exact scalar recursion. SGD is
rotation-equivariant, so this is the same trajectory (up to float rounding) at
about ``r / d`` of the cost. Adam(W) are per-coordinate and always use the full space.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, check_params, optional, positive_int
from spurlab.models.two_layer import TwoLayerNet, activation_derivative, get_activation
from spurlab.utils import as_numpy, check_finite, progress, resolve_device, signed_labels

LOSS_NAMES = ("hinge", "logistic", "mse")
OPTIMIZER_NAMES = ("sgd", "adam", "adamw")
Tracker = Callable[[TwoLayerNet], Mapping[str, torch.Tensor]]


def loss_values(scores: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-example losses, same shape as ``scores`` (``y`` broadcasts over replicas)."""
    margins = scores * y
    if loss == "hinge":
        return torch.relu(1.0 - margins)
    if loss == "logistic":
        return F.softplus(-margins)
    if loss == "mse":
        return (scores - y) ** 2
    raise SpurlabError(f"unknown loss {loss!r}", hint=f"use one of {', '.join(LOSS_NAMES)}")


def loss_derivative(scores: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """d loss / d score per example (same shape as ``scores``)."""
    if loss == "hinge":
        return -y * (scores * y < 1.0).to(scores.dtype)
    if loss == "logistic":
        return -y * torch.sigmoid(-scores * y)
    if loss == "mse":
        return 2.0 * (scores - y)
    raise SpurlabError(f"unknown loss {loss!r}", hint=f"use one of {', '.join(LOSS_NAMES)}")


@torch.no_grad()
def two_layer_gradients(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        output: torch.Tensor, activations: list[str], loss: str, leaky_slope: float = 0.01,
                        output_grad: bool = False) -> tuple[torch.Tensor, ...]:
    """Gradients of the mean ``loss`` of every replica, by hand (no autograd graph).

    ``weight (R, m, d)``, ``bias (R, m)``, ``output (R, m)``, ``x (N, d)``, ``y (N,)``
    in {-1, +1}. Returns ``(grad_weight, grad_bias[, grad_output])``. The replicas
    share one ``(R m, d) x (d, N)`` matrix product forwards and one backwards, and
    the ``(R, m, N)`` intermediates are updated in place.
    """
    n, (r, m, d) = len(x), weight.shape
    hidden = (weight.reshape(r * m, d) @ x.T).view(r, m, n).add_(bias.unsqueeze(-1))
    slope = torch.empty_like(hidden)
    for name, lo, hi in activation_blocks(activations):
        activate_(hidden[lo:hi], name, slope[lo:hi], leaky_slope)
    scores = torch.bmm(output.unsqueeze(1), hidden).squeeze(1)  # (R, N)
    dscore = loss_derivative(scores, y, loss).div_(n)
    # d loss / d h = a_k sigma'(h) dscore; a_k is folded in after the reductions
    dh = slope.mul_(dscore.unsqueeze(1))
    grad_weight = (dh.view(r * m, n) @ x).view(r, m, d).mul_(output.unsqueeze(-1))
    grads = (grad_weight, dh.sum(dim=-1).mul_(output))
    if output_grad:
        grads += (torch.bmm(hidden, dscore.unsqueeze(-1)).squeeze(-1),)
    return grads


def activation_blocks(activations: list[str]) -> list[tuple[str, int, int]]:
    """Runs of equal activations as ``(name, first replica, end)``."""
    blocks: list[tuple[str, int, int]] = []
    for r, name in enumerate(activations):
        if blocks and blocks[-1][0] == name:
            blocks[-1] = (name, blocks[-1][1], r + 1)
        else:
            blocks.append((name, r, r + 1))
    return blocks


def activate_(h: torch.Tensor, name: str, slope: torch.Tensor, leaky_slope: float = 0.01) -> None:
    """Overwrite ``h`` with ``sigma(h)`` and ``slope`` with ``sigma'(h)`` (in place, few passes)."""
    if name == "relu":
        torch.sign(h.relu_(), out=slope)
    elif name == "identity":
        slope.fill_(1.0)
    elif name == "tanh":
        torch.mul(h.tanh_(), h, out=slope)
        slope.neg_().add_(1.0)
    elif name == "sigmoid":
        torch.mul(h.sigmoid_(), 1.0 - h, out=slope)
    else:  # gelu, leaky_relu and anything new: the generic (allocating) path
        out = get_activation(name, leaky_slope)(h)
        slope.copy_(activation_derivative(name, h, out, leaky_slope))
        h.copy_(out)


def row_space_basis(x: torch.Tensor, rtol: float = 1e-5) -> torch.Tensor:
    """Orthonormal basis ``(d, r)`` of the span of the rows of ``x``."""
    _, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    rank = int((s > rtol * s[0]).sum()) if len(s) and s[0] > 0 else 0
    return vh[:rank].T.to(x.dtype)


class _DecayOnly:
    """The SGD trajectory of a parameter block whose loss gradient is always zero.

    With coupled weight decay ``wd`` and momentum ``mu`` (PyTorch's SGD), such a block
    stays a scalar multiple ``c_t`` of its initial value; this tracks ``c_t``.
    """

    def __init__(self, lr: float, momentum: float, weight_decay: float):
        self.lr, self.mu, self.wd = lr, momentum, weight_decay
        self.coef, self.buf, self.started = 1.0, 0.0, False

    def step(self) -> None:
        grad = self.wd * self.coef
        if self.mu:
            self.buf = self.mu * self.buf + grad if self.started else grad
            grad = self.buf
        self.started = True
        self.coef -= self.lr * grad


class TwoLayerTrainer:
    """Full- or mini-batch training of every replica of a :class:`TwoLayerNet` at once.

    Parameters
    ----------
    loss: ``hinge`` (theory setting), ``logistic`` or ``mse``.
    optimizer: ``sgd`` (with ``momentum``), ``adam`` or ``adamw``.
    lr, momentum, weight_decay: optimizer settings (weight decay is coupled L2 for
        SGD/Adam and decoupled for AdamW, as in PyTorch).
    steps: number of parameter updates.
    batch_size: ``None`` or 0 for full batch, else the mini-batch size.
    log_every: record the trajectory every this many steps.
    use_row_space: allow the exact row-space fast path for SGD (see module doc).
    seed: mini-batch order. device: ``auto``, ``cpu`` or ``cuda``.

    After :meth:`fit`: ``history_`` (one row per logged step and replica),
    ``model_`` and ``row_space_rank_`` (``None`` when the full space was used).
    """

    def __init__(self, loss: str = "hinge", optimizer: str = "sgd", lr: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 1e-3, steps: int = 20_000, batch_size: int | None = None,
                 log_every: int = 200, use_row_space: bool = True, seed: int = 0, device: str = "auto"):
        self.loss = loss
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.steps = steps
        self.batch_size = batch_size
        self.log_every = log_every
        self.use_row_space = use_row_space
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------ validation
    _parameter_constraints = {
        "loss": Options(*LOSS_NAMES), "optimizer": Options(*OPTIMIZER_NAMES),
        "lr": Interval(float, 0, None, closed="neither"), "weight_decay": Interval(float, 0, None),
        "momentum": Interval(float, 0, 1, closed="left"), "steps": Interval(int, 0, None),
        "log_every": positive_int(), "batch_size": optional(Interval(int, 0, None)),  # 0 or None: full batch
    }

    def _check_params(self) -> None:
        check_params("TwoLayerTrainer", self._parameter_constraints,
                     {name: getattr(self, name) for name in self._parameter_constraints})

    def _tensors(self, x, y, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = as_numpy(x, np.float32)
        x = x.reshape(len(x), -1)
        if len(x) != len(y):
            raise SpurlabError(f"x has {len(x)} rows but y has {len(y)}")
        if len(x) == 0:
            raise SpurlabError("cannot train on an empty set", hint="pass at least one example")
        check_finite("x", x)
        return (torch.as_tensor(x, device=device),
                torch.as_tensor(signed_labels(y), dtype=torch.float32, device=device))

    def _make_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------ training
    def fit(self, model: TwoLayerNet, x, y, eval_sets: Mapping[str, tuple] | None = None,
            track: Tracker | None = None) -> TwoLayerTrainer:
        """Train ``model`` in place on ``(x, y)``; ``eval_sets`` maps a name to ``(x, y)``."""
        self._check_params()
        if not isinstance(model, TwoLayerNet):
            raise SpurlabError(f"TwoLayerTrainer trains TwoLayerNet models, got {type(model).__name__}")
        device = resolve_device(self.device)
        model.to(device)
        xt, yt = self._tensors(x, y, device)
        evals = {"train": (xt, yt)}
        for name, (ex, ey) in (eval_sets or {}).items():
            evals[name] = self._tensors(ex, ey, device)
        basis = row_space_basis(xt) if self.use_row_space and self.optimizer == "sgd" else None
        if basis is not None and basis.shape[1] > 0.8 * xt.shape[1]:
            basis = None  # too little to gain
        self.row_space_rank_ = None if basis is None else int(basis.shape[1])
        self.history_ = self._loop(model, xt, yt, basis, evals, track)
        self.model_ = model.eval()
        return self

    def _loop(self, model: TwoLayerNet, xt: torch.Tensor, yt: torch.Tensor, basis: torch.Tensor | None,
              evals: dict, track: Tracker | None) -> pd.DataFrame:
        if basis is None:
            weight, x_train, rest, decay = model.weight.detach(), xt, None, None
        else:
            reduced = model.weight.detach() @ basis
            rest = model.weight.detach() - reduced @ basis.T
            x_train, decay = xt @ basis, _DecayOnly(self.lr, self.momentum, self.weight_decay)
            weight = reduced.contiguous()
        bias, output = model.bias.detach(), model.output.detach()  # share storage with the model
        params = [weight, bias] + ([] if model.frozen_output else [output])
        opt = self._make_optimizer(params)
        batches = _BatchOrder(len(xt), self.batch_size, self.seed, xt.device)
        rows: list[dict] = []

        def sync_and_log(step: int) -> None:
            if basis is not None:
                model.weight.detach().copy_(weight @ basis.T + decay.coef * rest)
            rows.extend(self._log(model, step, evals, track))

        for step in progress(range(self.steps), "two-layer training", total=self.steps):
            if step % self.log_every == 0:
                sync_and_log(step)
            idx = batches.next()
            xb, yb = (x_train, yt) if idx is None else (x_train[idx], yt[idx])
            grads = two_layer_gradients(xb, yb, weight, bias, output, model.activations, self.loss,
                                        model.leaky_slope, output_grad=not model.frozen_output)
            for param, grad in zip(params, grads):
                param.grad = grad
            opt.step()
            if decay is not None:
                decay.step()
        sync_and_log(self.steps)
        frame = pd.DataFrame(rows)
        if not np.isfinite(frame["train_loss"].to_numpy()).all():
            raise SpurlabError("training diverged (the loss became NaN or infinite)",
                               hint="lower lr, or use a smaller init_scale")
        return frame

    @torch.no_grad()
    def _log(self, model: TwoLayerNet, step: int, evals: dict, track: Tracker | None) -> list[dict]:
        values: dict[str, torch.Tensor] = {}
        for name, (ex, ey) in evals.items():
            scores = model.forward_all(ex)
            values[f"{name}_loss"] = loss_values(scores, ey, self.loss).mean(dim=1)
            values[f"{name}_acc"] = (scores * ey > 0).float().mean(dim=1)
        if track is not None:
            values.update(track(model))
        columns = {k: torch.as_tensor(v).detach().cpu().numpy().reshape(-1) for k, v in values.items()}
        return [{"step": step, "replica": r, "activation": model.activations[r], "seed": model.seeds[r],
                 **{k: float(v[r]) for k, v in columns.items()}} for r in range(model.n_replicas)]


class _BatchOrder:
    """Mini-batch indices from seeded epoch permutations (``None``: full batch)."""

    def __init__(self, n: int, batch_size: int | None, seed: int, device: torch.device):
        self.n, self.device = n, device
        self.size = None if not batch_size or batch_size >= n else int(batch_size)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.order, self.pos = torch.empty(0, dtype=torch.long), 0

    def next(self) -> torch.Tensor | None:
        if self.size is None:
            return None
        if self.pos + self.size > len(self.order):
            self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.pos:self.pos + self.size]
        self.pos += self.size
        return idx.to(self.device)

