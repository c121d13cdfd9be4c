"""Study ``failure-directions``: Jain, Lawrence, Moitra, Madry, ICLR 2023 (arXiv 2206.14754).

A dataset with a planted failure mode (default: Colored MNIST, digits 0-4 vs 5-9 coloured
by a spurious attribute that agrees with the class with probability ``correlation``,
swept as in the paper). Per correlation and seed:

1. an ERM model is trained on the train split (a ``pool`` carved from it stays unused);
2. each embedder (the model's own penultimate layer, EfficientNet-Lite0 with ImageNet
   weights) embeds the splits; :class:`~spurlab.probes.directions.FailureDirections` is fit
   on the validation split (same distribution as train) and evaluated on the pool:
   ``svm_cv_balanced_acc``, ``error_auroc``, ``flag_minority_precision``,
   ``minority_recall`` (and the minority's share of the errors, the baseline precision);
   the same metrics pooled over classes (``pooled_*``, how the paper reports its 89.9% / 84.7%);
3. each direction is captioned: the attribute captioner always (from the known spurious attribute of the
   validation examples), and CLIP templates when ``clip_checkpoint`` names a local checkpoint (a ``clip``
   embedder then joins); ``caption_accuracy`` (``clip_caption_accuracy``) is the share of classes
   whose top failure caption names a minority attribute value (one that disagrees with the class);
4. interventions retrain the model and report test (group-balanced) accuracies:
   upweighting flagged training examples (``svm_overweight``/``svm_balanced``/``svm_soft``)
   against ``confidence`` and ``oracle_groups`` weights, and adding ``k_select`` pool
   examples per class chosen by the SVM (``select_svm``) against ``select_confidence`` and
   ``select_random``.

Every trained model also reports its training accuracy beside its test numbers:
``train_accuracy`` and ``train_worst_group_acc`` on the examples it was fit on (the train split;
plus the selected pool examples for selection), and ``fitted`` (1 when the worst training group
reaches ``fit_accuracy``). The directions rows carry the ERM model's, the model whose errors they
predict. A run that did not fit is named in the notes: its test numbers describe underfitting.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.dataset_registry import get_entry, load_splits
from spurlab.data.lazy_images import concat_rows, take_rows
from spurlab import metrics
from spurlab.errors import SpurlabError
from spurlab.params import Interval, NumberList, OptionList, Text, optional, positive_int, probability
from spurlab.models.embedders import (EfficientNetLite0Embedder, HFClipEncoder, PenultimateEmbedder,
                                      check_clip_checkpoint)
from spurlab.probes.captions import AttributeCaptioner, CaptionScorer
from spurlab.probes.directions import FailureDirections
from spurlab.studies.study_base import Study, StudyContext, StudyResult, register_study
from spurlab.studies.failure_directions.directions_figures import add_figures, headline_table
from spurlab.train.engines import upweighting as iv
from spurlab.train.trainer import TrainConfig, predict

EMBEDDERS = ("own", "efficientnet-lite0", "clip")
UPWEIGHTING = ("erm", "svm_overweight", "svm_balanced", "svm_soft", "confidence", "oracle_groups")
SELECTION = ("select_svm", "select_confidence", "select_random")
SVM_INTERVENTIONS = ("svm_overweight", "svm_balanced", "svm_soft", "select_svm")
DIRECTION_METRICS = {"cv_balanced_acc": "svm_cv_balanced_acc", "error_auroc": "error_auroc",
                     "flag_minority_precision": "flag_minority_precision", "minority_recall": "minority_recall",
                     "minority_share_of_errors": "minority_share_of_errors", "error_rate": "error_rate",
                     "flagged_fraction": "flagged_fraction"}
POOLED_METRICS = ("error_auroc", "flag_minority_precision", "minority_recall", "minority_share_of_errors",
                  "flagged_fraction")
GROUP_METRICS = ("worst_group_acc", "accuracy", "mean_group_acc")
TRAIN_METRICS = ("train_accuracy", "train_worst_group_acc", "fitted")


@register_study
class FailureDirectionsStudy(Study):
    name = "failure-directions"
    title = "Failure directions: find, rank and fix a planted failure mode"
    paper = "Jain, Lawrence, Moitra, Madry, ICLR 2023 (arXiv 2206.14754)"
    summary = ("Per-class linear SVMs on embeddings predict where an ERM model errs. On Colored MNIST with the "
               "colour-class correlation swept, the flagged examples are measured against the planted minority "
               "(a != y), and upweighting / data selection by the SVM are compared with confidence-based, "
               "random and oracle-group baselines on worst-group accuracy.")

    def default_config(self, quick: bool) -> dict[str, Any]:
        return {
            "dataset": "colored-mnist",
            "dataset_params": {},  # passed to the dataset, e.g. {"spurious": "patch"} for cifar10
            "correlation": [0.9, 0.97] if quick else [0.8, 0.9, 0.95, 0.97, 0.99],
            "n_train": 2500 if quick else 12000,
            "n_test": 600 if quick else 4000,
            "val_fraction": 0.2,
            "pool_fraction": 0.3,
            "model": "mlp",
            "hidden": [128] if quick else [256, 128],
            # quick: 20 epochs at 3e-3 fit every model (worst training group >= 0.99); 8 at 1e-3 fit none
            "epochs": 20,
            "lr": 3e-3 if quick else 1e-3,
            "batch_size": 128,
            "embedders": ["own", "efficientnet-lite0"],
            "intervention_embedders": ["efficientnet-lite0"] if quick else ["own", "efficientnet-lite0"],
            "clip_checkpoint": None,  # a local CLIP folder: adds the "clip" embedder and template captions
            "caption_vocabulary": "digits",
            "effnet_image_size": 32 if quick else 64,
            "interventions": list(UPWEIGHTING + SELECTION),
            "upweight": 2.0,
            "k_select": 40 if quick else 150,
            "n_seeds": 3,
            "fit_accuracy": 0.99,  # a trained model whose worst training group is below this did not fit
        }

    # Declared bounds (checked by run_study before validate, each refusal naming its key).
    parameter_constraints = {
        "correlation": NumberList(probability(closed="neither")),
        "embedders": OptionList(*EMBEDDERS),
        "interventions": OptionList(*(UPWEIGHTING + SELECTION), min_len=0),
        **{key: Interval(float, 0, 0.9, closed="neither") for key in ("val_fraction", "pool_fraction")},
        **{key: positive_int() for key in ("n_train", "n_test", "epochs", "k_select", "n_seeds", "effnet_image_size",
                                           "batch_size")},
        "upweight": Interval(float, 1, None),
        "fit_accuracy": Interval(float, 0, 1),
        "lr": Interval(float, 0, None, closed="neither"),
        "hidden": NumberList(positive_int(), min_len=0),
        "clip_checkpoint": optional(Text()),  # the folder itself is checked in validate
        "dataset": Text(),  # a registered name, checked in validate
    }

    def validate(self, config: dict[str, Any]) -> None:
        super().validate(config)
        if "clip" in config["embedders"] and not config.get("clip_checkpoint"):
            raise SpurlabError("the clip embedder needs a local checkpoint",
                               hint="--set clip_checkpoint=/path/to/clip (a Hugging Face CLIP folder)")
        if config.get("clip_checkpoint"):  # refused before any training, not after the first model
            try:
                check_clip_checkpoint(config["clip_checkpoint"])
            except SpurlabError as exc:  # the message names the parameter the folder came from
                raise SpurlabError(f"study {self.name!r}: parameter 'clip_checkpoint': {exc}") from None
        _check_subset("intervention_embedders", config["intervention_embedders"], config["embedders"])
        get_entry(config["dataset"])

    def run(self, ctx: StudyContext) -> StudyResult:
        cfg = dict(ctx.config)
        if cfg.get("clip_checkpoint") and "clip" not in cfg["embedders"]:
            cfg["embedders"] = [*cfg["embedders"], "clip"]
        result = StudyResult()
        top = max(float(p) for p in cfg["correlation"])
        histograms: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for k in range(int(cfg["n_seeds"])):
            seed = ctx.seed + k
            for p in cfg["correlation"]:
                with ctx.timed(f"correlation {p} seed {seed}"):
                    found, captions = run_one(result, cfg, float(p), seed, ctx.device)
                if k == 0:
                    result.notes += caption_notes(captions, p, seed)
                if float(p) == top and k == 0:
                    histograms = found
        result.headline = headline_table(result.frame())
        add_figures(result, result.frame(), histograms, top)
        result.notes.append("Directions are fit on the validation split (train distribution) and evaluated on the "
                            "unused pool (train distribution); accuracies are on the group-balanced test split. "
                            "flag_minority_precision should be read against minority_share_of_errors: the share "
                            "the flags would have if they picked errors blindly. train_acc / train_wga are the "
                            "trained model's accuracy on the examples it was fit on (directions rows: the ERM "
                            "model's); fitted is the share of seeds whose worst training group reached "
                            f"{float(cfg['fit_accuracy'])}.")
        result.notes += unfitted_notes(result.frame(), float(cfg["fit_accuracy"]))
        return result


def _check_subset(key: str, values, allowed) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise SpurlabError(f"{key} has unknown value(s) {unknown}", hint=f"choose from {', '.join(allowed)}")


# ------------------------------------------------------------------ one (correlation, seed)
def build_splits(cfg: dict[str, Any], p: float, seed: int) -> tuple[GroupedDataset, ...]:
    """(train, val, pool, test): val keeps the train correlation, test is group-balanced."""
    entry = get_entry(cfg["dataset"])
    wanted = {"p": p, "val_correlation": "same", "test_correlation": "balanced",
              "val_fraction": cfg["val_fraction"], "n_train": cfg["n_train"], "n_test": cfg["n_test"]}
    params = {k: v for k, v in wanted.items() if k in entry.parameters()}
    params.update(cfg.get("dataset_params") or {})
    splits: DatasetSplits = load_splits(cfg["dataset"], seed=seed, **params)
    if "val" not in splits or splits["train"].a is None:
        raise SpurlabError(f"dataset {cfg['dataset']!r} needs a val split and a spurious attribute",
                           hint="use an image dataset with an injection, e.g. colored-mnist")
    full = splits["train"]
    order = np.random.default_rng(seed + 17).permutation(len(full))
    n_pool = int(round(float(cfg["pool_fraction"]) * len(full)))
    pool = full.subset(np.sort(order[:n_pool]), split="pool")
    train = full.subset(np.sort(order[n_pool:]), split="train")
    return train, splits["val"], pool, splits["test"]


def make_embedder(name: str, model, cfg: dict[str, Any], device: str):
    if name == "own":
        return PenultimateEmbedder(model, device=device)
    if name == "clip":
        return HFClipEncoder(cfg["clip_checkpoint"], device=device)
    return EfficientNetLite0Embedder(image_size=int(cfg["effnet_image_size"]), batch_size=128, device=device)


def run_one(result: StudyResult, cfg: dict[str, Any], p: float, seed: int, device: str) -> dict[str, dict]:
    train, val, pool, test = build_splits(cfg, p, seed)
    retrainer = iv.Retrainer(cfg["model"], TrainConfig(epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                                                       batch_size=int(cfg["batch_size"]), seed=seed, device=device),
                             model_options={"hidden": tuple(int(h) for h in cfg["hidden"])})
    base = retrainer.train(train.x, train.y, train.n_classes)
    params = {"correlation": p}
    fit_accuracy = float(cfg["fit_accuracy"])
    base_fit = training_accuracy(base, [train], device, fit_accuracy)
    _add_group_rows(result, "upweighting", "erm", "none", {**iv.group_metrics(base, test, device), **base_fit},
                    seed, params)
    val_pred = predict(base, val.x, device=device)
    pool_pred = predict(base, pool.x, device=device)
    histograms = {}
    scores = {}
    captions: dict[str, dict[str, dict]] = {}
    for name in cfg["embedders"]:
        embedder = make_embedder(name, base, cfg, device)
        embed = embedder.embed
        emb = {"train": embed(train.x), "val": embed(val.x), "pool": embed(pool.x)}
        directions = FailureDirections(seed=seed, device=device).fit(emb["val"], val.y, val_pred,
                                                                     train_embeddings=emb["train"])
        table = directions.evaluate(emb["pool"], pool.y, pool_pred, minority=pool.is_minority(), pooled=True)
        mean = table[table["name"] == "mean"].iloc[0]
        pooled = table[table["name"] == "pooled"].iloc[0]
        for column, metric in DIRECTION_METRICS.items():
            result.add("directions", metric, mean[column], seed, embedder=name, **params)
        for column in POOLED_METRICS:
            result.add("directions", f"pooled_{column}", pooled[column], seed, embedder=name, **params)
        for metric in TRAIN_METRICS:  # the model whose errors the directions predict
            result.add("directions", metric, base_fit[metric], seed, embedder=name, **params)
        captions[name] = add_caption_rows(result, directions, emb["val"], val, cfg, seed, name, params,
                                          embedder if name == "clip" else None)
        for c, reason in directions.skipped_.items():
            result.notes.append(f"correlation {p}, seed {seed}, {name}: class {c} skipped ({reason})")
        pool_dv = directions.decision_function(emb["pool"], pool.y)
        # per class: each class has its own SVM, so decision values share no scale across classes
        histograms[name] = {cls: {"majority": pool_dv[(pool.y == c) & ~pool.is_minority()],
                                  "minority": pool_dv[(pool.y == c) & pool.is_minority()]}
                            for c, cls in enumerate(pool.class_names)}
        scores[name] = (directions.decision_function(emb["train"], train.y), pool_dv)
    run_interventions(result, cfg, (train, pool, test), base, scores, retrainer, seed, params, device)
    return histograms, captions


def training_accuracy(model, parts: list[GroupedDataset], device: str, fit_accuracy: float) -> dict[str, float]:
    """Accuracy of ``model`` on the examples it was fit on (``parts`` together): overall, worst group, fitted."""
    y = np.concatenate([part.y for part in parts])
    groups = np.concatenate([part.g for part in parts])
    pred = np.concatenate([predict(model, part.x, device=device) for part in parts])
    worst = min(metrics.group_accuracies(y, pred, groups, parts[0].n_groups).values())
    return {"train_accuracy": metrics.accuracy(y, pred), "train_worst_group_acc": worst,
            "fitted": float(worst >= fit_accuracy)}


def unfitted_notes(frame: pd.DataFrame, fit_accuracy: float) -> list[str]:
    """One note naming every trained model (correlation, intervention, seed) that did not fit its training set."""
    trained = frame[frame["experiment"].isin(["upweighting", "selection"])]
    wga = trained[trained["metric"] == "train_worst_group_acc"]
    missed = wga[wga["value"] < fit_accuracy]
    if missed.empty:
        return []
    runs = "; ".join(f"p={row.correlation} {row.intervention} seed {row.seed}: {row.value:.3f}"
                     for row in missed.itertuples(index=False))
    return [f"NOT FITTED: {len(missed)} of {len(wga)} trained models end with a worst training group below "
            f"{fit_accuracy} (their test numbers describe a model that did not fit its training set): {runs}"]


def caption_notes(captions: dict[str, dict[str, dict]], p: float, seed: int) -> list[str]:
    """The top failure caption of each class, per embedder and captioner (first seed of each correlation)."""
    notes = []
    for embedder, by_captioner in captions.items():
        for captioner, described in by_captioner.items():
            named = "; ".join(f"{entry['name']}: {entry['failure'][0]['caption']!r}"
                              for entry in described.values() if entry["failure"])
            notes.append(f"Top failure captions (p={p}, seed {seed}, {embedder} directions, {captioner}): {named}")
    return notes


def minority_attributes(data: GroupedDataset, label: int) -> set[str]:
    """Attribute names of a class's minority: every value but the one that agrees with the class."""
    return {str(name) for a, name in enumerate(data.attr_names) if a != label}


