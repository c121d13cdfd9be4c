"""spurious-memorization: how the feature alignment F approaches gamma(high N) at finite N/d and d.

``gamma_at_ratio`` is the d -> inf value of F at a fixed N/d: the linear part of the features,
aligned by alpha, keeps a weight w ~ d/N. It explains why phi4 / h0+h3 (gamma_high = alpha^4,
far below alpha) sit well above gamma_high at N/d = 10 while phi2 / h0+h1 are close.
"""
import numpy as np
import pytest

from spurlab import SpurlabError
from spurlab.data.synthetic import gaussian_core_spurious, spurious_query
from spurlab.models.features import get_activation
from spurlab.probes.memorization import gamma, gamma_at_ratio, linear_leak_weight, solve_memorization
from spurlab.studies.spurious_memorization.memorization_study import synthetic_setting

SETTINGS = [("rf", "phi2"), ("rf", "phi4"), ("ntk", "h0+h1"), ("ntk", "h0+h3")]


pytestmark = pytest.mark.usefixtures("one_thread")  # many small BLAS calls: one thread is faster


@pytest.mark.parametrize("model, activation", SETTINGS + [("rf", "relu"), ("ntk", "relu'")])
@pytest.mark.parametrize("alpha", [0.25, 0.5])
def test_gamma_at_ratio_interpolates_the_two_closed_forms(model, activation, alpha):
    assert gamma_at_ratio(model, activation, alpha, 0.0) == pytest.approx(gamma(model, activation, alpha, "low_n"),
                                                                          abs=1e-12)
    assert gamma_at_ratio(model, activation, alpha, 1e9) == pytest.approx(gamma(model, activation, alpha, "high_n"),
                                                                          abs=1e-8)
    curve = [gamma_at_ratio(model, activation, alpha, r) for r in (0.1, 1, 3, 10, 30, 100)]
    assert all(b < a for a, b in zip(curve, curve[1:]))
    # the linear part leaks in with weight ~ d / N once N >> d
    assert linear_leak_weight(model, activation, 1e4) * 1e4 == pytest.approx(1.0, rel=1e-2)


def test_gamma_at_ratio_errors():
    with pytest.raises(SpurlabError, match="n_over_d"):
        linear_leak_weight("rf", "phi4", -1.0)
    with pytest.raises(SpurlabError, match="model"):
        gamma_at_ratio("cnn", "phi4", 0.5, 3.0)
    with pytest.raises(SpurlabError, match="no Hermite energy"):
        gamma_at_ratio("rf", "linear", 0.5, 3.0)


@pytest.mark.parametrize("activation", ["phi4", "relu"])
def test_gamma_at_ratio_matches_a_linear_plus_identity_kernel(activation):
    """Independent check of the fixed point: simulate the kernel the derivation assumes,
    ``mu_1^2 Z Z^T / d + c I`` (query: ``mu_1^2 Z_s Z^T / d + c gamma_high I``), and measure F."""
    act, d, alpha = get_activation(activation), 300, 0.5
    mu = act.hermite(2)
    c = act.second_moment() - mu[0] ** 2 - mu[1] ** 2
    high = gamma("rf", activation, alpha, "high_n")
    data = gaussian_core_spurious(900, d, alpha, seed=0)
    Z, Zs = data.z, spurious_query(data, "fresh", seed=1)
    for n in (90, 300, 900):
        K = mu[1] ** 2 * Z[:n] @ Z[:n].T / d + c * np.eye(n)
        K_s = mu[1] ** 2 * Zs[:n] @ Z[:n].T / d + c * high * np.eye(n)
        F = solve_memorization(K, K_s, np.ones(n)).mean_alignment
        assert F == pytest.approx(gamma_at_ratio("rf", activation, alpha, n / d), rel=0.03)


@pytest.mark.parametrize("model, activation", SETTINGS)
def test_measured_alignment_moves_to_gamma_high_as_n_over_d_grows(model, activation):
    """Infinite width, d = 100, N/d = 1, 3, 10: F falls towards gamma_high along gamma_at_ratio."""
    d, alpha = 100, 0.5
    rows = synthetic_setting(model, activation, 0, alpha, d, [d, 3 * d, 10 * d], 0, seed=0)
    high = rows[0]["gamma_high_n"]
    distances = [abs(r["feature_alignment"] - high) for r in rows]
    assert all(b < 0.75 * a for a, b in zip(distances, distances[1:]))
    for row in rows:
        predicted = gamma_at_ratio(model, activation, alpha, row["N"] / d)
        assert abs(row["feature_alignment"] - predicted) < 0.02


def test_phi4_gap_to_the_finite_ratio_value_shrinks_like_one_over_d():
    """At N/d = 10 the gap F - gamma_at_ratio is O(1/d) (Gaussian data: E[cos^4] = alpha^4 + O(1/d))."""
    alpha, ratio = 0.5, 10
    predicted = gamma_at_ratio("rf", "phi4", alpha, ratio)
    gaps = []
    for d in (50, 100, 200):
        (row,) = synthetic_setting("rf", "phi4", 0, alpha, d, [ratio * d], 0, seed=0)
        gaps.append(row["feature_alignment"] - predicted)
    assert all(0 < b < 0.75 * a for a, b in zip(gaps, gaps[1:]))
    assert all(0.5 < gap * d < 3.0 for gap, d in zip(gaps, (50, 100, 200)))
