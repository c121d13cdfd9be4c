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
from scipy import linalg
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

from spurlab.errors import SpurlabError

TINY = 1e-30
PATH_MAX_RATIO = 5  # examples per dimension up to which the hinge follows the active-set path
PATH_MAX_EXAMPLES = 5000


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


# ------------------------------------------------------------------ the hinge loss (scikit-learn's SVC)
def libsvm_intercept(f: np.ndarray, y: np.ndarray, a: np.ndarray, c: np.ndarray, free: np.ndarray) -> float:
    """The bias ``SVC`` reports for scores ``f = x . w``: the mean of ``y_i - f_i`` over the free
    multipliers; without any, the hinge optimum leaves ``b`` anywhere in an interval and libsvm's
    tolerance ends with a correct (+1) example's multiplier just short of its bound, i.e. at the
    interval's upper end (nothing flagged), which is the end taken here."""
    if free.any():
        return float(np.mean(y[free] - f[free]))
    upper = a >= 0.5 * c
    above = np.r_[1.0 - f[upper & (y > 0)], -1.0 - f[~upper & (y < 0)]]
    below = np.r_[-1.0 - f[upper & (y < 0)], 1.0 - f[~upper & (y > 0)]]
    if above.size:
        return float(above.min())
    return float(below.max()) if below.size else 0.0


class _SoftMarginIPM:
    """Primal-dual interior point (Mehrotra) for ``min 1/2 |w|^2 + c . xi  s.t.  G t + xi >= 1, xi >= 0``,
    batched over problems that share the design ``g`` (n x d') and differ in ``c`` (P x n)."""

    def __init__(self, g: torch.Tensor, with_bias: bool, c: torch.Tensor, tol: float, max_iter: int):
        self.g, self.c, self.tol, self.max_iter = g, c, tol, max_iter
        self.reg = torch.ones(g.shape[1], dtype=g.dtype, device=g.device)
        if with_bias:
            self.reg[-1] = 0.0
        self.n_iter = 0

    def _factor(self, weight: torch.Tensor, previous: list | None, done: torch.Tensor) -> list:
        """Cholesky factors of ``R + G^T diag(weight_p) G`` per problem; the product by a symmetric
        rank-k update (BLAS ``syrk``: half the work of a general product) on the upper triangle.
        Converged problems (their step is zero) keep their previous factor."""
        g, reg = self.g.numpy(), self.reg.numpy()
        factors = []
        for p, w in enumerate(weight.numpy()):
            if previous is not None and bool(done[p]):
                factors.append(previous[p])
                continue
            m = blas.dsyrk(1.0, g * np.sqrt(w)[:, None], trans=1, lower=0)
            m[np.diag_indices_from(m)] += reg
            try:
                factors.append(linalg.cho_factor(m, lower=False, check_finite=False))
            except linalg.LinAlgError:
                m[np.diag_indices_from(m)] += 1e-12 * (1.0 + np.max(np.diag(m)))
                factors.append(linalg.cho_factor(m, lower=False, check_finite=False))
        return factors

    def _direction(self, chol, v, res, r1, r2):
        a, s, nu, xi = v
        r_d, r_c, r_p = res
        da_, dn_ = a / s, nu / xi
        e = da_ + dn_
        t = r1 / s + r2 / xi - r_c - da_ * r_p
        rhs = -r_d + (r1 / s - da_ * (t / e + r_p)) @ self.g
        d_theta = torch.as_tensor(np.stack([linalg.cho_solve(f, r, check_finite=False)
                                            for f, r in zip(chol, rhs.numpy())]))
        g_dt = d_theta @ self.g.T
        d_xi = (t - da_ * g_dt) / e
        d_s = g_dt + d_xi + r_p
        d_a = (r1 - a * d_s) / s
        d_nu = (r2 - nu * d_xi) / xi
        return d_theta, d_a, d_s, d_nu, d_xi

    @staticmethod
    def _max_step(pairs) -> torch.Tensor:
        out = None
        for values, deltas in pairs:
            ratio = torch.where(deltas < 0, -values / deltas.clamp(max=-1e-300), torch.full_like(values, np.inf))
            step = ratio.amin(dim=1)
            out = step if out is None else torch.minimum(out, step)
        return out.clamp(max=1.0)

    def solve(self):
        p, n = self.c.shape
        theta = torch.zeros(p, self.g.shape[1], dtype=self.g.dtype, device=self.g.device)
        a, nu = 0.5 * self.c.clone(), 0.5 * self.c.clone()
        s, xi = torch.ones_like(self.c), torch.ones_like(self.c)
        chol = None
        for self.n_iter in range(1, self.max_iter + 1):
            margin = theta @ self.g.T
            res = (self.reg * theta - a @ self.g, self.c - a - nu, margin + xi - 1.0 - s)
            gap = (a * s).sum(1) + (nu * xi).sum(1)
            objective = 0.5 * (self.reg * theta * theta).sum(1) + (self.c * xi).sum(1)
            scale = 1.0 + objective.abs()
            done = (gap < self.tol * scale) & (res[2].abs().amax(1) < 1e-9) & \
                (res[0].abs().amax(1) < 1e-9 * (1.0 + self.c.sum(1)))
            if bool(done.all()):
                break
            mu = (gap / (2 * n))[:, None]
            chol = self._factor(1.0 / (s / a + xi / nu), chol, done)
            v = (a, s, nu, xi)
            step_dirs = self._direction(chol, v, res, -a * s, -nu * xi)
            _, da, ds, dn, dx = step_dirs
            step = self._max_step([(a, da), (s, ds), (nu, dn), (xi, dx)])[:, None]
            mu_aff = (((a + step * da) * (s + step * ds)).sum(1) + ((nu + step * dn) * (xi + step * dx)).sum(1))
            sigma = ((mu_aff / (2 * n)) / mu[:, 0]).clamp(max=1.0)[:, None] ** 3
            dt, da2, ds2, dn2, dx2 = self._direction(chol, v, res, sigma * mu - a * s - da * ds,
                                                     sigma * mu - nu * xi - dn * dx)
            step = 0.995 * self._max_step([(a, da2), (s, ds2), (nu, dn2), (xi, dx2)])
            step = torch.where(done, torch.zeros_like(step), step)[:, None]
            theta, a, s, nu, xi = (theta + step * dt, a + step * da2, s + step * ds2, nu + step * dn2,
                                   xi + step * dx2)
        return theta, a, s, nu, xi


