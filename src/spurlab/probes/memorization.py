"""Spurious-feature memorization in kernel (random-features / NTK) regression.

Bombari & Mondelli (ICML 2024): for the minimum-norm interpolator ``theta*`` and
``theta*_{-i}`` trained without sample ``i``,

    f(z^s_i, theta*) - f(z^s_i, theta*_{-i}) = F_i * (g_i - f(z_i, theta*_{-i})),

where ``z^s_i`` keeps the spurious part of ``z_i`` and replaces its core. With
``K = Phi Phi^T``, ``K_s = Phi_s Phi^T`` (row ``i``: the query of sample ``i``) and
``A = K + lambda I``, everything comes from one factorization of ``A``:

* leave-one-out residuals (stability) ``r_i = [A^-1 G]_i / [A^-1]_ii``;
* feature alignments ``F_i = [K_s A^-1]_ii``;
* outputs on the spurious queries ``K_s A^-1 G`` and on test points.

The identities hold for any ridge ``lambda >= 0`` (``lambda = 0``: the interpolator).
:func:`gamma` gives the closed-form limits of ``F`` in the two regimes of the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spurlab.errors import SpurlabError
from spurlab.models.features import Activation, FeatureMap, get_activation, make_feature_map
from spurlab.params import Interval, Options, check_param, check_params, probability
from spurlab.utils import as_numpy, check_finite

REGIMES = ("high_n", "low_n")
# What the solver, the estimator and the closed forms accept (spurlab.params), checked by name before any work.
RIDGE = Interval(float, 0, None)
FORM_CONSTRAINTS = {"model": Options("rf", "ntk"), "alpha": probability(), "regime": Options(*REGIMES),
                    "n_over_d": Interval(float, 0, None)}


# ================================================================== the kernel solve
@dataclass
class KernelSolution:
    """Everything one factorization of ``K + lambda I`` gives, per training sample."""

    targets: np.ndarray  # g (N,)
    dual_coef: np.ndarray  # A^-1 G
    inverse_diag: np.ndarray  # [A^-1]_ii
    loo_residuals: np.ndarray  # g_i - f(z_i, theta*_{-i})
    feature_alignment: np.ndarray  # F_i = [K_s A^-1]_ii
    spurious_outputs: np.ndarray  # f(z^s_i, theta*)
    test_outputs: np.ndarray | None = None

    @property
    def loo_outputs(self) -> np.ndarray:
        """``f(z_i, theta*_{-i})``: each training point predicted without itself."""
        return self.targets - self.loo_residuals

    @property
    def spurious_outputs_loo(self) -> np.ndarray:
        """``f(z^s_i, theta*_{-i})``, from the identity (no refit)."""
        return self.spurious_outputs - self.feature_alignment * self.loo_residuals

    @property
    def spurious_accuracy(self) -> float:
        """Fraction of training points whose spurious query alone gets the label's sign."""
        return float(np.mean(np.sign(self.spurious_outputs) == np.sign(self.targets)))

    @property
    def memorization_cov(self) -> float:
        """``Cov(f(z^s_i, theta*), g_i)`` over the training points."""
        return float(np.mean(self.spurious_outputs * self.targets)
                     - self.spurious_outputs.mean() * self.targets.mean())

    @property
    def loo_error(self) -> float:
        """``mean_i g_i (g_i - f(z_i, theta*_{-i}))``: the stability term of the covariance
        (``1 - E[g f_{-i}]`` for labels ``+-1``)."""
        return float(np.mean(self.targets * self.loo_residuals))

    @property
    def loo_mse(self) -> float:
        return float(np.mean(self.loo_residuals**2))

    @property
    def mean_alignment(self) -> float:
        return float(np.mean(self.feature_alignment))

    def test_accuracy(self, test_targets: np.ndarray) -> float:
        if self.test_outputs is None:
            raise SpurlabError("no test kernel was given to the solve", hint="pass K_test")
        return float(np.mean(np.sign(self.test_outputs) == np.sign(test_targets)))

    def metrics(self, test_targets: np.ndarray | None = None) -> dict[str, float]:
        """The study's metrics (``test_acc`` only when test outputs and targets exist)."""
        out = {"spurious_acc": self.spurious_accuracy, "memorization_cov": self.memorization_cov,
               "loo_error": self.loo_error, "feature_alignment": self.mean_alignment}
        if test_targets is not None and self.test_outputs is not None:
            out = {"test_acc": self.test_accuracy(test_targets), **out}
        return out