def caption_accuracy(described: dict[int, dict], correct) -> float:
    """Share of described classes whose top failure caption passes ``correct(class, caption)``."""
    hits = [bool(entry["failure"]) and correct(c, str(entry["failure"][0]["caption"]))
            for c, entry in described.items()]
    return float(np.mean(hits)) if hits else float("nan")


def names_a_minority_value(data: GroupedDataset, c: int, text: str) -> bool:
    """Whether a caption of class ``c`` names an attribute value of the class's minority (as whole words).

    A value is named without its attribute's prefix: ``foreground_colour=green`` is named by "green".
    """
    words = f" {' '.join(text.lower().split())} "
    return any(f" {value.split('=')[-1].lower()} " in words for value in minority_attributes(data, c))


def add_caption_rows(result, directions, val_emb, val: GroupedDataset, cfg, seed, embedder, params,
                     encoder) -> dict[str, dict]:
    """Caption accuracy against the planted attribute: the attribute captioner, and CLIP templates if given.

    Returns the descriptions, ``{"attributes" | "clip templates": {class: {"name", "failure", "easy"}}}``.
    """
    names = [str(n) for n in val.class_names] if getattr(val, "class_names", ()) else None
    metadata = pd.DataFrame({"attribute": [str(val.attr_names[a]) for a in val.a]})
    described = {"attributes": directions.describe(AttributeCaptioner(val_emb, val.y, metadata), names, k=1)}
    accuracy = caption_accuracy(described["attributes"],
                                lambda c, text: text.split("=", 1)[-1] in minority_attributes(val, c))
    result.add("directions", "caption_accuracy", accuracy, seed, embedder=embedder, **params)
    if encoder is None:
        return described
    scorer = CaptionScorer(encoder, vocabulary=cfg["caption_vocabulary"], seed=seed)
    described["clip templates"] = directions.describe(scorer, names, k=1)
    accuracy = caption_accuracy(described["clip templates"], lambda c, text: names_a_minority_value(val, c, text))
    result.add("directions", "clip_caption_accuracy", accuracy, seed, embedder=embedder, **params)
    return described


