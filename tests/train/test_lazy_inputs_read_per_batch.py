"""Lazy image splits are read one batch at a time on the method and audit paths, never whole: embedders,
selection retraining (training set + pool rows), train-to-fit, failure directions over inputs, the units
step's sample, and a frozen backbone's evaluation (features from the cache)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spurlab import params
from spurlab.audit.explain import UNITS_MIN_PER_GROUP, units_sample
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.lazy_images import ConcatenatedRows, LazyArray, concat_rows, is_lazy
from spurlab.errors import SpurlabError
from spurlab.models import ModelSpec
from spurlab.models.embedders import check_images, embed_in_batches
from spurlab.train.engines.fit_to_data import FitConfig, train_to_fit
from spurlab.train.engines.upweighting import Retrainer, compare_selection
from spurlab.train.feature_cache import CACHE_STATS
from spurlab.train.methods import get_method
from spurlab.train.methods.failure_directions import flattened_inputs
from spurlab.train.trainer import TrainConfig, predict


class CountingImages(LazyArray):
    """Float images behind the lazy interface: every read is recorded, and one of more than ``max_rows`` rows
    (a whole split, e.g. through ``np.asarray``) fails the test."""

    def __init__(self, pixels: np.ndarray, max_rows: int):
        super().__init__(np.arange(len(pixels)), pixels.shape[1:])
        self.pixels, self.max_rows, self.reads = pixels.astype(np.float32), max_rows, []

    def _load(self, positions: np.ndarray) -> np.ndarray:
        base = self._rows[np.asarray(positions, dtype=np.int64)]
        self.reads.append(len(base))  # shared by every view of this array
        if len(base) > self.max_rows:
            raise AssertionError(f"{len(base)} rows read at once (at most {self.max_rows} expected)")
        return self.pixels[base]

    def _view(self, rows: np.ndarray) -> CountingImages:
        view = object.__new__(CountingImages)
        view.__dict__.update(self.__dict__)
        view._rows = np.asarray(rows, dtype=np.int64)
        return view


def images(n: int, max_rows: int, seed: int = 0, shape=(3, 4, 4)) -> CountingImages:
    return CountingImages(np.random.default_rng(seed).random((n, *shape)), max_rows)


def test_the_counting_array_refuses_a_whole_read():
    x = images(40, max_rows=16)
    with pytest.raises(AssertionError, match="40 rows read at once"):
        np.asarray(x)
    assert x[:16].shape == (16, 3, 4, 4) and x.reads == [40, 16]


def test_embedders_read_lazy_images_per_batch_and_check_each_batch():
    x = images(50, max_rows=16)
    assert check_images(x) is x and x.reads == []  # the shape is checked, nothing read
    out = embed_in_batches(lambda b: torch.as_tensor(b).mean(dim=(2, 3)), x, 16, "test")
    np.testing.assert_allclose(out, x.pixels.mean(axis=(2, 3)), rtol=1e-6)
    assert x.reads == [16, 16, 16, 2]
    bad = images(20, max_rows=16)
    bad.pixels[17, 0, 0, 0] = np.nan
    with pytest.raises(SpurlabError, match="NaN"):
        embed_in_batches(lambda b: torch.as_tensor(b).mean(dim=(2, 3)), bad, 16, "test")
    with pytest.raises(SpurlabError, match="1 or 3 channels"):
        check_images(images(4, max_rows=4, shape=(2, 4, 4)))


def test_concat_rows_gathers_batches_from_the_parts():
    a, b = images(30, max_rows=16, seed=1), images(20, max_rows=16, seed=2)
    joined = concat_rows([a, b.select(np.arange(5, 15))])
    assert isinstance(joined, ConcatenatedRows) and joined.shape == (40, 3, 4, 4) and a.reads == b.reads == []
    expected = np.concatenate([a.pixels, b.pixels[5:15]])
    rows = np.array([39, 0, 29, 30, 12])
    np.testing.assert_array_equal(joined[rows], expected[rows])
    np.testing.assert_array_equal(joined.select(np.arange(28, 34))[:], expected[28:34])
    plain = concat_rows([np.zeros((2, 3)), np.ones((1, 3))])
    assert isinstance(plain, np.ndarray) and plain.shape == (3, 3)
    with pytest.raises(SpurlabError, match="item shapes"):
        concat_rows([a, images(3, max_rows=3, shape=(3, 5, 5))])


def linear_factory(input_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), n_classes))


def dataset(x, seed: int, split: str) -> GroupedDataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, len(x))
    return GroupedDataset(x, y, a=np.where(rng.random(len(x)) < 0.8, y, 1 - y), split=split)


def test_selection_retrains_on_lazy_training_set_plus_pool_rows_read_per_batch():
    train, pool = dataset(images(120, 16, seed=3), 3, "train"), dataset(images(60, 16, seed=4), 4, "val")
    test = dataset(images(40, 40, seed=5), 5, "test")
    retrainer = Retrainer(model=linear_factory, config=TrainConfig(epochs=2, batch_size=16, device="cpu"))
    frame = compare_selection(train, pool, test, {"svm": np.arange(0, 60, 3)}, retrainer)
    assert set(frame["intervention"]) == {"svm"} and frame.loc[frame["metric"] == "n_selected", "value"].item() == 20
    assert train.x.reads and max(train.x.reads) <= 16 and max(pool.x.reads) <= 16


def test_train_to_fit_reads_lazy_images_per_batch_and_matches_the_in_memory_run():
    x = images(300, max_rows=256, seed=6)
    y = (x.pixels[:, 0].mean(axis=(1, 2)) > 0.5).astype(np.int64)
    cfg = FitConfig(lr=0.5, batch_size=32, max_steps=40, seed=0, device="cpu")
    torch.manual_seed(0)
    lazy = train_to_fit(linear_factory((3, 4, 4), 2), x, y, cfg)
    torch.manual_seed(0)
    memory = train_to_fit(linear_factory((3, 4, 4), 2), x.pixels, y, cfg)
    assert max(x.reads) <= 256 and x.reads.count(32) >= 9
    assert (lazy.steps, lazy.train_acc, lazy.fitted) == (memory.steps, memory.train_acc, memory.fitted)
    assert lazy.dist_final == pytest.approx(memory.dist_final, rel=1e-5)


def test_failure_directions_input_embedding_reads_per_batch_and_refuses_a_split_too_large(monkeypatch):
    x = images(600, max_rows=256, seed=7)
    np.testing.assert_array_equal(flattened_inputs(x), x.pixels.reshape(600, -1))
    assert x.reads == [256, 256, 88]
    monkeypatch.setattr(params, "memory_limit_bytes", lambda: 10_000.0)
    with pytest.raises(SpurlabError, match="embedding='input' over 600 images") as err:
        flattened_inputs(x)
    assert "penultimate" in err.value.hint and x.reads == [256, 256, 88]  # refused before reading


def test_the_units_step_scores_a_sample_of_a_large_split_keeping_every_group():
    y = np.repeat([0, 0, 1, 1], [2400, 40, 600, 60])
    a = np.repeat([0, 1, 1, 0], [2400, 40, 600, 60])
    ds = GroupedDataset(images(len(y), max_rows=1, seed=8), y, a=a)
    sample = units_sample(ds, seed=0, max_examples=1200)
    counts = sample.group_counts()
    assert is_lazy(sample.x) and ds.x.reads == []  # a lazy view: nothing decoded
    assert counts[1] == 40 and counts[2] == 60  # small groups kept whole
    assert counts[0] == round(1200 * 2400 / 3100) and counts[3] == max(UNITS_MIN_PER_GROUP, round(1200 * 600 / 3100))
    np.testing.assert_array_equal(units_sample(ds, seed=0, max_examples=1200).x._rows, sample.x._rows)
    assert units_sample(ds, seed=0, max_examples=len(ds)) is ds


class CountingNet(nn.Module):
    """A user's network with the features/head convention; counts the rows its features saw."""

    rows_seen = 0

    def __init__(self, d_in: int, n_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(d_in, 8), nn.ReLU())
        self.head = nn.Linear(8, n_classes)

    def features(self, x):
        CountingNet.rows_seen += len(x)
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def counting_factory(input_shape, n_classes):
    return CountingNet(int(np.prod(input_shape)), n_classes)


