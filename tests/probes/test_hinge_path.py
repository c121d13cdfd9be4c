"""The hinge SVM's active-set path (few examples per dimension): the exact optimum, SVC's flags, the fallback."""
import numpy as np
import pytest

from spurlab import FailureDirections
from spurlab.probes import svm
from spurlab.probes.directions import balanced_weights

sklearn_svm = pytest.importorskip("sklearn.svm")

pytestmark = pytest.mark.usefixtures("one_thread")


def planted(n, dim, seed=0, shift=2.5):
    """Unit rows; a shifted minority on which the model errs half of the time (5% elsewhere)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    minority = rng.random(n) < 0.2
    x = rng.normal(size=(n, dim)) + shift * minority[:, None] * direction / np.linalg.norm(direction)
    ok = rng.random(n) >= np.where(minority, 0.5, 0.05)
    z = (x - x.mean(0)) / x.std(0)
    return z / np.linalg.norm(z, axis=1, keepdims=True), ok


def objective(z, s, c, w, b):
    return 0.5 * w @ w + np.sum(c * np.maximum(0.0, 1.0 - s * (z @ w + b)))


@pytest.fixture
def no_interior_point(monkeypatch):
    """Refuses the interior point inside ``solve_hinge``; returns it for the references."""
    interior_point = svm._hinge_interior_point

    def refuse(*args):
        raise AssertionError("the interior point ran: the path did not reach every C")

    monkeypatch.setattr(svm, "_hinge_interior_point", refuse)
    return interior_point


@pytest.mark.parametrize("n, dim", [(300, 96), (60, 128)])
def test_path_reaches_the_interior_points_optimum(n, dim, no_interior_point):
    """Three examples per dimension, and fewer examples than dimensions: every C by the path, at the
    interior point's optimum or below it."""
    z, ok = planted(n, dim, seed=dim)
    s, weight = np.where(ok, 1.0, -1.0), balanced_weights(ok)
    cs = np.logspace(-6, 1, 8)
    sol = svm.solve_hinge(z, s, weight, cs)
    w_ref, b_ref, _ = no_interior_point(z, s, cs[:, None] * weight[None], 100, 1e-10)
    for j, value in enumerate(cs):
        c = value * weight
        assert objective(z, s, c, sol.w[j], sol.b[j]) <= objective(z, s, c, w_ref[j], b_ref[j]) * (1 + 1e-9)
        assert np.allclose(sol.w[j], w_ref[j], atol=1e-5 * (1 + np.abs(w_ref[j]).max()))


def test_many_free_examples_in_few_dimensions_are_exact():
    """With 8 dimensions and large C up to d + 1 examples sit on the margin; whether the path or the
    interior point finishes, the optimum is the same."""
    z, ok = planted(40, 8, seed=3)
    s, weight = np.where(ok, 1.0, -1.0), balanced_weights(ok)
    cs = np.logspace(-2, 3, 6)
    sol = svm.solve_hinge(z, s, weight, cs)
    w_ref, b_ref, _ = svm._hinge_interior_point(z, s, cs[:, None] * weight[None], 100, 1e-10)
    for j, value in enumerate(cs):
        c = value * weight
        assert objective(z, s, c, sol.w[j], sol.b[j]) <= objective(z, s, c, w_ref[j], b_ref[j]) * (1 + 1e-9)


def test_a_failing_path_falls_back_to_the_interior_point(monkeypatch):
    z, ok = planted(200, 64, seed=1)
    s, weight = np.where(ok, 1.0, -1.0), balanced_weights(ok)
    cs = np.array([0.1, 1.0])
    exact = svm.solve_hinge(z, s, weight, cs)
    monkeypatch.setattr(svm._HingePath, "MAX_PIVOTS", 1)  # no correction converges in one solve
    fallen = svm.solve_hinge(z, s, weight, cs)
    assert np.allclose(fallen.w, exact.w, atol=1e-6) and np.allclose(fallen.b, exact.b, atol=1e-6)
    assert fallen.n_iter > 0 and exact.n_iter == 0  # interior-point steps only in the fallback


