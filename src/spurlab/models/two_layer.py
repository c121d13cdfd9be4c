"""The two-layer network of *feature-contamination*, one or several replicas at once.

``f(x) = sum_k a_k sigma(<w_k, x> + b_k)`` with width ``m``. In the theory
setting the output weights ``a`` are frozen at ``+1/m`` for the first half of
the neurons and ``-1/m`` for the second half.

:class:`TwoLayerNet` holds ``R`` independent replicas (different activations
and/or seeds) in stacked tensors, so one matrix product trains all of them:
``weight`` is ``(R, m, d)``, ``bias`` and ``output`` are ``(R, m)``. With
``R = 1`` (one activation, one seed) it behaves like an ordinary network whose
``forward`` returns one score per example.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spurlab.errors import SpurlabError, UnknownNameError

ACTIVATION_NAMES = ("relu", "gelu", "leaky_relu", "sigmoid", "tanh", "identity")
SQRT_HALF = 0.5 ** 0.5
INV_SQRT_2PI = (2.0 * math.pi) ** -0.5


def get_activation(name: str, leaky_slope: float = 0.01) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise activation called ``name`` (see :data:`ACTIVATION_NAMES`)."""
    table: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "relu": torch.relu,
        "gelu": F.gelu,
        "leaky_relu": lambda h: F.leaky_relu(h, leaky_slope),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "identity": lambda h: h,
    }
    if name not in table:
        raise UnknownNameError("activation", name, list(table))
    return table[name]


def activation_derivative(name: str, h: torch.Tensor, out: torch.Tensor,
                          leaky_slope: float = 0.01) -> torch.Tensor:
    """``sigma'(h)`` given the pre-activation ``h`` and ``out = sigma(h)`` (exact GELU)."""
    if name == "relu":
        return (h > 0).to(h.dtype)
    if name == "identity":
        return torch.ones_like(h)
    if name == "leaky_relu":
        return torch.where(h > 0, 1.0, leaky_slope).to(h.dtype)
    if name == "sigmoid":
        return out * (1.0 - out)
    if name == "tanh":
        return 1.0 - out * out
    if name == "gelu":
        return 0.5 * (1.0 + torch.erf(h * SQRT_HALF)) + h * torch.exp(-0.5 * h * h) * INV_SQRT_2PI
    raise UnknownNameError("activation", name, list(ACTIVATION_NAMES))


