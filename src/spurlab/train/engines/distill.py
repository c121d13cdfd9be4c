"""Representation distillation: a student trained only to reproduce a teacher's representation.

The teacher and the student are any ``torch.nn.Module`` whose ``forward`` maps a
batch of inputs to a representation ``(N, k)`` (wrap a classifier with
:class:`FeatureOutput` to use its penultimate layer). The student is trained by
mean squared error to the teacher's representation of the same inputs; the
teacher is frozen. Linear probes on both representations then show what each
keeps: *feature-contamination* predicts that the student matches the teacher in
distribution but not under a shift, because it also learned features the teacher's
representation does not depend on.

With CLIP weights on disk the paper-scale version is the same three calls (see
``docs/studies/feature-contamination.md``).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, check_params, positive_int
from spurlab.probes.contamination import LinearProbe
from spurlab.utils import as_numpy, check_finite, progress, resolve_device


class FeatureOutput(nn.Module):
    """A model whose ``forward`` returns ``model.features(x)`` (its penultimate layer)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, "features"):
            raise SpurlabError(f"{type(model).__name__} has no features() method",
                               hint="pass a module whose forward returns the representation instead")
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def is_array(data) -> bool:
    return isinstance(data, (np.ndarray, torch.Tensor))


def batch_inputs(batch) -> torch.Tensor:
    """The inputs of a loader batch: the batch itself, or the first item of a tuple/list/dict."""
    if isinstance(batch, dict):
        batch = batch.get("x", batch.get("pixel_values", next(iter(batch.values()))))
    elif isinstance(batch, (tuple, list)):
        batch = batch[0]
    return torch.as_tensor(batch, dtype=torch.float32)


@torch.no_grad()
def representations(module: nn.Module, x, batch_size: int = 512, device: str = "auto") -> np.ndarray:
    """``module(x)`` batch by batch, flattened to ``(N, k)`` float32 numpy.

    ``x`` is an array, or an iterable of batches (e.g. a ``DataLoader`` yielding tensors
    or ``(inputs, labels, ...)`` tuples, in which case only the inputs are used).
    """
    device = resolve_device(device)
    module.eval().to(device)
    if is_array(x):
        x = as_numpy(x)
        batches = (x[start:start + batch_size] for start in range(0, len(x), batch_size))
    else:
        batches = x
    out = []
    for batch in batches:
        xb = batch_inputs(batch).to(device)
        out.append(module(xb).reshape(len(xb), -1).float().cpu().numpy())
    if not out:
        raise SpurlabError("no inputs to represent", hint="pass at least one example")
    return np.concatenate(out)


