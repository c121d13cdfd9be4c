"""The study contract: config overrides, the long results table, manifest, figures and report."""
import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from typer.testing import CliRunner

from spurlab import SpurlabError
from spurlab.cli import app
from spurlab.studies.study_base import (Study, StudyResult, apply_overrides, parse_value, register_study, run_study,
                                  study_registry)


@register_study
class ToyStudy(Study):
    name = "toy-contract"
    title = "A toy study used to test the contract"
    paper = "none"

    def default_config(self, quick):
        return {"n": [1, 2] if quick else [1, 2, 3], "scale": 1.5, "label": "x", "flag": False}

    def validate(self, config):
        if config["scale"] <= 0:
            raise SpurlabError("scale must be positive")

    def run(self, ctx):
        result = StudyResult()
        for n in ctx.config["n"]:
            result.add("growth", "value", n * ctx.config["scale"], ctx.seed, n=n)
        fig, ax = plt.subplots()
        ax.plot(ctx.config["n"])
        result.add_figure("growth", fig, "a line")
        result.headline = pd.DataFrame({"n": ctx.config["n"]})
        return result


def test_registered_study_is_listed():
    assert "toy-contract" in study_registry()


def test_run_study_writes_the_contract_files(tmp_path):
    result, out = run_study("toy-contract", out_dir=tmp_path / "run", quick=True, seed=4,
                            overrides=["scale=2", "n=1,5"])
    assert sorted(p.name for p in out.iterdir()) == ["growth.png", "manifest.json", "report.html", "results.csv"]
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns) == ["experiment", "metric", "value", "seed", "n"]
    assert frame["value"].tolist() == [2.0, 10.0] and set(frame["seed"]) == {4}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["n"] == [1, 5] and manifest["seed"] == 4 and manifest["quick"] is True
    assert {"python", "torch", "numpy"} <= set(manifest["versions"]) and "total_s" in manifest["timings"]
    assert "data:image/png;base64" in (out / "report.html").read_text()


def test_quick_and_full_configs_differ():
    result, _ = run_study("toy-contract", quick=False, write=False)
    assert len(result.rows) == 3


@pytest.mark.parametrize("text, default, expected", [
    ("3", 1, 3), ("0.5", 1, 0.5), ("2.5", 1.0, 2.5), ("true", False, True), ("1,2,3", [0], [1, 2, 3]),
    ("[0.5, 0.75]", [0.1], [0.5, 0.75]), ("a,b", ["x"], ["a", "b"]), ("none", None, None), ("7", None, 7),
])
def test_parse_value_follows_the_default_type(text, default, expected):
    assert parse_value(text, default) == expected


def test_unknown_or_bad_overrides_are_refused():
    with pytest.raises(SpurlabError, match="unknown study parameter 'sclae'.*") as info:
        apply_overrides({"scale": 1.0}, ["sclae=2"])
    assert "scale" in str(info.value)
    with pytest.raises(SpurlabError, match="expected a number"):
        apply_overrides({"scale": 1.0}, ["scale=big"])
    with pytest.raises(SpurlabError, match="scale must be positive"):
        run_study("toy-contract", overrides={"scale": -1}, write=False)


def test_cli_study_list_and_unknown_study(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["study", "list"], terminal_width=200)
    assert listed.exit_code == 0 and "toy-contract" in listed.output
    unknown = runner.invoke(app, ["study", "nope"])
    assert unknown.exit_code == 2 and "unknown study 'nope'" in unknown.output
    ran = runner.invoke(app, ["study", "toy-contract", "--quick", "--out", str(tmp_path / "o"), "--set", "scale=3"])
    assert ran.exit_code == 0, ran.output
    assert (tmp_path / "o" / "report.html").exists()
