"""CIFAR-10/100 loaders on generated replicas of both on-disk layouts, and the safe unpickler."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from spurlab.data import dataset_entries, load_splits
from spurlab.data import injections as inj
from spurlab.data.cifar import read_cifar
from spurlab.data.cifar_names import CIFAR10_CLASSES, CIFAR100_COARSE, CIFAR100_FINE, CIFAR100_SUPERCLASSES
from spurlab.data.replicas import main as replicas_main
from spurlab.data.replicas import py2_pickle, write_cifar_replica
from spurlab.data.safe_pickle import load_plain_pickle, loads_plain_pickle
from spurlab.errors import DataNotFoundError, SpurlabError

N10 = (250, 100)
N100 = (600, 200)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cifar")
    return {"root": root,
            "cifar10": write_cifar_replica(root, "cifar10", n_train=N10[0], n_test=N10[1], seed=3),
            "cifar100": write_cifar_replica(root, "cifar100", n_train=N100[0], n_test=N100[1], seed=4)}


def _copy_layout(replicas, tmp_path: Path, folder: str) -> Path:
    shutil.copytree(replicas["root"] / folder, tmp_path / folder)
    return tmp_path


# ------------------------------------------------------------------ reading both layouts
@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_both_layouts_read_exactly_what_was_written(replicas, variant):
    written = replicas[variant].arrays
    for layout in ("binary", "python"):
        archive = read_cifar(replicas["root"], variant, layout)
        assert archive.layout == layout
        for split, n in zip(("train", "test"), N10 if variant == "cifar10" else N100):
            part = archive.splits[split]
            assert part.images.shape == (n, 3, 32, 32) and part.images.dtype == np.uint8
            assert part.labels.dtype == np.int64
            np.testing.assert_array_equal(part.images, written[split].images)
            np.testing.assert_array_equal(part.labels, written[split].labels)
            if variant == "cifar100":
                np.testing.assert_array_equal(part.coarse, written[split].coarse)
                assert 0 <= part.coarse.min() and part.coarse.max() < 20
            assert 0 <= part.labels.min() and part.labels.max() < len(archive.class_names)
    assert read_cifar(replicas["root"], variant).layout == "binary"  # auto prefers no pickle


def test_first_binary_records_are_the_raw_bytes(replicas):
    raw10 = (replicas["root"] / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()
    part = read_cifar(replicas["root"], "cifar10", "binary").splits["train"]
    assert part.labels[0] == raw10[0]
    assert part.images[0].tobytes() == raw10[1:3073]  # R plane, G plane, B plane, row-major
    assert part.labels[1] == raw10[3073]
    raw100 = (replicas["root"] / "cifar-100-binary" / "test.bin").read_bytes()
    part = read_cifar(replicas["root"], "cifar100", "binary").splits["test"]
    assert (part.coarse[0], part.labels[0]) == (raw100[0], raw100[1])
    assert part.images[0].tobytes() == raw100[2:3074]


def test_python_layout_matches_the_standard_pickle_module(replicas):
    # the replicas are trusted files, so the stdlib unpickler may read them for comparison
    folder = replicas["root"] / "cifar-10-batches-py"
    with open(folder / "data_batch_1", "rb") as fh:
        reference = pickle.load(fh, encoding="latin1")
    ours = load_plain_pickle(folder / "data_batch_1")
    assert sorted(ours) == ["batch_label", "data", "filenames", "labels"]
    np.testing.assert_array_equal(ours["data"], reference["data"])
    assert ours["labels"] == reference["labels"] and ours["filenames"] == reference["filenames"]
    part = read_cifar(replicas["root"], "cifar10", "python").splits["train"]
    assert part.images[0].reshape(-1).tolist() == reference["data"][0].tolist()
    assert part.labels[0] == reference["labels"][0] and part.filenames[0] == reference["filenames"][0]
    meta = load_plain_pickle(folder / "batches.meta")
    assert tuple(meta["label_names"]) == CIFAR10_CLASSES
    meta100 = load_plain_pickle(replicas["root"] / "cifar-100-python" / "meta")
    assert tuple(meta100["coarse_label_names"]) == CIFAR100_COARSE
    assert tuple(meta100["fine_label_names"]) == CIFAR100_FINE


def test_python3_pickles_of_the_same_batch_also_load(tmp_path):
    batch = {"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), "labels": [3, 8],
             "weights": np.asfortranarray(np.arange(6, dtype=">i4").reshape(2, 3)), b"raw": b"\x00\xff"}
    for protocol in (2, 3, 4, 5):
        loaded = loads_plain_pickle(pickle.dumps(batch, protocol=protocol))
        np.testing.assert_array_equal(loaded["data"], batch["data"])
        np.testing.assert_array_equal(loaded["weights"], batch["weights"])
        assert loaded["weights"].dtype == np.dtype(">i4") and loaded["labels"] == [3, 8]
        assert loaded[b"raw"] == b"\x00\xff"


def test_python2_style_pickles_round_trip_through_both_unpicklers():
    obj = {"ints": [0, 255, 256, 70000, -5], "flags": (True, False, None), "wide": (1, 2, 3, 4),
           "text": "x" * 300, "labels": list(range(2500)), "grid": np.arange(12, dtype="<f4").reshape(3, 4)}
    data = py2_pickle(obj)
    for loaded in (loads_plain_pickle(data), pickle.loads(data, encoding="latin1")):
        np.testing.assert_array_equal(loaded.pop("grid"), obj["grid"])
        assert loaded == {k: v for k, v in obj.items() if k != "grid"}


# ------------------------------------------------------------------ refusing tampered files
class _Payload:
    """Pickles to a call of ``func(*args)``: what a tampered CIFAR file would contain."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, object]:
    return {
        "os.system": {"data": _Payload(os.system, f"touch {marker}"), "labels": [0]},
        "builtins.eval": {"data": np.zeros((1, 3072), np.uint8),
                          "labels": _Payload(eval, f"__import__('pathlib').Path({str(marker)!r}).write_text('x')")},
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
def test_a_malicious_pickle_is_refused_and_runs_nothing(replicas, tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_payloads(marker)[kind], protocol=2)
    pickle.loads(payload)  # control: the plain pickle module *does* run the payload
    assert marker.exists()
    marker.unlink()

    data_dir = _copy_layout(replicas, tmp_path / "data", "cifar-10-batches-py")
    (data_dir / "cifar-10-batches-py" / "data_batch_2").write_bytes(payload)
    with pytest.raises(SpurlabError, match="refused to load .*data_batch_2") as info:
        load_splits("cifar10", data_dir=data_dir, layout="python")
    assert "system" in str(info.value) or "eval" in str(info.value)
    assert "hint:" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("obj, match", [
    ({"data": np.array([1, "two"], dtype=object)}, "refused"),           # object arrays hold arbitrary objects
    ({"data": np.zeros(2, dtype=[("a", "u1"), ("b", "f4")])}, "refused"),  # structured dtypes
    ({"when": __import__("datetime").date(2020, 1, 1)}, "refused"),      # any other class
])
def test_anything_but_plain_data_is_refused(obj, match):
    for protocol in (2, 4, 5):
        with pytest.raises(SpurlabError, match=match):
            loads_plain_pickle(pickle.dumps(obj, protocol=protocol))


def test_broken_pickles_raise_clear_errors():
    good = pickle.dumps({"data": np.zeros((2, 3), np.uint8)}, protocol=4)
    with pytest.raises(SpurlabError, match="not a readable pickle"):
        loads_plain_pickle(good[: len(good) // 2])
    looped: list = []
    looped.append(looped)
    with pytest.raises(SpurlabError, match="nests containers"):
        loads_plain_pickle(pickle.dumps(looped))
    with pytest.raises(SpurlabError, match="persistent id"):
        loads_plain_pickle(b"\x80\x02X\x01\x00\x00\x00aQ.")  # BINPERSID on a string


# ------------------------------------------------------------------ registered datasets
def test_cifar_datasets_and_presets_are_registered():
    entries = dataset_entries()
    for name in ("cifar10", "cifar100", "cifar10-cats-ships", "cifar10-cats-dogs", "binary-cifar10",
                 "cifar100-coarse", "cifar100-superclasses"):
        assert name in entries and entries[name].needs_files
    assert entries["cifar10-cats-ships"].parameters()["classes"] == "3/8"
    assert entries["cifar100-superclasses"].parameters()["subclass_fraction"] == 0.25


@pytest.mark.parametrize("layout", ["binary", "python"])
def test_cifar10_splits_keep_each_image_traceable(replicas, layout):
    splits = load_splits("cifar10", data_dir=replicas["root"], layout=layout, seed=1)
    written = replicas["cifar10"].arrays
    n_val = sum(round(0.1 * n) for n in np.bincount(written["train"].labels))  # stratified carve
    assert {k: len(v) for k, v in splits.items()} == {"train": 250 - n_val, "val": n_val, "test": 100}
    for split, ds in splits.items():
        assert ds.x.dtype == np.float32 and ds.x.shape[1:] == (3, 32, 32)
        assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0 and ds.class_names == CIFAR10_CLASSES
        source = written["test" if split == "test" else "train"]
        idx = ds.metadata["index"].to_numpy()
        np.testing.assert_array_equal(ds.y, source.labels[idx])
        np.testing.assert_allclose(ds.x, source.images[idx] / 255.0, atol=1e-6)
        assert ("filename" in ds.metadata) == (layout == "python")
    train_val = np.concatenate([splits["train"].metadata["index"], splits["val"].metadata["index"]])
    assert sorted(train_val) == list(range(250))  # the val carve is a partition


def test_options_outside_the_injection_options_are_refused(replicas):
    from spurlab.data.cifar import build_cifar10

    with pytest.raises(SpurlabError, match="no parameter.*group_sizes"):
        build_cifar10(replicas["root"], spurious="patch", group_sizes={(0, 0): 5})


def test_cats_vs_ships_task(replicas):
    splits = load_splits("cifar10-cats-ships", data_dir=replicas["root"])
    for ds in splits.values():
        assert ds.class_names == ("cat", "ship")
        assert set(ds.metadata["label_name"][ds.y == 0]) == {"cat"}
        assert set(ds.metadata["label_name"][ds.y == 1]) == {"ship"}
    n_test = sum(np.isin(replicas["cifar10"].arrays["test"].labels, [3, 8]))
    assert len(splits["test"]) == n_test


@pytest.mark.parametrize("kind", list(inj.INJECTIONS))
def test_every_injection_works_on_32x32x3(replicas, kind):
    splits = load_splits("cifar10-cats-dogs", data_dir=replicas["root"], spurious=kind, p=0.8, frame_width=8,
                         seed=2)
    side = {"padding": 40, "noise_frame": 48}.get(kind, 32)
    train = splits["train"]
    assert train.x.shape[1:] == (3, side, side) and train.x.dtype == np.float32
    clean = replicas["cifar10"].arrays["train"].images[train.metadata["index"].to_numpy()] / 255.0
    if kind == "noise_frame":
        assert train.a is None
        np.testing.assert_allclose(train.x[:, :, 8:40, 8:40], clean, atol=1e-6)
        return
    for c in (0, 1):  # the planned correlation: round(p * n_c) aligned examples per class
        in_class = train.y == c
        assert (train.a[in_class] == c).sum() == round(0.8 * in_class.sum())
    assert splits["test"].a is not None and not np.allclose(train.x[:, :, :32, :32], clean)


def test_cifar100_fine_and_coarse_labels(replicas):
    fine = load_splits("cifar100", data_dir=replicas["root"], val_fraction=0.0)
    assert fine["train"].n_classes == 100 and fine["train"].class_names == CIFAR100_FINE
    coarse = load_splits("cifar100-coarse", data_dir=replicas["root"], layout="python")
    ds = coarse["test"]
    assert ds.n_classes == 20 and ds.class_names == CIFAR100_COARSE and ds.a is None
    for sub, sup in zip(ds.metadata["subclass"], ds.metadata["superclass"]):
        assert sub in CIFAR100_SUPERCLASSES[sup]
    np.testing.assert_array_equal(ds.y, ds.metadata["coarse_label"])


def test_superclasses_keep_one_subclass_per_superclass_at_a_quarter(replicas):
    splits = load_splits("cifar100-superclasses", data_dir=replicas["root"], seed=5)
    train, test = splits["train"], splits["test"]
    reduced = sorted(set(train.metadata["subclass"][train.metadata["reduced"]]))
    assert len(reduced) == 20
    assert {sup for sup, members in CIFAR100_SUPERCLASSES.items() if set(members) & set(reduced)} == set(
        CIFAR100_COARSE)  # one per superclass
    written = replicas["cifar100"].arrays["train"].labels
    seen = np.concatenate([train.metadata["fine_label"], splits["val"].metadata["fine_label"]])
    for name in CIFAR100_FINE:
        n_written, n_seen = (written == CIFAR100_FINE.index(name)).sum(), (seen == CIFAR100_FINE.index(name)).sum()
        assert n_seen == (round(0.25 * n_written) if name in reduced else n_written)
    assert len(test) == N100[1]  # test keeps every subclass at full size
    np.testing.assert_array_equal(train.a, train.metadata["reduced"].astype(int))
    assert train.attr_names == ("other subclasses", "reduced subclass")
    assert set(train.minority_groups()) == {2 * c + 1 for c in range(20)}
    again = load_splits("cifar100-superclasses", data_dir=replicas["root"], seed=5)["train"]
    assert again.metadata.equals(train.metadata)
    other = load_splits("cifar100-superclasses", data_dir=replicas["root"], seed=6)["train"]
    assert set(other.metadata["subclass"][other.metadata["reduced"]]) != set(reduced)


def test_superclasses_with_an_injection_on_top(replicas):
    framed = load_splits("cifar100-superclasses", data_dir=replicas["root"], spurious="noise_frame", frame_width=2)
    assert framed["train"].x.shape[1:] == (3, 36, 36)
    np.testing.assert_array_equal(framed["train"].a, framed["train"].metadata["reduced"].astype(int))
    patched = load_splits("cifar100-superclasses", data_dir=replicas["root"], classes="0/1", spurious="patch")
    assert patched["train"].attr_names == ("patch=red", "patch=green")
    assert patched["train"].metadata["reduced"].any()


def test_reduced_subclasses_by_name_or_first(replicas):
    named = load_splits("cifar100", data_dir=replicas["root"], labels="coarse", reduced_subclasses="beaver,trout",
                        subclass_fraction=0.0)
    seen = set(named["train"].metadata["subclass"]) | set(named["val"].metadata["subclass"])
    assert "beaver" not in seen and "trout" not in seen and "dolphin" in seen
    assert {"beaver", "trout"} <= set(named["test"].metadata["subclass"][named["test"].metadata["reduced"]])
    first = load_splits("cifar100", data_dir=replicas["root"], labels="coarse", reduced_subclasses="first")
    reduced = set(first["test"].metadata["subclass"][first["test"].metadata["reduced"]])
    assert reduced == {members[0] for members in CIFAR100_SUPERCLASSES.values()}


@pytest.mark.parametrize("params, match", [
    ({"reduced_subclasses": "random"}, "labels='coarse'"),
    ({"labels": "coarse", "reduced_subclasses": "not_a_class"}, "unknown: not_a_class"),
    ({"labels": "medium"}, "parameter 'labels' must be one of 'fine', 'coarse'"),
    ({"layout": "zip"}, "parameter 'layout' must be one of"),
    ({"labels": "coarse", "reduced_subclasses": "first", "subclass_fraction": 1.5}, "subclass_fraction"),
    ({"labels": "coarse", "reduced_subclasses": 3}, "must name distinct"),
    ({"labels": "coarse", "reduced_subclasses": "beaver,beaver"}, "must name distinct"),
])
def test_bad_cifar100_parameters(replicas, params, match):
    with pytest.raises(SpurlabError, match=match):
        load_splits("cifar100", data_dir=replicas["root"], **params)


# ------------------------------------------------------------------ missing and damaged files
def test_missing_cifar_says_where_it_looked(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-bin") as info:
        load_splits("cifar10", data_dir=tmp_path)
    assert "cs.toronto.edu" in str(info.value) and "replicas" in str(info.value)
    with pytest.raises(DataNotFoundError, match="cifar-100-python"):
        load_splits("cifar100", data_dir=tmp_path, layout="python")


def test_incomplete_truncated_or_out_of_range_files(replicas, tmp_path):
    data_dir = _copy_layout(replicas, tmp_path, "cifar-10-batches-bin")
    folder = data_dir / "cifar-10-batches-bin"
    batch = folder / "data_batch_3.bin"
    raw = batch.read_bytes()
    batch.write_bytes(raw[:-100])
    with pytest.raises(SpurlabError, match="data_batch_3.bin holds .* not a whole number"):
        load_splits("cifar10", data_dir=data_dir)
    batch.write_bytes(bytes([12]) + raw[1:])
    with pytest.raises(SpurlabError, match=r"labels range over .*12, outside 0..9"):
        load_splits("cifar10", data_dir=data_dir)
    batch.unlink()
    with pytest.raises(DataNotFoundError, match="missing data_batch_3.bin"):
        load_splits("cifar10", data_dir=data_dir)


def test_python_batch_without_cifar_content(replicas, tmp_path):
    data_dir = _copy_layout(replicas, tmp_path, "cifar-100-python")
    train = data_dir / "cifar-100-python" / "train"
    train.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(SpurlabError, match="holds a list, expected a dict"):
        load_splits("cifar100", data_dir=data_dir)
    train.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [1, 2]}))
    with pytest.raises(SpurlabError, match="no 'coarse_labels' entry"):
        load_splits("cifar100", data_dir=data_dir)
    train.write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8)}))
    with pytest.raises(SpurlabError, match="must be uint8 of shape"):
        load_splits("cifar100", data_dir=data_dir)


def test_replica_command_line(tmp_path, capsys):
    replicas_main([str(tmp_path), "--only", "cifar10", "--seed", "1"])
    assert (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").stat().st_size == 100 * 3073
    assert (tmp_path / "cifar-10-batches-py" / "batches.meta").is_file()
    assert "spurlab datasets show cifar10" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        replicas_main([str(tmp_path), "--only", "imagenet"])
