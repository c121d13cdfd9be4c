"""Waterbirds and CelebA loaders (spurlab.data.benchmarks) on generated replicas of their layouts."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from spurlab.data import load_splits
from spurlab.data.replicas import WATERBIRDS_COUNTS, write_celeba_replica, write_waterbirds_replica
from spurlab.errors import DataNotFoundError, SpurlabError

SIZE = 24


@pytest.fixture(scope="module")
def waterbirds(tmp_path_factory):
    return write_waterbirds_replica(tmp_path_factory.mktemp("wb"), seed=1)


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    return write_celeba_replica(tmp_path_factory.mktemp("celeba"), n_images=90, image_size=(89, 109), seed=2)


def _group_counts(frame: pd.DataFrame, y: str, a: str) -> list[int]:
    return [int(((frame[y] == yy) & (frame[a] == aa)).sum()) for yy in (0, 1) for aa in (0, 1)]


# ------------------------------------------------------------------ Waterbirds
def test_waterbirds_shapes_and_group_counts_per_split(waterbirds):
    splits = load_splits("waterbirds", data_dir=waterbirds.data_dir, image_size=SIZE)
    assert list(splits) == ["train", "val", "test"]
    for split, ds in splits.items():
        assert ds.x.shape == (sum(WATERBIRDS_COUNTS[split]), 3, SIZE, SIZE) and ds.x.dtype == np.float32
        assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
        assert ds.group_counts().tolist() == list(WATERBIRDS_COUNTS[split])
        assert ds.class_names == ("landbird", "waterbird") and ds.attr_names == ("land", "water")
        assert {"img_filename", "place_filename"} <= set(ds.metadata.columns)


def test_waterbirds_pairs_each_image_with_its_row(waterbirds):
    train = load_splits("waterbirds", data_dir=waterbirds.data_dir, image_size=SIZE)["train"]
    expected = waterbirds.table.set_index("img_filename").loc[train.metadata["img_filename"]]
    np.testing.assert_array_equal(train.y, expected["y"])
    np.testing.assert_array_equal(train.a, expected["place"])
    corner_blue = train.x[:, 2, :3, :3].mean(axis=(1, 2))  # the replica paints water backgrounds blue
    assert corner_blue[train.a == 1].min() > corner_blue[train.a == 0].max()


def test_waterbirds_limit_is_a_seeded_subsample(waterbirds):
    first = load_splits("waterbirds", data_dir=waterbirds.data_dir, image_size=SIZE, limit=10, seed=3)
    again = load_splits("waterbirds", data_dir=waterbirds.data_dir, image_size=SIZE, limit=10, seed=3)
    assert [len(ds) for ds in first.values()] == [10, 10, 10]
    assert first["train"].metadata.equals(again["train"].metadata)
    np.testing.assert_array_equal(first["train"].x, again["train"].x)


def test_waterbirds_missing_or_damaged_files(waterbirds, tmp_path):
    with pytest.raises(DataNotFoundError, match="Waterbirds not found.*waterbirds_v1.0/metadata.csv"):
        load_splits("waterbirds", data_dir=tmp_path)
    root = tmp_path / "waterbirds_v1.0"
    shutil.copytree(waterbirds.folders[0], root)
    first_image = root / waterbirds.table["img_filename"][0]
    first_image.unlink()
    with pytest.raises(DataNotFoundError, match="image file missing: .*" + first_image.name):
        load_splits("waterbirds", data_dir=tmp_path, image_size=SIZE)
    waterbirds.table.drop(columns=["place"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(SpurlabError, match="lacks column.*place"):
        load_splits("waterbirds", data_dir=tmp_path)


# ------------------------------------------------------------------ CelebA
def test_celeba_shapes_and_group_counts_per_split(celeba):
    splits = load_splits("celeba", data_dir=celeba.data_dir, image_size=SIZE)
    table = celeba.table
    for code, (split, ds) in enumerate(splits.items()):
        assert split == ("train", "val", "test")[code]
        rows = table[table["split"] == code]
        assert ds.x.shape == (len(rows), 3, SIZE, SIZE) and ds.x.dtype == np.float32
        assert ds.group_counts().tolist() == _group_counts(rows, "Blond_Hair", "Male")
        assert ds.class_names == ("not Blond_Hair", "Blond_Hair") and ds.attr_names == ("not Male", "Male")
        assert ds.metadata["file"].tolist() == rows["file"].tolist()
    train = splits["train"]
    hair = train.x[:, 0, :3, :3].mean(axis=(1, 2))  # the replica paints blond hair bright
    assert hair[train.y == 1].min() > hair[train.y == 0].max()


def test_celeba_attributes_are_chosen_by_name(celeba):
    splits = load_splits("celeba", data_dir=celeba.data_dir, target="Smiling", spurious="Young", image_size=SIZE)
    rows = celeba.table[celeba.table["split"] == 0]
    assert splits["train"].group_counts().tolist() == _group_counts(rows, "Smiling", "Young")
    assert splits["train"].class_names == ("not Smiling", "Smiling")
    assert splits["train"].attr_names == ("not Young", "Young")
    with pytest.raises(SpurlabError, match="no attribute 'Blonde'") as info:
        load_splits("celeba", data_dir=celeba.data_dir, target="Blonde")
    assert "Blond_Hair" in str(info.value)  # the hint lists the real names


def test_celeba_missing_or_damaged_files(celeba, tmp_path):
    with pytest.raises(DataNotFoundError, match="CelebA not found"):
        load_splits("celeba", data_dir=tmp_path)
    root = tmp_path / "celeba"
    shutil.copytree(celeba.folders[0], root)
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(DataNotFoundError, match="list_eval_partition.txt"):
        load_splits("celeba", data_dir=tmp_path)
    shutil.copy(celeba.folders[0] / "list_eval_partition.txt", root)
    (root / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataNotFoundError, match="000002.jpg"):
        load_splits("celeba", data_dir=tmp_path, image_size=SIZE)
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    (root / "list_attr_celeba.txt").write_text("\n".join(lines[:3] + [lines[3].rsplit(" ", 2)[0]]) + "\n")
    with pytest.raises(SpurlabError, match="do not have 40 attribute values"):
        load_splits("celeba", data_dir=tmp_path)
    lines[3] = lines[3].rsplit(" ", 1)[0] + " 0"
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(SpurlabError, match="must be 1 or -1"):
        load_splits("celeba", data_dir=tmp_path)


def test_splits_are_decoded_per_batch_and_never_whole(celeba, waterbirds, monkeypatch):
    import spurlab.data.lazy_images as lazy

    for name, root in (("celeba", celeba.data_dir), ("waterbirds", waterbirds.data_dir)):
        train = load_splits(name, data_dir=root, image_size=8)["train"]
        assert train.is_lazy and train.x.stats.decoded == 0  # nothing decoded at load time
        assert train.x[:3].shape == (3, 3, 8, 8) and train.x.stats.decoded == 3
    one_image = 3 * 8 * 8 * 4
    monkeypatch.setattr(lazy, "available_memory_bytes", lambda: 6 * one_image / 0.8)  # 6 images fit
    with pytest.raises(SpurlabError, match="materializing .* images as float32 needs") as info:
        np.asarray(train.x)
    assert "per batch" in str(info.value) and train.x.stats.decoded == 3
    splits = load_splits("celeba", data_dir=celeba.data_dir, image_size=8, limit=2)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 2, 2]
