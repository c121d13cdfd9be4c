"""Group metrics on hand-computed cases."""
import numpy as np
import pytest

from spurlab import SpurlabError, metrics

# groups:      0  0  0  0  1  1  2  2  2  3
Y_TRUE = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
Y_PRED = np.array([0, 0, 0, 1, 1, 0, 1, 1, 0, 0])
GROUPS = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])


def test_group_accuracies_by_hand():
    accs = metrics.group_accuracies(Y_TRUE, Y_PRED, GROUPS)
    assert accs == {0: 0.75, 1: 0.5, 2: pytest.approx(2 / 3), 3: 0.0}


def test_empty_groups_are_left_out():
    accs = metrics.group_accuracies(Y_TRUE, Y_PRED, GROUPS, n_groups=6)
    assert sorted(accs) == [0, 1, 2, 3]


def test_worst_and_mean_group():
    assert metrics.worst_group_accuracy(Y_TRUE, Y_PRED, GROUPS) == 0.0
    assert metrics.mean_group_accuracy(Y_TRUE, Y_PRED, GROUPS) == pytest.approx((0.75 + 0.5 + 2 / 3 + 0) / 4)
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.6)


def test_train_weighted_accuracy_uses_training_proportions():
    train_groups = np.array([0] * 90 + [1] * 5 + [2] * 3 + [3] * 2)
    expected = (90 * 0.75 + 5 * 0.5 + 3 * (2 / 3) + 2 * 0.0) / 100
    assert metrics.train_weighted_accuracy(Y_TRUE, Y_PRED, GROUPS, train_groups) == pytest.approx(expected)
    # differs from both the plain accuracy and the mean group accuracy
    assert expected != pytest.approx(metrics.accuracy(Y_TRUE, Y_PRED))


def test_train_weighted_needs_every_training_group():
    with pytest.raises(SpurlabError, match="occur in training but not"):
        metrics.train_weighted_accuracy(Y_TRUE[:4], Y_PRED[:4], GROUPS[:4], [0, 1])


def test_gap_and_report():
    gap = metrics.group_gap({0: 1.0, 1: 0.9}, {0: 0.95, 1: 0.4})
    assert gap == {0: pytest.approx(0.05), 1: pytest.approx(0.5)}
    report = metrics.group_report(Y_TRUE, Y_PRED, GROUPS, ["a", "b", "c", "d"])
    assert report["count"].tolist() == [4, 2, 3, 1]
    assert report["name"].tolist() == ["a", "b", "c", "d"]


@pytest.mark.parametrize("args, message", [
    (([0, 1], [0], [0, 0]), "different lengths"),
    (([0, 1], [0, -1], [0, 0]), "negative"),
    (([], [], []), "no examples"),
])
def test_metric_bad_input(args, message):
    with pytest.raises(SpurlabError, match=message):
        metrics.group_accuracies(*args)
