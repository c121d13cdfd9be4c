"""One forward pass for many channel edits of a network (the ``shared`` ablation strategy).

Editing output channel ``c`` of a conv/linear layer changes only channel ``c``
of its output. Everything before the layer is the same for every intervention,
and so are the other channels after it, through every per-channel operation
(ReLU, pooling, flatten) up to the next conv/linear layer. So:

1. the network runs once on the shared batch;
2. at the first edited layer, each intervention's new channels are computed with
   its own weights and appended as extra channels (``m`` of them in all);
3. they ride along through the per-channel operations at the cost of ``m``
   channels, not ``n`` copies of the network;
4. the next conv/linear layer runs on the unedited channels once and adds each
   intervention's contribution by linearity (``W[:, c] * (new_c - old_c)``);
   only from there on is the batch expanded ``n``-fold.

This holds for feed-forward stacks of conv/linear layers and per-channel
operations. A model where it does not (a skip connection, batch norm or any
channel-mixing operation between two conv/linear layers) raises a shape error
or gives different numbers, which is why ``auto`` first checks it against the
plain loop on a few examples.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from spurlab.models.editing import ParamEdit
from spurlab.models.layers import prunable_layers

CONV_FUNCTIONS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


class SharedUnsupported(RuntimeError):
    """The shared strategy does not apply to this model or these edits."""


@dataclass
class ChannelPlan:
    rows: torch.Tensor  # the output channels one intervention changes in one layer
    weight: torch.Tensor  # their new weights
    bias: torch.Tensor | None  # their bias (edited or not)


@dataclass
class Deferred:
    """Edited channels travelling as extra channels behind the ``channels`` unedited ones."""

    channels: int
    blocks: list[tuple[int, torch.Tensor, int]]  # (intervention, rows, offset among the extra channels)
    extra: int


def _plain(module: nn.Module, name: str) -> None:
    if isinstance(module, nn.Linear):
        return
    if type(module) not in CONV_FUNCTIONS or module.groups != 1 or module.padding_mode != "zeros":
        raise SharedUnsupported(f"layer {name!r} ({type(module).__name__}) is not a plain conv or linear layer")


def partial_forward(module: nn.Module, inputs: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """``module`` applied with other weights (e.g. a subset of its output channels)."""
    if isinstance(module, nn.Linear):
        return F.linear(inputs, weight, bias)
    return CONV_FUNCTIONS[type(module)](inputs, weight, bias, module.stride, module.padding, module.dilation, 1)


def shared_setup(model: nn.Module, plans: list[list[ParamEdit]]) -> dict[str, list[ChannelPlan | None]]:
    """``{layer: [plan of intervention j, or None]}`` for every layer a chunk edits."""
    modules = dict(model.named_modules())
    layers: dict[str, list[ChannelPlan | None]] = {}
    for j, edits in enumerate(plans):
        for e in edits:
            if not e.by_rows:
                raise SharedUnsupported("the shared strategy needs channel edits, not single weights")
            layer, pname = e.name.rsplit(".", 1)
            module = modules[layer]
            _plain(module, layer)
            slots = layers.setdefault(layer, [None] * len(plans))
            if slots[j] is None:
                bias = None if module.bias is None else module.bias.detach()[e.index]
                slots[j] = ChannelPlan(e.index, module.weight.detach()[e.index], bias)
            if pname == "weight":
                slots[j].weight = e.values
            else:
                slots[j].bias = e.values
    return layers


class SharedForward:
    """Logits of ``n`` channel-edited versions of ``model`` from one hooked forward pass."""

    def __init__(self, model: nn.Module, layers: dict[str, list[ChannelPlan | None]], n: int):
        self.model, self.layers, self.n = model, layers, n
        self.modules = prunable_layers(model, include_output=True)
        missing = set(layers) - set(self.modules)
        if missing:
            raise SharedUnsupported(f"edited layer(s) {sorted(missing)} are not conv/linear layers")

    def logits(self, xb: torch.Tensor) -> torch.Tensor:
        self.state, self.batch, self.seen = "shared", xb.shape[0], set()
        self.deferred: Deferred | None = None
        self.pending: tuple | None = None
        handles = []
        for name, module in self.modules.items():
            handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            handles.append(module.register_forward_hook(self._hook(name)))
        try:
            logits = self.model(xb)
        finally:
            for h in handles:
                h.remove()
        if self.state == "shared":
            return logits.unsqueeze(0).expand(self.n, *logits.shape)
        if self.state != "expanded" or logits.shape[0] != self.n * self.batch:
            raise SharedUnsupported("the edited channels never reached a conv/linear layer before the output")
        return logits.reshape(self.n, self.batch, *logits.shape[1:])

    # ------------------------------------------------------------ hooks
    def _pre_hook(self, name: str):
        def hook(module, args):
            if name in self.seen:
                raise SharedUnsupported(f"layer {name!r} runs more than once per forward")
            self.seen.add(name)
            if self.state != "augmented":
                return None
            _plain(module, name)
            main, extra, spatial = self._split(module, args[0])
            self.pending = (main, extra, spatial)
            return (main, *args[1:])

        return hook

    def _hook(self, name: str):
        def hook(module, args, out):
            slots = self.layers.get(name)
            if self.pending is not None:
                return self._resolve(module, out, slots)
            if slots is None:
                return None
            if self.state == "expanded":
                return self._edit_expanded(module, args[0], out, slots)
            return self._defer(module, args[0], out, slots)

        return hook

    # ------------------------------------------------------------ the three stages
    def _defer(self, module, inputs, out, slots):
        """First edited layer: append every intervention's new channels to the output."""
        if out.shape[0] != self.batch or (isinstance(module, nn.Linear) and out.dim() != 2):
            raise SharedUnsupported("an edited layer's output is not (batch, channels, ...)")
        active = [(j, p) for j, p in enumerate(slots) if p is not None]
        bias = None if module.bias is None else torch.cat([p.bias for _, p in active])
        extra = partial_forward(module, inputs, torch.cat([p.weight for _, p in active]), bias)
        blocks, offset = [], 0
        for j, p in active:
            blocks.append((j, p.rows, offset))
            offset += len(p.rows)
        self.deferred = Deferred(out.shape[1], blocks, offset)
        self.state = "augmented"
        return torch.cat([out, extra], dim=1)

    def _split(self, module, inputs):
        d = self.deferred
        if isinstance(module, nn.Linear):
            # A flattened (batch, channels * spatial) input, channel-major as nn.Flatten leaves it.
            total = d.channels + d.extra
            if inputs.dim() != 2 or inputs.shape[1] % total:
                raise SharedUnsupported("a linear layer got the extra channels in an unknown layout")
            spatial = inputs.shape[1] // total
            main = inputs[:, :d.channels * spatial]
            extra = inputs[:, d.channels * spatial:].reshape(self.batch, d.extra, spatial)
            return main, extra, spatial
        if inputs.shape[1] != d.channels + d.extra:
            raise SharedUnsupported("a conv layer got a different number of channels than were deferred")
        return inputs[:, :d.channels], inputs[:, d.channels:], None

    def _resolve(self, module, out, slots):
        """Next conv/linear layer: add each intervention's change by linearity, then expand."""
        main, extra, spatial = self.pending
        self.pending = None
        out_e = out.unsqueeze(0).repeat(self.n, *([1] * out.dim()))
        weight = module.weight.detach()
        for j, rows, offset in self.deferred.blocks:
            new = extra[:, offset:offset + len(rows)]
            if spatial is None:
                out_e[j] += partial_forward(module, new - main[:, rows], weight[:, rows], None)
            else:
                old = main.reshape(self.batch, -1, spatial)[:, rows]
                cols = (rows[:, None] * spatial + torch.arange(spatial, device=rows.device)).reshape(-1)
                out_e[j] += (new - old).reshape(self.batch, -1) @ weight[:, cols].T
        self.state = "expanded"
        if slots is not None:  # this layer is edited too: recompute those rows from each full input
            axis = -1 if isinstance(module, nn.Linear) else 1
            for j, p in enumerate(slots):
                if p is not None:
                    inputs = self._input_of(j, main, extra, spatial)
                    out_e[j].index_copy_(axis % out_e[j].dim(), p.rows,
                                         partial_forward(module, inputs, p.weight, p.bias))
        return out_e.reshape(self.n * self.batch, *out.shape[1:])

    def _input_of(self, j, main, extra, spatial):
        """Intervention ``j``'s own input to the resolving layer."""
        full = main.clone()
        view = full if spatial is None else full.view(self.batch, -1, spatial)
        for jj, rows, offset in self.deferred.blocks:
            if jj == j:
                view[:, rows] = extra[:, offset:offset + len(rows)]
        return full

    def _edit_expanded(self, module, inputs, out, slots):
        """A later edited layer: recompute each intervention's rows from its own input."""
        # ``out`` is the layer's freshly allocated output under no_grad: safe to edit in place.
        out_e = out.reshape(self.n, self.batch, *out.shape[1:])
        in_e = inputs.reshape(self.n, self.batch, *inputs.shape[1:])
        axis = -1 if isinstance(module, nn.Linear) else 1
        for j, p in enumerate(slots):
            if p is not None:
                out_e[j].index_copy_(axis % out_e[j].dim(), p.rows, partial_forward(module, in_e[j], p.weight, p.bias))
        return out_e.reshape(self.n * self.batch, *out.shape[1:])