def _as_tensor(array, name: str, device=None) -> torch.Tensor:
    tensor = array if torch.is_tensor(array) else torch.as_tensor(np.asarray(array))
    if not torch.is_floating_point(tensor) and tensor.dtype not in (torch.int32, torch.int64):
        raise SpurlabError(f"{name} must be numeric, got {tensor.dtype}")
    check_finite(name, tensor.detach().cpu().numpy())
    return tensor.to(device=device, dtype=torch.float64)


def _check_kernels(K: torch.Tensor, K_query: torch.Tensor, g: torch.Tensor, K_test) -> None:
    n = len(g)
    if g.ndim != 1:
        raise SpurlabError(f"targets must be 1-d, got shape {tuple(g.shape)}")
    if K.shape != (n, n):
        raise SpurlabError(f"K must be ({n}, {n}) for {n} targets, got {tuple(K.shape)}")
    if K_query.shape != (n, n):
        raise SpurlabError(f"K_query must be ({n}, {n}): row i is the spurious query of sample i "
                           f"against the {n} training points, got {tuple(K_query.shape)}")
    if K_test is not None and (K_test.ndim != 2 or K_test.shape[1] != n):
        raise SpurlabError(f"K_test must have {n} columns (one per training point), got {tuple(K_test.shape)}")


def factorize(A: torch.Tensor) -> torch.Tensor:
    """``A^-1`` of a symmetric positive definite kernel matrix via one Cholesky factorization."""
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:
        raise SpurlabError(
            f"the kernel matrix ({len(A)} x {len(A)}) is singular or not positive definite, so the "
            f"minimum-norm interpolator is not unique",
            hint="use more features than training points (k > N; NTK: k d > N), drop duplicate inputs, "
                 "or add a small ridge (e.g. --set ridge=1e-6)")
    # cholesky_solve against I: LAPACK's potri (torch.cholesky_inverse) is unblocked and ~20x slower on CPU
    return torch.cholesky_solve(torch.eye(len(A), dtype=A.dtype, device=A.device), L)


def solve_memorization(K, K_query, targets, ridge: float = 0.0, K_test=None) -> KernelSolution:
    """Interpolator (or ridge) fit, LOO residuals and feature alignments from one factorization.

    ``K`` (N, N): training kernel; ``K_query`` (N, N): row ``i`` is the kernel between the
    spurious query of sample ``i`` and the training points; ``targets`` (N,); optional
    ``K_test`` (T, N). Accepts numpy arrays or torch tensors (kept on their device).
    """
    ridge = check_param("solve_memorization", "ridge", RIDGE, ridge)
    device = K.device if torch.is_tensor(K) else None
    K, K_query, g = (_as_tensor(a, n, device) for a, n in ((K, "K"), (K_query, "K_query"), (targets, "targets")))
    K_test = None if K_test is None else _as_tensor(K_test, "K_test", device)
    _check_kernels(K, K_query, g, K_test)
    A = 0.5 * (K + K.T) + ridge * torch.eye(len(g), dtype=K.dtype, device=K.device)
    A_inv = factorize(A)
    dual = A_inv @ g
    inv_diag = torch.diagonal(A_inv)
    alignment = (K_query * A_inv).sum(dim=1)  # diag(K_s A^-1), A^-1 symmetric

    def host(t):
        return t.detach().cpu().numpy()

    return KernelSolution(
        targets=host(g), dual_coef=host(dual), inverse_diag=host(inv_diag), loo_residuals=host(dual / inv_diag),
        feature_alignment=host(alignment), spurious_outputs=host(K_query @ dual),
        test_outputs=None if K_test is None else host(K_test @ dual))


