"""image-table: a user's folder of images + CSV, decoded lazily, with its cache and its bad inputs."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spurlab.data import load_splits
from spurlab.data.lazy_images import LazyImages
from spurlab.errors import DataNotFoundError, SpurlabError

SIZE = 16
# labels and places as strings; "dog" images are bright in red, "outdoor" ones bright in blue
ANIMALS, PLACES = ("dog", "cat"), ("outdoor", "indoor")


def write_folder(root: Path, n: int, split_column: bool = True, seed: int = 0) -> pd.DataFrame:
    """n small images (PNG and JPEG) under root/img and root/table.csv; 80% of rows are majority."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        y = i % 2
        a = y if rng.random() < 0.8 else 1 - y
        picture = np.full((12 + i % 5, 10, 3), 40, dtype=np.uint8)
        picture[..., 0] = 220 if ANIMALS[y] == "dog" else 30
        picture[..., 2] = 220 if PLACES[a] == "outdoor" else 30
        picture[..., 1] = np.linspace(0, 120, picture.shape[1])  # a left-right gradient (flips show)
        name = f"img/{i:04d}.{'png' if i % 3 else 'jpg'}"
        Image.fromarray(picture).save(root / name)
        row = {"path": name, "animal": ANIMALS[y], "place": PLACES[a], "camera": ("phone", "dslr")[i % 3 == 0]}
        if split_column:
            row["split"] = ("train", "train", "train", "val", "test")[i % 5]
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.to_csv(root / "table.csv", index=False)
    return frame


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-images")
    return root, write_folder(root, 60)


def _load(root: Path, **params):
    params = {"label": "animal", "spurious": "place", "image_size": SIZE, **params}
    return load_splits("image-table", table=str(root / "table.csv"), **params)


def test_groups_names_splits_and_metadata(folder):
    root, frame = folder
    splits = _load(root)
    assert list(splits) == ["train", "val", "test"]
    for split, ds in splits.items():
        rows = frame[frame["split"] == split].reset_index(drop=True)
        assert len(ds) == len(rows) and ds.x.shape == (len(rows), 3, SIZE, SIZE) and ds.x.dtype == np.float32
        assert ds.class_names == ("cat", "dog")  # sorted names
        assert ds.attr_names == ("indoor", "outdoor")  # ordered so that a == y is the majority
        assert [ds.class_names[c] for c in ds.y] == rows["animal"].tolist()
        assert [ds.attr_names[v] for v in ds.a] == rows["place"].tolist()
        assert ds.metadata["path"].tolist() == rows["path"].tolist()
        assert ds.metadata["camera"].tolist() == rows["camera"].tolist()
        assert not {"animal", "place", "split"} & set(ds.metadata.columns)
    train = splits["train"]
    expected = [int(((frame["split"] == "train") & (frame["animal"] == c) & (frame["place"] == p)).sum())
                for c in ("cat", "dog") for p in ("indoor", "outdoor")]
    assert train.group_counts().tolist() == expected
    assert train.is_minority().sum() == expected[1] + expected[2]
    assert train.group_names[1] == "y=cat,a=outdoor"
    pixels = train.x[:]  # each image is paired with its row: red = dog, blue = outdoor
    red, blue = pixels[:, 0].mean(axis=(1, 2)), pixels[:, 2].mean(axis=(1, 2))
    np.testing.assert_array_equal(red > 0.5, train.y == 1)
    np.testing.assert_array_equal(blue > 0.5, train.a == 1)


def test_seeded_split_when_the_table_has_none(tmp_path):
    frame = write_folder(tmp_path, 80, split_column=False)
    first = _load(tmp_path, seed=3, val_fraction=0.25, test_fraction=0.25)
    again = _load(tmp_path, seed=3, val_fraction=0.25, test_fraction=0.25)
    other = _load(tmp_path, seed=4, val_fraction=0.25, test_fraction=0.25)
    assert sum(len(ds) for ds in first.values()) == len(frame)
    assert {s: len(ds) for s, ds in first.items()} == {"train": 40, "val": 20, "test": 20}
    assert first["test"].metadata["path"].tolist() == again["test"].metadata["path"].tolist()
    assert first["test"].metadata["path"].tolist() != other["test"].metadata["path"].tolist()
    for ds in first.values():  # stratified by group: every group in every split
        assert (ds.group_counts() > 0).all()


