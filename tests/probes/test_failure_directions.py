"""Failure directions: estimator, solver, captions, embedders, interventions, CLI and study."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from spurlab import FailureDirections, SpurlabError
from spurlab.cli import app
from spurlab.data.planted import encoder_view, planted_subgroups
from spurlab.probes.captions import AttributeCaptioner, CaptionScorer, candidate_captions, load_vocabulary
from spurlab.probes.directions import auroc, stratified_folds
from spurlab.probes.svm import solve_squared_hinge
from spurlab.train.engines import upweighting as iv
from spurlab.train.trainer import TrainConfig, predict


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def planted():
    """A linear model that leans on a planted attribute; encoder embeddings that see (class, attribute)."""
    torch.set_num_threads(1)
    splits = planted_subgroups(n_train=2000, n_val=1000, n_pool=1000, n_test=1000, p=0.9, core=0.6,
                               spurious=2.0, noise=1.0, dim=32, seed=0)
    retrainer = iv.Retrainer("linear", TrainConfig(epochs=20, lr=1e-2, batch_size=128, device="cpu"))
    base = retrainer.train(splits["train"].x, splits["train"].y, 2)
    emb = {name: encoder_view(splits[name], seed=0) for name in ("train", "val", "pool")}
    pred = {name: predict(base, splits[name].x, device="cpu") for name in ("val", "pool")}
    directions = FailureDirections(seed=0).fit(emb["val"], splits["val"].y, pred["val"], train_embeddings=emb["train"])
    return {"splits": splits, "retrainer": retrainer, "base": base, "emb": emb, "pred": pred,
            "directions": directions}


# ------------------------------------------------------------------ the paper's claims on planted data
def test_flags_find_the_planted_minority(planted):
    pool = planted["splits"]["pool"]
    table = planted["directions"].evaluate(planted["emb"]["pool"], pool.y, planted["pred"]["pool"],
                                           minority=pool.is_minority())
    per_class = table[table["class"] >= 0]
    assert list(table["name"]) == ["0", "1", "mean"]
    assert (per_class["error_auroc"] > 0.8).all()
    # the direction finds the group, not just the errors: flags are minority far more often than errors are
    assert (per_class["flag_minority_precision"] > per_class["minority_share_of_errors"] + 0.15).all()
    assert (per_class["flag_minority_precision"] > 0.85).all() and (per_class["minority_recall"] > 0.8).all()
    assert (planted["directions"].cv_balanced_accuracy_ > 0.7).all()


def test_svm_upweighting_lifts_worst_group_accuracy(planted):
    splits, directions = planted["splits"], planted["directions"]
    train = splits["train"]
    dv = directions.decision_function(planted["emb"]["train"], train.y)
    weights = {"erm": None, "svm_overweight": iv.upweight_flagged(dv, train.y, "overweight"),
               "svm_balanced": iv.upweight_flagged(dv, train.y, "balanced"),
               "oracle_groups": iv.oracle_group_weights(train.g)}
    table = iv.compare_upweighting(train, splits["test"], weights, planted["retrainer"])
    wga = table[table["metric"] == "worst_group_acc"].set_index("intervention")["value"]
    assert wga["svm_overweight"] > wga["erm"] + 0.05
    assert wga["svm_balanced"] > wga["erm"] + 0.15
    assert wga["oracle_groups"] > wga["erm"]


def test_svm_selection_picks_minority_examples_from_the_pool(planted):
    pool = planted["splits"]["pool"]
    dv = planted["directions"].decision_function(planted["emb"]["pool"], pool.y)
    svm = iv.select_from_pool("svm", pool.y, 50, decision_values=dv)
    rand = iv.select_from_pool("random", pool.y, 50, seed=1)
    assert len(svm) == len(rand) == 100 and np.bincount(pool.y[svm]).tolist() == [50, 50]
    assert pool.is_minority()[svm].mean() > 0.9 > 0.3 > pool.is_minority()[rand].mean()
    assert np.array_equal(rand, iv.select_from_pool("random", pool.y, 50, seed=1))


# ------------------------------------------------------------------ solver and pre-processing
def test_solver_reaches_the_squared_hinge_optimum():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12))
    y = np.where(x[:, 0] + 0.5 * rng.normal(size=300) > 0.3, 1.0, -1.0)
    weight = np.where(y > 0, 0.8, 1.3)
    cs = np.array([1e-3, 1e-1, 1.0])
    sol = solve_squared_hinge(x, y, weight, cs, dtype=torch.float64, tol=1e-8)
    assert sol.w.shape == (3, 12) and sol.b.shape == (3,) and sol.converged.all()

    def objective(theta, c):
        r = np.maximum(0.0, 1.0 - y * (x @ theta[:-1] + theta[-1]))
        return 0.5 * theta[:-1] @ theta[:-1] + c * np.sum(weight * r ** 2)

    for j, c in enumerate(cs):
        ref = minimize(objective, np.zeros(13), args=(c,), method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10})
        ours = objective(np.append(sol.w[j], sol.b[j]), c)
        assert ours <= ref.fun * (1 + 1e-6) + 1e-9
        assert np.allclose(np.append(sol.w[j], sol.b[j]), ref.x, atol=1e-3)


def test_preprocessing_uses_train_statistics_then_unit_norm():
    rng = np.random.default_rng(1)
    train = rng.normal(3.0, 2.0, size=(400, 6))
    val = rng.normal(3.0, 2.0, size=(200, 6))
    labels = np.arange(200) % 2
    preds = np.where(val[:, 0] > 3.5, 1 - labels, labels)
    fd = FailureDirections(seed=0).fit(val, labels, preds, train_embeddings=train)
    expected = (val - train.mean(0)) / train.std(0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    z = fd.transform(val)
    assert np.allclose(z, expected, atol=1e-5) and np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    dv = fd.decision_function(val, labels)
    manual = np.einsum("nd,nd->n", z, fd.coef_[labels]) + fd.intercept_[labels]
    assert np.allclose(dv, manual, atol=1e-5)
    assert np.array_equal(fd.predict(val, labels), dv <= 0)
    assert np.allclose(np.linalg.norm(fd.directions_, axis=1), 1.0)


def test_folds_are_stratified_and_seeded():
    outcome = np.array([True] * 30 + [False] * 7)
    folds = stratified_folds(outcome, 2, seed=3)
    assert np.array_equal(folds, stratified_folds(outcome, 2, seed=3))
    assert sorted(np.bincount(folds[~outcome]).tolist()) == [3, 4]
    assert auroc(np.array([0, 0, 1, 1], bool), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0


def test_rank_and_score(planted):
    pool = planted["splits"]["pool"]
    fd = planted["directions"]
    ranked = fd.rank(planted["emb"]["pool"], pool.y, k=10)
    dv = fd.decision_function(planted["emb"]["pool"], pool.y)
    for c, idx in ranked.items():
        assert len(idx) == 10 and (pool.y[idx] == c).all()
        assert np.all(np.diff(dv[idx]) >= 0) and dv[idx[0]] == dv[pool.y == c].min()
    assert fd.score(planted["emb"]["pool"], pool.y, planted["pred"]["pool"]) > 0.8


# ------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    emb = np.random.default_rng(0).normal(size=(40, 5))
    labels = np.arange(40) % 2
    with pytest.raises(SpurlabError, match="different lengths"):
        FailureDirections().fit(emb, labels[:30], labels)
    bad = emb.copy()
    bad[3, 1] = np.nan
    with pytest.raises(SpurlabError, match="NaN"):
        FailureDirections().fit(bad, labels, labels)
    with pytest.raises(SpurlabError, match="single class"):
        FailureDirections().fit(emb, np.zeros(40, int), np.zeros(40, int))
    with pytest.raises(SpurlabError, match="parameter .Cs. must be a list"):
        FailureDirections(Cs=[0.0, 1.0]).fit(emb, labels, labels)
    with pytest.raises(SpurlabError, match="not fitted"):
        FailureDirections().decision_function(emb, labels)


def test_class_without_errors_or_without_correct_examples_is_skipped():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(90, 4))
    labels = np.arange(90) % 3
    preds = labels.copy()
    preds[(labels == 1) & (emb[:, 0] > 0)] = 0  # class 1 has errors, class 0 none
    preds[labels == 2] = 0  # class 2 is never right
    fd = FailureDirections().fit(emb, labels, preds)
    assert set(fd.skipped_) == {0, 2} and "no errors" in fd.skipped_[0] and "no example" in fd.skipped_[2]
    dv = fd.decision_function(emb, labels)
    assert np.isnan(dv[labels != 1]).all() and np.isfinite(dv[labels == 1]).all()
    table = fd.evaluate(emb, labels, preds)
    assert table.loc[table["class"] == 0, "skipped"].item().startswith("the model makes no errors")
    assert not fd.predict(emb, labels)[labels != 1].any()


def test_save_and_load_round_trip(tmp_path, planted):
    fd = planted["directions"]
    path = fd.save(tmp_path / "dirs.npz")
    with np.load(path, allow_pickle=False) as data:  # plain arrays + a JSON string, no pickle
        assert "meta" in data.files and json.loads(str(data["meta"]))["params"]["n_folds"] == 2
    loaded = FailureDirections.load(path)
    pool = planted["splits"]["pool"]
    assert np.allclose(loaded.decision_function(planted["emb"]["pool"], pool.y),
                       fd.decision_function(planted["emb"]["pool"], pool.y))
    assert loaded.skipped_ == fd.skipped_ and np.array_equal(loaded.C_, fd.C_)
    (tmp_path / "other.npz").write_bytes(b"not a zip")
    with pytest.raises(SpurlabError, match="not a readable"):
        FailureDirections.load(tmp_path / "other.npz")
    with pytest.raises(SpurlabError, match="no saved"):
        FailureDirections.load(tmp_path / "missing.npz")


# ------------------------------------------------------------------ weights
def test_upweighting_schemes():
    dv = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, -0.5, 0.5])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    over = iv.upweight_flagged(dv, labels, "overweight", upweight=2.0)
    assert np.allclose(over.mean(), 1.0) and np.allclose(over[[0, 1, 2, 6]] / over[3], 2.0)
    assert np.array_equal(iv.upweight_flagged(dv, labels, "flagged"), over)
    balanced = iv.upweight_flagged(dv, labels, "balanced")
    flagged = dv <= 0
    for c in (0, 1):
        in_c = labels == c
        assert np.isclose(balanced[in_c & flagged].sum(), balanced[in_c & ~flagged].sum())
    soft = iv.upweight_flagged(dv, labels, "soft", upweight=3.0)
    assert soft[0] > soft[1] > soft[2] == soft[3] == soft[4] and np.isclose(soft.mean(), 1.0)
    assert np.isclose(soft[flagged].mean() / soft[~flagged].mean(), 3.0)
    with pytest.raises(SpurlabError, match="parameter .scheme. must be one of"):
        iv.upweight_flagged(dv, labels, "heavy")
    conf = iv.confidence_weights(np.array([0.9, 0.1, 0.5, 0.8, 0.2, 0.7, 0.6, 0.95]), labels, {0: 1, 1: 2})
    assert np.allclose(conf[[1, 4, 6]] / conf[0], 2.0) and np.allclose(conf[[0, 2, 3, 5, 7]], conf[0])
    oracle = iv.oracle_group_weights(np.array([0, 0, 0, 1]))
    assert np.isclose(oracle[:3].sum(), oracle[3])


def test_failure_direction_weights_as_the_methods_registry_calls_it(planted):
    splits, emb = planted["splits"], planted["emb"]
    weights = iv.failure_direction_weights(
        val_embeddings=emb["val"], val_labels=splits["val"].y, val_predictions=planted["pred"]["val"],
        train_embeddings=emb["train"], train_labels=splits["train"].y, scheme="flagged", upweight=2.0, seed=0)
    assert weights.shape == (len(splits["train"]),) and np.isclose(weights.mean(), 1.0)
    heavy = weights > 1.0
    assert splits["train"].is_minority()[heavy].mean() > 0.8


# ------------------------------------------------------------------ captions
class WordEncoder:
    """A toy joint encoder: images are the planted encoder view; a text is the sum of its words' vectors."""

    name = "toy"

    def __init__(self, dim=16, seed=0):
        self.basis = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))[0]
        self.words = {"class0": 0, "class1": 1, "attr0": 2, "attr1": 3}

    def embed_text(self, texts):
        return np.stack([sum((self.basis[self.words[w]] for w in t.split() if w in self.words),
                             np.zeros(self.basis.shape[1])) for t in texts]).astype(np.float32)


