"""Random-features and NTK feature maps, activations and their Hermite coefficients.

Used by the *spurious-memorization* study (Bombari & Mondelli, ICML 2024):

* :class:`RandomFeatures` — ``phi(z) = sigma(V z) / sqrt(k)``, ``V_ij ~ N(0, 1/d)``;
* :class:`NTKFeatures` — the two-layer NTK map ``phi(z) = z (x) sigma'(W z) / sqrt(k d)``
  (row-wise Kronecker product), ``W_ij ~ N(0, 1/d)``.

Both compute kernels ``K = Phi Phi^T`` block by block over the features, so
``k = 100 000`` random features never need an ``N x k`` matrix (nor ``V`` whole):
each block of ``V`` is regenerated from ``(seed, block index)``. ``n_features=0``
gives the infinite-width kernel limit, computed from the Hermite expansion
(Mehler's formula). Everything runs in torch: CUDA when present, float64 on CPU.

Activations are given by name (``phi2``, ``phi4``, ``relu``, ``tanh``, ``step``,
``linear``, Hermite sums such as ``h0+h1`` or ``0.5*h1+h3``), by a list of
Hermite coefficients, or as a callable; a trailing ``'`` takes the derivative
(``relu'`` is the step function of the ReLU NTK). For the NTK map the activation
*is* ``sigma'``, as in the paper (``h0+h1``, ``h0+h3``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from spurlab.errors import SpurlabError, UnknownNameError
from spurlab.params import Interval, check_params, positive_int
from spurlab.utils import check_finite, resolve_device

DEFAULT_DEGREE = 40  # Hermite terms kept for non-polynomial activations


# ================================================================== Hermite polynomials
def hermite_polynomials(x, degree: int):
    """Normalized probabilists' Hermite polynomials ``h_0..h_degree`` at ``x``.

    ``h_l = He_l / sqrt(l!)`` are orthonormal under the standard Gaussian. Works on
    numpy arrays and torch tensors; returns a list of ``degree + 1`` arrays.
    """
    out = [x * 0 + 1]
    if degree >= 1:
        out.append(x)
    for l in range(1, degree):
        out.append((x * out[l] - math.sqrt(l) * out[l - 1]) / math.sqrt(l + 1))
    return out


@lru_cache(maxsize=4)
def gaussian_quadrature(half_width: float = 12.0, panels: int = 48, nodes: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for ``E[f(g)]``, ``g ~ N(0, 1)``.

    Composite Gauss-Legendre on ``[-half_width, half_width]`` with 0 a panel
    boundary: unlike plain Gauss-Hermite it stays accurate to ~1e-12 for
    activations with a kink at 0 (ReLU, step), and is exact enough for smooth ones.
    """
    base_x, base_w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(-half_width, half_width, 2 * (panels // 2) + 1)
    xs, ws = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        xs.append(0.5 * (hi - lo) * base_x + 0.5 * (hi + lo))
        ws.append(0.5 * (hi - lo) * base_w)
    x, w = np.concatenate(xs), np.concatenate(ws)
    return x, w * np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)


def _evaluate(fn: Callable, x: np.ndarray) -> np.ndarray:
    return fn(torch.as_tensor(x, dtype=torch.float64)).detach().cpu().numpy()


def hermite_coefficients(fn: Callable, degree: int = DEFAULT_DEGREE, scales: np.ndarray | None = None) -> np.ndarray:
    """``mu_l = E[fn(g) h_l(g)]`` for ``l = 0..degree`` by quadrature.

    With ``scales`` (shape ``(n,)``) returns ``(n, degree + 1)``: the coefficients of
    ``t -> fn(s t)`` for each scale ``s`` (what a kernel needs for inputs whose norm
    is not exactly ``sqrt(d)``). ``fn`` maps a float64 torch tensor elementwise.
    """
    x, w = gaussian_quadrature()
    basis = np.stack(hermite_polynomials(x, degree))  # (L+1, Q)
    if scales is None:
        return basis @ (w * _evaluate(fn, x))
    values = _evaluate(fn, np.outer(np.asarray(scales, dtype=np.float64), x))  # (n, Q)
    return (values * w) @ basis.T


def gaussian_second_moment(fn: Callable, scales: np.ndarray | None = None) -> np.ndarray | float:
    """``E[fn(s g)^2]`` (all Hermite energy, no truncation)."""
    x, w = gaussian_quadrature()
    if scales is None:
        return float(w @ _evaluate(fn, x) ** 2)
    return (_evaluate(fn, np.outer(np.asarray(scales, dtype=np.float64), x)) ** 2) @ w


# ================================================================== activations
def hermite_series(coefficients: Sequence[float]) -> Callable:
    """``t -> sum_l c_l h_l(t)`` on torch tensors (or numpy arrays).

    Up to degree 10 it runs Horner's rule on the monomial form, in place (the
    feature maps call it on large blocks); higher degrees use the stable recurrence.
    """
    coefs = [float(c) for c in coefficients]
    if len(coefs) > 11:
        def series(t):
            return sum(c * h for c, h in zip(coefs, hermite_polynomials(t, len(coefs) - 1)) if c)

        return series
    scaled = [c / math.sqrt(math.factorial(l)) for l, c in enumerate(coefs)]
    monomial = [float(a) for a in np.polynomial.hermite_e.herme2poly(scaled)]

    def horner(t):
        out = t * 0 + monomial[-1]
        for a in reversed(monomial[:-1]):
            out *= t
            if a:
                out += a
        return out

    return horner


@dataclass(frozen=True)
class Activation:
    """An elementwise activation with its Hermite expansion.

    ``coefficients`` is the exact (finite) Hermite expansion when the activation is a
    Hermite sum, else ``None`` and :meth:`hermite` integrates numerically.
    """

    name: str
    fn: Callable
    coefficients: tuple[float, ...] | None = None
    derivative_fn: Callable | None = None

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        out = self.fn(t)
        return out if torch.is_tensor(out) else torch.full_like(t, float(out))

    @property
    def is_polynomial(self) -> bool:
        return self.coefficients is not None

    def hermite(self, degree: int | None = None) -> np.ndarray:
        """Coefficients ``mu_0..mu_degree`` (default: all of a Hermite sum, else 40)."""
        if self.coefficients is not None:
            coefs = np.asarray(self.coefficients, dtype=np.float64)
            degree = len(coefs) - 1 if degree is None else degree
            return np.pad(coefs, (0, max(0, degree + 1 - len(coefs))))[: degree + 1]
        return hermite_coefficients(self, DEFAULT_DEGREE if degree is None else degree)

    def second_moment(self) -> float:
        """``E[sigma(g)^2] = sum_l mu_l^2`` (exact, so truncated series can be completed)."""
        if self.coefficients is not None:
            return float(np.sum(np.square(self.coefficients)))
        return gaussian_second_moment(self)

    def derivative(self) -> Activation:
        """``sigma'``: exact for Hermite sums (``h_l' = sqrt(l) h_{l-1}``), else known or autograd."""
        if self.coefficients is not None:
            c = self.coefficients
            return hermite_activation([math.sqrt(l) * c[l] for l in range(1, len(c))] or [0.0],
                                      name=f"{self.name}'")
        return Activation(f"{self.name}'", self.derivative_fn or _autograd_derivative(self.fn))


def _autograd_derivative(fn: Callable) -> Callable:
    def derivative(t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = t.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(x).sum(), x)
        return grad

    return derivative


def hermite_activation(coefficients: Sequence[float], name: str | None = None) -> Activation:
    """The activation ``sum_l mu_l h_l`` from its Hermite coefficients."""
    coefs = [float(c) for c in coefficients]
    if not coefs or not all(math.isfinite(c) for c in coefs):
        raise SpurlabError(f"Hermite coefficients must be a non-empty list of finite numbers, got {coefficients!r}",
                           hint="e.g. [0, 1, 1] for h1 + h2")
    while len(coefs) > 1 and coefs[-1] == 0.0:
        coefs.pop()
    label = name or "+".join(f"{'' if c == 1 else f'{c:g}*'}h{l}" for l, c in enumerate(coefs) if c) or "0"
    return Activation(label, hermite_series(coefs), tuple(coefs))


def _step(t):
    return (t > 0).to(t.dtype)


def _tanh_derivative(t):
    return 1.0 - torch.tanh(t) ** 2


NAMED_ACTIVATIONS: dict[str, Callable[[], Activation]] = {
    "phi2": lambda: hermite_activation([0, 1, 1], "phi2"),
    "phi4": lambda: hermite_activation([0, 1, 0, 0, 1], "phi4"),
    "relu": lambda: Activation("relu", torch.relu, derivative_fn=_step),
    "step": lambda: Activation("step", _step, derivative_fn=torch.zeros_like),
    "tanh": lambda: Activation("tanh", torch.tanh, derivative_fn=_tanh_derivative),
    "linear": lambda: hermite_activation([0, 1], "linear"),
}
_HERMITE_TERM = re.compile(r"\s*([+-]?)\s*(?:(\d*\.?\d+(?:e[+-]?\d+)?)\s*\*\s*)?h(\d+)\s*", re.IGNORECASE)


def _parse_hermite_sum(text: str) -> Activation | None:
    """``"h0+h3"``, ``"0.5*h1-h2"`` -> a Hermite activation; ``None`` if not of that form."""
    coefs: dict[int, float] = {}
    position = 0
    while position < len(text):
        match = _HERMITE_TERM.match(text, position)
        if match is None or (position > 0 and not match.group(1)):
            return None
        scale = float(match.group(2)) if match.group(2) else 1.0
        degree = int(match.group(3))
        coefs[degree] = coefs.get(degree, 0.0) + (-scale if match.group(1) == "-" else scale)
        position = match.end()
    if not coefs:
        return None
    return hermite_activation([coefs.get(l, 0.0) for l in range(max(coefs) + 1)], name=text.replace(" ", ""))


def get_activation(spec: str | Sequence[float] | Callable | Activation) -> Activation:
    """Resolve an activation by name, Hermite coefficients, callable or :class:`Activation`."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if text.endswith("'"):
            return get_activation(text[:-1]).derivative()
        if text.lower() in NAMED_ACTIVATIONS:
            return NAMED_ACTIVATIONS[text.lower()]()
        parsed = _parse_hermite_sum(text)
        if parsed is not None:
            return parsed
        raise UnknownNameError("activation", spec, [*NAMED_ACTIVATIONS, "h<l>+h<m> (Hermite sums)",
                                                    "<name>' (derivative)"])
    if callable(spec):
        return Activation(getattr(spec, "__name__", "custom"), spec)
    if isinstance(spec, (list, tuple, np.ndarray)):
        return hermite_activation(list(spec))
    raise SpurlabError(f"cannot read an activation from {spec!r}",
                       hint="pass a name ('relu', 'phi2', 'h0+h3'), a list of Hermite coefficients or a callable")


# ================================================================== feature maps
def _resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32 if device.startswith("cuda") else torch.float64
    if dtype in ("float64", "double"):
        return torch.float64
    if dtype in ("float32", "float"):
        return torch.float32
    raise SpurlabError(f"unknown dtype {dtype!r}", hint="use auto, float32 or float64")


def _block_generator(seed: int, block: int, device: str) -> torch.Generator:
    state = int(np.random.SeedSequence([int(seed), int(block)]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(state)


def _check_inputs(Z, name: str = "Z") -> np.ndarray:
    Z = np.asarray(Z.detach().cpu().numpy() if torch.is_tensor(Z) else Z)
    if Z.ndim != 2:
        raise SpurlabError(f"{name} must be 2-d (n_samples, n_inputs), got shape {Z.shape}",
                           hint="flatten images first: Z.reshape(len(Z), -1)")
    if not np.issubdtype(Z.dtype, np.number):
        raise SpurlabError(f"{name} must be numeric, got dtype {Z.dtype}")
    check_finite(name, Z)
    return Z


class FeatureMap(ABC):
    """Shared machinery: ``fit`` fixes the input size, ``gram`` and ``transform`` use it.

    Subclasses implement ``_feature_blocks(A)`` (explicit features, block by block),
    ``_gram_blocks(A, n)`` and ``_limit_gram(A, n)``, and keep their own ``__init__`` (it
    documents their default width and activation) that passes every parameter here.
    """

    def __init__(self, n_features: int, activation: str | Sequence[float] | Callable | Activation,
                 seed: int = 0, device: str = "auto", dtype: str | torch.dtype = "auto", block_size: int = 2048,
                 limit_degree: int | None = None):
        self.n_features = n_features
        self.activation = activation
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.block_size = block_size
        self.limit_degree = limit_degree

    def fit(self, Z) -> FeatureMap:
        """Read the input dimension from ``Z`` (n, d) and resolve activation and device."""
        self.n_features, self.block_size = check_params(  # n_features 0: the infinite-width kernel
            type(self).__name__, {"n_features": Interval(int, 0, None), "block_size": positive_int()},
            {"n_features": self.n_features, "block_size": self.block_size}).values()
        Z = _check_inputs(Z)
        self.n_inputs_ = Z.shape[1]
        self.activation_ = get_activation(self.activation)
        self.device_ = resolve_device(self.device)
        self.dtype_ = _resolve_dtype(self.dtype, self.device_)
        return self

    @property
    def is_limit(self) -> bool:
        return int(self.n_features) == 0

    def _check_fitted(self, *arrays) -> list[torch.Tensor]:
        if not hasattr(self, "n_inputs_"):
            raise SpurlabError(f"{type(self).__name__} is not fitted", hint="call .fit(Z) first")
        out = []
        for i, Z in enumerate(arrays):
            Z = _check_inputs(Z, "Z" if i == 0 else f"others[{i - 1}]")
            if Z.shape[1] != self.n_inputs_:
                raise SpurlabError(f"inputs have {Z.shape[1]} columns but the map was fitted on {self.n_inputs_}")
            out.append(torch.as_tensor(Z, dtype=torch.float64))
        return out

    def gram_tensors(self, Z, *others) -> list[torch.Tensor]:
        """``[K(Z, Z), K(O_1, Z), ...]`` as float64 tensors on the map's device."""
        parts = self._check_fitted(Z, *others)
        A = torch.cat(parts).to(self.device_)
        n = len(parts[0])
        if self.is_limit:
            K = self._limit_gram(A, n)
        else:
            K = self._gram_blocks(A, n, shared_input_columns(parts))
        return list(torch.split(K, [len(p) for p in parts]))

    def gram(self, Z, *others) -> list[np.ndarray]:
        """Kernels between every row set and ``Z`` (the first is ``K(Z, Z)``), as numpy."""
        return [K.cpu().numpy() for K in self.gram_tensors(Z, *others)]

    def transform(self, Z) -> np.ndarray:
        """The explicit feature matrix ``Phi`` (n, n_params_); for checks and small sizes."""
        if self.is_limit:
            raise SpurlabError("the infinite-width kernel (n_features=0) has no explicit feature map",
                               hint="set n_features > 0 or use .gram()")
        (A,) = self._check_fitted(Z)
        return torch.cat(list(self._feature_blocks(A.to(self.device_))), dim=1).cpu().numpy()

    @abstractmethod
    def _feature_blocks(self, A: torch.Tensor, shared: InputSharing | None = None) -> Iterator[torch.Tensor]:
        ...

    def _gram_blocks(self, A: torch.Tensor, n: int, shared: InputSharing | None = None) -> torch.Tensor:
        K = torch.zeros(len(A), n, dtype=torch.float64, device=A.device)
        for P in self._feature_blocks(A, shared):
            K += (P @ P[:n].T).to(torch.float64)
        return K

    @abstractmethod
    def _limit_gram(self, A: torch.Tensor, n: int) -> torch.Tensor:
        ...

    def _blocks(self) -> Iterator[tuple[int, int]]:
        """``(block index, size)`` over the features in blocks of ``block_size``."""
        for b, start in enumerate(range(0, int(self.n_features), self.block_size)):
            yield b, min(self.block_size, int(self.n_features) - start)

    def _gaussian_weights(self, block: int, size: int) -> torch.Tensor:
        """Rows ``block_size * block ...`` of a matrix with i.i.d. N(0, 1/d) entries."""
        gen = _block_generator(self.seed, block, self.device_)
        # drawn in float32 (4x faster than float64 on CPU), then used at the compute precision
        W = torch.randn(size, self.n_inputs_, generator=gen, device=self.device_, dtype=torch.float32)
        return W.to(self.dtype_) / math.sqrt(self.n_inputs_)


@dataclass(frozen=True)
class InputSharing:
    """Rows ``rows`` of the stacked inputs repeat the first ``n`` rows (the training inputs) on the columns
    ``same`` (a spurious query keeps the sample's spurious part) and are zero on ``zero`` (an image query
    with its core blanked): their pre-activations reuse the training rows' products on those columns."""

    n: int
    rows: slice
    same: torch.Tensor  # boolean column mask
    zero: torch.Tensor  # boolean column mask (within ~same)


def shared_input_columns(parts: list[torch.Tensor], min_share: float = 0.125) -> InputSharing | None:
    """The first row set after the training inputs that repeats at least ``min_share`` of their columns."""
    Z = parts[0]
    start = len(Z)
    for O in parts[1:]:
        if O.shape == Z.shape:
            same = (O == Z).all(dim=0)
            if float(same.float().mean()) >= min_share:
                zero = ~same & (O == 0).all(dim=0)
                return InputSharing(len(Z), slice(start, start + len(O)), same, zero)
        start += len(O)
    return None


def preactivation_fn(A: torch.Tensor, shared: InputSharing | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``W -> A W^T``; with ``shared``, the repeated columns are multiplied once, for the training rows
    (the column slices of ``A`` are cut once here, those of each ``W`` block per call)."""
    if shared is None:
        return lambda W: A @ W.T
    n, rows = shared.n, shared.rows
    same, rest = shared.same, ~shared.same
    used = rest & ~shared.zero
    others = torch.ones(len(A), dtype=torch.bool, device=A.device)
    others[:n] = False
    others[rows] = False
    a_same, a_rest, a_query = A[:n][:, same], A[:n][:, rest], A[rows][:, used]
    a_others = A[others] if bool(others.any()) else None

    def compute(W: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(A), len(W), dtype=A.dtype, device=A.device)
        common = a_same @ W[:, same].T
        torch.addmm(common, a_rest, W[:, rest].T, out=out[:n])
        torch.addmm(common, a_query, W[:, used].T, out=out[rows])
        if a_others is not None:
            out[others] = a_others @ W.T
        return out

    return compute


def _mehler_gram(A: torch.Tensor, n: int, activation: Activation, degree: int | None) -> torch.Tensor:
    """``E_v[s(v.a) s(v.b)]`` for ``v ~ N(0, I/d)`` and every pair (a in A, b in A[:n]).

    Mehler: ``sum_l mu_l(s_a) mu_l(s_b) rho^l`` with ``s = |a| / sqrt(d)``, ``rho`` the cosine;
    the diagonal of the ``A[:n]`` block is set to the exact ``E[s(s_a g)^2]``.
    """
    d = A.shape[1]
    norms = A.norm(dim=1)
    scales = (norms / math.sqrt(d)).cpu().numpy()
    if degree is None:
        degree = len(activation.coefficients) - 1 if activation.is_polynomial else DEFAULT_DEGREE
    mu = torch.as_tensor(hermite_coefficients(activation, degree, scales), device=A.device)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    rho = ((A / safe[:, None]) @ (A[:n] / safe[:n, None]).T).clamp(-1.0, 1.0)
    K = torch.zeros_like(rho)
    power = torch.ones_like(rho)
    for l in range(mu.shape[1]):
        K += (mu[:, l, None] * mu[None, :n, l]) * power
        power = power * rho
    idx = torch.arange(n, device=A.device)
    K[idx, idx] = torch.as_tensor(gaussian_second_moment(activation, scales[:n]), device=A.device)
    return K


class RandomFeatures(FeatureMap):
    """``phi(z) = sigma(V z) / sqrt(k)`` with ``V_ij ~ N(0, 1/d)``; ``n_features=0``: the kernel limit.

    ``dtype="auto"`` computes features in float64 on CPU and float32 on CUDA; kernels
    are always accumulated in float64. ``limit_degree`` truncates the Hermite series of
    a non-polynomial activation in the kernel limit.
    """

    def __init__(self, n_features: int = 100_000, activation="relu", seed: int = 0, device: str = "auto",
                 dtype: str | torch.dtype = "auto", block_size: int = 2048, limit_degree: int | None = None):
        super().__init__(n_features, activation, seed, device, dtype, block_size, limit_degree)

    @property
    def n_params_(self) -> int:
        return int(self.n_features)

    def _feature_blocks(self, A: torch.Tensor, shared: InputSharing | None = None) -> Iterator[torch.Tensor]:
        pre = preactivation_fn(A.to(self.dtype_), shared)
        scale = 1.0 / math.sqrt(self.n_features)
        for block, size in self._blocks():
            yield self.activation_(pre(self._gaussian_weights(block, size))) * scale

    def _limit_gram(self, A: torch.Tensor, n: int) -> torch.Tensor:
        return _mehler_gram(A.to(torch.float64), n, self.activation_, self.limit_degree)


class NTKFeatures(FeatureMap):
    """``phi(z) = z (x) sigma'(W z) / sqrt(k d)`` with ``W_ij ~ N(0, 1/d)``, ``k = n_features`` neurons.

    ``activation`` is ``sigma'`` itself (the paper's ``h0+h1``, ``h0+h3``; ``relu'`` for ReLU).
    The kernel uses ``K = (Z Z^T / d) * (S S^T / k)`` with ``S = sigma'(Z W^T)``, equal to
    ``Phi Phi^T`` without forming the ``n x k d`` matrix; ``n_features=0`` gives the limit.
    """

    def __init__(self, n_features: int = 100, activation="h0+h1", seed: int = 0, device: str = "auto",
                 dtype: str | torch.dtype = "auto", block_size: int = 2048, limit_degree: int | None = None):
        super().__init__(n_features, activation, seed, device, dtype, block_size, limit_degree)

    @property
    def n_params_(self) -> int:
        return int(self.n_features) * int(self.n_inputs_)

    def _neuron_blocks(self, A: torch.Tensor, shared: InputSharing | None = None) -> Iterator[torch.Tensor]:
        pre = preactivation_fn(A.to(self.dtype_), shared)
        for block, size in self._blocks():
            yield self.activation_(pre(self._gaussian_weights(block, size)))

    def _feature_blocks(self, A: torch.Tensor, shared: InputSharing | None = None) -> Iterator[torch.Tensor]:
        scale = 1.0 / math.sqrt(self.n_features * self.n_inputs_)
        A_cast = A.to(self.dtype_)
        for S in self._neuron_blocks(A, shared):
            yield (S[:, :, None] * A_cast[:, None, :]).reshape(len(A), -1) * scale

    def _gram_blocks(self, A: torch.Tensor, n: int, shared: InputSharing | None = None) -> torch.Tensor:
        S_gram = torch.zeros(len(A), n, dtype=torch.float64, device=A.device)
        for S in self._neuron_blocks(A, shared):
            S_gram += (S @ S[:n].T).to(torch.float64)
        A64 = A.to(torch.float64)
        return (A64 @ A64[:n].T) * S_gram / (self.n_inputs_ * int(self.n_features))

    def _limit_gram(self, A: torch.Tensor, n: int) -> torch.Tensor:
        A64 = A.to(torch.float64)
        return (A64 @ A64[:n].T) / self.n_inputs_ * _mehler_gram(A64, n, self.activation_, self.limit_degree)


FEATURE_MAPS = {"rf": RandomFeatures, "ntk": NTKFeatures}


def make_feature_map(model: str, n_features: int, activation, seed: int = 0, device: str = "auto",
                     **kwargs) -> FeatureMap:
    """``"rf"`` or ``"ntk"`` feature map by name."""
    if model not in FEATURE_MAPS:
        raise UnknownNameError("feature map", model, list(FEATURE_MAPS))
    return FEATURE_MAPS[model](n_features=n_features, activation=activation, seed=seed, device=device, **kwargs)
