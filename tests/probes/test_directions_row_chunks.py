"""Failure directions score and standardize a large split in chunks of rows: the same numbers as in one piece."""
import numpy as np

from spurlab.probes import directions
from spurlab.probes.directions import FailureDirections


def test_chunked_statistics_and_decision_values_match_one_piece(monkeypatch):
    rng = np.random.default_rng(0)
    d = 6
    train = (rng.normal(0, 1, (700, d)) * np.arange(1, d + 1) + 3).astype(np.float32)
    labels = rng.integers(0, 2, 700)
    val, val_labels = train[:300], labels[:300]
    predictions = np.where(val[:, 0] + rng.normal(0, 1, 300) > 3, val_labels, 1 - val_labels)
    whole = FailureDirections(seed=0, Cs=(1.0,)).fit(val, val_labels, predictions, train_embeddings=train)
    expected = whole.decision_function(train, labels)
    monkeypatch.setattr(directions, "ROW_CHUNK", 64)  # 700 rows: 11 chunks, the last one partial
    chunked = FailureDirections(seed=0, Cs=(1.0,)).fit(val, val_labels, predictions, train_embeddings=train)
    np.testing.assert_allclose(chunked.mean_, train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(chunked.scale_, train.astype(np.float64).std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(chunked.decision_function(train, labels), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(whole.decision_function(train, labels), expected)  # chunked scoring, same model
    assert np.isfinite(expected).all()
