"""Batched linear SVMs in torch: many (C, fold) problems on one embedding matrix at once.

Every problem minimizes the L2-SVM (squared hinge) primal with an unregularized bias,

    F(w, b) = 1/2 ||w||^2 + C * sum_i s_i * max(0, 1 - y_i (x_i . w + b))^2,

with per-example weights ``s`` (fold membership times balanced class weights).
The solver is a finite Newton method: each step solves the Newton system of the
current active set by preconditioned conjugate gradients (the preconditioner is
the Hessian with every example active, one Cholesky factor per problem), then an
exact line search along the piecewise-quadratic objective. All problems share the
matrix products, so a whole C grid costs a handful of matmuls per step, on the CPU or
a GPU. With fewer examples than dimensions the problem is solved exactly in the span of
the examples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spurlab.errors import SpurlabError

TINY = 1e-30


@dataclass
class SvmSolution:
    """Weights ``w`` (P x D), biases ``b`` (P), Newton steps taken, converged flags."""

    w: np.ndarray
    b: np.ndarray
    n_iter: int
    converged: np.ndarray


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)


def _hess_vec(xb: torch.Tensor, active_w: torch.Tensor, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(R + 2C X^T diag(active weights) X) v for every problem; v is (P x D+1), active_w (N x P)."""
    out = v.clone()
    out[:, -1] = 0.0  # the bias is not regularized
    return out + 2.0 * c[:, None] * ((active_w * (xb @ v.T)).T @ xb)


