"""Exact hard-margin SVM (the limit direction of gradient descent on separable data).

The solver works on the dual QP

    min_a  1/2 a^T Q a - 1^T a   s.t.  a >= 0   (and  y^T a = 0  with a bias),
    Q = (y y^T) * (X X^T),

with a primal-dual interior-point method (Mehrotra predictor-corrector, one
Cholesky factorization per iteration), then *polishes* the answer: it solves the
KKT equations restricted to the support vectors it found and keeps that exact
solution when it satisfies every constraint. ``w = sum_i a_i y_i x_i`` and the
margins ``y_i (w . x_i + b)`` equal 1 on the support vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from spurlab.errors import SpurlabError
from spurlab.utils import check_finite

STEP_TO_BOUNDARY = 0.995
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


@dataclass
class _Iterate:
    a: np.ndarray  # dual variables (alpha)
    s: np.ndarray  # margin slacks y_i (w.x_i + b) - 1
    nu: float      # multiplier of y^T a = 0 (minus the bias)


class _DualIPM:
    """Interior-point solver for the hard-margin dual; ``solve()`` returns (a, b)."""

    def __init__(self, q: np.ndarray, y: np.ndarray, with_bias: bool, tol: float, max_iter: int):
        self.q, self.y, self.with_bias = q, y, with_bias
        self.tol, self.max_iter = tol, max_iter
        self.n_iter = 0

    def residuals(self, it: _Iterate) -> tuple[np.ndarray, float]:
        r_dual = self.q @ it.a - 1.0 - it.s - it.nu * self.y
        r_eq = float(self.y @ it.a) if self.with_bias else 0.0
        return r_dual, r_eq

    def direction(self, chol, it: _Iterate, r_dual: np.ndarray, r_eq: float, r_comp: np.ndarray):
        rhs = -r_dual + r_comp / it.a
        d_a = linalg.cho_solve(chol, rhs)
        d_nu = 0.0
        if self.with_bias:
            v = linalg.cho_solve(chol, self.y)
            d_nu = (-r_eq - self.y @ d_a) / (self.y @ v)
            d_a = d_a + d_nu * v
        d_s = (r_comp - it.s * d_a) / it.a
        return d_a, d_s, d_nu

    @staticmethod
    def max_step(values: np.ndarray, deltas: np.ndarray) -> float:
        neg = deltas < 0
        return float(min(1.0, np.min(-values[neg] / deltas[neg]))) if neg.any() else 1.0

    def solve(self) -> _Iterate:
        n = len(self.y)
        it = _Iterate(np.ones(n), np.ones(n), 0.0)
        for self.n_iter in range(1, self.max_iter + 1):
            r_dual, r_eq = self.residuals(it)
            mu = float(it.a @ it.s) / n
            scale = 1.0 + float(np.max(np.abs(it.a)))
            if mu < self.tol * scale and np.max(np.abs(r_dual)) < self.tol * scale and abs(r_eq) < self.tol * scale:
                break
            if np.max(it.a) > DIVERGED_DUAL:
                raise not_separable_error()
            chol = self.factorize(it)
            # predictor (affine scaling), then Mehrotra's centring + second-order corrector
            da, ds, _ = self.direction(chol, it, r_dual, r_eq, -it.a * it.s)
            step = min(self.max_step(it.a, da), self.max_step(it.s, ds))
            mu_aff = float((it.a + step * da) @ (it.s + step * ds)) / n
            sigma = (mu_aff / mu) ** 3
            da, ds, dnu = self.direction(chol, it, r_dual, r_eq, sigma * mu - it.a * it.s - da * ds)
            step = STEP_TO_BOUNDARY * min(self.max_step(it.a, da), self.max_step(it.s, ds))
            it = _Iterate(it.a + step * da, it.s + step * ds, it.nu + step * dnu)
        else:
            raise not_separable_error(f"the solver did not converge in {self.max_iter} iterations")
        return it

    def factorize(self, it: _Iterate):
        m = self.q.copy()
        m[np.diag_indices_from(m)] += it.s / it.a
        try:
            return linalg.cho_factor(m, lower=True, check_finite=False)
        except linalg.LinAlgError:
            m[np.diag_indices_from(m)] += 1e-12 * (1.0 + np.max(np.diag(m)))
            return linalg.cho_factor(m, lower=True, check_finite=False)


def not_separable_error(detail: str = "") -> SpurlabError:
    extra = f" ({detail})" if detail else ""
    return SpurlabError(f"the data are not linearly separable, so no hard-margin classifier exists{extra}",
                        hint="check for identical inputs with different labels, add features, or "
                             "allow a bias (fit_intercept=True)")


def polish(q: np.ndarray, y: np.ndarray, it: _Iterate, with_bias: bool) -> tuple[np.ndarray, float] | None:
    """Solve the KKT equations on the support set exactly; ``None`` when that breaks a constraint.

    Strict complementarity tells the support vectors apart: at the optimum
    either the dual variable or the margin slack is zero, so ``a_i > s_i``
    marks the points on the margin."""
    a = it.a
    support = np.flatnonzero(it.a > it.s)
    if len(support) == 0:
        return None
    q_ss = q[np.ix_(support, support)]
    if with_bias:
        k = len(support)
        system = np.zeros((k + 1, k + 1))
        system[:k, :k] = q_ss
        system[:k, k] = y[support]
        system[k, :k] = y[support]
        sol = linalg.lstsq(system, np.r_[np.ones(k), 0.0])[0]
        a_s, b = sol[:k], float(sol[k])
    else:
        a_s, b = linalg.lstsq(q_ss, np.ones(len(support)))[0], 0.0
    if np.min(a_s) < -1e-9 * max(np.max(np.abs(a_s)), 1.0):
        return None
    polished = np.zeros_like(a)
    polished[support] = np.maximum(a_s, 0.0)
    margins = q @ polished + y * b
    if np.min(margins) < 1.0 - 1e-8:
        return None
    return polished, b


class MaxMarginClassifier:
    """Exact hard-margin linear SVM: ``min ||w||  s.t.  y_i (w . x_i + b) >= 1``.

    Parameters
    ----------
    fit_intercept : bool
        Learn a bias ``b`` (not penalized). ``False`` gives the homogeneous
        classifier of the ood-failure-modes theory.
    tol : float
        Relative tolerance of the interior-point iterations (before polishing).
    max_iter : int
        Interior-point iterations before giving up (non-separable data).

    Attributes (after ``fit``): ``coef_`` (d,), ``intercept_``, ``dual_coef_``
    (n,), ``support_`` (indices of support vectors), ``norm_`` (||w||),
    ``margin_`` (geometric margin 1/||w||), ``classes_``, ``n_iter_``,
    ``polished_`` (whether the exact KKT solution was accepted).
    """

    def __init__(self, fit_intercept: bool = False, tol: float = 1e-10, max_iter: int = 200):
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X, y) -> MaxMarginClassifier:
        if not (0 < self.tol < 1):
            raise SpurlabError(f"tol must lie in (0, 1), got {self.tol}")
        signs, self.classes_ = binary_labels(y)
        x = check_design(X, len(signs))
        z = signs[:, None] * x
        q = z @ z.T
        solver = _DualIPM(q, signs, self.fit_intercept, self.tol, int(self.max_iter))
        iterate = solver.solve()
        a, b = iterate.a, -iterate.nu
        polished = polish(q, signs, iterate, self.fit_intercept)
        self.polished_ = polished is not None
        if polished is not None:
            a, b = polished
        self.dual_coef_ = a
        self.coef_ = z.T @ a
        self.intercept_ = float(b) if self.fit_intercept else 0.0
        self.support_ = np.flatnonzero(a > 0) if self.polished_ else np.flatnonzero(iterate.a > iterate.s)
        self.n_iter_ = solver.n_iter
        self.norm_ = float(np.linalg.norm(self.coef_))
        self.margin_ = 1.0 / self.norm_ if self.norm_ > 0 else np.inf
        if np.min(signs * self.decision_function(x)) < 1.0 - 1e-6:
            raise not_separable_error("the constraints are violated at the solver's answer")
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