def frozen_output_weights(width: int) -> torch.Tensor:
    """``+1/m`` for the first half of the neurons, ``-1/m`` for the rest."""
    signs = torch.ones(width)
    signs[width // 2:] = -1.0
    return signs / width


def init_two_layer(in_features: int, width: int, seed: int,
                   init_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W (m, d), b (m,), a (m,))`` for one replica.

    ``W`` and ``b`` follow PyTorch's ``nn.Linear`` default, ``U(-1/sqrt(d), 1/sqrt(d))``
    (times ``init_scale``); with ``d = 256`` a 32-coordinate block of a neuron then
    has norm about 0.2, the initial norm of the paper's reference run.
    """
    gen = torch.Generator().manual_seed(int(seed))
    bound = init_scale / in_features ** 0.5
    weight = (torch.rand(width, in_features, generator=gen) * 2.0 - 1.0) * bound
    bias = (torch.rand(width, generator=gen) * 2.0 - 1.0) * bound
    return weight, bias, frozen_output_weights(width)


def apply_activations(h: torch.Tensor, activations: Sequence[str], leaky_slope: float = 0.01) -> torch.Tensor:
    """Apply ``activations[r]`` to ``h[r]`` for pre-activations ``h`` of shape ``(R, ...)``."""
    if len(set(activations)) == 1:
        return get_activation(activations[0], leaky_slope)(h)
    return torch.stack([get_activation(name, leaky_slope)(h[r]) for r, name in enumerate(activations)])


def two_layer_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, output: torch.Tensor,
                      activations: Sequence[str], leaky_slope: float = 0.01) -> torch.Tensor:
    """Scores ``(R, N)`` of ``R`` stacked replicas on inputs ``x (N, d)``."""
    hidden = apply_activations(preactivations(x, weight, bias), activations, leaky_slope)
    return torch.matmul(hidden, output.unsqueeze(-1)).squeeze(-1)


def preactivations(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``<w_k, x> + b_k`` for every replica, example and neuron: ``(R, N, m)``."""
    return torch.matmul(x, weight.transpose(1, 2)) + bias.unsqueeze(1)


def _as_list(value, n: int, name: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise SpurlabError(f"{name} has {len(values)} entries but there are {n} replicas",
                           hint="give one value, or one per replica")
    return values


class TwoLayerNet(nn.Module):
    """``R`` stacked two-layer networks ``f_r(x) = sum_k a_rk sigma_r(<w_rk, x> + b_rk)``.

    Parameters
    ----------
    in_features, width:
        Input dimension ``d`` and number of hidden neurons ``m``.
    activation:
        One name, or one per replica (``relu``, ``gelu``, ``leaky_relu``, ``sigmoid``,
        ``tanh``, ``identity``).
    seed:
        One seed, or one per replica; replica ``r`` is initialised exactly like a
        single network built with ``seed[r]``.
    frozen_output:
        Keep the output layer fixed at ``+-1/m`` (the theory setting); otherwise it is
        a trainable parameter initialised there.
    """

    def __init__(self, in_features: int, width: int = 256, activation: str | Sequence[str] = "relu",
                 seed: int | Sequence[int] = 0, frozen_output: bool = True, init_scale: float = 1.0,
                 leaky_slope: float = 0.01):
        super().__init__()
        if in_features < 1 or width < 2:
            raise SpurlabError(f"a two-layer net needs in_features >= 1 and width >= 2, "
                               f"got {in_features} and {width}")
        n = max(len(activation) if isinstance(activation, (list, tuple)) else 1,
                len(seed) if isinstance(seed, (list, tuple)) else 1)
        self.activations = [str(a) for a in _as_list(activation, n, "activation")]
        for name in set(self.activations):
            get_activation(name)
        self.seeds = [int(s) for s in _as_list(seed, n, "seed")]
        self.in_features, self.width = int(in_features), int(width)
        self.frozen_output, self.leaky_slope = bool(frozen_output), float(leaky_slope)
        parts = [init_two_layer(in_features, width, s, init_scale) for s in self.seeds]
        self.weight = nn.Parameter(torch.stack([p[0] for p in parts]))
        self.bias = nn.Parameter(torch.stack([p[1] for p in parts]))
        output = torch.stack([p[2] for p in parts])
        if self.frozen_output:
            self.register_buffer("output", output)
        else:
            self.output = nn.Parameter(output)

    @property
    def n_replicas(self) -> int:
        return len(self.activations)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), -1)
        if x.shape[1] != self.in_features:
            raise SpurlabError(f"inputs have {x.shape[1]} features, the network expects {self.in_features}")
        return x.to(self.weight.dtype)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of every replica, ``(R, N)``."""
        return two_layer_forward(self._input(x), self.weight, self.bias, self.output, self.activations,
                                 self.leaky_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` scores for one replica, ``(R, N)`` for several."""
        out = self.forward_all(x)
        return out[0] if self.n_replicas == 1 else out

    def preactivations(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, N, m)`` pre-activations."""
        return preactivations(self._input(x), self.weight, self.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden activations: ``(N, m)`` for one replica, ``(R, N, m)`` for several."""
        hidden = apply_activations(self.preactivations(x), self.activations, self.leaky_slope)
        return hidden[0] if self.n_replicas == 1 else hidden

    def replica(self, r: int) -> TwoLayerNet:
        """Replica ``r`` as a network of its own (a copy)."""
        if not 0 <= r < self.n_replicas:
            raise SpurlabError(f"replica {r} out of range 0..{self.n_replicas - 1}")
        net = TwoLayerNet(self.in_features, self.width, self.activations[r], self.seeds[r],
                          self.frozen_output, leaky_slope=self.leaky_slope)
        with torch.no_grad():
            for name in ("weight", "bias", "output"):
                getattr(net, name).copy_(getattr(self, name)[r:r + 1])
        return net.to(self.weight.device)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, width={self.width}, activations={self.activations}, "
                f"seeds={self.seeds}, frozen_output={self.frozen_output}")