def _preconditioners(xb: torch.Tensor, weight: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Cholesky factors of the Hessian with every example active, one per C (P x D+1 x D+1)."""
    gram = xb.T @ (weight[:, None] * xb)
    dim = xb.shape[1]
    reg = torch.eye(dim, dtype=xb.dtype, device=xb.device)
    reg[-1, -1] = 0.0
    mats = reg + 2.0 * c[:, None, None] * gram
    # a tiny ridge keeps the bias block positive definite when C * sum(weight) is minute
    scale = mats.diagonal(dim1=1, dim2=2).amax(1)
    mats = mats + 1e-7 * scale[:, None, None] * torch.eye(dim, dtype=xb.dtype, device=xb.device)
    return torch.linalg.cholesky(mats)


def _pcg(xb, active_w, c, rhs, chol, max_iter: int, rtol: float) -> torch.Tensor:
    """Batched preconditioned conjugate gradients for H x = rhs (one system per row of rhs)."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = torch.cholesky_solve(r[:, :, None], chol)[:, :, 0]
    p = z.clone()
    rz = (r * z).sum(1)
    stop = rtol * rhs.norm(dim=1)
    for _ in range(max_iter):
        active = r.norm(dim=1) > stop
        if not bool(active.any()):
            break
        hp = _hess_vec(xb, active_w, c, p)
        denom = (p * hp).sum(1)
        alpha = torch.where(active & (denom > 0), rz / denom.clamp_min(TINY), torch.zeros_like(rz))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * hp
        z = torch.cholesky_solve(r[:, :, None], chol)[:, :, 0]
        rz_new = (r * z).sum(1)
        beta = torch.where(active, rz_new / rz.clamp_min(TINY), torch.zeros_like(rz))
        p = z + beta[:, None] * p
        rz = rz_new
    return x


def _line_search(theta, delta, margins, d_proj, y, weight, c, max_steps: int = 12) -> torch.Tensor:
    """Step t >= 0 minimizing F(theta + t delta) (convex, piecewise quadratic), per problem.

    Safeguarded Newton on the piecewise-linear slope; it usually stops after 1-3 steps
    because t = 1 is the exact minimizer once the active set has settled.
    """
    a0 = (theta[:, :-1] * delta[:, :-1]).sum(1)
    a1 = (delta[:, :-1] * delta[:, :-1]).sum(1)
    yd = y[:, None] * d_proj  # N x P
    wyd = weight[:, None] * yd
    base = 1.0 - margins

    def slope(t):
        resid = (base - t * yd).clamp_min(0.0)
        grad = a0 + t * a1 - 2.0 * c * (resid * wyd).sum(0)
        curv = a1 + 2.0 * c * ((resid > 0) * wyd * yd).sum(0)
        return grad, curv

    g0, _ = slope(torch.zeros_like(c))
    lo, hi = torch.zeros_like(c), torch.full_like(c, float("inf"))
    t = torch.ones_like(c)
    for _ in range(max_steps):
        g, h = slope(t)
        done = g.abs() <= 1e-4 * g0.abs()
        if bool(done.all()):
            break
        lo = torch.where(g < 0, t, lo)
        hi = torch.where(g > 0, t, hi)
        newton = t - g / h.clamp_min(TINY)
        fallback = torch.where(torch.isinf(hi), 2.0 * t, 0.5 * (lo + hi))
        ok = (newton > lo) & (newton < hi) & (h > 0)
        t = torch.where(done, t, torch.where(ok, newton, fallback))
    return t


def solve_squared_hinge(x, y, sample_weight, c, *, max_iter: int = 30, tol: float = 1e-5,
                        cg_iter: int = 100, device: str = "cpu", dtype=torch.float32) -> SvmSolution:
    """Solve the weighted L2-SVM on rows ``x`` for every value in ``c`` at once.

    ``y`` holds +1/-1 targets (N), ``sample_weight`` positive per-example weights (N)
    and ``c`` the regularization values (P). Returns one (w, b) per value of ``c``.
    """
    x_t = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    basis = None
    if x_t.shape[0] < x_t.shape[1]:
        # fewer rows than dimensions: w lies in the span of the rows (representer theorem), so
        # solve exactly in an orthonormal basis of that span and map back
        basis = torch.linalg.qr(x_t.T).Q  # D x N
        x_t = x_t @ basis
    xb = _with_bias(x_t)
    y_t = torch.as_tensor(np.asarray(y), dtype=dtype, device=device)
    weight = torch.as_tensor(np.asarray(sample_weight), dtype=dtype, device=device)
    c_t = torch.as_tensor(np.atleast_1d(np.asarray(c, dtype=float)), dtype=dtype, device=device)
    if not bool(torch.all(c_t > 0)):
        raise SpurlabError("every C must be positive", hint="use e.g. numpy.logspace(-6, 0, 7)")
    chol = _preconditioners(xb, weight, c_t)
    theta = torch.zeros(len(c_t), xb.shape[1], dtype=dtype, device=device)
    converged = torch.zeros(len(c_t), dtype=torch.bool, device=device)
    grad0 = None
    n_iter = 0
    for step_index in range(1, max_iter + 1):
        n_iter = step_index
        margins = y_t[:, None] * (xb @ theta.T)  # N x P
        resid = (1.0 - margins).clamp_min(0.0)
        grad = theta.clone()
        grad[:, -1] = 0.0
        grad = grad - 2.0 * c_t[:, None] * ((weight[:, None] * resid * y_t[:, None]).T @ xb)
        gnorm = grad.norm(dim=1)
        grad0 = gnorm if grad0 is None else grad0
        converged = gnorm <= tol * grad0.clamp_min(TINY)
        if bool(converged.all()):
            break
        active_w = weight[:, None] * (resid > 0)
        delta = _pcg(xb, active_w, c_t, -grad, chol, cg_iter, rtol=1e-3)
        delta = torch.where(converged[:, None], torch.zeros_like(delta), delta)
        step = _line_search(theta, delta, margins, xb @ delta.T, y_t, weight, c_t)
        theta = theta + step[:, None] * delta
    w = theta[:, :-1] if basis is None else theta[:, :-1] @ basis.T
    return SvmSolution(w=w.double().cpu().numpy(), b=theta[:, -1].double().cpu().numpy(), n_iter=n_iter,
                       converged=converged.cpu().numpy())
