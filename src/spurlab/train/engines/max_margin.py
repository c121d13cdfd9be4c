"""Exact hard-margin SVM (the limit direction of gradient descent on separable data).

The problem ``min 1/2 ||w||^2  s.t.  y_i (w . x_i + b) >= 1`` is solved by a primal-dual
interior-point method (Mehrotra predictor-corrector) on many problems at once (a batch of
``P`` problems with the same ``n`` and ``d``, as torch tensors), then *polished*: the KKT
equations restricted to the support vectors found are solved exactly and that solution is
kept when it satisfies every constraint.

Each interior-point step solves one symmetric positive definite system, the normal equations
``R + G^T D G`` (``G``: the signed rows ``y_i [x_i, 1]``, ``D``: the ratio of multipliers to slacks),
in whichever of two exact formulations is cheaper for the shape:

* ``"primal"``: in the ``d (+1)`` coordinates of ``w`` -- ``n d^2`` per step, for ``d < n``;
* ``"dual"``: in the span of the ``n`` examples (``w = sum_i a_i y_i x_i``, so one QR factorization
  of the examples reduces ``d`` to ``n`` coordinates) -- ``n^3`` per step, for ``n < d``.

``formulation="auto"`` takes the dual form when ``n < d``. ``w = sum_i a_i y_i x_i`` and the margins
``y_i (w . x_i + b)`` equal 1 on the support vectors.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg

from spurlab.errors import SpurlabError
from spurlab.params import Boolean, Interval, Options, check_params, positive_int
from spurlab.utils import check_finite, resolve_device

FORMULATIONS = ("auto", "primal", "dual")
# What fit_max_margin accepts (spurlab.params), checked by name before any work.
FIT_CONSTRAINTS = {"fit_intercept": Boolean(), "formulation": Options(*FORMULATIONS),
                   "tol": Interval(float, 0, 1, closed="neither"), "max_iter": positive_int()}
STEP_TO_BOUNDARY = 0.995
FEASIBLE = 1e-8  # residual of the equality conditions accepted before polishing
DIVERGED_DUAL = 1e14  # dual variables this large mean the data are not separable


def binary_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map any two-valued labels to (+-1 floats, the two original values sorted)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise SpurlabError(f"y must be 1-d, got shape {y.shape}")
    classes = np.unique(y)
    if len(classes) != 2:
        raise SpurlabError(f"a linear classifier needs exactly two label values, got {len(classes)}: "
                           f"{classes[:5].tolist()}", hint="binarize the labels first (e.g. 0/1 or -1/+1)")
    return np.where(y == classes[1], 1.0, -1.0), classes


def check_design(x: np.ndarray, n: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise SpurlabError(f"X must be 2-d (n_samples, n_features), got shape {x.shape}")
    if n is not None and len(x) != n:
        raise SpurlabError(f"X has {len(x)} rows but y has {n} labels")
    check_finite("X", x)
    return x


def not_separable_error(detail: str = "") -> SpurlabError:
    extra = f" ({detail})" if detail else ""
    return SpurlabError(f"the data are not linearly separable, so no hard-margin classifier exists{extra}",
                        hint="check for identical inputs with different labels, add features, or "
                             "allow a bias (fit_intercept=True)")


def choose_formulation(n: int, d: int) -> str:
    """``"dual"`` (coordinates in the span of the examples) when there are fewer examples than dimensions."""
    return "dual" if n < d else "primal"


# ------------------------------------------------------------------ batched interior point
class _BatchIPM:
    """Primal-dual interior point for ``min 1/2 t^T R t  s.t.  G t >= 1`` on a batch of problems.

    ``z`` (P, n, d): signed rows ``y_i x_i`` (already in the coordinates the formulation uses);
    ``signs`` (P, n). Iterates: ``theta`` (P, d'), multipliers ``a`` and slacks ``s`` (P, n).
    """

    def __init__(self, z: torch.Tensor, signs: torch.Tensor, with_bias: bool, tol: float, max_iter: int):
        self.g = torch.cat([z, signs[..., None]], dim=-1) if with_bias else z
        self.reg = torch.ones(self.g.shape[-1], dtype=z.dtype, device=z.device)
        if with_bias:
            self.reg[-1] = 0.0
        self.tol, self.max_iter = tol, max_iter
        self.n_iter = 0

    def _factor(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        m = (self.g * (a / s)[..., None]).transpose(1, 2) @ self.g
        m.diagonal(dim1=1, dim2=2).add_(self.reg)
        chol, info = torch.linalg.cholesky_ex(m)
        if bool((info != 0).any()):
            scale = m.diagonal(dim1=1, dim2=2).amax(dim=1)
            eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
            chol, _ = torch.linalg.cholesky_ex(m + 1e-12 * (1.0 + scale)[:, None, None] * eye)
        return chol

    def _direction(self, chol, a, s, r_d, r_p, r_c):
        rhs = -r_d + (self.g.transpose(1, 2) @ (r_c / s - (a / s) * r_p)[..., None])[..., 0]
        d_theta = torch.cholesky_solve(rhs[..., None], chol)[..., 0]
        d_s = r_p + (self.g @ d_theta[..., None])[..., 0]
        d_a = (r_c - a * d_s) / s
        return d_theta, d_a, d_s

    @staticmethod
    def _max_step(values: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(deltas < 0, -values / deltas.clamp(max=-1e-300), torch.full_like(values, np.inf))
        return ratio.amin(dim=1).clamp(max=1.0)

    def solve(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p, n = self.g.shape[:2]
        theta = torch.zeros(p, self.g.shape[-1], dtype=self.g.dtype, device=self.g.device)
        a, s = torch.ones(p, n, dtype=theta.dtype, device=theta.device), torch.ones(p, n, dtype=theta.dtype,
                                                                                   device=theta.device)
        for self.n_iter in range(1, self.max_iter + 1):
            r_d = self.reg * theta - (self.g.transpose(1, 2) @ a[..., None])[..., 0]
            r_p = (self.g @ theta[..., None])[..., 0] - 1.0 - s
            mu = (a * s).mean(1)
            scale = 1.0 + a.abs().amax(1)
            # complementarity to tol; feasibility to FEASIBLE (the polish then makes the answer exact)
            done = (mu < self.tol * scale) & (r_d.abs().amax(1) < FEASIBLE * scale) & (r_p.abs().amax(1) < FEASIBLE)
            if bool(done.all()):
                break
            if float(a.max()) > DIVERGED_DUAL:
                bad = torch.nonzero(a.amax(1) > DIVERGED_DUAL).flatten().tolist()
                raise not_separable_error(f"problem(s) {bad[:5]} of the batch")
            chol = self._factor(a, s)
            # predictor (affine scaling), then Mehrotra's centring + second-order corrector
            dt, da, ds = self._direction(chol, a, s, r_d, r_p, -a * s)
            step = torch.minimum(self._max_step(a, da), self._max_step(s, ds))[:, None]
            mu_aff = ((a + step * da) * (s + step * ds)).mean(1)
            sigma = ((mu_aff / mu) ** 3)[:, None]
            dt, da, ds = self._direction(chol, a, s, r_d, r_p, sigma * mu[:, None] - a * s - da * ds)
            step = STEP_TO_BOUNDARY * torch.minimum(self._max_step(a, da), self._max_step(s, ds))
            step = torch.where(done, torch.zeros_like(step), step)[:, None]
            theta, a, s = theta + step * dt, a + step * da, s + step * ds
        else:
            raise not_separable_error(f"the solver did not converge in {self.max_iter} iterations")
        return theta, a, s


def polish(z: np.ndarray, signs: np.ndarray, a: np.ndarray, s: np.ndarray,
           with_bias: bool) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(w, dual coefficients, b) from the KKT equations on the support set, solved exactly;
    ``None`` when that breaks a constraint.

    Strict complementarity tells the support vectors apart: at the optimum either the dual
    variable or the margin slack is zero, so ``a_i > s_i`` marks the points on the margin.
    With fewer support vectors than unknowns the dual KKT system (support x support) gives
    the multipliers; with as many or more (degenerate data: many points exactly on the margin)
    the margin equations ``y_i (w . x_i + b) = 1`` alone fix ``(w, b)`` and the interior-point
    multipliers are kept."""
    support = np.flatnonzero(a > s)
    k = len(support)
    if k == 0:
        return None
    z_s, y_s = z[support], signs[support]
    if k >= z.shape[1] + int(with_bias):
        g_s = np.column_stack([z_s, y_s]) if with_bias else z_s
        theta = linalg.lstsq(g_s, np.ones(k), lapack_driver="gelsy")[0]
        if np.abs(g_s @ theta - 1.0).max() > 1e-9:
            return None
        w, b, dual = theta[: z.shape[1]], (float(theta[-1]) if with_bias else 0.0), a.copy()
    else:
        q_ss = z_s @ z_s.T
        if with_bias:
            system = np.zeros((k + 1, k + 1))
            system[:k, :k] = q_ss
            system[:k, k] = y_s
            system[k, :k] = y_s
            sol = _solve_symmetric(system, np.r_[np.ones(k), 0.0])
            a_s, b = sol[:k], float(sol[k])
        else:
            a_s, b = _solve_symmetric(q_ss, np.ones(k)), 0.0
        if np.min(a_s) < -1e-9 * max(np.max(np.abs(a_s)), 1.0):
            return None
        dual = np.zeros_like(a)
        dual[support] = np.maximum(a_s, 0.0)
        w = z_s.T @ dual[support]
    if np.min(z @ w + signs * b) < 1.0 - 1e-9:
        return None
    return w, dual, b


def _solve_symmetric(system: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Exact solve (LDL^T) when the system is well conditioned, else the least-squares solution."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", linalg.LinAlgWarning)
            return linalg.solve(system, rhs, assume_a="sym")
    except (linalg.LinAlgError, linalg.LinAlgWarning):
        return linalg.lstsq(system, rhs, lapack_driver="gelsy")[0]


@dataclass
class MaxMarginSolution:
    """Per problem: ``coef`` (P, d), ``intercept`` (P,), ``dual_coef`` (P, n), ``polished`` (P,)."""

    coef: np.ndarray
    intercept: np.ndarray
    dual_coef: np.ndarray
    polished: np.ndarray
    n_iter: int
    formulation: str

    @property
    def norm(self) -> np.ndarray:
        return np.linalg.norm(self.coef, axis=1)

    @property
    def margin(self) -> np.ndarray:
        """Geometric margin ``1 / ||w||`` of each problem."""
        return 1.0 / self.norm


def _batch_inputs(X, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(X, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise SpurlabError(f"X must be (n, d) or (problems, n, d), got shape {x.shape}")
    check_finite("X", x)
    signs = np.asarray(y, dtype=np.float64)
    signs = np.broadcast_to(signs if signs.ndim == 2 else signs[None], x.shape[:2]) if signs.ndim in (1, 2) \
        else signs
    if signs.shape != x.shape[:2]:
        raise SpurlabError(f"y has shape {np.shape(y)}; expected one label per row of X {x.shape[:2]}")
    if not np.all(np.abs(signs) == 1.0):
        raise SpurlabError("y must hold signs -1/+1 for the batched solver",
                           hint="use MaxMarginClassifier for other label values, or map them to -1/+1")
    if np.any(np.all(signs > 0, axis=1) | np.all(signs < 0, axis=1)):
        raise SpurlabError("every problem needs both labels (-1 and +1)")
    return x, np.array(signs)


def _interior_point(z: np.ndarray, signs: np.ndarray, fit_intercept: bool, formulation: str, tol: float,
                    max_iter: int, device: str):
    """(theta in the original coordinates, multipliers, slacks, iterations)."""
    with torch.no_grad():
        z_t, signs_t = torch.as_tensor(z, device=device), torch.as_tensor(signs, device=device)
        basis = None
        if formulation == "dual":
            basis = torch.linalg.qr(z_t.transpose(1, 2)).Q  # (P, d, n): w lies in the span of the examples
            z_t = z_t @ basis
        ipm = _BatchIPM(z_t, signs_t, fit_intercept, tol, max_iter)
        theta, a, s = ipm.solve()
        if basis is not None:
            w = (basis @ theta[:, : basis.shape[-1], None])[..., 0]
            theta = torch.cat([w, theta[:, basis.shape[-1]:]], dim=1)
    return theta.cpu().numpy(), a.cpu().numpy(), s.cpu().numpy(), ipm.n_iter


def fit_max_margin(X, y, fit_intercept: bool = False, formulation: str = "auto", tol: float = 1e-10,
                   max_iter: int = 200, device: str = "cpu") -> MaxMarginSolution:
    """Hard-margin SVMs of one problem (``X`` (n, d), ``y`` (n,) signs) or a batch (``X`` (P, n, d), ``y`` (P, n)).

    ``formulation``: ``"auto"`` (by shape), ``"primal"`` or ``"dual"``; every choice gives the same answer.
    """
    fit_intercept, formulation, tol, max_iter = check_params(
        "fit_max_margin", FIT_CONSTRAINTS,
        {"fit_intercept": fit_intercept, "formulation": formulation, "tol": tol, "max_iter": max_iter}).values()
    x, signs = _batch_inputs(X, y)
    _, n, d = x.shape
    chosen = choose_formulation(n, d) if formulation == "auto" else formulation
    z = signs[..., None] * x
    theta, a, s, n_iter = _interior_point(z, signs, fit_intercept, chosen, tol, int(max_iter),
                                          resolve_device(device))
    coef, intercept = theta[:, :d].copy(), (theta[:, d].copy() if fit_intercept else np.zeros(len(x)))
    polished = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):
        exact = polish(z[i], signs[i], a[i], s[i], fit_intercept)
        if exact is not None:
            coef[i], a[i], intercept[i] = exact
            polished[i] = True
    margins = np.einsum("pnd,pd->pn", z, coef) + signs * intercept[:, None]
    if np.min(margins) < 1.0 - 1e-6:
        raise not_separable_error("the constraints are violated at the solver's answer")
    return MaxMarginSolution(coef=coef, intercept=intercept, dual_coef=a, polished=polished, n_iter=n_iter,
                             formulation=chosen)


class MaxMarginClassifier:
    """Exact hard-margin linear SVM: ``min ||w||  s.t.  y_i (w . x_i + b) >= 1``.

    Parameters
    ----------
    fit_intercept : bool
        Learn a bias ``b`` (not penalized). ``False`` gives the homogeneous
        classifier of the ood-failure-modes theory.
    formulation : "auto", "primal" or "dual"
        Which linear system the interior-point steps solve (same answer; ``auto`` by shape).
    tol : float
        Relative tolerance of the interior-point iterations (before polishing).
    max_iter : int
        Interior-point iterations before giving up (non-separable data).

    Attributes (after ``fit``): ``coef_`` (d,), ``intercept_``, ``dual_coef_``
    (n,), ``support_`` (indices of support vectors), ``norm_`` (||w||),
    ``margin_`` (geometric margin 1/||w||), ``classes_``, ``n_iter_``,
    ``polished_`` (whether the exact KKT solution was accepted), ``formulation_``.
    For many problems at once use :func:`fit_max_margin`.
    """

    def __init__(self, fit_intercept: bool = False, tol: float = 1e-10, max_iter: int = 200,
                 formulation: str = "auto"):
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.formulation = formulation

    def fit(self, X, y) -> MaxMarginClassifier:
        signs, self.classes_ = binary_labels(y)
        x = check_design(X, len(signs))
        sol = fit_max_margin(x, signs, self.fit_intercept, self.formulation, self.tol, self.max_iter)
        self.polished_ = bool(sol.polished[0])
        self.dual_coef_ = sol.dual_coef[0]
        self.coef_ = sol.coef[0]
        self.intercept_ = float(sol.intercept[0]) if self.fit_intercept else 0.0
        margins = signs * (x @ self.coef_ + self.intercept_)
        self.support_ = np.flatnonzero(self.dual_coef_ > 0) if self.polished_ else \
            np.flatnonzero(margins < 1.0 + 1e-6)
        self.n_iter_ = sol.n_iter
        self.formulation_ = sol.formulation
        self.norm_ = float(np.linalg.norm(self.coef_))
        self.margin_ = 1.0 / self.norm_ if self.norm_ > 0 else np.inf
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise SpurlabError("this MaxMarginClassifier is not fitted yet", hint="call fit(X, y) first")

    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        x = check_design(X)
        if x.shape[1] != len(self.coef_):
            raise SpurlabError(f"X has {x.shape[1]} features, the classifier was fitted on {len(self.coef_)}")
        return x @ self.coef_ + self.intercept_

    def predict(self, X) -> np.ndarray:
        return np.where(self.decision_function(X) > 0, self.classes_[1], self.classes_[0])

    def score(self, X, y) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))


def max_margin_norm(X, y, fit_intercept: bool = False) -> float:
    """||w|| of the hard-margin classifier of ``(X, y)`` (1 / its geometric margin)."""
    return MaxMarginClassifier(fit_intercept=fit_intercept).fit(X, y).norm_
