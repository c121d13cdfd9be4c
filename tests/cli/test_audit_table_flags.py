"""``spurlab audit --table/--image-root/--label/--spurious``: the image-table dataset from the command line."""
from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from spurlab.cli import app
from spurlab.cli.audit_cmd import table_dataset
from spurlab.errors import SpurlabError

runner = CliRunner()


def _text(result) -> str:
    return " ".join(result.output.split())  # the console wraps long lines


def test_table_flags_map_to_the_image_table_dataset(tmp_path):
    name, params = table_dataset(None, {"image_size": 32}, None, tmp_path / "t.csv", tmp_path / "img", "animal",
                                 "place")
    assert name == "image-table"
    assert params == {"image_size": 32, "table": str(tmp_path / "t.csv"), "image_root": str(tmp_path / "img"),
                      "label": "animal", "spurious": "place"}
    assert table_dataset(None, {}, None, None, None, None, None) == ("spurious-digits", {})
    assert table_dataset("waterbirds", {"limit": 5}, None, None, None, None, None) == ("waterbirds", {"limit": 5})


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "waterbirds"], "--table cannot be combined with --dataset"),
    (["--embeddings", "emb.npz"], "--table cannot be combined with --embeddings"),
])
def test_table_with_another_data_source_is_a_named_error(tmp_path, extra, message):
    result = runner.invoke(app, ["audit", "--table", str(tmp_path / "t.csv"), "--spurious", "place", *extra],
                           terminal_width=200)
    assert result.exit_code != 0 and message in _text(result)


def test_column_flags_without_a_table_are_a_named_error():
    result = runner.invoke(app, ["audit", "--label", "animal", "--spurious", "place"], terminal_width=200)
    assert result.exit_code != 0 and "--label, --spurious only apply together with --table" in _text(result)
    with pytest.raises(SpurlabError, match="--image-root only apply"):
        table_dataset(None, {}, None, None, "imgs", None, None)


def test_a_table_missing_its_spurious_column_fails_before_training(tmp_path):
    pd.DataFrame({"path": ["a.png", "b.png"], "animal": ["cat", "dog"]}).to_csv(tmp_path / "t.csv", index=False)
    result = runner.invoke(app, ["audit", "--table", str(tmp_path / "t.csv"), "--label", "animal", "--spurious",
                                 "place", "--out", str(tmp_path / "out")], terminal_width=200)
    assert result.exit_code != 0 and "has no column 'place' (spurious attribute)" in _text(result)