def test_group_column_without_an_attribute(folder, tmp_path):
    root, frame = folder
    frame.assign(group=frame["animal"] + "/" + frame["place"]).to_csv(tmp_path / "t.csv", index=False)
    splits = load_splits("image-table", table=str(tmp_path / "t.csv"), image_root=str(root), label="animal",
                         image_size=SIZE)
    train = splits["train"]
    assert train.a is None and train.n_groups == 4 and train.has_groups
    assert train.metadata["path"].tolist() == frame.loc[frame["split"] == "train", "path"].tolist()


def _traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_images_are_decoded_lazily_in_bounded_memory(tmp_path):
    sizes, peaks = (50, 500), {}
    for n in sizes:
        write_folder(tmp_path / str(n), n, split_column=False)
        peaks[n] = _traced_peak(lambda: _load(tmp_path / str(n), image_size=32, test_fraction=0.0, val_fraction=0.0))
    whole_500 = 500 * 3 * 32 * 32 * 4  # the whole split as float32: 6 MB
    assert peaks[500] < whole_500 / 10
    assert peaks[500] - peaks[50] < 450 * 3 * 32 * 32 * 4 / 20  # per image: file names, never pixels
    train = _load(tmp_path / "500", image_size=32, test_fraction=0.0, val_fraction=0.0)["train"]
    assert isinstance(train.x, LazyImages) and train.x.stats.decoded == 0
    subset = train.subset(train.y == 1)  # subsetting stays lazy
    assert isinstance(subset.x, LazyImages) and train.x.stats.decoded == 0

    def one_epoch():
        for batch in train.x.epoch(batch_size=32):
            assert batch.shape[0] <= 32

    peak = _traced_peak(one_epoch)
    assert peak < whole_500 / 4 and peak < 4 * (32 * 3 * 32 * 32 * 4)  # a few batches, not the split
    assert train.x.stats.decoded == 500


def test_decoded_cache_is_hit_on_the_second_pass(folder, tmp_path):
    root, _ = folder
    cache = tmp_path / "cache"
    train = _load(root, cache=str(cache))["train"]
    first = np.concatenate(list(train.x.epoch(batch_size=7)))
    assert train.x.stats.decoded == len(train) and train.x.stats.cache_hits == 0
    assert train.x.cache.complete and [p.name for p in cache.iterdir() if p.suffix == ".tmp"] == []
    second = np.concatenate(list(train.x.epoch(batch_size=7)))
    assert train.x.stats.decoded == len(train) and train.x.stats.cache_hits == len(train)
    np.testing.assert_array_equal(first, second)
    rerun = _load(root, cache=str(cache))["train"]  # a second run finds the cache
    assert rerun.x.cache.complete
    np.testing.assert_array_equal(rerun.x[[3, 1]], first[[3, 1]])
    assert rerun.x.stats.decoded == 0 and rerun.x.stats.cache_hits == 2


def test_transform_normalises_and_augments_with_a_seed(folder):
    root, _ = folder
    plain = _load(root)["train"]
    imagenet = _load(root, normalize="imagenet")["train"]
    np.testing.assert_allclose(imagenet.x[:4][:, 0], (plain.x[:4][:, 0] - 0.485) / 0.229, rtol=1e-5, atol=1e-5)
    first = _load(root, augment=True, seed=1)
    again = _load(root, augment=True, seed=1)
    np.testing.assert_array_equal(first["train"].x[:8], again["train"].x[:8])
    assert not np.array_equal(first["train"].x[:8], plain.x[:8])
    np.testing.assert_array_equal(first["test"].x[:4], _load(root)["test"].x[:4])  # only train is augmented