def test_caption_scorer_puts_the_minority_attribute_first(planted):
    vocab = {"templates": ["a photo of a {adjective} {noun} {context}"], "reference": "a photo of a {noun}",
             "adjectives": ["attr0", "attr1", "plain"], "contexts": ["outdoors"]}
    scorer = CaptionScorer(WordEncoder(), vocabulary=vocab)
    described = planted["directions"].describe(scorer, class_names=["class0", "class1"], k=2)
    assert set(described) == {0, 1}
    assert "attr1" in described[0]["failure"][0]["caption"] and "attr0" in described[1]["failure"][0]["caption"]
    assert "attr0" in described[0]["easy"][0]["caption"]
    table = scorer.score(planted["directions"], 0, "class0")
    assert table["score"].is_monotonic_increasing and "a photo of a class0" not in set(table["caption"])


def test_vocabularies_are_data():
    default = load_vocabulary()
    digits = load_vocabulary("digits")
    assert {"templates", "reference", "adjectives", "contexts"} <= set(default)
    captions, reference = candidate_captions(digits, "0..4")
    assert reference == "a photo of a digit" and reference not in captions
    assert any("green" in c and "zero" in c for c in captions) and len(captions) == len(set(captions))
    assert len(candidate_captions(default, "cat", max_captions=50)[0]) == 50
    with pytest.raises(SpurlabError, match="lacks"):
        load_vocabulary({"templates": ["{noun}"]})
    with pytest.raises(SpurlabError, match="not found"):
        load_vocabulary("no-such-vocabulary")