# ================================================================== estimator
class KernelMemorization:
    """Fit RF / NTK regression and measure how much it memorizes the spurious part.

    >>> probe = KernelMemorization(RandomFeatures(20_000, "phi2")).fit(Z, g, Z_query)  # doctest: +SKIP
    >>> probe.solution_.spurious_accuracy, probe.solution_.mean_alignment              # doctest: +SKIP

    ``features`` is a :class:`~spurlab.models.features.FeatureMap` (or ``"rf"`` / ``"ntk"``
    with the paper's sizes and ``activation``); ``ridge = 0`` gives the minimum-norm
    interpolator. After ``fit``: ``solution_`` (a :class:`KernelSolution`), ``features_``.
    """

    def __init__(self, features: FeatureMap | str = "rf", activation="phi2", ridge: float = 0.0,
                 seed: int = 0, device: str = "auto"):
        self.features = features
        self.activation = activation
        self.ridge = ridge
        self.seed = seed
        self.device = device

    def _make_features(self) -> FeatureMap:
        check_params("KernelMemorization", {"ridge": RIDGE, "seed": Interval(int, 0, None)},
                     {"ridge": self.ridge, "seed": self.seed})
        if isinstance(self.features, FeatureMap):
            return self.features
        sizes = {"rf": 100_000, "ntk": 100}
        features = check_param("KernelMemorization", "features", Options(*sizes), self.features)
        return make_feature_map(features, sizes[features], self.activation, self.seed, self.device)

    def fit(self, Z, targets, Z_query, Z_test=None) -> KernelMemorization:
        """``Z`` (N, d) training inputs, ``targets`` (N,), ``Z_query`` (N, d): spurious queries."""
        Z = as_numpy(Z)
        if len(Z) != len(targets) or len(Z_query) != len(Z):
            raise SpurlabError(f"Z ({len(Z)}), targets ({len(targets)}) and Z_query ({len(Z_query)}) "
                               f"must have one row per training sample")
        self.features_ = self._make_features().fit(Z)
        extra = [Z_query] + ([] if Z_test is None else [Z_test])
        kernels = self.features_.gram_tensors(Z, *extra)
        self.train_inputs_ = Z
        self.solution_ = solve_memorization(kernels[0], kernels[1], targets, self.ridge,
                                            None if Z_test is None else kernels[2])
        return self

    def predict(self, Z) -> np.ndarray:
        """``f(z, theta*)`` for new inputs."""
        if not hasattr(self, "solution_"):
            raise SpurlabError("KernelMemorization is not fitted", hint="call .fit(Z, targets, Z_query) first")
        _, K_new = self.features_.gram(self.train_inputs_, Z)
        return K_new @ self.solution_.dual_coef


# ================================================================== closed forms
def gamma(model: str, activation, alpha: float, regime: str = "high_n", degree: int = 60) -> float:
    """The limit of the feature alignment ``F`` (the paper's gamma).

    ``regime="high_n"`` (``d << N << d^2``): RF ``sum_{l>=2} mu_l^2 a^l / sum_{l>=2} mu_l^2``,
    NTK ``sum_{l>=1} mu'_l^2 a^(l+1) / sum_{l>=1} mu'_l^2``; ``regime="low_n"`` (``N << d``):
    the same sums from ``l >= 1`` (RF) and ``l >= 0`` (NTK). For NTK, ``activation`` is
    ``sigma'``. Denominators use the exact second moment, so truncation only touches
    the numerator (by at most ``alpha^degree``).
    """
    model, alpha, regime = check_params("gamma", FORM_CONSTRAINTS,
                                        {"model": model, "alpha": alpha, "regime": regime}).values()
    act: Activation = get_activation(activation)
    mu2 = act.hermite(degree) ** 2
    if model == "rf":
        first, shift = (2 if regime == "high_n" else 1), 0
    else:  # ntk
        first, shift = (1 if regime == "high_n" else 0), 1
    energy = act.second_moment() - mu2[:first].sum()
    if energy <= 1e-12 * max(act.second_moment(), 1e-300):
        raise SpurlabError(f"activation {act.name!r} has no Hermite energy at degree >= {first}, "
                           f"so gamma ({model}, {regime}) is undefined",
                           hint="use an activation with a non-linear (RF) or non-constant (NTK) part")
    degrees = np.arange(len(mu2))
    return float((mu2[first:] * float(alpha) ** (degrees[first:] + shift)).sum() / energy)


def gammas(model: str, activation, alpha: float) -> dict[str, float]:
    """``{"gamma_high_n": ..., "gamma_low_n": ...}``."""
    return {f"gamma_{regime}": gamma(model, activation, alpha, regime) for regime in REGIMES}