def _all_at_bound(x, y, c) -> tuple[np.ndarray, float] | None:
    """The closed-form optimum when every multiplier sits at its bound (small C), else ``None``."""
    if abs(float(y @ c)) > 1e-10 * float(c.sum()):
        return None
    w = x.T @ (y * c)
    f = x @ w
    hi = np.min(np.r_[1.0 - f[y > 0], np.inf])
    lo = np.max(np.r_[-1.0 - f[y < 0], -np.inf])
    if lo > hi:
        return None
    return w, (hi if np.isfinite(hi) else lo)


# ------------------------------------------------------------------ the exact hinge along the C path
class _FreeGram:
    """Inner products ``x_i . x_j + 1`` (the bias as a constant feature, so that up to d + 1 free examples keep
    the block positive definite) among the examples that have been free so far, each pair computed once:
    libsvm's kernel cache, restricted to the examples near the margin."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.slot = np.full(len(x), -1)
        self.size = 0
        self.rows = np.zeros((0, x.shape[1]))  # the cached examples, in slot order
        self.gram = np.zeros((0, 0))

    def _reserve(self, size: int) -> None:
        """Grow the buffers by doubling, so that the copies stay linear in the final size."""
        if size <= len(self.gram):
            return
        capacity, old = min(2 * size, len(self.x)), self.size
        rows, gram = np.empty((capacity, self.x.shape[1])), np.empty((capacity, capacity))
        rows[:old], gram[:old, :old] = self.rows[:old], self.gram[:old, :old]
        self.rows, self.gram = rows, gram

    def block(self, idx: np.ndarray) -> np.ndarray:
        new = idx[self.slot[idx] < 0]
        if new.size:
            old, size = self.size, self.size + len(new)
            self._reserve(size)
            self.slot[new] = np.arange(old, size)
            self.rows[old:size] = self.x[new]
            cross = self.rows[old:size] @ self.rows[:size].T + 1.0
            self.gram[old:size, :size] = cross
            self.gram[:old, old:size] = cross[:, :old].T
            self.size = size
        slots = self.slot[idx]
        return self.gram[np.ix_(slots, slots)]


def _on_the_margin(x, y, c, free, upper, cache: _FreeGram):
    """``(w, b, a)`` with the free examples exactly on the margin and the upper ones at their bound
    (``w = sum_i a_i y_i x_i``, ``sum_i a_i y_i = 0``); ``None`` when the free examples' Gram block is singular.

    With ``beta_i = y_i a_i`` and ``q = sum_upper y_i c_i``, the free rows read ``K beta + b 1 = y - X v`` and
    the equality ``1 . beta = -q``; in the bias-augmented Gram ``K + 1 1^T`` the bias becomes ``b + q``."""
    idx = np.flatnonzero(free)
    if not idx.size:
        return None
    v = x.T @ np.where(upper, y * c, 0.0)
    q = y[upper] @ c[upper]
    try:
        chol = linalg.cho_factor(cache.block(idx), check_finite=False)
    except linalg.LinAlgError:
        return None
    rhs = np.stack([y[idx] - x[idx] @ v, np.ones(len(idx))], axis=1)
    u, e = linalg.cho_solve(chol, rhs, check_finite=False).T
    shifted = (u.sum() + q) / e.sum()
    beta = u - shifted * e
    a = np.where(upper, c, 0.0)
    a[idx] = y[idx] * beta
    return v + x[idx].T @ beta, shifted - q, a


def _optimal(fraction, margin, free, upper, tol: float = 1e-9) -> bool:
    """The KKT conditions: multipliers within their bounds, free examples on the margin, examples at zero
    outside it, examples at their bound inside it (``tol`` on the multipliers' fraction of their bound,
    ``10 tol`` on the margins)."""
    lower = ~(free | upper)
    return bool(fraction.min() >= -tol and fraction.max() <= 1.0 + tol
                and np.all(np.abs(margin[free] - 1.0) <= 10 * tol)
                and np.all(margin[lower] >= 1.0 - 10 * tol) and np.all(margin[upper] <= 1.0 + 10 * tol))


def _active_set(x, y, c, free, upper, cache: _FreeGram, max_iter: int):
    """Primal-dual active set (block principal pivoting) from the guess ``(free, upper)``: solve with the free
    examples on the margin and the upper ones at their bound, move every example that breaks the optimality
    conditions, repeat. Returns the optimum ``(w, b, a)``, or ``None`` when the sets cycle, a Gram block is
    singular or ``max_iter`` runs out (the caller then takes a shorter step along the C path)."""
    seen = set()
    for _ in range(max_iter):
        key = free.tobytes() + upper.tobytes()
        if key in seen:
            return None
        seen.add(key)
        solved = _on_the_margin(x, y, c, free, upper, cache)
        if solved is None:
            return None
        w, b, a = solved
        margin, fraction = y * (x @ w + b), a / c
        if _optimal(fraction, margin, free, upper):
            return w, b, np.clip(a, 0.0, c)
        free, upper = _admit(free, upper, *_by_score(fraction, margin), margin, x.shape[1] + 1)
    return None


def _by_score(fraction, margin) -> tuple[np.ndarray, np.ndarray]:
    """(free, upper) as the optimality conditions say for these multipliers (fractions of their bounds) and
    margins: the score ``fraction - (margin - 1)`` is in (0, 1) for free examples, >= 1 at the bound."""
    score = fraction - (margin - 1.0)
    return (score > 0.0) & (score < 1.0), score >= 1.0


def _admit(free, upper, new_free, new_upper, margin, most: int):
    """The next sets, with at most ``most`` free examples (more than d + 1 make the Gram block singular):
    of the examples that would enter the free set, the worst violators of their margin condition enter,
    the others keep their bound."""
    entering = np.flatnonzero(new_free & ~free)
    room = most - int((new_free & free).sum())
    if len(entering) <= room:
        return new_free, new_upper
    wait = entering[np.argsort(-np.abs(margin[entering] - 1.0), kind="stable")[max(room, 0):]]
    new_free[wait], new_upper[wait] = False, upper[wait]
    return new_free, new_upper


def _crossings(c0, c1, a0, a1, m0, m1, free, upper, bound) -> np.ndarray:
    """The C at which each example first breaks the condition of its set on the straight line through the
    solutions at ``c0`` and ``c1`` that keep the sets (while the sets hold, multipliers and margins are
    affine in C); ``inf`` where it does not. ``bound``: the multipliers' bounds at C = 1."""
    span = c1 - c0
    dm, da = (m1 - m0) / span, (a1 - a0) / span
    lower = ~(free | upper)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_margin = c0 + (1.0 - m0) / dm
        to_zero = c0 - a0 / da
        to_bound = (c0 * da - a0) / (da - bound)
    out = np.full(len(m0), np.inf)
    out = np.where((lower & (dm < 0)) | (upper & (dm > 0)), to_margin, out)
    out = np.where(free & (da < 0), to_zero, out)
    out = np.where(free & (da > bound), np.minimum(out, to_bound), out)
    return np.maximum(out, c0)