def test_attribute_captioner_names_the_planted_attribute(planted):
    val = planted["splits"]["val"]
    meta = pd.DataFrame({"colour": np.array(["attr0", "attr1"])[val.a],
                         "size": np.random.default_rng(0).random(len(val))})
    captioner = AttributeCaptioner(planted["emb"]["val"], val.y, meta)
    described = planted["directions"].describe(captioner, k=3)
    assert described[0]["failure"][0]["caption"] == "colour=attr1"
    assert described[1]["failure"][0]["caption"] == "colour=attr0"
    top = described[0]["failure"][0]
    assert top["low"] > 0.4 > 0.05 > top["high"]


# ------------------------------------------------------------------ embedders
def test_efficientnet_lite0_has_real_imagenet_weights():
    from sklearn.datasets import load_sample_image

    from spurlab.models.embedders import EfficientNetLite0Embedder, build_efficientnet_lite0, prepare_batch

    model = build_efficientnet_lite0(224)
    flower = load_sample_image("flower.jpg").astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        logits = model(prepare_batch(flower, 224, (0.5,) * 3, (0.5,) * 3, "cpu"))
    assert 985 in logits.topk(5).indices[0].tolist()  # ImageNet class 985: daisy
    images = np.random.default_rng(0).random((3, 1, 28, 28))
    feats = EfficientNetLite0Embedder(image_size=32, device="cpu").embed(images)
    assert feats.shape == (3, 1280) and feats.dtype == np.float32 and np.isfinite(feats).all()