def linear_leak_weight(model: str, activation, n_over_d: float) -> float:
    """Weight ``w`` of the linear part in ``F`` at a finite ``N / d`` (``d -> inf``, ``k >> N``, ``N << d^2``).

    The kernel is a linear part ``mu_1^2 Z Z^T / d`` (NTK: ``mu'_0^2``) plus higher degrees
    that act as ``c I`` while ``N << d^2`` (``c``: their Hermite energy). Sherman-Morrison and
    the Marchenko-Pastur fixed point give ``w = u / (1 + u)`` with ``u`` the positive root of
    ``u^2 + (1 + a (N/d - 1)) u - a = 0``, ``a = mu_1^2 / c``: ``w = a / (1 + a)`` as
    ``N/d -> 0`` and ``w ~ d / N`` as ``N/d -> inf``.
    """
    model, ratio = check_params("linear_leak_weight", FORM_CONSTRAINTS, {"model": model, "n_over_d": n_over_d}).values()
    act = get_activation(activation)
    gamma(model, act, 0.5, "high_n")  # validates model and the energy beyond the linear part
    mu2 = act.hermite(2) ** 2
    linear, first = (mu2[1], 2) if model == "rf" else (mu2[0], 1)
    a = float(linear / (act.second_moment() - mu2[:first].sum()))
    b = 1.0 + a * (ratio - 1.0)
    u = 2.0 * a / (b + np.sqrt(b * b + 4.0 * a))  # positive root, stable for large ratio
    return float(u / (1.0 + u))


def gamma_at_ratio(model: str, activation, alpha: float, n_over_d: float) -> float:
    """Deterministic equivalent of ``F`` at a finite ``N / d``: ``(1 - w) gamma_high + w alpha``.

    The linear part of the features is aligned by ``alpha`` (not ``alpha^l``) and is projected
    out only as ``N / d`` grows: it keeps weight ``w ~ d / N`` (:func:`linear_leak_weight`), so
    ``F - gamma_high ~ (d / N) (alpha - gamma_high)``. The two closed forms are its limits
    (``N/d -> 0``: ``gamma_low``; ``N/d -> inf``: ``gamma_high``). Corrections of order ``1 / d``
    remain (for Gaussian data ``E[cos^l] = alpha^l + O(alpha^(l-2) / d)``).
    """
    w = linear_leak_weight(model, activation, n_over_d)
    return (1.0 - w) * gamma(model, activation, alpha, "high_n") + w * float(alpha)


# ================================================================== naive reference
def refit_memorization(phi, targets, phi_query, indices=None) -> dict[str, np.ndarray]:
    """The naive way, as a reference: pseudo-inverse of the ``N x p`` feature matrix, then a
    refit without each left-out sample (only ``indices``, default all).

    Returns per left-out sample ``loo_residuals`` (``g_i - f(z_i, theta*_{-i})``),
    ``spurious_change`` (``f(z^s_i, theta*) - f(z^s_i, theta*_{-i})``) and the geometric
    ``feature_alignment`` ``<phi(z^s_i), P phi(z_i)> / |P phi(z_i)|^2`` (``P``: projection
    off the span of the other training features). Costs ``O(N^2 p)`` per sample.
    """
    phi, phi_query, g = (np.asarray(a, dtype=np.float64) for a in (phi, phi_query, targets))
    n = len(g)
    if phi.shape[0] != n or phi_query.shape != phi.shape:
        raise SpurlabError(f"phi {phi.shape} and phi_query {phi_query.shape} must both have {n} rows")
    theta = np.linalg.pinv(phi) @ g
    indices = np.arange(n) if indices is None else np.asarray(indices)
    residuals, changes, alignment = (np.empty(len(indices)) for _ in range(3))
    for out, i in enumerate(indices):
        keep = np.arange(n) != i
        pinv_rest = np.linalg.pinv(phi[keep])
        theta_rest = pinv_rest @ g[keep]
        residuals[out] = g[i] - phi[i] @ theta_rest
        changes[out] = phi_query[i] @ (theta - theta_rest)
        orth = phi[i] - pinv_rest @ (phi[keep] @ phi[i])  # P phi_i, span(rows) projection via pinv
        alignment[out] = (phi_query[i] @ orth) / (orth @ orth)
    return {"indices": indices, "loo_residuals": residuals, "spurious_change": changes,
            "feature_alignment": alignment}
