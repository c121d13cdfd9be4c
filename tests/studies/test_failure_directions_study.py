"""The failure-directions study: pooled metrics, captions (attribute captioner, CLIP templates from a local
checkpoint) and every trained model's training accuracy beside its test numbers."""
import json

import numpy as np
import pandas as pd
import pytest

from spurlab.studies.study_base import run_study
from tests.clip_checkpoint import save_tiny_clip

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


# ------------------------------------------------------------------ training accuracy beside every test number
TINY = {"correlation": [0.9], "n_train": 800, "n_test": 200, "epochs": 2, "k_select": 10, "n_seeds": 1,
        "embedders": ["own"], "intervention_embedders": [], "interventions": ["erm", "oracle_groups", "select_random"]}


def _direct_train_accuracy(model, x, y, groups):
    from spurlab.train.trainer import predict

    right = predict(model, x, device="cpu") == y
    return float(right.mean()), min(float(right[groups == g].mean()) for g in np.unique(groups))


def test_every_trained_model_reports_its_training_accuracy(tmp_path, data_dir):
    from spurlab.studies.failure_directions.directions_figures import plot_worst_group
    from spurlab.studies.failure_directions.directions_study import build_splits
    from spurlab.train.engines import upweighting as iv
    from spurlab.train.trainer import TrainConfig

    result, out = run_study("failure-directions", out_dir=tmp_path / "study", quick=True, seed=0, device="cpu",
                            overrides=TINY)
    frame = pd.read_csv(out / "results.csv")
    cfg = json.loads((out / "manifest.json").read_text())["config"]
    trained = frame[frame["experiment"].isin(["upweighting", "selection", "directions"])]
    wide = trained.fillna({"intervention": "-"}).pivot_table(index=["experiment", "intervention", "embedder"],
                                                             columns="metric", values="value")
    for metric in ("train_accuracy", "train_worst_group_acc", "fitted"):
        assert wide[metric].notna().all(), metric  # beside every row that has test numbers or directions
        assert wide[metric].between(0, 1).all()
    assert set(wide["fitted"]) <= {0.0, 1.0}
    assert ((wide["train_worst_group_acc"] >= cfg["fit_accuracy"]) == (wide["fitted"] == 1)).all()

    # equal to a direct computation: the same ERM model, retrained, on the train split
    train, _, pool, _ = build_splits(cfg, 0.9, 0)
    retrainer = iv.Retrainer("mlp", TrainConfig(epochs=2, lr=cfg["lr"], batch_size=cfg["batch_size"], seed=0,
                                                device="cpu"), model_options={"hidden": tuple(cfg["hidden"])})
    erm = wide.loc[("upweighting", "erm", "none")]
    acc, worst = _direct_train_accuracy(retrainer.train(train.x, train.y, 2), train.x, train.y, train.g)
    assert (erm["train_accuracy"], erm["train_worst_group_acc"]) == pytest.approx((acc, worst), abs=1e-9)
    assert wide.loc[("directions", "-", "own"), "train_accuracy"] == pytest.approx(acc, abs=1e-9)
    # selection: the model's training set is the train split plus the selected pool examples
    idx = iv.select_from_pool("random", pool.y, cfg["k_select"], seed=0)
    x, y = np.concatenate([train.x, pool.x[idx]]), np.concatenate([train.y, pool.y[idx]])
    acc, worst = _direct_train_accuracy(retrainer.train(x, y, 2), x, y, np.concatenate([train.g, pool.g[idx]]))
    selected = wide.loc[("selection", "select_random", "none")]
    assert (selected["train_accuracy"], selected["train_worst_group_acc"]) == pytest.approx((acc, worst), abs=1e-9)

    headline = list(result.headline.columns)
    for test, train_column in (("worst_group_acc", "train_wga"), ("accuracy", "train_acc")):
        assert headline.index(train_column) == headline.index(test) + 1  # side by side
    assert "fitted" in headline
    missed = wide[wide["fitted"] == 0]
    assert missed.empty or any(note.startswith("NOT FITTED") for note in result.notes)
    labels = [line.get_label() for line in plot_worst_group(frame).axes[0].get_lines()]
    assert "train (worst group)" in labels


# ------------------------------------------------------------------ CLIP templates from a local checkpoint
def _top_captions(notes, captioner):
    """{class name: top failure caption} from the study's note for the clip directions."""
    prefix = f"Top failure captions (p=0.9, seed 0, clip directions, {captioner}): "
    (line,) = [note[len(prefix):] for note in notes if note.startswith(prefix)]
    return dict(part.split(": ", 1) for part in line.split("; "))


