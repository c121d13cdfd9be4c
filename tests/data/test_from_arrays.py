"""DatasetSplits.from_arrays: your own arrays as named splits."""
import numpy as np
import pytest

from spurlab.data.grouped import DatasetSplits
from spurlab.errors import SpurlabError


def test_string_labels_and_attributes_are_numbered_and_named():
    y = np.array(["dog", "cat", "dog", "cat"] * 5)
    a = np.array(["indoor", "outdoor"] * 10)
    split = np.array(["train", "val", "test", "train"] * 5)
    splits = DatasetSplits.from_arrays(np.arange(40, dtype=np.float32).reshape(20, 2), y, attributes=a, split=split)
    assert list(splits) == ["train", "val", "test"] and [len(s) for s in splits.values()] == [10, 5, 5]
    train = splits["train"]
    assert train.class_names == ("cat", "dog") and train.attr_names == ("indoor", "outdoor")
    assert train.group_names == ["y=cat,a=indoor", "y=cat,a=outdoor", "y=dog,a=indoor", "y=dog,a=outdoor"]
    np.testing.assert_array_equal(train.y, (y[split == "train"] == "dog").astype(int))
    np.testing.assert_array_equal(train.x, np.arange(40, dtype=np.float32).reshape(20, 2)[split == "train"])


def test_given_names_fix_the_order_and_codes_name_the_splits():
    y = np.array(["b", "a", "b", "a"])
    splits = DatasetSplits.from_arrays(np.zeros((4, 3)), y, groups=np.array([0, 1, 2, 1]),
                                       split=np.array([0, 0, 2, 1]), class_names=["b", "a"])
    assert splits["train"].class_names == ("b", "a") and list(splits["train"].y) == [0, 1]
    assert list(splits["train"].g) == [0, 1] and list(splits) == ["train", "val", "test"]
    with pytest.raises(SpurlabError, match="not among the names"):
        DatasetSplits.from_arrays(np.zeros((4, 3)), y, class_names=["a", "c"])
    with pytest.raises(SpurlabError, match="split codes"):
        DatasetSplits.from_arrays(np.zeros((4, 3)), y, split=np.array([0, 1, 5, 1]))
    with pytest.raises(SpurlabError, match="different lengths"):
        DatasetSplits.from_arrays(np.zeros((3, 3)), y)


def test_without_a_split_column_a_seeded_split_keeps_every_group_in_every_split():
    rng = np.random.default_rng(0)
    y, a = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    first = DatasetSplits.from_arrays(rng.random((200, 4)), y, attributes=a, seed=3)
    again = DatasetSplits.from_arrays(rng.random((200, 4)), y, attributes=a, seed=3)
    assert [len(s) for s in first.values()] == [len(s) for s in again.values()]
    np.testing.assert_array_equal(first["test"].y, again["test"].y)
    for ds in first.values():
        assert (ds.group_counts() > 0).all()
    assert abs(len(first["train"]) - 120) <= 4
