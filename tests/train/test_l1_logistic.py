"""The batched L1 logistic regressions DFR's heads use: liblinear's objective, reached exactly."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from spurlab import SpurlabError
from spurlab.train.methods.dfr import l1_logistic
from spurlab.train.methods.l1_logistic import fit_l1_logistic, l1_objective, with_bias_column


def correlated_problem(seed: int, n: int = 300, d: int = 8):
    """Features with a nearly duplicated pair (what makes liblinear's coordinate descent crawl)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[:, 1] = x[:, 0] + 0.05 * rng.normal(size=n)
    y = (x[:, 0] + 0.5 * x[:, 2] - 0.3 + rng.normal(size=n) > 0).astype(int)
    return x, y


def liblinear_weights(x, y, C):
    """scikit-learn's liblinear, converged far past its default tolerance: ``[coef, intercept]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = l1_logistic(C, seed=0).set_params(tol=1e-10, max_iter=100_000).fit(x, y)
    return np.r_[clf.coef_[0], clf.intercept_]


@pytest.mark.parametrize("C", [10.0, 1.0, 0.1, 0.02])
def test_the_optimum_is_liblinears(C):
    x, y = correlated_problem(0)
    signs = np.where(y == 1, 1.0, -1.0)
    ours = fit_l1_logistic(x[None], signs[None, None], C)[0, 0]
    theirs = liblinear_weights(x, y, C)
    xb = with_bias_column(x)
    assert l1_objective(ours, signs * (xb @ ours), C) <= l1_objective(theirs, signs * (xb @ theirs), C) + 1e-7
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert np.array_equal(ours == 0, np.abs(theirs) < 1e-8)  # the same support: the L1 zeros are exact


def test_problems_solved_together_equal_the_same_solved_alone():
    draws = [correlated_problem(seed) for seed in range(3)]
    x = np.stack([d[0] for d in draws])
    signs = np.stack([[np.where(d[1] == 1, 1.0, -1.0), np.where(d[1] == 0, 1.0, -1.0)] for d in draws])
    C = np.array([[1.0, 0.1], [0.5, 2.0], [0.05, 1.0]])
    together = fit_l1_logistic(x, signs, C)
    for b in range(3):
        for k in range(2):
            alone = fit_l1_logistic(x[b][None], signs[b, k][None, None], C[b, k])[0, 0]
            np.testing.assert_allclose(together[b, k], alone, atol=1e-6)


def test_all_zero_exactly_when_the_penalty_beats_the_gradient_at_zero():
    x, y = correlated_problem(1)
    signs = np.where(y == 1, 1.0, -1.0)
    threshold = 1.0 / np.abs(with_bias_column(x).T @ (signs * 0.5)).max()  # C below: w = 0 is optimal
    below = fit_l1_logistic(x[None], signs[None, None], 0.99 * threshold)[0, 0]
    above = fit_l1_logistic(x[None], signs[None, None], 1.2 * threshold)[0, 0]
    assert not below.any() and np.count_nonzero(above) >= 1


def test_mismatched_shapes_are_refused():
    x, y = correlated_problem(0)
    with pytest.raises(SpurlabError, match="fit_l1_logistic needs"):
        fit_l1_logistic(x, np.where(y == 1, 1.0, -1.0)[None, None], 1.0)
