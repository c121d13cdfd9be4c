"""The hard-margin SVM engine: formulations chosen by shape give the same classifier, batched or not."""
import numpy as np
import pytest

from spurlab.errors import SpurlabError
from spurlab.train.engines.max_margin import MaxMarginClassifier, choose_formulation, fit_max_margin


def separable(n, d, seed=0, gap=0.05):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) / np.sqrt(d)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    y = np.where(x @ u >= 0, 1.0, -1.0)
    return x + gap * y[:, None] * u, y


def slsqp_margin(x, y, fit_intercept):
    """Independent check: the primal QP by a general-purpose solver."""
    from scipy.optimize import minimize

    d = x.shape[1]
    g = np.column_stack([y[:, None] * x, y if fit_intercept else np.zeros_like(y)])
    res = minimize(lambda v: 0.5 * v[:d] @ v[:d], np.zeros(d + 1), jac=lambda v: np.r_[v[:d], 0.0],
                   constraints=[{"type": "ineq", "fun": lambda v: g @ v - 1.0, "jac": lambda v: g}],
                   method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
    return 1.0 / np.linalg.norm(res.x[:d])


def test_formulation_follows_the_shape():
    assert choose_formulation(64, 1000) == "dual"
    assert choose_formulation(1000, 20) == "primal"
    assert choose_formulation(10000, 1000) == "primal"


@pytest.mark.parametrize("n,d", [(30, 80), (120, 6)])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_primal_and_dual_give_the_same_margin(n, d, fit_intercept):
    x, y = separable(n, d, seed=n + d)
    primal = MaxMarginClassifier(fit_intercept=fit_intercept, formulation="primal").fit(x, y)
    dual = MaxMarginClassifier(fit_intercept=fit_intercept, formulation="dual").fit(x, y)
    assert primal.formulation_ == "primal" and dual.formulation_ == "dual"
    assert dual.margin_ == pytest.approx(primal.margin_, abs=1e-9)
    assert np.abs(dual.coef_ - primal.coef_).max() < 1e-7 * np.abs(primal.coef_).max()
    assert dual.intercept_ == pytest.approx(primal.intercept_, abs=1e-7)
    for svm in (primal, dual):
        margins = y * svm.decision_function(x)
        assert margins.min() == pytest.approx(1.0, abs=1e-8)
    assert primal.margin_ == pytest.approx(slsqp_margin(x, y, fit_intercept), rel=1e-6)


def test_batch_equals_one_problem_at_a_time():
    problems = [separable(40, 12, seed=s) for s in range(4)]
    x = np.stack([p[0] for p in problems])
    y = np.stack([p[1] for p in problems])
    batch = fit_max_margin(x, y, fit_intercept=True)
    assert batch.coef.shape == (4, 12)
    for i, (xi, yi) in enumerate(problems):
        one = MaxMarginClassifier(fit_intercept=True).fit(xi, yi)
        assert batch.margin[i] == pytest.approx(one.margin_, abs=1e-9)
        assert batch.intercept[i] == pytest.approx(one.intercept_, abs=1e-7)


def test_degenerate_support_many_points_on_the_margin():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5)) / 3
    y = np.where(rng.random(200) < 0.5, 1.0, -1.0)
    x[:, 0] = 0.1 * y  # every point is exactly on the margin of w = 10 e_0
    svm = MaxMarginClassifier(fit_intercept=True).fit(x, y)
    assert svm.margin_ == pytest.approx(0.1, abs=1e-10)
    assert svm.polished_


def test_batch_input_errors():
    x, y = separable(10, 3)
    with pytest.raises(SpurlabError, match="formulation"):
        fit_max_margin(x, y, formulation="simplex")
    with pytest.raises(SpurlabError, match="signs"):
        fit_max_margin(x, (y > 0).astype(float))
    with pytest.raises(SpurlabError, match="both labels"):
        fit_max_margin(x, np.ones(10))
    with pytest.raises(SpurlabError, match="not linearly separable"):
        fit_max_margin(np.array([[[1.0], [1.0]], [[1.0], [2.0]]]), np.array([[1.0, -1.0], [1.0, -1.0]]),
                       fit_intercept=True)