def run_interventions(result, cfg, data, base, scores, retrainer, seed, params, device) -> None:
    train, pool, test = data
    chosen = set(cfg["interventions"])
    weights: dict[tuple[str, str], np.ndarray] = {}
    selections: dict[tuple[str, str], np.ndarray] = {}
    for name in cfg["intervention_embedders"]:
        train_dv, pool_dv = scores[name]
        for scheme in ("overweight", "balanced", "soft"):
            if f"svm_{scheme}" in chosen:
                weights[(f"svm_{scheme}", name)] = iv.upweight_flagged(train_dv, train.y, scheme,
                                                                       float(cfg["upweight"]))
        if "select_svm" in chosen:
            selections[("select_svm", name)] = iv.select_from_pool("svm", pool.y, int(cfg["k_select"]),
                                                                   decision_values=pool_dv)
    # the confidence baseline upweights as many examples per class as the SVM flags
    reference = (list(cfg["intervention_embedders"]) or list(cfg["embedders"]))[0]
    counts = iv.flagged_counts(scores[reference][0], train.y)
    if "confidence" in chosen:
        weights[("confidence", "none")] = iv.confidence_weights(
            iv.model_confidence(base, train.x, train.y, device), train.y, counts, float(cfg["upweight"]))
    if "oracle_groups" in chosen:
        weights[("oracle_groups", "none")] = iv.oracle_group_weights(train.g)
    if "select_confidence" in chosen:
        selections[("select_confidence", "none")] = iv.select_from_pool(
            "confidence", pool.y, int(cfg["k_select"]), confidence=iv.model_confidence(base, pool.x, pool.y, device))
    if "select_random" in chosen:
        selections[("select_random", "none")] = iv.select_from_pool("random", pool.y, int(cfg["k_select"]),
                                                                    seed=seed)
    fit_accuracy = float(cfg["fit_accuracy"])
    for (name, embedder), w in weights.items():
        model = retrainer.train(train.x, train.y, train.n_classes, sample_weights=w)
        values = {**iv.group_metrics(model, test, device), **training_accuracy(model, [train], device, fit_accuracy)}
        _add_group_rows(result, "upweighting", name, embedder, values, seed, params)
    for (name, embedder), idx in selections.items():
        x = concat_rows([train.x, take_rows(pool.x, idx)])  # lazy images stay lazy
        model = retrainer.train(x, np.concatenate([train.y, pool.y[idx]]), train.n_classes)
        values = {**iv.group_metrics(model, test, device),
                  **training_accuracy(model, [train, pool.subset(idx)], device, fit_accuracy)}
        values["selected_minority_share"] = float(np.mean(pool.is_minority()[idx]))
        _add_group_rows(result, "selection", name, embedder, values, seed, params)


def _add_group_rows(result, experiment, intervention, embedder, values, seed, params) -> None:
    for metric in (*GROUP_METRICS, *TRAIN_METRICS, "selected_minority_share"):
        if metric in values:
            result.add(experiment, metric, values[metric], seed, embedder=embedder, intervention=intervention,
                       **params)
