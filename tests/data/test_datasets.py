"""Registry, synthetic generators, image loaders, injections and embedding files."""
import gzip
import shutil

import numpy as np
import pandas as pd
import pytest

from spurlab import SpurlabError, load_dataset, load_splits
from spurlab.data import injections as inj
from spurlab.data.embeddings import read_embeddings_file
from spurlab.data.images import build_image_splits, read_idx, read_idx_dataset
from spurlab.data.dataset_registry import dataset_entries
from spurlab.data.synthetic import (duplicate_majority, duplication_counts, easy_task, gaussian_core_spurious,
                                    spurious_query, structured_features)
from spurlab.errors import DataNotFoundError, UnknownNameError

REQUIRED = {"linear-skew", "structured-features", "gaussian-core-spurious", "digits", "mnist", "fashion-mnist",
            "binary-mnist", "mnist-1v7", "waterbirds", "celeba", "embeddings", "spurious-digits"}


# ------------------------------------------------------------------ registry
def test_registry_lists_the_required_datasets():
    assert REQUIRED <= set(dataset_entries())


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(UnknownNameError, match="unknown dataset 'mnsit'") as info:
        load_dataset("mnsit")
    assert "mnist" in str(info.value) and "linear-skew" in str(info.value)


def test_unknown_parameter_is_refused():
    with pytest.raises(SpurlabError, match="no parameter.*n_minority"):
        load_dataset("linear-skew", n_minority=3)


def test_preset_parameters_are_visible():
    params = dataset_entries()["binary-mnist"].parameters()
    assert params["classes"] == "0-4/5-9"
    assert "patch_size" in dataset_entries()["digits"].parameters()


# ------------------------------------------------------------------ linear skew
def test_easy_task_group_sizes_and_geometry():
    data = easy_task(n_maj=40, n_min=6, D=50, margin=0.1, B=2.0, seed=3)
    assert data.x.shape == (46, 51)
    minority = data.a != data.y
    assert minority.sum() == 6
    sy = 2 * data.y - 1
    np.testing.assert_allclose(data.x[:, 0], 0.1 * sy)  # the invariant margin coordinate
    np.testing.assert_allclose(data.x_sp, np.where(minority, -2.0, 2.0) * sy)
    assert abs(data.y.sum() - 23) <= 1  # balanced classes


def test_linear_skew_p_and_n():
    train = load_dataset("linear-skew", p=0.9, n=200, D=20)
    counts = train.group_counts()
    assert counts[1] + counts[2] == 20 and counts[0] + counts[3] == 180


def test_duplication_reaches_the_requested_share():
    for p in (0.5, 0.75, 0.85, 0.99):
        data = duplicate_majority(20, p, D=10, seed=0)
        majority = (data.a == data.y).sum()
        assert (data.a != data.y).sum() == 20
        assert majority == round(20 * p / (1 - p))
        assert len(np.unique(data.unique_id)) == 40  # the unique points are unchanged
    np.testing.assert_array_equal(duplication_counts(4, 0.75), [3, 3, 3, 3])
    with pytest.raises(SpurlabError, match=r"parameter .p. must be a number in \[0.5, 1\)"):
        duplication_counts(4, 1.0)


def test_linear_skew_splits():
    splits = load_splits("linear-skew", n_maj=10, n_min=2, D=5, n_test=40)
    assert set(splits) == {"train", "test", "ood"}
    assert (splits["ood"].a != splits["ood"].y).all()
    assert (splits["test"].a != splits["test"].y).sum() == 20


# ------------------------------------------------------------------ other generators
def test_structured_features_model():
    train = structured_features(n=200, d_core=4, d_bg=3, d_in=16, seed=1)
    assert train.x.shape == (200, 16)
    np.testing.assert_allclose(train.transform.T @ train.transform, np.eye(7), atol=1e-12)
    feats = train.x @ train.transform
    np.testing.assert_allclose(feats[:, :4], train.core, atol=1e-12)
    assert ((train.core > 0) == (train.y == 1)[:, None]).all()  # linear core: sign = label
    assert (train.background >= 0).all()
    shifted = structured_features(n=50, d_core=4, d_bg=3, d_in=16, shift_scale=2.0, seed=2,
                                  transform=train.transform)
    assert (shifted.background <= 0).all() and shifted.background.min() >= -2.0
    np.testing.assert_array_equal(shifted.transform, train.transform)


def test_gaussian_core_spurious_and_queries():
    data = gaussian_core_spurious(n=30, d=40, alpha=0.25, seed=0)
    assert data.z.shape == (30, 40) and data.d_core == 30
    np.testing.assert_array_equal(data.y, (data.core @ data.u > 0).astype(int))
    fresh = spurious_query(data, "fresh", seed=1)
    np.testing.assert_array_equal(fresh[:, 30:], data.spurious)
    assert not np.allclose(fresh[:, :30], data.core)
    zero = spurious_query(data, "zero")
    assert (zero[:, :30] == 0).all()
    with pytest.raises(SpurlabError, match=r"parameter .alpha. must be a number in \(0, 1\)"):
        gaussian_core_spurious(n=5, d=10, alpha=1.5)


