"""The GroupedDataset / DatasetSplits contract."""
import numpy as np
import pandas as pd
import pytest
import torch

from spurlab import GroupedDataset, SpurlabError
from spurlab.data.grouped import DatasetSplits


def make(n=12):
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])[:n]
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1])[:n]
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    meta = pd.DataFrame({"id": np.arange(n) * 10})
    return GroupedDataset(x=x, y=y, a=a, class_names=("landbird", "waterbird"), attr_names=("land", "water"),
                          metadata=meta)


def test_groups_are_y_times_attrs_plus_a():
    ds = make()
    assert ds.n_groups == 4
    np.testing.assert_array_equal(ds.g, ds.y * 2 + ds.a)
    assert ds.group_names == ["y=landbird,a=land", "y=landbird,a=water", "y=waterbird,a=land",
                              "y=waterbird,a=water"]
    np.testing.assert_array_equal(ds.group_counts(), [4, 2, 2, 4])


def test_partition_covers_every_example_once():
    ds = make()
    part = ds.partition()
    assert set(part) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    idx = np.sort(np.concatenate(list(part.values())))
    np.testing.assert_array_equal(idx, np.arange(len(ds)))
    np.testing.assert_array_equal(part[(1, 0)], [9, 10])


def test_minority_and_summary():
    ds = make()
    np.testing.assert_array_equal(ds.is_minority(), ds.a != ds.y)
    assert ds.minority_groups() == [1, 2]
    summary = ds.summary()
    assert list(summary.columns) == ["group", "name", "y", "a", "count", "share"]
    assert summary["count"].sum() == len(ds)
    assert summary.loc[1, "share"] == pytest.approx(2 / 12)


def test_subset_keeps_everything_aligned():
    ds = make()
    sub = ds.subset([1, 4, 9])
    assert len(sub) == 3
    np.testing.assert_array_equal(sub.y, [0, 0, 1])
    np.testing.assert_array_equal(sub.a, [0, 1, 0])
    assert sub.metadata["id"].tolist() == [10, 40, 90]
    assert sub.class_names == ds.class_names
    sub_mask = ds.subset(ds.y == 1)
    assert len(sub_mask) == 6
    assert len(ds.select_groups([1, 2])) == 4


def test_conversion_to_torch():
    ds = make()
    x, y, g = ds.torch_dataset()[3]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert int(y) == 0 and int(g) == 0
    batches = list(ds.dataloader(batch_size=5, shuffle=True, seed=1))
    assert [len(b[0]) for b in batches] == [5, 5, 2]
    again = list(ds.dataloader(batch_size=5, shuffle=True, seed=1))
    assert torch.equal(batches[0][1], again[0][1])


def test_explicit_groups_without_attribute():
    ds = GroupedDataset(x=np.zeros((4, 2)), y=[0, 1, 0, 1], groups=[0, 1, 2, 2])
    assert ds.n_groups == 3
    assert ds.group_name(2) == "group=2"
    np.testing.assert_array_equal(ds.group_counts(), [1, 1, 2])


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=np.zeros((3, 2)), y=[0, 1]), "different lengths"),
    (dict(x=np.array([[0.0], [np.nan]]), y=[0, 1]), "NaN"),
    (dict(x=np.array([[0.0], [np.inf]]), y=[0, 1]), "NaN or infinite"),
    (dict(x=np.zeros((2, 1)), y=[0, 2], class_names=("a", "b")), "only 2 classes"),
    (dict(x=np.zeros((2, 1)), y=[0, -1]), "negative"),
    (dict(x=np.zeros((2, 1)), y=[0.5, 1]), "integer class indices"),
    (dict(x=np.zeros((2, 1)), y=[0, 1], a=[0, 3], attr_names=("p", "q")), "only 2 attribute values"),
])
def test_bad_input_is_refused_clearly(kwargs, message):
    with pytest.raises(SpurlabError, match=message):
        GroupedDataset(**kwargs)


def test_splits_mapping_and_summary():
    ds = make()
    splits = DatasetSplits({"train": ds, "test": ds.subset([0, 5, 9])}, name="toy")
    assert list(splits) == ["train", "test"]
    assert splits["test"].split == "test" and splits["test"].name == "toy"
    table = splits.summary()
    assert table["train"].tolist() == [4, 2, 2, 4]
    assert table["test"].tolist() == [1, 1, 1, 0]
    assert "val" not in splits and "test" in splits and splits.get("val") is None
    with pytest.raises(SpurlabError, match="(?s)no split 'val'.*available splits: train, test"):
        splits["val"]