@pytest.mark.parametrize("C", [0.3, 1.0])
def test_path_flags_equal_svc_at_the_same_c(C, no_interior_point):
    z, ok = planted(240, 96, seed=2)
    s, weight = np.where(ok, 1.0, -1.0), balanced_weights(ok)
    assert svm._all_at_bound(z, s, C * weight) is None  # beyond the closed form: the path solves it
    sol = svm.solve_hinge(z, s, weight, [C])
    ours = z @ sol.w[0] + sol.b[0]
    ref = sklearn_svm.SVC(kernel="linear", C=C, class_weight="balanced").fit(z, ok).decision_function(z)
    clear = np.abs(ref) > 2e-3  # SVC stops at a 1e-3 KKT tolerance
    assert np.array_equal(ours[clear] > 0, ref[clear] > 0)
    assert np.abs(ours - ref).max() < 5e-2


def test_pipeline_on_the_path_picks_svcs_c_and_flags(no_interior_point):
    """The default FailureDirections with few examples per dimension (every fit on the path): the authors'
    first best C per class and SVC's flags."""
    from spurlab.probes.directions import balanced_accuracy, ordered_stratified_folds

    x = np.vstack([planted(260, 64, seed=k, shift=8.0)[0] + k for k in (0, 1)])
    labels = np.repeat([0, 1], 260)
    ok = np.concatenate([planted(260, 64, seed=k, shift=8.0)[1] for k in (0, 1)])
    pred = np.where(ok, labels, 1 - labels)
    fd = FailureDirections(device="cpu").fit(x, labels, pred)
    z = fd.transform(x)
    for i, c in enumerate(fd.classes_):
        rows, good = labels == c, ok[labels == c]
        folds = ordered_stratified_folds(good, 2)
        scores = []
        for value in fd.cs_:
            svc = sklearn_svm.SVC(kernel="linear", C=value, class_weight="balanced")
            per_fold = [balanced_accuracy(good[folds == f], svc.fit(z[rows][folds != f], good[folds != f])
                                          .predict(z[rows][folds == f])) for f in (0, 1)]
            scores.append(np.mean(per_fold))
        assert fd.C_[i] == pytest.approx(fd.cs_[int(np.argmax(scores))])
        assert fd.cv_balanced_accuracy_[i] > 0.6  # a C beyond the closed form, where SVC's bias is determined
        ref = sklearn_svm.SVC(kernel="linear", C=fd.C_[i], class_weight="balanced").fit(z[rows], good)
        dv = ref.decision_function(z[rows])
        clear = np.abs(dv) > 2e-3
        assert np.array_equal(fd.predict(x[rows], labels[rows])[clear], dv[clear] <= 0)


def test_duplicated_examples_give_way_to_the_interior_point():
    """Every example twice: two copies on the margin make the free Gram block singular, the path stops and
    the interior point finishes; every C still at the optimum."""
    z, ok = planted(150, 64, seed=4)
    z, ok = np.vstack([z, z]), np.r_[ok, ok]
    s, weight = np.where(ok, 1.0, -1.0), balanced_weights(ok)
    cs = np.logspace(-6, 1, 8)
    sol = svm.solve_hinge(z, s, weight, cs)
    w_ref, b_ref, _ = svm._hinge_interior_point(z, s, cs[:, None] * weight[None], 100, 1e-10)
    assert sol.n_iter > 0
    for j, value in enumerate(cs):
        c = value * weight
        assert objective(z, s, c, sol.w[j], sol.b[j]) <= objective(z, s, c, w_ref[j], b_ref[j]) * (1 + 1e-9)
        assert np.array_equal(z @ sol.w[j] + sol.b[j] > 0, z @ w_ref[j] + b_ref[j] > 0)
