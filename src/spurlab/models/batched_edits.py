"""Score many unit interventions at once (the engine behind ``evaluate_interventions``).

Three ways to get the logits of ``n`` edited versions of one model on a batch:

* ``loop`` — edit, forward, restore, ``n`` times (the reference);
* ``vmap`` — stack the edited copies of every touched parameter and run
  ``torch.func.functional_call`` under ``torch.func.vmap`` (any model whose
  forward vmap supports; fast on a GPU, slower than the loop on a CPU);
* ``shared`` — one hooked forward pass for all channel edits of a chunk
  (:mod:`spurlab.models.shared_forward`): the unedited network runs once, the
  edited channels ride along as extra channels until the next conv/linear layer.
  Valid for feed-forward conv/linear networks; ``auto`` checks it against
  ``loop`` on a few examples before trusting it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from spurlab.models.editing import Intervention, ParamEdit, applied_edits, plan_edits
from spurlab.models.shared_forward import SharedForward, shared_setup
from spurlab.models.layers import model_device
from spurlab.params import Interval, Labels, Options, check_params, optional, positive_int
from spurlab.utils import check_same_length, progress

STRATEGIES = ("auto", "loop", "vmap", "shared")


# ------------------------------------------------------------------ loop
def loop_logits(model: nn.Module, plans: list[list[ParamEdit]], xb: torch.Tensor) -> torch.Tensor:
    out = []
    for edits in plans:
        with applied_edits(edits):
            out.append(model(xb))
    return torch.stack(out)


# ------------------------------------------------------------------ vmap
@dataclass
class VmapChunk:
    stacked: dict[str, torch.Tensor]  # edited copies of every touched parameter, (n, *shape)
    shared: dict[str, torch.Tensor]  # untouched parameters and buffers


def vmap_setup(model: nn.Module, plans: list[list[ParamEdit]]) -> VmapChunk:
    base = {name: p.detach() for name, p in model.named_parameters()}
    touched = sorted({e.name for edits in plans for e in edits})
    stacked = {}
    for name in touched:
        copies = base[name].unsqueeze(0).repeat(len(plans), *([1] * base[name].dim()))
        for j, edits in enumerate(plans):
            for e in edits:
                if e.name == name:
                    e.apply_to(copies[j])
        stacked[name] = copies
    shared = {k: v for k, v in base.items() if k not in stacked}
    shared.update({k: v.detach() for k, v in model.named_buffers()})
    return VmapChunk(stacked, shared)


def vmap_logits(model: nn.Module, chunk: VmapChunk, xb: torch.Tensor) -> torch.Tensor:
    from torch.func import functional_call, vmap

    def forward(stacked: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**chunk.shared, **stacked}, (inputs,))

    return vmap(forward, in_dims=(0, None))(chunk.stacked, xb)


def first_layer_position(model: nn.Module, edits: list[ParamEdit]) -> int:
    positions = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return min((positions[e.name.rsplit(".", 1)[0]] for e in edits), default=0)


# ------------------------------------------------------------------ driver
class Scorer:
    """Logits of the edited models for one strategy, with per-chunk setup done once."""

    def __init__(self, model: nn.Module, plans: list[list[ParamEdit]], strategy: str, chunk_size: int):
        self.model, self.strategy = model, strategy
        order = list(range(len(plans)))
        if strategy == "shared":
            # Interventions that start at the same layer share the most work.
            order.sort(key=lambda i: first_layer_position(model, plans[i]))
        size = 1 if strategy == "loop" else chunk_size
        self.chunks = [order[i:i + size] for i in range(0, len(order), size)]
        self.setups = [self._setup([plans[i] for i in c]) for c in self.chunks]

    def _setup(self, plans):
        if self.strategy == "vmap":
            return vmap_setup(self.model, plans)
        if self.strategy == "shared":
            return shared_setup(self.model, plans)
        return plans

    def logits(self, chunk_no: int, xb: torch.Tensor) -> torch.Tensor:
        setup = self.setups[chunk_no]
        if self.strategy == "vmap":
            return vmap_logits(self.model, setup, xb)
        if self.strategy == "shared":
            return SharedForward(self.model, setup, len(self.chunks[chunk_no])).logits(xb)
        return loop_logits(self.model, setup, xb)


def _agrees(model: nn.Module, plans: list[list[ParamEdit]], strategy: str, probe: torch.Tensor) -> bool:
    """Does ``strategy`` reproduce the loop's logits on a few interventions and examples?"""
    picks = sorted({0, len(plans) // 3, 2 * len(plans) // 3, len(plans) - 1})
    sample = [plans[i] for i in picks]
    try:
        scorer = Scorer(model, sample, strategy, chunk_size=len(sample))
        fast = scorer.logits(0, probe)[np.argsort(scorer.chunks[0])]
    except (RuntimeError, NotImplementedError, ValueError):  # SharedUnsupported is a RuntimeError
        return False
    reference = loop_logits(model, sample, probe)
    return bool(torch.allclose(fast, reference, rtol=1e-3, atol=1e-4))


@contextlib.contextmanager
def _without_tf32():
    """TF32 off while strategies are compared: its ~1e-3 rounding is not a disagreement."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def choose_strategy(model: nn.Module, plans: list[list[ParamEdit]], x: np.ndarray) -> str:
    device = model_device(model)
    probe = torch.as_tensor(x[:4], dtype=torch.float32, device=device)
    # On a CPU, vmap's batched kernels are slower than a plain loop; on a GPU they win.
    candidates = ("shared", "vmap") if device.type == "cuda" else ("shared",)
    with torch.no_grad(), _without_tf32():
        for strategy in candidates:
            if _agrees(model, plans, strategy, probe):
                return strategy
    return "loop"


# What scoring accepts (spurlab.params), checked by name before any forward pass.
INPUT_CONSTRAINTS = {"strategy": Options(*STRATEGIES), "batch_size": positive_int(), "chunk_size": positive_int(),
                     "n_groups": optional(Interval(int, 0, None)), "y": Labels(), "groups": Labels()}


def run_strategy(model: nn.Module, interventions: list[Intervention], x: np.ndarray, y: np.ndarray,
                 groups: np.ndarray, n_groups: int | None, strategy: str, batch_size: int,
                 chunk_size: int) -> np.ndarray:
    check_same_length(x=x, y=y, groups=groups)
    strategy, batch_size, chunk_size, n_groups, y, groups = check_params(
        "evaluate_interventions", INPUT_CONSTRAINTS, {"strategy": strategy, "batch_size": batch_size,
                                                      "chunk_size": chunk_size, "n_groups": n_groups, "y": y,
                                                      "groups": groups}).values()
    n_groups = max(int(groups.max()) + 1, n_groups or 0)
    if not interventions:
        return np.empty((0, n_groups))
    was_training = model.training
    model.eval()
    try:
        plans = [plan_edits(model, iv) for iv in interventions]
        correct = np.zeros((len(plans), n_groups))
        for members in _strategy_groups(plans, strategy):
            sub = [plans[i] for i in members]
            chosen = choose_strategy(model, sub, x) if strategy == "auto" else strategy
            correct[members] = _count_correct(model, sub, x, y, groups, n_groups, chosen, batch_size, chunk_size)
    finally:
        model.train(was_training)
    counts = np.bincount(groups, minlength=n_groups).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, correct / counts, np.nan)


def _strategy_groups(plans: list[list[ParamEdit]], strategy: str) -> list[list[int]]:
    """``auto`` scores channel edits and single-weight edits separately (``shared`` takes only the former)."""
    if strategy != "auto":
        return [list(range(len(plans)))]
    channel = [i for i, edits in enumerate(plans) if all(e.by_rows for e in edits)]
    taken = set(channel)
    other = [i for i in range(len(plans)) if i not in taken]
    return [members for members in (channel, other) if members]


@torch.no_grad()
def _count_correct(model, plans, x, y, groups, n_groups, strategy, batch_size, chunk_size) -> np.ndarray:
    device = model_device(model)
    scorer = Scorer(model, plans, strategy, chunk_size)
    correct = torch.zeros(len(plans), n_groups, dtype=torch.float64)
    for start in progress(range(0, len(y), batch_size), f"{len(plans)} unit edits ({strategy})",
                          total=-(-len(y) // batch_size)):
        xb = torch.as_tensor(x[start:start + batch_size], dtype=torch.float32, device=device)
        yb = torch.as_tensor(y[start:start + batch_size], device=device)
        gb = torch.as_tensor(groups[start:start + batch_size])
        for c, members in enumerate(scorer.chunks):
            hits = (scorer.logits(c, xb).argmax(-1) == yb).double().cpu()  # (len(members), B)
            correct[members] += torch.zeros(len(members), n_groups, dtype=torch.float64).index_add_(1, gb, hits)
    return correct.numpy()


# ------------------------------------------------------------------ scoring many edits
def evaluate_interventions(model: nn.Module, interventions: list[Intervention], x: np.ndarray, y: np.ndarray,
                           groups: np.ndarray, n_groups: int | None = None, strategy: str = "auto",
                           batch_size: int = 128, chunk_size: int = 16) -> np.ndarray:
    """Per-group accuracy of ``model`` under each intervention: an array (n_interventions, n_groups).

    Groups without examples get NaN. ``strategy``: ``loop`` (one edited model at a
    time), ``vmap`` (``torch.func`` over stacked edited weights), ``shared`` (one
    forward pass for a chunk of channel edits of a feed-forward conv/linear net)
    or ``auto`` (``shared`` for channel edits when it reproduces ``loop`` on a few
    examples, else ``vmap`` on a GPU, else ``loop``).
    The caller's weights are unchanged afterwards.
    """
    return run_strategy(model, interventions, x, y, groups, n_groups, strategy, batch_size, chunk_size)