# ------------------------------------------------------------------ image injections
@pytest.mark.parametrize("p", [0.95, 0.8])
def test_injected_correlation_is_exact_per_class(p):
    splits = load_splits("digits", classes="0-4/5-9", spurious="patch", p=p)
    train = splits["train"]
    for c in (0, 1):
        n_c = (train.y == c).sum()
        assert ((train.y == c) & (train.a == c)).sum() == round(p * n_c)
    for split in ("val", "test"):  # balanced: each class split evenly over the attributes
        ds = splits[split]
        for c in (0, 1):
            per_attr = np.bincount(ds.a[ds.y == c], minlength=2)
            assert abs(per_attr[0] - per_attr[1]) <= 1


def test_reversed_and_numeric_test_correlation():
    splits = load_splits("digits", classes="0-4/5-9", spurious="texture", p=0.9, test_correlation="reversed")
    test = splits["test"]
    for c in (0, 1):
        assert ((test.y == c) & (test.a == c)).sum() == round(0.1 * (test.y == c).sum())
    same = load_splits("digits", classes="0-4/5-9", spurious="line", p=0.9, test_correlation=0.7)["test"]
    assert ((same.a == same.y).mean()) == pytest.approx(0.7, abs=0.01)


def test_explicit_group_sizes():
    x = np.random.default_rng(0).uniform(size=(400, 8, 8)).astype(np.float32)
    y = np.repeat([0, 1], 200)
    sizes = {(0, 0): 100, (0, 1): 7, (1, 0): 5, (1, 1): 90}
    splits = build_image_splits({"train": (x, y), "test": (x, y)}, ("a", "b"), name="toy", spurious="patch",
                                group_sizes=sizes, val_fraction=0.0)
    np.testing.assert_array_equal(splits["train"].group_counts(), [100, 7, 5, 90])
    with pytest.raises(SpurlabError, match="ask for 300 examples of class 0"):
        build_image_splits({"train": (x, y), "test": (x, y)}, ("a", "b"), name="toy", spurious="patch",
                           group_sizes={(0, 0): 300}, val_fraction=0.0)


@pytest.mark.parametrize("kind", ["foreground_colour", "background_colour", "patch", "line", "texture"])
def test_every_injection_keeps_shape_and_range_and_encodes_the_attribute(kind):
    x = np.random.default_rng(1).uniform(size=(6, 1, 12, 12)).astype(np.float32) * 0.5
    a = np.array([0, 1, 0, 1, 0, 1])
    out = inj.inject(x, a, kind)
    assert out.shape[0] == 6 and out.shape[-2:] == (12, 12)
    assert out.min() >= 0 and out.max() <= 1
    same_image = np.repeat(x[:1], 2, axis=0)
    two = inj.inject(same_image, np.array([0, 1]), kind)
    assert not np.allclose(two[0], two[1])  # the attribute changes the pixels


def test_padding_and_noise_frame_shapes():
    x = np.full((3, 1, 10, 10), 0.5, np.float32)
    padded = inj.pad_constant(x, 4)
    assert padded.shape == (3, 3, 18, 18)
    np.testing.assert_allclose(padded[0, :, 0, 0], inj.BRICK_RED, atol=1e-6)
    framed = inj.inject(x, None, "noise_frame", frame_width=5, seed=0)
    assert framed.shape == (3, 1, 20, 20)
    np.testing.assert_allclose(framed[:, :, 5:15, 5:15], 0.5)
    query = inj.inject(x, None, "noise_frame", frame_width=5, seed=0, zero_core=True)
    assert (query[:, :, 5:15, 5:15] == 0).all()
    np.testing.assert_array_equal(query[:, :, :5], framed[:, :, :5])  # the same frame


@pytest.mark.parametrize("params, message", [
    (dict(spurious="patch", p=1.5), r"parameter 'p' must be a number in \(0, 1\)"),
    (dict(spurious="patch", p=0.0), r"parameter 'p' must be a number in \(0, 1\)"),
    (dict(spurious="glitter"), "parameter 'spurious' must be one of .*got 'glitter'"),
    (dict(classes="0-4/5-12"), "outside 0..9"),
    (dict(spurious="patch", p=0.999, classes="0-4/5-9", n_train=300), "no examples in the minority"),
    (dict(spurious="patch", classes="0-4/5-9", test_correlation="upside-down"), "parameter 'test_correlation' must be"),
])
def test_image_dataset_bad_input(params, message):
    with pytest.raises(SpurlabError, match=message):
        load_splits("digits", **params)


