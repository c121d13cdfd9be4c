"""The failure-directions study reports pooled metrics and captions its directions (attribute captioner)."""
import pandas as pd
import pytest

from spurlab.studies.study_base import run_study

pytestmark = pytest.mark.usefixtures("one_thread")


def test_study_reports_pooled_metrics_and_caption_accuracy(tmp_path, data_dir):
    overrides = {"correlation": [0.9], "n_train": 800, "n_test": 200, "epochs": 2, "k_select": 10, "n_seeds": 1,
                 "embedders": ["own"], "intervention_embedders": [], "interventions": ["erm"]}
    result, out = run_study("failure-directions", out_dir=tmp_path / "study", quick=True, seed=0, device="cpu",
                            overrides=overrides)
    frame = pd.read_csv(out / "results.csv")
    directions = frame[frame["experiment"] == "directions"].set_index("metric")["value"]
    for metric in ("pooled_flag_minority_precision", "pooled_minority_recall", "pooled_error_auroc",
                   "caption_accuracy"):
        assert metric in directions.index
        assert 0.0 <= directions[metric] <= 1.0
    assert "pooled_flag_minority_precision" in result.headline.columns
    assert "caption_acc" in result.headline.columns


def test_default_runs_three_seeds():
    from spurlab.studies.study_base import get_study

    study = get_study("failure-directions")
    assert study.default_config(quick=True)["n_seeds"] >= 3
    assert study.default_config(quick=False)["n_seeds"] >= 3
