"""The flagship audit end to end: files, summary, explanation, fixes, and the embeddings route."""
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spurlab.audit import Audit
from spurlab.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    result = runner.invoke(app, ["audit", "--quick", "--out", str(out), "--methods", "erm,groupdro,dfr",
                                 "--seeds", "2", "--device", "cpu"], terminal_width=200)
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
    audit = Audit(epochs=25, device="cpu", skip=("directions", "units", "fixes")).find_issues()
    verdict = audit.findings_.verdict
    test = audit.findings_.split_metrics["test"]
    minority = ["y=0..4,a=patch=green", "y=5..9,a=patch=red"]
    majority = ["y=0..4,a=patch=red", "y=5..9,a=patch=green"]
    assert max(test["group_accuracy"][g] for g in minority) < min(test["group_accuracy"][g] for g in majority)
    assert verdict["relies_on_spurious"] and "patch" in verdict["text"]
    assert verdict["worst_group"] in minority


def test_audit_explains_and_fixes(audit_dir):
    summary = json.loads((audit_dir / "summary.json").read_text())
    verdict = summary["verdict"]
    assert verdict["relies_on_spurious"] and "patch" in verdict["text"]
    # failure directions find the planted minority without group labels, and are captioned by the patch
    directions = summary["directions"]
    assert directions["flag_minority_precision"] > 0.8 and directions["error_auroc"] > 0.8
    assert any("patch" in caption for caption in verdict["direction_captions"])
    # editing a few units hurts the minority's training accuracy more than the majority's
    units = summary["critical_units"]["headline"]
    assert units["minority_train_delta"] < units["majority_train_delta"]
    # every method is listed with its three accuracies; GroupDRO and DFR beat ERM on the worst group
    methods = {m["method"]: m for m in summary["methods"]}
    assert set(methods) == {"erm", "groupdro", "dfr"}
    for m in methods.values():
        assert {"worst_group_acc", "mean_group_acc", "average_acc", "worst_group_acc_std"} <= set(m)
        assert m["n_seeds"] == 2
    assert methods["groupdro"]["worst_group_acc"] > methods["erm"]["worst_group_acc"] + 0.05
    assert methods["dfr"]["worst_group_acc"] > methods["erm"]["worst_group_acc"] + 0.05
    assert verdict["best_fix"]["method"] in ("groupdro", "dfr")


def test_audit_of_embeddings_skips_model_steps(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    minority = rng.random(n) < 0.2
    emb = rng.normal(size=(n, 16)) + np.where(minority, 3.0, 0.0)[:, None] * np.eye(16)[0]
    pred = np.where(minority, 1 - y, y)  # the model fails exactly the minority
    split = np.array(["train", "val", "test"])[np.arange(n) % 3]
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=emb, labels=y, predictions=pred, spurious=np.where(minority, 1 - y, y), split=split)
    result = runner.invoke(app, ["audit", "--embeddings", str(path), "--out", str(tmp_path / "o")],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert set(summary["skipped_steps"]) == {"train", "units", "fixes"}
    assert summary["splits"]["test"]["worst_group_acc"] == 0.0
    assert summary["directions"]["error_auroc"] > 0.9
    assert "skipped" in (tmp_path / "o" / "report.html").read_text()
