"""Train a classifier with cross-entropy until every training point is fitted (or for a fixed budget).

Two papers need this and not the generic fixed-epoch loop of ``spurlab.train.trainer``:

* ood-failure-modes: its statements are about (S)GD run until the training set is
  separated, so a run is only read when every *unique* training point is fitted; the
  fit is checked on the unique points while the optimiser sees the duplicated copies;
* spurious-memorization: the authors' networks train for a fixed long budget with a
  step learning-rate schedule (Adam, lr x 0.8 every 100 epochs).

:func:`train_to_fit` also records ``||W - W0||`` (all parameters) at chosen steps, so
the norm of runs of different lengths can be compared at equal steps.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from spurlab.data.lazy_images import is_lazy
from spurlab.errors import SpurlabError
from spurlab.params import Boolean, Interval, Options, check_params, positive_int
from spurlab.models.penultimate import float_batch
from spurlab.utils import resolve_device

OPTIMIZERS = ("sgd", "adam")
LAZY_BATCH = 256  # lazy images decoded per accuracy check (a float32 batch of them, not the whole split)
# What FitConfig accepts (spurlab.params), checked when it is built.
FIT_CONSTRAINTS = {
    "lr": Interval(float, 0, None, closed="neither"), "batch_size": positive_int(), "optimizer": Options(*OPTIMIZERS),
    "momentum": Interval(float, 0, 1, closed="left"), "max_steps": positive_int(), "min_steps": Interval(int, 0, None),
    "check_every": Interval(int, 0, None), "stop_when_fitted": Boolean(), "lr_step_epochs": Interval(int, 0, None),
    "lr_gamma": Interval(float, 0, None, closed="neither"), "seed": Interval(int, 0, None),
}


@dataclass
class FitConfig:
    """How :func:`train_to_fit` trains.

    ``max_steps`` caps the run; with ``stop_when_fitted`` it ends at the first check
    (every ``check_every`` steps, 0 = once per pass over the training copies) after
    ``min_steps`` where every check point is classified correctly. ``lr_step_epochs``/``lr_gamma``: the
    learning rate is multiplied by ``lr_gamma`` every that many passes (0 = constant).
    """

    lr: float = 0.05
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.0
    max_steps: int = 20_000
    min_steps: int = 0
    check_every: int = 0
    stop_when_fitted: bool = True
    lr_step_epochs: int = 0
    lr_gamma: float = 1.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        checked = check_params("FitConfig", FIT_CONSTRAINTS, {name: getattr(self, name) for name in FIT_CONSTRAINTS})
        for name, value in checked.items():
            setattr(self, name, value)
        if self.min_steps > self.max_steps:
            raise SpurlabError(f"FitConfig: parameter 'min_steps' must lie in [0, max_steps={self.max_steps}], "
                               f"got {self.min_steps}", hint="lower min_steps or raise max_steps")


@dataclass
class FitReport:
    """What :func:`train_to_fit` did: ``fitted`` is True when every check point was classified correctly."""

    train_acc: float
    fitted: bool
    steps: int
    epochs: float
    dist_at: dict[int, float] = field(default_factory=dict)  # step -> ||W - W0|| (steps reached only)
    dist_final: float = 0.0

    def metrics(self) -> dict[str, float]:
        return {"train_acc": self.train_acc, "fitted": float(self.fitted), "steps": float(self.steps),
                "epochs": self.epochs, "w_dist_from_init": self.dist_final}


def parameter_vector(model: nn.Module) -> torch.Tensor:
    """Every parameter of ``model`` flattened into one CPU float64 vector (a copy)."""
    return torch.cat([p.detach().flatten().double().cpu() for p in model.parameters()])


@torch.no_grad()
def batched_accuracy(model: nn.Module, x, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Accuracy over ``x`` (a tensor, or lazy images read one batch at a time) against ``y``."""
    model.eval()
    device = y.device
    if is_lazy(x):
        batch_size = min(batch_size, LAZY_BATCH)
    hits = sum(int((model(_rows(x, slice(i, i + batch_size), device)).argmax(dim=1) == y[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    model.train()
    return hits / max(len(x), 1)


def _on_device(x, device: str):
    """In-memory inputs as one float32 tensor on ``device``; lazy images stay lazy (read per batch)."""
    return x if is_lazy(x) else torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device)


def _rows(x, idx, device) -> torch.Tensor:
    if not is_lazy(x):
        return x[idx]
    return float_batch(x[idx.cpu().numpy() if isinstance(idx, torch.Tensor) else idx], device)


def _optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def train_to_fit(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: FitConfig,
                 check: tuple[np.ndarray, np.ndarray] | None = None,
                 record_steps: Sequence[int] = (), sample_weight: np.ndarray | None = None) -> FitReport:
    """Minimise the mean cross-entropy of ``model`` on ``(x, y)`` (class indices) with seeded minibatches.

    ``sample_weight``: a weighted mean over each minibatch instead (duplication as weights).

    ``check``: the points whose fit ends the run and gives ``train_acc`` (default: ``(x, y)``;
    pass the unique points when ``x`` holds duplicated copies). ``record_steps``: steps at
    which ``||W - W0||`` is recorded (a run that stops earlier does not record them).
    """
    if len(x) != len(y) or len(x) == 0:
        raise SpurlabError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    xt = _on_device(x, device)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device)
    cx, cy = (xt, yt) if check is None else (
        _on_device(check[0], device), torch.as_tensor(np.asarray(check[1]), dtype=torch.long, device=device))
    wt = None if sample_weight is None else torch.as_tensor(np.asarray(sample_weight), dtype=torch.float32,
                                                             device=device)
    steps_per_epoch = math.ceil(len(xt) / cfg.batch_size)
    check_every = cfg.check_every or steps_per_epoch
    opt = _optimizer(model, cfg)
    start = parameter_vector(model)
    wanted = sorted({int(s) for s in record_steps if 0 < int(s) <= cfg.max_steps})
    dist_at: dict[int, float] = {}
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    step, acc, order = 0, 0.0, torch.empty(0, dtype=torch.long)
    while step < cfg.max_steps:
        pos = (step % steps_per_epoch) * cfg.batch_size
        if pos == 0:
            order = torch.randperm(len(xt), generator=gen).to(device)
            epoch = step // steps_per_epoch
            if cfg.lr_step_epochs and epoch and epoch % cfg.lr_step_epochs == 0:
                for group in opt.param_groups:
                    group["lr"] *= cfg.lr_gamma
        idx = order[pos:pos + cfg.batch_size]
        losses = loss_fn(model(_rows(xt, idx, device)), yt[idx])
        loss = losses.mean() if wt is None else (losses * wt[idx]).sum() / wt[idx].sum().clamp_min(1e-12)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if wanted and step == wanted[0]:
            dist_at[wanted.pop(0)] = float(torch.linalg.vector_norm(parameter_vector(model) - start))
        if cfg.stop_when_fitted and step >= cfg.min_steps and step % check_every == 0:
            acc = batched_accuracy(model, cx, cy)
            if acc == 1.0:
                break
    if not math.isfinite(float(loss.detach())):
        raise SpurlabError("training diverged (non-finite loss)", hint="lower the learning rate")
    acc = batched_accuracy(model, cx, cy)
    model.eval()
    return FitReport(train_acc=acc, fitted=acc == 1.0, steps=step, epochs=step / steps_per_epoch,
                     dist_at=dist_at, dist_final=float(torch.linalg.vector_norm(parameter_vector(model) - start)))