def test_clip_templates_caption_the_study_directions(tmp_path, data_dir):
    from spurlab.probes.captions import candidate_captions, load_vocabulary
    from spurlab.studies.failure_directions.directions_study import build_splits

    clip = save_tiny_clip(tmp_path / "clip")
    result, out = run_study("failure-directions", out_dir=tmp_path / "study", quick=True, seed=0, device="cpu",
                            overrides={**TINY, "interventions": ["erm"], "clip_checkpoint": str(clip)})
    frame = pd.read_csv(out / "results.csv")
    rows = frame[(frame["experiment"] == "directions") & (frame["embedder"] == "clip")].set_index("metric")["value"]
    for metric in ("svm_cv_balanced_acc", "error_auroc", "pooled_flag_minority_precision", "caption_accuracy",
                   "clip_caption_accuracy", "train_accuracy"):
        assert 0.0 <= rows[metric] <= 1.0, metric
    headline = result.headline.set_index("row")
    assert headline.loc["directions: clip", "clip_caption_acc"] == rows["clip_caption_accuracy"]
    assert np.isnan(headline.loc["directions: own", "clip_caption_acc"])  # only CLIP embeds text

    # each class's direction is named by one of its own template captions (the digits vocabulary's)
    tops = {name: caption.strip("'") for name, caption in _top_captions(result.notes, "clip templates").items()}
    assert set(tops) == {"0..4", "5..9"}
    vocabulary = load_vocabulary("digits")
    for name, caption in tops.items():
        assert caption in candidate_captions(vocabulary, name, max_captions=2000, seed=0)[0]
    # caption accuracy: the share of classes whose top caption names a colour of the class's minority
    val = build_splits(json.loads((out / "manifest.json").read_text())["config"], 0.9, 0)[1]
    colours = [name.split("=")[-1] for name in val.attr_names]
    hits = [any(colour in caption.split() for a, colour in enumerate(colours) if a != c)
            for c, caption in enumerate(tops[name] for name in val.class_names)]
    assert rows["clip_caption_accuracy"] == pytest.approx(np.mean(hits))


def test_clip_template_captions_are_ranked_per_direction(tmp_path, data_dir):
    from spurlab.models.embedders import HFClipEncoder
    from spurlab.probes.captions import CaptionScorer
    from spurlab.probes.directions import FailureDirections
    from spurlab.studies.failure_directions.directions_study import add_caption_rows, build_splits
    from spurlab.studies.study_base import StudyResult, get_study

    cfg = {**get_study("failure-directions").default_config(quick=True), **TINY}
    val = build_splits(cfg, 0.9, 0)[1]
    encoder = HFClipEncoder(save_tiny_clip(tmp_path / "clip"), device="cpu")
    emb = encoder.embed(val.x)
    wrong = np.random.default_rng(0).random(len(val)) < 0.3  # predictions wrong on a random 30%
    directions = FailureDirections(seed=0).fit(emb, val.y, np.where(wrong, 1 - val.y, val.y))
    vocabulary = {"templates": ["a {adjective} {noun} {context}"], "reference": "a {noun}",
                  "adjectives": ["red", "green", "thin"], "contexts": ["", "on a black background"]}
    result = StudyResult()
    described = add_caption_rows(result, directions, emb, val, {"caption_vocabulary": vocabulary}, 0, "clip",
                                 {"correlation": 0.9}, encoder)
    scorer = CaptionScorer(encoder, vocabulary=vocabulary)
    hits = []
    for c, name in enumerate(val.class_names):
        entry = described["clip templates"][c]
        ranked = scorer.score(directions, c, name)  # every candidate, lowest (failure) first
        assert entry["name"] == name
        assert entry["failure"][0]["caption"] == ranked["caption"].iloc[0]
        assert entry["failure"][0]["score"] == pytest.approx(ranked["score"].min())
        assert entry["easy"][0]["score"] == pytest.approx(ranked["score"].max())
        minority = {v.split("=")[-1] for a, v in enumerate(val.attr_names) if a != c}
        hits.append(bool(minority & set(ranked["caption"].iloc[0].split())))
    recorded = {row["metric"]: row["value"] for row in result.rows}
    assert recorded["clip_caption_accuracy"] == pytest.approx(np.mean(hits))
    assert 0.0 <= recorded["caption_accuracy"] <= 1.0


def test_a_caption_names_a_minority_value_by_whole_words():
    from spurlab.data.grouped import GroupedDataset
    from spurlab.studies.failure_directions.directions_study import names_a_minority_value

    data = GroupedDataset(x=np.zeros((4, 1)), y=np.array([0, 0, 1, 1]), a=np.array([0, 1, 0, 1]),
                          class_names=("0..4", "5..9"), attr_names=("colour=red", "colour=green"))
    assert names_a_minority_value(data, 0, "a Green digit on a black background")
    assert not names_a_minority_value(data, 0, "a red digit")  # red is class 0's majority colour
    assert not names_a_minority_value(data, 0, "a greenish digit")
    assert names_a_minority_value(data, 1, "a red five")


def test_the_quick_default_erm_model_fits_its_training_set(data_dir):
    """The quick default's test numbers are of a model that fits: its worst training group reaches fit_accuracy."""
    from spurlab.studies.failure_directions.directions_study import build_splits, training_accuracy
    from spurlab.studies.study_base import get_study
    from spurlab.train.engines import upweighting as iv
    from spurlab.train.trainer import TrainConfig

    cfg = get_study("failure-directions").default_config(quick=True)
    train = build_splits(cfg, 0.95, 0)[0]
    config = TrainConfig(epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], seed=0, device="cpu")
    retrainer = iv.Retrainer(cfg["model"], config, model_options={"hidden": tuple(cfg["hidden"])})
    fit = training_accuracy(retrainer.train(train.x, train.y, train.n_classes), [train], "cpu", cfg["fit_accuracy"])
    assert fit["fitted"] == 1.0, fit
