"""The feature cache (keys, hits, misses), the embeddings file it writes, and `spurlab embed`."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from spurlab.cli import app
from spurlab.data.embeddings import read_embeddings_file, splits_from_arrays
from spurlab.data.grouped import DatasetSplits
from spurlab.models import make_model
from spurlab.train.embedding_run import embed_dataset
from spurlab.train.feature_cache import CACHE_STATS, embed_model_splits, split_features

runner = CliRunner()


def small_splits(seed=0, n=120):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.85, y, 1 - y)
    x = np.stack([y + rng.normal(0, 0.7, n), 2 * a + rng.normal(0, 0.3, n), rng.normal(0, 1, n)], 1)
    return DatasetSplits.from_arrays(x.astype(np.float32), np.array(["cat", "dog"])[y], attributes=a, seed=seed)


def test_a_second_embedding_of_the_same_model_and_data_comes_from_the_cache(tmp_path):
    splits = small_splits()
    net = make_model("mlp", (3,), 2, seed=0, hidden=(8,))
    before = CACHE_STATS.hits
    first = split_features(net, splits["train"], cache=tmp_path)
    again = split_features(net, splits["train"], cache=tmp_path)
    assert not first.from_cache and again.from_cache and CACHE_STATS.hits == before + 1
    np.testing.assert_array_equal(first.features, again.features)
    with torch.no_grad():  # a new head reads the same features: still a hit
        net.head.weight.add_(1.0)
    assert split_features(net, splits["train"], cache=tmp_path).from_cache
    with torch.no_grad():  # a changed body computes other features: a miss
        net.body[1].weight.add_(0.1)
    assert not split_features(net, splits["train"], cache=tmp_path).from_cache
    assert not split_features(net, splits["val"], cache=tmp_path).from_cache  # other data
    assert not split_features(net, splits["train"], token={"options": {"image_size": 64}}, cache=tmp_path).from_cache


def test_no_cache_writes_nothing(tmp_path):
    splits = small_splits()
    net = make_model("mlp", (3,), 2, hidden=(8,))
    split_features(net, splits["train"], cache=False)
    split_features(net, splits["train"], cache=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.npz"))) == 1 and not list((tmp_path / "c").glob("*.tmp"))


def test_the_embeddings_file_round_trips_into_the_embeddings_dataset(tmp_path):
    splits = small_splits()
    net = make_model("mlp", (3,), 2, seed=0, hidden=(8,))
    result = embed_model_splits(net, splits, tmp_path / "e.npz", cache=tmp_path / "cache")
    back = splits_from_arrays(read_embeddings_file(result.path))
    assert list(back) == list(splits)
    for name, ds in splits.items():
        np.testing.assert_array_equal(back[name].y, ds.y)
        np.testing.assert_array_equal(back[name].g, ds.g)
        assert back[name].class_names == ("cat", "dog")
        np.testing.assert_allclose(back[name].x, result.features[name].features)
        logits = net(torch.as_tensor(ds.x)).detach().numpy()
        np.testing.assert_array_equal(back[name].metadata["prediction"], logits.argmax(1))
    directions = runner.invoke(app, ["directions", "--embeddings", str(result.path), "--out", str(tmp_path / "d"),
                                     "--device", "cpu"], terminal_width=200)
    assert directions.exit_code == 0, directions.output
    parquet = embed_model_splits(net, splits, tmp_path / "e.parquet", cache=tmp_path / "cache")
    assert parquet.from_cache
    np.testing.assert_allclose(read_embeddings_file(parquet.path)["embeddings"],
                               read_embeddings_file(result.path)["embeddings"])


def test_embed_dataset_trains_a_named_model_first_and_embeds_yours_as_it_is(tmp_path):
    splits = small_splits()
    result = embed_dataset(splits, "mlp", tmp_path / "a.npz", model_options={"hidden": (6,)}, epochs=2,
                           device="cpu", cache=tmp_path / "cache")
    assert result.features["test"].features.shape == (len(splits["test"]), 6)
    mine = make_model("linear", (3,), 2)
    own = embed_dataset(splits, mine, tmp_path / "b.npz", device="cpu", cache=tmp_path / "cache")
    assert own.features["train"].features.shape[1] == 3  # a linear model's features are its inputs


def test_spurlab_embed_writes_an_embeddings_file_and_reuses_the_cache(tmp_path):
    out = tmp_path / "emb.npz"
    args = ["embed", "--dataset", "linear-skew", "--set", "n_maj=60", "--set", "n_min=8", "--model", "mlp",
            "--set", "model.hidden=[8]", "--epochs", "2", "--device", "cpu", "--cache", str(tmp_path / "c"),
            "--out", str(out)]
    first = runner.invoke(app, args, terminal_width=200)
    assert first.exit_code == 0, first.output
    assert "(computed)" in first.output and out.is_file()
    second = runner.invoke(app, args, terminal_width=200)
    assert second.exit_code == 0 and "(computed)" not in second.output and "(cache)" in second.output
    data = read_embeddings_file(out)
    assert {"embeddings", "labels", "predictions", "split"} <= set(data) and data["embeddings"].shape[1] == 8


def test_spurlab_embed_refuses_a_file_that_is_not_torchscript(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    result = runner.invoke(app, ["embed", "--dataset", "linear-skew", "--model", str(bad), "--out",
                                 str(tmp_path / "e.npz")], terminal_width=200)
    assert result.exit_code == 2 and "is not a TorchScript model" in " ".join(result.output.split())
    both = runner.invoke(app, ["embed", "--label", "y", "--dataset", "linear-skew", "--model", "mlp", "--out",
                               str(tmp_path / "e.npz")], terminal_width=200)
    assert both.exit_code == 2 and "only apply together with --table" in " ".join(both.output.split())


@pytest.mark.parametrize("bad", ["e.txt"])
def test_unsupported_embeddings_file_types_are_refused(tmp_path, bad):
    from spurlab.errors import SpurlabError

    with pytest.raises(SpurlabError, match="unsupported embeddings file type"):
        embed_model_splits(make_model("linear", (3,), 2), small_splits(), tmp_path / bad, cache=False)
