"""Failure directions, the authors' pipeline: hinge flags equal SVC's, their folds and C choice, pooled metrics."""
import numpy as np
import pytest

from spurlab import FailureDirections, SpurlabError
from spurlab.probes.directions import auroc, balanced_accuracy, balanced_weights, ordered_stratified_folds
from spurlab.probes.svm import solve_hinge

sklearn_svm = pytest.importorskip("sklearn.svm")
model_selection = pytest.importorskip("sklearn.model_selection")
metrics = pytest.importorskip("sklearn.metrics")

pytestmark = pytest.mark.usefixtures("one_thread")


def planted(n_per_class=300, dim=16, classes=2, seed=0):
    """Per class a shifted minority on which the model errs half of the time (5% elsewhere)."""
    rng = np.random.default_rng(seed)
    shifts = rng.normal(size=(classes, dim))
    shifts /= np.linalg.norm(shifts, axis=1, keepdims=True)
    y = np.repeat(np.arange(classes), n_per_class)
    minority = rng.random(len(y)) < 0.2
    x = rng.normal(size=(len(y), dim)) + 0.5 * y[:, None] + 2.5 * minority[:, None] * shifts[y]
    wrong = rng.random(len(y)) < np.where(minority, 0.5, 0.05)
    return x, y, np.where(wrong, 1 - y, y), minority


def unit_rows(x):
    z = (x - x.mean(0)) / x.std(0)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.parametrize("C", [0.1, 1.0])
def test_hinge_flags_equal_svc_at_the_same_c(C):
    x, y, pred, _ = planted(400)
    z, ok = unit_rows(x[y == 0]), (pred == y)[y == 0]
    sol = solve_hinge(z, np.where(ok, 1.0, -1.0), balanced_weights(ok), [C])
    ours = z @ sol.w[0] + sol.b[0]
    ref = sklearn_svm.SVC(kernel="linear", C=C, class_weight="balanced").fit(z, ok).decision_function(z)
    # SVC stops at a 1e-3 KKT tolerance: only examples that close to the boundary may differ
    clear = np.abs(ref) > 2e-3
    assert np.array_equal(ours[clear] > 0, ref[clear] > 0)
    assert np.mean((ours > 0) == (ref > 0)) > 0.995


def test_small_c_leaves_the_bias_undetermined_like_svc():
    """With every multiplier at its bound the optimum fixes w but not b: SVC then flags all or nothing
    (which end depends on the order of its SMO steps), and so do we -- balanced accuracy 0.5 either way."""
    x, y, pred, _ = planted(400)
    z, ok = unit_rows(x[y == 0]), (pred == y)[y == 0]
    sol = solve_hinge(z, np.where(ok, 1.0, -1.0), balanced_weights(ok), [1e-5])
    ref = sklearn_svm.SVC(kernel="linear", C=1e-5, class_weight="balanced").fit(z, ok)
    assert np.allclose(sol.w[0], ref.coef_[0], atol=1e-9)
    assert balanced_accuracy(ok, z @ sol.w[0] + sol.b[0] > 0) == 0.5
    assert balanced_accuracy(ok, ref.predict(z)) == 0.5


def test_hinge_solver_is_at_least_as_good_as_svc():
    x, y, pred, _ = planted(400)
    z, ok = unit_rows(x[y == 1]), (pred == y)[y == 1]
    s, weight = np.where(ok, 1.0, -1.0), balanced_weights(ok)
    sol = solve_hinge(z, s, weight, [0.5])
    clf = sklearn_svm.SVC(kernel="linear", C=0.5, class_weight="balanced", tol=1e-6).fit(z, ok)

    def objective(w, b):
        return 0.5 * w @ w + np.sum(0.5 * weight * np.maximum(0.0, 1.0 - s * (z @ w + b)))

    assert objective(sol.w[0], sol.b[0]) <= objective(clf.coef_[0], clf.intercept_[0]) + 1e-8


def test_ordered_folds_are_scikit_learns_stratified_kfold():
    rng = np.random.default_rng(3)
    for n, share in ((37, 0.3), (200, 0.1), (9, 0.5)):
        ok = rng.random(n) < share
        ok[:2] = [True, False]
        ref = np.empty(n, dtype=int)
        for f, (_, test) in enumerate(model_selection.StratifiedKFold(2).split(np.zeros(n), ok)):
            ref[test] = f
        assert np.array_equal(ordered_stratified_folds(ok, 2), ref)