class _HingePath:
    """Exact hinge-SVM solutions for increasing C on one data set, following the regularization path from the
    largest C at which every multiplier sits at its bound (two examples then leave it). Each step solves the
    next C with the current sets, finds where examples would change sets on the line between (the solution is
    affine in C while the sets hold), moves to the C by which ``batch`` of them have, and corrects there by the
    active set; the batch grows after a success and shrinks after a failure. ``solve`` returns ``None`` when
    this does not reach C (the caller falls back to the interior point)."""

    MAX_PIVOTS = 15
    MAX_STEPS = 100

    def __init__(self, x, y, weight):
        self.x, self.y, self.weight = x, y, weight
        self.cache = _FreeGram(x)
        self.state = self._start()
        self.batch = max(4, len(y) // 100)

    def _start(self):
        f = self.x @ (self.x.T @ (self.y * self.weight))
        pos, neg = np.flatnonzero(self.y > 0), np.flatnonzero(self.y < 0)
        i, j = pos[np.argmax(f[pos])], neg[np.argmin(f[neg])]
        free = np.zeros(len(self.y), dtype=bool)
        free[[i, j]] = True
        c_start = 2.0 / max(float(f[i] - f[j]), TINY)
        margin = self.y * (c_start * f + 1.0 - c_start * f[i])
        return c_start, c_start * self.weight, margin, free, ~free

    def _next_c(self, c0, target, trial, a0, m0, free, upper):
        """Where ``batch`` examples have changed sets on the way to ``target``, and the interpolated guess there."""
        w1, b1, a1 = trial
        m1 = self.y * (self.x @ w1 + b1)
        crossing = np.sort(_crossings(c0, target, a0, a1, m0, m1, free, upper, self.weight))
        crossing = crossing[crossing < target]
        c_next = target
        if len(crossing) > self.batch:
            c_next = 0.5 * (crossing[self.batch - 1] + crossing[self.batch])
        tau = (c_next - c0) / (target - c0) if target > c0 else 1.0
        return c_next, a0 + tau * (a1 - a0), m0 + tau * (m1 - m0)

    def solve(self, target: float):
        c0, a0, m0, free, upper = self.state
        x, y, bound = self.x, self.y, self.weight
        for _ in range(self.MAX_STEPS):
            trial = _on_the_margin(x, y, target * bound, free, upper, self.cache)
            if trial is None:
                return None
            c_next, a, m = self._next_c(c0, target, trial, a0, m0, free, upper)
            solution = _active_set(x, y, c_next * bound, *_by_score(a / (c_next * bound), m), self.cache,
                                   self.MAX_PIVOTS)
            if solution is None:
                if self.batch == 1 or c_next <= c0:
                    return None
                self.batch = max(1, self.batch // 4)
                continue
            w, b, a0 = solution
            c = c_next * bound
            upper = a0 >= c
            free = (a0 > 0.0) & ~upper
            c0, m0, self.batch = c_next, y * (x @ w + b), self.batch + self.batch // 2 + 1
            if c0 >= target:
                self.state = (c0, a0, m0, free, upper)
                return w, libsvm_intercept(x @ w, y, a0, c, free)
        return None


def _path_pays(x, y, weight) -> bool:
    """Whether the active-set path is expected to beat the interior point (measured in
    benchmarks/RESULTS.md): both labels, balanced weights (the path starts where every multiplier sits at its
    bound), and at most ``PATH_MAX_RATIO`` examples per dimension -- beyond, the sets change so often along
    the path that the interior point's ``n d^2`` per step is cheaper -- and at most ``PATH_MAX_EXAMPLES``
    (its Gram cache grows to n x n)."""
    n, d = x.shape
    balanced = abs(float(y @ weight)) <= 1e-10 * float(weight.sum())
    return bool(np.any(y > 0) and np.any(y < 0) and balanced and n <= min(PATH_MAX_RATIO * (d + 1), PATH_MAX_EXAMPLES))


def solve_hinge(x, y, sample_weight, c, *, max_iter: int = 100, tol: float = 1e-10,
                n_threads: int | None = None) -> SvmSolution:
    """Solve the weighted hinge-loss SVM (scikit-learn's ``SVC(kernel="linear")``) for every value in ``c``.

    ``F(w, b) = 1/2 ||w||^2 + sum_i C s_i max(0, 1 - y_i (x_i . w + b))`` with an unregularized bias, exactly
    (float64), with the bias set by libsvm's rule (:func:`libsvm_intercept`), so the flags are those ``SVC``
    gives at the same ``C``. Values of ``C`` small enough that every multiplier sits at its bound are solved in
    closed form; the others, in increasing order, by an active set warm-started along the C path
    (:class:`_HingePath`, where :func:`_path_pays`: both labels, weights that balance them as
    ``class_weight="balanced"`` does, at most ``PATH_MAX_RATIO`` examples per dimension); the others, and
    whatever the path does not reach, by a batched primal-dual interior-point method solved to ``tol``
    (``max_iter`` steps at most), in the span of the examples when they are fewer than the dimensions.
    ``n_threads``: BLAS threads (default: torch's setting, which ``FailureDirections(n_threads=...)`` sets);
    the path's many small products stall badly with two threads on a busy machine.
    """
    with threadpool_limits(limits=int(n_threads or torch.get_num_threads()), user_api="blas"):
        return _solve_hinge(x, y, sample_weight, c, max_iter, tol)


def _solve_hinge(x, y, sample_weight, c, max_iter: int, tol: float) -> SvmSolution:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    weight = np.asarray(sample_weight, dtype=np.float64)
    cs = np.atleast_1d(np.asarray(c, dtype=float))
    if not np.all(cs > 0):
        raise SpurlabError("every C must be positive", hint="use e.g. numpy.logspace(-6, 0, 7)")
    w_out, b_out = np.zeros((len(cs), x.shape[1])), np.zeros(len(cs))
    path = _HingePath(x, y, weight) if _path_pays(x, y, weight) else None
    rest = []
    for j in np.argsort(cs, kind="stable"):
        found = _all_at_bound(x, y, cs[j] * weight)
        if found is None and path is not None:
            found = path.solve(float(cs[j]))
            path = path if found is not None else None  # a path that failed once is not retried
        if found is None:
            rest.append(j)
        else:
            w_out[j], b_out[j] = found
    n_iter = 0
    if rest:
        w_rest, b_rest, n_iter = _hinge_interior_point(x, y, cs[rest][:, None] * weight[None], max_iter, tol)
        w_out[rest], b_out[rest] = w_rest, b_rest
    return SvmSolution(w=w_out, b=b_out, n_iter=n_iter, converged=np.ones(len(cs), dtype=bool))


def _hinge_interior_point(x, y, c, max_iter: int, tol: float):
    basis = None
    xt = torch.as_tensor(x)
    if x.shape[0] < x.shape[1]:
        basis = torch.linalg.qr(xt.T).Q  # w lies in the span of the examples
        xt = xt @ basis
    yt = torch.as_tensor(y)
    g = torch.cat([yt[:, None] * xt, yt[:, None]], dim=1)
    ipm = _SoftMarginIPM(g, True, torch.as_tensor(c), tol, max_iter)
    with torch.no_grad():
        theta, a, s, nu, xi = ipm.solve()
    w = theta[:, :-1] if basis is None else theta[:, :-1] @ basis.T
    w, a, s, nu, xi = (t.numpy() for t in (w, a, s, nu, xi))
    b = np.array([libsvm_intercept(x @ w[p], y, a[p], c[p], (s[p] < a[p]) & (xi[p] < nu[p]))
                  for p in range(len(c))])
    return w, b, ipm.n_iter