def test_penultimate_embedder_matches_the_model_features(planted):
    from spurlab.models.embedders import PenultimateEmbedder, get_embedder
    from spurlab.models import make_model

    model = make_model("mlp", (3, 8, 8), 2, seed=0, hidden=(16,))
    x = np.random.default_rng(0).random((5, 3, 8, 8)).astype(np.float32)
    feats = get_embedder("penultimate", model=model, device="cpu").embed(x)
    with torch.no_grad():
        assert np.allclose(feats, model.features(torch.as_tensor(x)).numpy(), atol=1e-6)
    with pytest.raises(SpurlabError, match="features"):
        PenultimateEmbedder(torch.nn.Linear(3, 2))
    with pytest.raises(SpurlabError, match="local checkpoint"):
        get_embedder("clip")


def _tiny_clip(path):
    pytest.importorskip("transformers", reason="the CLIP path needs the optional transformers package "
                                               "(pip install 'spurlab[clip]')")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "a", "photo", "of", "red", "green", "digit", "on", "background", "0..4", "5..9"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(path)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(vocab_size=len(words), max_position_embeddings=32, bos_token_id=0,
                                         eos_token_id=1, pad_token_id=0, **small),
                        vision_config=dict(image_size=32, patch_size=16, **small), projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)


def test_clip_from_a_local_checkpoint_scores_captions(tmp_path):
    from spurlab.models.embedders import HFClipEncoder

    _tiny_clip(tmp_path / "clip")
    encoder = HFClipEncoder(tmp_path / "clip", device="cpu")
    rng = np.random.default_rng(0)
    images = rng.random((120, 3, 28, 28)).astype(np.float32)
    emb = encoder.embed(images)
    assert emb.shape == (120, 8) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    labels = np.arange(120) % 2
    preds = np.where(emb[:, 0] > np.median(emb[:, 0]), labels, 1 - labels)
    fd = FailureDirections(seed=0).fit(emb, labels, preds)
    vocab = {"templates": ["a photo of a {adjective} {noun} {context}"], "reference": "a photo of a {noun}",
             "adjectives": ["red", "green"], "contexts": ["on background"], "nouns": {"0..4": "digit"}}
    table = CaptionScorer(encoder, vocabulary=vocab).score(fd, 0, "0..4")
    captions, reference = candidate_captions(load_vocabulary(vocab), "0..4")
    text = encoder.embed_text(captions + [reference])
    expected = fd.decision_function(text[:-1] - text[-1], np.zeros(len(captions), int))
    assert sorted(table["score"]) == pytest.approx(sorted(expected), abs=1e-5)
    with pytest.raises(SpurlabError, match="not found"):
        HFClipEncoder(tmp_path / "missing")
    # the same checkpoint through the CLI: captions from a user vocabulary file
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    np.savez(tmp_path / "clip.npz", embeddings=emb, labels=labels, predictions=preds,
             class_names=np.array(["0..4", "5..9"]))
    result = CliRunner().invoke(app, ["directions", "--embeddings", str(tmp_path / "clip.npz"), "--out",
                                      str(tmp_path / "out"), "--clip", str(tmp_path / "clip"), "--captions",
                                      str(tmp_path / "vocab.json"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["captions"]["0"]["failure"][0]["caption"] in captions


# ------------------------------------------------------------------ CLI
def _embeddings_file(tmp_path, planted, with_split: bool):
    splits = planted["splits"]
    val, pool = splits["val"], splits["pool"]
    emb = np.concatenate([planted["emb"]["val"], planted["emb"]["pool"]])
    data = {"embeddings": emb, "labels": np.concatenate([val.y, pool.y]),
            "predictions": np.concatenate([planted["pred"]["val"], planted["pred"]["pool"]]),
            "spurious": np.concatenate([val.a, pool.a]), "images": np.random.default_rng(0).random((len(emb), 8, 8)),
            "class_names": np.array(["class0", "class1"])}
    if with_split:
        data["split"] = np.array(["val"] * len(val) + ["test"] * len(pool))
    path = tmp_path / ("split.npz" if with_split else "plain.npz")
    np.savez(path, **data)
    return path


@pytest.mark.parametrize("with_split", [True, False])
def test_cli_directions_writes_the_report(tmp_path, planted, with_split):
    path = _embeddings_file(tmp_path, planted, with_split)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["directions", "--embeddings", str(path), "--out", str(out), "--top-k", "4",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["directions.npz", "examples.csv", "report.html", "summary.json"]
    examples = pd.read_csv(out / "examples.csv")
    assert {"index", "label", "prediction", "decision_value", "flagged", "rank"} <= set(examples.columns)
    assert len(examples) == 2000 and examples.groupby("label")["rank"].min().tolist() == [1, 1]
    assert (examples["role"] == "fit").sum() == (1000 if with_split else 400)
    summary = json.loads((out / "summary.json").read_text())
    per_class = [row for row in summary["per_class"] if row["class"] >= 0]
    # without a split only every 5th example (15 errors per class) fits the SVMs
    assert all(row["error_auroc"] > (0.8 if with_split else 0.75) for row in per_class)
    assert summary["captions"]["0"]["failure"][0]["caption"] == "spurious=1"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3 and "class0" in html  # per-class histograms, 2 grids
    assert FailureDirections.load(out / "directions.npz").classes_.tolist() == [0, 1]


def test_cli_directions_bad_input(tmp_path, planted):
    path = _embeddings_file(tmp_path, planted, True)
    result = CliRunner().invoke(app, ["directions", "--embeddings", str(path), "--captions", "digits",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--clip" in result.output
    np.savez(tmp_path / "nopred.npz", embeddings=np.zeros((4, 2)), labels=np.array([0, 1, 0, 1]))
    result = CliRunner().invoke(app, ["directions", "--embeddings", str(tmp_path / "nopred.npz")])
    assert result.exit_code == 2 and "predictions" in result.output


# ------------------------------------------------------------------ the study
def test_study_failure_directions_quick(tmp_path, data_dir):
    from spurlab.studies.study_base import run_study

    overrides = {"correlation": [0.9], "n_train": 800, "n_test": 200, "epochs": 2, "k_select": 10, "n_seeds": 1,
                 "interventions": ["erm", "svm_balanced", "oracle_groups", "select_svm"]}
    result, out = run_study("failure-directions", out_dir=tmp_path / "study", quick=True, seed=0, device="cpu",
                            overrides=overrides)
    frame = pd.read_csv(out / "results.csv")
    assert {"experiment", "metric", "value", "seed", "correlation", "embedder", "intervention"} <= set(frame.columns)
    directions = frame[frame["experiment"] == "directions"]
    assert set(directions["embedder"]) == {"own", "efficientnet-lite0"}
    wanted = {"svm_cv_balanced_acc", "error_auroc", "flag_minority_precision", "minority_recall"}
    assert wanted <= set(directions["metric"])
    wga = frame[frame["metric"] == "worst_group_acc"]
    assert set(wga["intervention"]) == {"erm", "svm_balanced", "oracle_groups", "select_svm"}
    assert {"worst_group_accuracy.png", "flags.png", "report.html", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert not result.headline.empty


def test_solver_is_exact_with_fewer_examples_than_dimensions():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 100))
    y = np.where(rng.random(40) < 0.5, 1.0, -1.0)
    reduced = solve_squared_hinge(x, y, np.ones(40), [0.05, 2.0], dtype=torch.float64, tol=1e-9)
    # the same problem with extra rows of zero weight takes the full-dimensional path
    padded = solve_squared_hinge(np.vstack([x, rng.normal(size=(80, 100))]), np.concatenate([y, np.ones(80)]),
                                 np.concatenate([np.ones(40), np.zeros(80)]), [0.05, 2.0], dtype=torch.float64,
                                 tol=1e-9)
    assert np.allclose(reduced.w, padded.w, atol=1e-5) and np.allclose(reduced.b, padded.b, atol=1e-5)