def test_default_pipeline_picks_the_authors_c_and_flags():
    """The authors' per class: SVC(kernel='linear', class_weight='balanced') for C in logspace(-6, 0, 7),
    cross_val_score(cv=2, balanced accuracy), strict > keeps the first best C, refit on every example."""
    x, y, pred, _ = planted(250, dim=12, seed=5)
    fd = FailureDirections(device="cpu").fit(x, y, pred)
    assert fd.loss == "hinge" and fd.folds == "ordered"
    z = fd.transform(x)
    scorer = metrics.make_scorer(metrics.balanced_accuracy_score)
    for i, c in enumerate(fd.classes_):
        rows, ok = y == c, (pred == y)[y == c]
        best_c, best = None, -np.inf
        for C in np.logspace(-6, 0, 7):
            clf = sklearn_svm.SVC(kernel="linear", C=C, class_weight="balanced")
            score = model_selection.cross_val_score(clf, z[rows], ok, cv=2, scoring=scorer).mean()
            if score > best:
                best_c, best = C, score
        assert fd.C_[i] == pytest.approx(best_c)
        assert fd.cv_balanced_accuracy_[i] == pytest.approx(best, abs=0.02)
        ref = sklearn_svm.SVC(kernel="linear", C=best_c, class_weight="balanced").fit(z[rows], ok)
        dv = ref.decision_function(z[rows])
        clear = np.abs(dv) > 2e-3
        assert np.array_equal(fd.predict(x[rows], y[rows])[clear], dv[clear] <= 0)


def test_squared_hinge_stays_selectable():
    x, y, pred, _ = planted(200, dim=12)
    fast = FailureDirections(loss="squared_hinge", folds="shuffled", device="cpu").fit(x, y, pred)
    assert fast.get_params()["loss"] == "squared_hinge"
    assert np.all(fast.cv_balanced_accuracy_ > 0.55)
    with pytest.raises(SpurlabError, match="parameter .loss. must be one of"):
        FailureDirections(loss="log").fit(x, y, pred)
    with pytest.raises(SpurlabError, match="folds"):
        FailureDirections(folds="random").fit(x, y, pred)


def test_pooled_row_pools_every_fitted_class():
    x, y, pred, minority = planted(300, seed=2)
    fd = FailureDirections(device="cpu").fit(x[::2], y[::2], pred[::2])
    xe, ye, pe, me = x[1::2], y[1::2], pred[1::2], minority[1::2]
    table = fd.evaluate(xe, ye, pe, minority=me, pooled=True).set_index("name")
    flag, err = fd.predict(xe, ye), pe != ye
    pooled = table.loc["pooled"]
    assert pooled["n"] == len(ye)
    assert pooled["flag_minority_precision"] == pytest.approx(me[flag].mean())
    assert pooled["minority_recall"] == pytest.approx(flag[me].mean())
    assert pooled["flag_error_precision"] == pytest.approx(err[flag].mean())
    distance = fd.signed_distance(xe, ye)
    assert np.array_equal(distance <= 0, flag)
    assert pooled["error_auroc"] == pytest.approx(auroc(err, -distance))
    # pooled over classes is not the mean of the classes' values
    per_class = [me[flag & (ye == c)].mean() for c in (0, 1)]
    assert table.loc["mean", "flag_minority_precision"] == pytest.approx(np.mean(per_class))
    assert "pooled" not in fd.evaluate(xe, ye, pe, minority=me)["name"].tolist()


def test_directions_run_uses_the_authors_pipeline_and_pools(tmp_path):
    import json

    from spurlab.audit.directions_run import run_directions

    x, y, pred, minority = planted(200, dim=12, seed=4)
    np.savez(tmp_path / "emb.npz", embeddings=x.astype(np.float32), labels=y, predictions=pred,
             spurious=np.where(minority, 1 - y, y))
    run = run_directions(tmp_path / "emb.npz", tmp_path / "out", device="cpu")
    assert run.directions.loss == "hinge" and run.directions.folds == "ordered"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    names = [row["name"] for row in summary["per_class"]]
    assert names[-2:] == ["mean", "pooled"]