# ------------------------------------------------------------------ MNIST files
def test_mnist_loader_on_shared_data(data_dir):
    splits = load_splits("mnist", data_dir=data_dir, val_fraction=0)
    assert len(splits["train"]) == 60_000 and len(splits["test"]) == 10_000
    assert splits["train"].y[:5].tolist() == [5, 0, 4, 1, 9]
    assert splits["train"].x.shape[1:] == (1, 28, 28)
    assert 0.0 <= splits["train"].x.min() and splits["train"].x.max() <= 1.0


def test_fashion_and_binary_variants(data_dir):
    raw = read_idx_dataset(data_dir, "FashionMNIST")
    assert raw["train"][0].shape == (60_000, 28, 28) and len(raw["test"][1]) == 10_000
    ones_sevens = load_splits("mnist-1v7", data_dir=data_dir, n_train=500, n_test=200)
    assert ones_sevens["train"].class_names == ("1", "7")
    colored = load_splits("colored-mnist", data_dir=data_dir, n_train=2000, n_test=400)
    assert colored["train"].x.shape[1] == 3 and colored["train"].n_groups == 4


def test_uncompressed_idx_files_are_read_too(data_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte",
                 "train-images-idx3-ubyte"):
        with gzip.open(data_dir / "MNIST" / "raw" / f"{stem}.gz") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    labels = read_idx(raw / "train-labels-idx1-ubyte")
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert len(load_splits("mnist", data_dir=tmp_path, val_fraction=0.5)["val"]) == 30_000


def test_missing_data_dir_says_where_it_looked(tmp_path):
    with pytest.raises(DataNotFoundError, match="looked for train-images-idx3-ubyte") as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    assert "nowhere" in str(info.value) and "SPURLAB_DATA" in str(info.value)


def test_truncated_idx_file_is_refused(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(SpurlabError, match="not an IDX file"):
        read_idx(bad)


# ------------------------------------------------------------------ embedding files
def _embedding_arrays(n=40):
    rng = np.random.default_rng(0)
    return dict(embeddings=rng.normal(size=(n, 8)).astype(np.float32), labels=np.arange(n) % 2,
                predictions=(np.arange(n) // 3) % 2, spurious=(np.arange(n) // 2) % 2,
                split=np.array(["train", "val", "test", "train"] * (n // 4)),
                image_path=np.array([f"img{i}.png" for i in range(n)]))


def test_npz_embeddings_round_trip(tmp_path):
    path = tmp_path / "emb.npz"
    np.savez(path, **_embedding_arrays())
    splits = load_splits("embeddings", path=str(path))
    assert set(splits) == {"train", "val", "test"}
    train = splits["train"]
    assert train.x.shape == (20, 8) and train.n_groups == 4
    assert {"prediction", "image_path"} <= set(train.metadata.columns)


def test_parquet_embeddings_with_emb_columns(tmp_path):
    arrays = _embedding_arrays()
    frame = pd.DataFrame({f"emb_{i}": arrays["embeddings"][:, i] for i in range(8)})
    frame["labels"] = arrays["labels"]
    frame["groups"] = arrays["spurious"] * 2 + arrays["labels"]
    path = tmp_path / "emb.parquet"
    frame.to_parquet(path)
    ds = load_splits("embeddings", path=str(path))["all"]
    np.testing.assert_allclose(ds.x, arrays["embeddings"], rtol=1e-6)
    assert ds.n_groups == 4 and ds.a is None


@pytest.mark.parametrize("change, message", [
    (dict(labels=np.arange(39) % 2), "different lengths"),
    (dict(embeddings=np.full((40, 8), np.nan)), "NaN"),
    (dict(labels=np.arange(40) * 1.5), "integer class indices"),
])
def test_bad_embedding_files(tmp_path, change, message):
    arrays = {**_embedding_arrays(), **change}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SpurlabError, match=message):
        read_embeddings_file(path)


def test_embedding_file_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found"):
        read_embeddings_file(tmp_path / "none.npz")
    np.savez(tmp_path / "nolabels.npz", embeddings=np.zeros((3, 2)))
    with pytest.raises(SpurlabError, match="no 'labels' entry"):
        read_embeddings_file(tmp_path / "nolabels.npz")


@pytest.mark.parametrize("bad, name", [({"strength": 1.5}, "strength"), ({"difficulty": "huge"}, "difficulty"),
                                       ({"n_train": -3}, "n_train"), ({"val_fraction": 0}, "val_fraction")])
def test_spuco_mnist_parameters_are_checked_by_name_before_reading_mnist(bad, name, tmp_path):
    with pytest.raises(SpurlabError, match=f"parameter '{name}'"):
        load_splits("spuco-mnist", data_dir=tmp_path, **bad)  # an empty folder: refused before any file is read