# ------------------------------------------------------------------ bad input
def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(tmp_path / "bad.csv", index=False)
    return tmp_path / "bad.csv"


def test_bad_tables_are_named_errors(folder, tmp_path):
    root, frame = folder

    def load(table: Path, **params):
        return load_splits("image-table", table=str(table), image_root=str(root), label="animal", spurious="place",
                           image_size=SIZE, **params)

    with pytest.raises(SpurlabError, match=r"bad.csv has no column 'place' \(spurious attribute\)") as info:
        load(_write(tmp_path, frame.drop(columns=["place"])))
    assert "animal" in str(info.value)  # the hint lists the columns it has
    with pytest.raises(DataNotFoundError, match=r"bad.csv, row 5: image file missing: .*nowhere.png"):
        load(_write(tmp_path, frame.assign(path=frame["path"].where(frame.index != 4, "nowhere.png"))))
    (tmp_path / "header-only.csv").write_text("path,animal,place\n")
    with pytest.raises(SpurlabError, match="header-only.csv has no rows"):
        load(tmp_path / "header-only.csv")
    with pytest.raises(SpurlabError, match="label column 'animal' has a single class"):
        load(_write(tmp_path, frame.assign(animal="dog")))
    with pytest.raises(SpurlabError, match=r"row 2: split column 'split' has unknown value\(s\) 'holdout'"):
        load(_write(tmp_path, frame.assign(split=frame["split"].where(frame.index != 1, "holdout"))))
    with pytest.raises(SpurlabError, match=r"row 3: column 'animal' \(label\) is empty"):
        load(_write(tmp_path, frame.assign(animal=frame["animal"].where(frame.index != 2, None))))
    with pytest.raises(DataNotFoundError, match="image table not found"):
        load(tmp_path / "absent.csv")
    with pytest.raises(SpurlabError, match="needs the spurious attribute"):
        load_splits("image-table", table=str(root / "table.csv"), label="animal")


def test_a_corrupt_image_is_named_with_its_row_when_decoded(folder, tmp_path):
    root, frame = folder
    (tmp_path / "img").mkdir()
    for name in frame["path"]:
        (tmp_path / name).write_bytes((root / name).read_bytes())
    (tmp_path / frame["path"][0]).write_bytes(b"not an image at all")
    frame.to_csv(tmp_path / "table.csv", index=False)
    train = _load(tmp_path)["train"]  # loading only checks that the files exist
    with pytest.raises(SpurlabError, match=r"table.csv, row 1: cannot read image .*0000.jpg"):
        train.x[:4]
    assert train.x[1:3].shape == (2, 3, SIZE, SIZE)


def test_cifar_stays_uint8_in_memory(tmp_path):
    from spurlab.data.lazy_images import UInt8Images
    from spurlab.data.replicas import write_cifar_replica

    replica = write_cifar_replica(tmp_path, "cifar10", layout="binary", n_train=400, n_test=20, seed=0)
    splits = load_splits("cifar10", data_dir=tmp_path)
    test = splits["test"]
    assert isinstance(test.x, UInt8Images) and test.x.pixels.dtype == np.uint8
    batch = test.x[:5]
    assert batch.dtype == np.float32 and batch.shape == (5, 3, 32, 32)
    np.testing.assert_allclose(batch, replica.arrays["test"].images[test.metadata["index"][:5]] / 255.0, atol=1e-7)
    assert isinstance(test.subset(test.y == 0).x, UInt8Images)
    injected = load_splits("cifar10", data_dir=tmp_path, classes="3/8", spurious="patch", p=0.7)["train"]
    assert isinstance(injected.x, np.ndarray) and injected.x.dtype == np.float32  # injections draw in floats


def test_metadata_columns_reach_the_attribute_captioner(folder):
    from spurlab.audit.explain import attribute_metadata

    root, frame = folder
    val = _load(root)["val"]
    described = attribute_metadata(val)
    assert described["camera"].tolist() == frame.loc[frame["split"] == "val", "camera"].tolist()
    assert described["spurious"].tolist() == frame.loc[frame["split"] == "val", "place"].tolist()
