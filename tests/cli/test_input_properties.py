"""Property-based tests (hypothesis): random malformed inputs give a named SpurlabError or a valid result,
never another exception, and leave nothing behind.

* ``--set`` parsing, down to the declared constraints of a dataset and the configuration of a study;
* the embeddings-file loader, on random arrays saved as .npz/.parquet and on damaged bytes of a valid file.
"""
from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from spurlab.cli import app
from spurlab.data.dataset_registry import get_entry
from spurlab.data.embeddings import read_embeddings_file, splits_from_arrays
from spurlab.errors import SpurlabError
from spurlab.runs import parse_sets, parse_value
from spurlab.studies.study_base import apply_overrides, check_config, get_study

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

SET_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["abc", "-5", "0", "1e999", "nan", "inf", "-inf", "[1,", "[]", "{}", '{"a": 1}', "[1, 2]",
                     "true", "none", "1.5", "0.999999", "1e308", "[" * 50, "=", "patch", "balanced", " "]),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@FAST
@given(items=st.lists(st.text(max_size=20), max_size=4))
def test_set_parsing_never_raises_anything_but_a_named_error(items):
    try:
        parsed = parse_sets(items)
    except SpurlabError as exc:
        assert "--set" in str(exc)
        return
    assert set(parsed) <= {item.split("=", 1)[0].strip() for item in items}


@FAST
@given(text=SET_VALUES, default=st.sampled_from([0, 1.0, True, [1, 2], "text", None, [0.5]]))
def test_parse_value_against_any_default(text, default):
    try:
        parse_value(text, default)
    except SpurlabError:
        pass


DATASET_KEYS = {name: sorted(get_entry(name).parameters()) for name in
                ("linear-skew", "digits", "structured-features", "gaussian-core-spurious", "cifar100")}


@FAST
@given(dataset=st.sampled_from(sorted(DATASET_KEYS)), data=st.data())
def test_dataset_parameters_from_set_are_checked_by_name(dataset, data):
    entry = get_entry(dataset)
    key = data.draw(st.sampled_from(DATASET_KEYS[dataset]))
    value = data.draw(SET_VALUES)
    try:
        given_params = parse_sets([f"{key}={value}"])
        entry._check_params(given_params, {**(entry.defaults or {}), **given_params})
    except SpurlabError as exc:
        assert repr(key) in str(exc) or f"--set {key}" in str(exc) or "would need about" in str(exc), str(exc)


DECLARED_STUDIES = ("ood-failure-modes", "failure-directions", "spurious-memorization", "feature-contamination",
                    "critical-neurons")


@FAST
@given(name=st.sampled_from(DECLARED_STUDIES), data=st.data())
def test_study_overrides_are_checked_by_name(name, data):
    study = get_study(name)
    key = data.draw(st.sampled_from(sorted(study.default_config(True))))
    value = data.draw(SET_VALUES)
    try:
        study.validate(check_config(study, apply_overrides(study.default_config(True), [f"{key}={value}"])))
    except SpurlabError as exc:
        assert key in str(exc), str(exc)


# ------------------------------------------------------------------ embeddings files
def _load(path: Path) -> None:
    try:
        data = read_embeddings_file(path)
    except SpurlabError:
        return
    try:
        splits = splits_from_arrays(data)
    except SpurlabError:
        return
    assert sum(len(ds) for ds in splits.values()) == len(data["labels"])


ARRAY = st.one_of(
    st.lists(st.integers(-3, 3), min_size=0, max_size=8).map(np.array),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=8).map(np.array),
    st.lists(st.lists(st.floats(-5, 5, width=32), min_size=2, max_size=2), min_size=0, max_size=8).map(np.array),
    st.lists(st.text(max_size=3), min_size=0, max_size=8).map(lambda v: np.array(v, dtype=str)),
    st.lists(st.booleans(), min_size=0, max_size=8).map(np.array),
    st.integers(-2, 5).map(np.array),
    st.just(np.zeros((0, 3))),
    st.just(np.zeros((6, 2, 2))),
)
KEYS = st.sampled_from(["embeddings", "labels", "predictions", "groups", "spurious", "split", "class_names",
                        "image_path"])


@FAST
@given(arrays=st.dictionaries(KEYS, ARRAY, max_size=6), n=st.integers(1, 8))
def test_random_npz_contents_load_or_give_a_named_error(arrays, n):
    arrays.setdefault("labels", np.arange(n) % 2)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.npz"
        np.savez(path, **arrays)
        _load(path)


@FAST
@given(columns=st.dictionaries(KEYS.filter(lambda k: k != "embeddings"), ARRAY.filter(lambda a: a.ndim == 1),
                               max_size=4),
       width=st.integers(0, 3), n=st.integers(0, 6), listed=st.booleans())
def test_random_parquet_contents_load_or_give_a_named_error(columns, width, n, listed):
    frame = pd.DataFrame({k: v for k, v in columns.items() if len(v) == n}, index=range(n))
    emb = np.random.default_rng(0).normal(size=(n, width))
    if listed:
        frame["embeddings"] = list(emb)
    else:
        for j in range(width):
            frame[f"emb_{j}"] = emb[:, j]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.parquet"
        frame.to_parquet(path)
        _load(path)


def _valid_npz() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(buffer, embeddings=rng.normal(size=(12, 4)), labels=np.arange(12) % 2,
                        predictions=np.arange(12) % 2, spurious=(np.arange(12) // 2) % 2,
                        split=np.array(["train", "val", "test"] * 4))
    return buffer.getvalue()


VALID = _valid_npz()


@FAST
@given(cut=st.integers(0, len(VALID)), flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1),
                                                                st.integers(0, 255)), max_size=6))
def test_damaged_npz_bytes_load_or_give_a_named_error(cut, flips):
    data = bytearray(VALID[:cut] if cut < len(VALID) and not flips else VALID)
    for where, byte in flips:
        if where < len(data):
            data[where] = byte
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.npz"
        path.write_bytes(bytes(data))
        try:
            read_embeddings_file(path)
        except SpurlabError as exc:
            assert "damaged.npz" in str(exc) or not zipfile.is_zipfile(path) or "labels" in str(exc) \
                or "embeddings" in str(exc) or "predictions" in str(exc) or "split" in str(exc), str(exc)


@SLOW
@given(cut=st.integers(0, len(VALID) - 1))
def test_directions_on_a_truncated_file_leaves_nothing_behind(cut):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "cut.npz").write_bytes(VALID[:cut])
        result = CliRunner().invoke(app, ["directions", "--embeddings", str(root / "cut.npz"),
                                          "--out", str(root / "out")], terminal_width=400)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "cut.npz" in " ".join(result.output.split())
        assert sorted(p.name for p in root.iterdir()) == ["cut.npz"]


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_a_valid_file_still_loads(tmp_path, suffix):
    path = tmp_path / f"ok{suffix}"
    if suffix == ".npz":
        path.write_bytes(VALID)
    else:
        pd.DataFrame({"embeddings": list(np.eye(4)), "labels": [0, 1, 0, 1]}).to_parquet(path)
    data = read_embeddings_file(path)
    assert data["embeddings"].shape[0] == len(data["labels"])