def test_a_frozen_backbone_is_evaluated_on_cached_features(tmp_path, monkeypatch, one_thread):
    """``evaluate`` (selected and last-epoch weights) runs the backbone over a split once; later evaluations take
    the split's features from the cache, and give the predictions of the model itself."""
    monkeypatch.setenv("SPURLAB_CACHE", str(tmp_path / "features"))
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 300)
    x = (y[:, None] + rng.normal(0, 0.7, (300, 4))).astype(np.float32)
    splits = DatasetSplits.from_arrays(x, y, attributes=np.where(rng.random(300) < 0.9, y, 1 - y), seed=0)
    method = get_method("erm", model=ModelSpec(counting_factory, freeze="backbone"), epochs=2, seed=0,
                        device="cpu").fit(splits)
    test = splits["test"]
    before, hits = CountingNet.rows_seen, CACHE_STATS.hits
    first = method.evaluate(test)
    assert CountingNet.rows_seen - before == len(test)
    assert method.evaluate(test)["group_accuracy"] == first["group_accuracy"]
    method.evaluate(test, final=True)
    assert CountingNet.rows_seen - before == len(test) and CACHE_STATS.hits == hits + 2
    direct = predict(method.model_, test.x, device="cpu")
    assert first["accuracy"] == pytest.approx(float(np.mean(direct == test.y)))


def test_failure_directions_on_a_frozen_backbone_read_the_cached_features_as_they_are(tmp_path, monkeypatch,
                                                                                      one_thread):
    """The backbone runs once over train and val; the base and upweighted heads, the directions and the
    weights all work on those features (no second pass, no copy through the head's features)."""
    monkeypatch.setenv("SPURLAB_CACHE", str(tmp_path / "features"))
    rng = np.random.default_rng(10)
    y = rng.integers(0, 2, 400)
    x = (y[:, None] + rng.normal(0, 0.8, (400, 4))).astype(np.float32)
    splits = DatasetSplits.from_arrays(x, y, attributes=np.where(rng.random(400) < 0.9, y, 1 - y), seed=0)
    before = CountingNet.rows_seen
    method = get_method("failure_directions", model=ModelSpec(counting_factory, freeze="backbone"), epochs=2,
                        seed=0, device="cpu", base_epochs=2).fit(splits)
    assert CountingNet.rows_seen - before == len(splits["train"]) + len(splits["val"])
    assert method.weights_.shape == (len(splits["train"]),) and np.isclose(method.weights_.mean(), 1.0)


def test_pruned_contrastive_fine_tunes_on_lazy_images_read_per_batch(one_thread):
    from spurlab.train.engines.pruned_copy_contrastive import train_pruned_contrastive

    x = images(300, max_rows=64, seed=11)
    ds = dataset(x, 11, "train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 2))
    history = train_pruned_contrastive(model, ds, epochs=2, batch_size=32, divergence_examples=64, device="cpu",
                                       on_vacuous_mask="ignore")
    assert len(history) == 2 and np.isfinite(history[-1]["loss"])
    assert max(x.reads) <= 64 and x.reads.count(32) >= 2 * 9  # minibatches of 32, never the whole split