class RepresentationDistiller:
    """Train ``student`` so that ``student(x) ~ teacher(x)`` in mean squared error.

    Parameters: ``epochs``, ``lr``, ``batch_size``, ``optimizer`` (``adam``, ``adamw``
    or ``sgd``), ``weight_decay``, ``seed`` (batch order), ``device``.

    ``fit`` takes the training inputs as an array (the teacher's representation is then
    computed once and cached in ``targets_``) or as an iterable of batches such as a
    ``DataLoader`` (the teacher runs on every batch; use this for data that does not fit
    in memory, e.g. ImageNet with a CLIP teacher). After :meth:`fit`: ``student_``
    (trained in place) and ``history_`` (mean MSE per epoch).
    """

    def __init__(self, epochs: int = 20, lr: float = 1e-3, batch_size: int = 128, optimizer: str = "adam",
                 weight_decay: float = 0.0, seed: int = 0, device: str = "auto"):
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device

    _parameter_constraints = {
        "epochs": positive_int(), "lr": Interval(float, 0, None, closed="neither"), "batch_size": positive_int(),
        "optimizer": Options("adam", "adamw", "sgd"), "weight_decay": Interval(float, 0, None),
        "seed": Interval(int, 0, None),
    }

    def _optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)  # sgd

    def fit(self, teacher: nn.Module, student: nn.Module, x, teacher_x=None) -> RepresentationDistiller:
        """Fit ``student(x)`` to ``teacher(teacher_x)``.

        ``teacher_x`` (arrays only) defaults to ``x``; pass it when the teacher sees another
        view of the same examples (its own preprocessing, or the invariant feature).
        """
        check_params("RepresentationDistiller", self._parameter_constraints,
                     {name: getattr(self, name) for name in self._parameter_constraints})
        device = resolve_device(self.device)
        torch.manual_seed(self.seed)
        student.to(device)
        teacher.eval().to(device)
        if is_array(x):
            batches = self._cached_batches(teacher, student, x, teacher_x, device)
        elif teacher_x is not None:
            raise SpurlabError("teacher_x works with array inputs only",
                               hint="let the loader's batches hold what the teacher and the student see")
        else:
            batches = self._streamed_batches(teacher, x, device)
        self.history_ = self._train(student, batches, device)
        self.student_ = student.eval()
        return self

    def _cached_batches(self, teacher, student, x, teacher_x, device: str):
        """A function ``epoch -> iterator of (inputs, targets)`` over shuffled cached targets."""
        x = as_numpy(x, np.float32)
        check_finite("x", x)
        if teacher_x is not None and len(teacher_x) != len(x):
            raise SpurlabError(f"teacher_x has {len(teacher_x)} examples but x has {len(x)}",
                               hint="pass one teacher view per training example")
        self.targets_ = representations(teacher, x if teacher_x is None else teacher_x, device=device)
        self._check_widths(student, torch.as_tensor(x[:2]), self.targets_.shape[1], device)
        xt, targets = torch.as_tensor(x), torch.as_tensor(self.targets_)
        gen = torch.Generator().manual_seed(int(self.seed))

        def epoch_batches():
            order = torch.randperm(len(xt), generator=gen)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                yield xt[idx].to(device), targets[idx].to(device)

        return epoch_batches

    def _streamed_batches(self, teacher, loader, device: str):
        def epoch_batches():
            for batch in loader:
                xb = batch_inputs(batch).to(device)
                with torch.no_grad():
                    target = teacher(xb).reshape(len(xb), -1).float()
                yield xb, target  # outside no_grad: the student's step needs autograd

        return epoch_batches

    @staticmethod
    def _check_widths(student: nn.Module, x: torch.Tensor, width: int, device: str) -> None:
        with torch.no_grad():
            got = student(x.to(device)).reshape(len(x), -1).shape[1]
        if got != width:
            raise SpurlabError(f"the student's representation has {got} dimensions, the teacher's {width}",
                               hint="give the student an output layer of the teacher's width")

    def _train(self, student: nn.Module, epoch_batches, device: str) -> pd.DataFrame:
        opt = self._optimizer(student.parameters())
        rows = []
        for epoch in progress(range(1, self.epochs + 1), "distilling", total=self.epochs):
            student.train()
            total, seen = 0.0, 0
            for xb, target in epoch_batches():
                pred = student(xb).reshape(len(xb), -1)
                if pred.shape != target.shape:
                    raise SpurlabError(f"the student's representation has shape {tuple(pred.shape[1:])}, the "
                                       f"teacher's {tuple(target.shape[1:])}",
                                       hint="give the student an output layer of the teacher's width")
                loss = ((pred - target) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(xb)
                seen += len(xb)
            if seen == 0:
                raise SpurlabError("the training data yielded no batches", hint="pass at least one example")
            rows.append({"epoch": epoch, "mse": total / seen})
            if not np.isfinite(rows[-1]["mse"]):
                raise SpurlabError("distillation diverged (the MSE became NaN or infinite)", hint="lower lr")
        return pd.DataFrame(rows)


def probe_accuracies(z_train: np.ndarray, y_train: np.ndarray, evals: Mapping[str, tuple[np.ndarray, np.ndarray]],
                     C: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Fit a :class:`LinearProbe` on ``(z_train, y_train)``; accuracy on every ``evals`` entry."""
    probe = LinearProbe(C=C, seed=seed).fit(z_train, y_train)
    return {name: probe.score(z, y) for name, (z, y) in evals.items()}
