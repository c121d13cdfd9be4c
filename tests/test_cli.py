"""The command line through Typer's test runner, and the first audit end to end."""
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from spurlab.audit import Audit
from spurlab.cli import app

runner = CliRunner()


def test_datasets_list_shows_every_dataset():
    result = runner.invoke(app, ["datasets", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in ("linear-skew", "structured-features", "gaussian-core-spurious", "digits", "mnist",
                 "fashion-mnist", "waterbirds", "celeba", "embeddings"):
        assert name in result.output


def test_datasets_show_counts_per_split():
    result = runner.invoke(app, ["datasets", "show", "linear-skew", "--set", "n_min=6", "--set", "D=10"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "n_maj" in result.output and "duplicate_p" in result.output
    assert "y=-1,a=x_sp>0" in result.output


def test_unknown_dataset_exits_with_a_clear_error():
    result = runner.invoke(app, ["datasets", "show", "mnsit"])
    assert result.exit_code == 2
    assert "unknown dataset 'mnsit'" in result.output and "known datasets" in result.output


def test_bad_set_syntax():
    result = runner.invoke(app, ["datasets", "show", "digits", "--set", "p"])
    assert result.exit_code == 2 and "key=value" in result.output


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    result = runner.invoke(app, ["audit", "--out", str(out), "--epochs", "25", "--device", "cpu"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    return out


def test_audit_writes_its_three_files(audit_dir):
    assert {p.name for p in audit_dir.iterdir()} >= {"summary.json", "results.csv", "report.html"}
    assert not [p for p in audit_dir.iterdir() if p.name.endswith(".tmp")]


def test_audit_summary_and_results_agree(audit_dir):
    summary = json.loads((audit_dir / "summary.json").read_text())
    assert summary["dataset"] == "spurious-digits"
    assert [g["name"] for g in summary["groups"]] == ["y=0..4,a=patch=red", "y=0..4,a=patch=green",
                                                      "y=5..9,a=patch=red", "y=5..9,a=patch=green"]
    test = summary["splits"]["test"]
    assert test["worst_group_acc"] == min(test["group_accuracy"].values())
    assert "train_weighted_acc" in test and "timings_s" in summary
    results = pd.read_csv(audit_dir / "results.csv")
    assert list(results.columns) == ["split", "group", "name", "metric", "value"]
    assert len(results) == 3 * 4 * 2  # split x group x (accuracy, count)
    row = results[(results.split == "test") & (results.metric == "accuracy")]
    assert row["value"].min() == pytest.approx(test["worst_group_acc"])


def test_audit_report_is_self_contained(audit_dir):
    html = (audit_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html


def test_erm_on_the_planted_default_relies_on_the_patch():
    audit = Audit(epochs=25, device="cpu").find_issues()
    verdict = audit.results_["verdict"]
    test = audit.results_["splits"]["test"]
    minority = ["y=0..4,a=patch=green", "y=5..9,a=patch=red"]
    majority = ["y=0..4,a=patch=red", "y=5..9,a=patch=green"]
    assert max(test["group_accuracy"][g] for g in minority) < min(test["group_accuracy"][g] for g in majority)
    assert verdict["relies_on_spurious"] and "patch" in verdict["text"]
    assert verdict["worst_group"] in minority
