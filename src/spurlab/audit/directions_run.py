"""``spurlab directions``: failure directions for a bring-your-own embeddings file.

Input: an ``.npz``/``.parquet`` with ``embeddings``, ``labels``, ``predictions`` and optionally
``split`` (train/val/test), ``groups``, ``spurious``, ``class_names``, ``images`` (N x H x W
[x C] or N x C x H x W) or an image-path column, and any other per-example attribute columns.

Roles: the SVMs are fit on ``val`` (without a ``split`` column: every 5th example of each
class), standardized with ``train`` statistics (without a train split: all examples), and
evaluated on ``test`` (else every example not used for fitting).

Output folder: ``examples.csv``, ``directions.npz``, ``summary.json``, ``report.html``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurlab.audit.findings import nothing_found_reason
from spurlab.data.embeddings import RESERVED, _split_names, read_embeddings_file
from spurlab.errors import SpurlabError
from spurlab.probes.captions import AttributeCaptioner, CaptionScorer
from spurlab.probes.directions import FailureDirections, minority_from_groups, within_class_rank
from spurlab.report.direction_plots import plot_decision_histograms, plot_image_grid
from spurlab.report.html import HtmlReport
from spurlab.utils import atomic_write_csv, atomic_write_json

PATH_COLUMNS = ("image_path", "path", "filepath", "file", "image")
NOT_ATTRIBUTES = set(RESERVED) | {"images", *PATH_COLUMNS, "index", "id"}


@dataclass
class DirectionsRun:
    out_dir: Path
    directions: FailureDirections
    table: pd.DataFrame
    examples: pd.DataFrame
    captions: dict[int, dict[str, Any]]
    warnings: list[str]


# ------------------------------------------------------------------ roles of the examples
def every_kth_per_class(labels: np.ndarray, k: int = 5) -> np.ndarray:
    """Boolean mask: every ``k``-th example of each class (in file order), starting at the first."""
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        mask[np.flatnonzero(labels == c)[::k]] = True
    return mask


def assign_roles(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(fit mask, statistics mask, evaluation mask, description)."""
    labels = data["labels"]
    if "split" not in data:
        fit = every_kth_per_class(labels)
        return fit, np.ones(len(labels), bool), ~fit, ("no split column: every 5th example per class fits the "
                                                        "SVMs, the rest evaluates them")
    split = _split_names(np.asarray(data["split"]))
    fit = split == "val"
    if not fit.any():
        raise SpurlabError("the split column has no 'val' examples to fit the SVMs on",
                           hint="mark held-out examples as val (or 1), or drop the split column")
    stats = split == "train" if (split == "train").any() else np.ones(len(labels), bool)
    evaluate = split == "test" if (split == "test").any() else ~fit
    if not evaluate.any():
        evaluate = fit
    return fit, stats, evaluate, "SVMs fit on val, standardized with train statistics, evaluated on test"


def minority_mask(data: dict[str, Any], n_classes: int) -> np.ndarray | None:
    labels = data["labels"]
    if "spurious" in data:
        spurious = np.asarray(data["spurious"])
        if np.issubdtype(spurious.dtype, np.integer) and spurious.max(initial=0) < n_classes:
            return spurious != labels
        return minority_from_groups(labels, pd.factorize(spurious)[0])
    if "groups" in data:
        return minority_from_groups(labels, pd.factorize(np.asarray(data["groups"]))[0])
    return None


def attribute_frame(data: dict[str, Any]) -> pd.DataFrame:
    columns = {k: v for k, v in data.items() if k not in NOT_ATTRIBUTES and np.ndim(v) == 1}
    if "spurious" in data:
        columns["spurious"] = data["spurious"]
    if "groups" in data:
        columns["groups"] = data["groups"]
    return pd.DataFrame(columns)


# ------------------------------------------------------------------ the pipeline
def run_directions(embeddings: str | Path, out_dir: str | Path, captions: str | Path | None = None,
                   clip: str | Path | None = None, top_k: int = 16, seed: int = 0,
                   device: str = "auto", loss: str = "hinge") -> DirectionsRun:
    """Fit, score, caption and report failure directions for one embeddings file.

    ``loss="hinge"`` (default) is the authors' SVC pipeline (flags equal SVC's); ``"squared_hinge"``
    the faster L2-SVM. The per-class table ends with a ``mean`` and a ``pooled`` row."""
    data = read_embeddings_file(embeddings)
    if "predictions" not in data:
        raise SpurlabError(f"{embeddings} has no 'predictions' entry",
                           hint="failure directions need the model's predicted class for every example")
    if captions is not None and clip is None:
        raise SpurlabError("--captions needs a joint image-text encoder to embed the captions",
                           hint="pass --clip PATH (a local CLIP checkpoint); without one, attribute columns in "
                                "the file are used to describe the directions")
    if clip is not None:  # refused before the SVMs are fit, not after
        from spurlab.models.embedders import check_clip_checkpoint

        check_clip_checkpoint(clip)
    labels, preds, emb = data["labels"], data["predictions"], data["embeddings"]
    class_names = [str(c) for c in data["class_names"]] if "class_names" in data else None
    fit, stats, evaluate, roles = assign_roles(data)
    directions = FailureDirections(seed=seed, device=device, loss=loss).fit(emb[fit], labels[fit], preds[fit],
                                                                            train_embeddings=emb[stats])
    n_classes = int(max(labels.max(), preds.max())) + 1
    minority = minority_mask(data, n_classes)
    table = directions.evaluate(emb[evaluate], labels[evaluate], preds[evaluate],
                                minority=None if minority is None else minority[evaluate], class_names=class_names,
                                pooled=True)
    dv = directions.decision_function(emb, labels)
    examples = examples_frame(data, dv, fit, evaluate)
    caption_sets = describe(directions, data, fit, class_names, captions, clip, device)
    warnings = [f"class {class_names[c] if class_names else c}: skipped ({reason})"
                for c, reason in directions.skipped_.items()]
    out = Path(out_dir)
    write_outputs(out, directions, table, examples, caption_sets, warnings, roles, data, minority, top_k, class_names)
    return DirectionsRun(out, directions, table, examples, caption_sets, warnings)


def examples_frame(data: dict[str, Any], dv: np.ndarray, fit: np.ndarray, evaluate: np.ndarray) -> pd.DataFrame:
    labels, preds = data["labels"], data["predictions"]
    frame = pd.DataFrame({"index": np.arange(len(labels)), "label": labels, "prediction": preds,
                          "correct": labels == preds, "decision_value": dv,
                          "flagged": np.nan_to_num(dv, nan=np.inf) <= 0, "rank": within_class_rank(dv, labels),
                          "role": np.where(fit, "fit", np.where(evaluate, "evaluate", "other"))})
    for key in ("split", "groups", "spurious"):
        if key in data:
            frame[key] = np.asarray(data[key])
    return frame


def describe(directions, data, fit, class_names, captions, clip, device) -> dict[int, dict[str, Any]]:
    if clip is not None:
        from spurlab.models.embedders import HFClipEncoder

        scorer = CaptionScorer(HFClipEncoder(clip, device=device), vocabulary=captions)
        return directions.describe(scorer, class_names=class_names)
    attributes = attribute_frame(data)
    if attributes.empty:
        return {}
    captioner = AttributeCaptioner(data["embeddings"][fit], data["labels"][fit], attributes[fit].reset_index(drop=True))
    return directions.describe(captioner, class_names=class_names)


# ------------------------------------------------------------------ outputs
def write_outputs(out: Path, directions, table, examples, caption_sets, warnings, roles, data, minority, top_k,
                  class_names) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / "examples.csv", examples)
    directions.save(out / "directions.npz")
    atomic_write_json(out / "summary.json", {
        "roles": roles, "n_examples": int(len(examples)), "n_fit": int((examples["role"] == "fit").sum()),
        "per_class": table.to_dict("records"), "warnings": warnings,
        "captions": {str(c): v for c, v in caption_sets.items()},
        "C_grid": [float(c) for c in directions.cs_], "files": ["examples.csv", "directions.npz", "summary.json",
                                                              "report.html"]})
    write_report(out / "report.html", table, examples, caption_sets, warnings, roles, data, minority, top_k,
                 class_names)


def write_report(path: Path, table, examples, caption_sets, warnings, roles, data, minority, top_k,
                 class_names) -> None:
    report = HtmlReport("spurlab: failure directions", subtitle=f"{len(examples)} examples · {roles}")
    report.text("A linear SVM per class predicts whether the model is right from the embeddings. Its most "
                "negative decision values are the examples most aligned with the class's failure mode; "
                "negative values are flagged as likely errors.")
    for warning in warnings:
        report.text(warning, css_class="warn")
    report.heading("Per-class metrics (evaluation examples)").table(table.drop(columns=["skipped"]).round(4))
    report.heading("Decision values")
    report.figure("decision_values_by_class", plot_decision_histograms(
        decision_series(examples, minority, class_names), "all examples, by the model's correctness and by group"),
        "One panel per class on its own scale: each class has its own SVM, so values are not comparable across "
        "classes.")
    add_caption_tables(report, caption_sets, table)
    add_top_examples(report, examples, data, top_k, class_names)
    report.write(path)


def decision_series(examples: pd.DataFrame, minority: np.ndarray | None,
                    class_names) -> dict[str, dict[str, np.ndarray]]:
    """Per class: decision values of correct / error examples (and majority / minority when known)."""
    dv, labels = examples["decision_value"].to_numpy(), examples["label"].to_numpy()
    correct = examples["correct"].to_numpy()
    out = {}
    for c in np.unique(labels):
        rows = labels == c
        series = {"correct": dv[rows & correct], "error": dv[rows & ~correct]}
        if minority is not None:
            series = {"majority": dv[rows & ~minority], "minority": dv[rows & minority], **series}
        out[class_names[c] if class_names and c < len(class_names) else str(c)] = series
    return out


def add_caption_tables(report: HtmlReport, caption_sets: dict[int, dict[str, Any]], table: pd.DataFrame) -> None:
    if not caption_sets:
        return
    report.heading("Captions")
    metrics = {str(row["name"]): row for row in table.to_dict("records")}
    for entry in caption_sets.values():
        row = metrics.get(str(entry["name"]), {})
        empty = nothing_found_reason(row.get("error_auroc"), row.get("minority_recall"),
                                     row.get("flag_minority_precision"))
        if empty:
            report.text(f"class {entry['name']}: the direction found nothing ({empty}); it is not captioned.",
                        css_class="warn")
            continue
        for side, title in (("failure", "failure mode (lowest scores)"), ("easy", "easy direction (highest)")):
            if entry.get(side):
                report.table(pd.DataFrame(entry[side]).round(4), caption=f"class {entry['name']}: {title}")


def add_top_examples(report: HtmlReport, examples: pd.DataFrame, data: dict[str, Any], top_k: int,
                     class_names) -> None:
    rows = examples[examples["rank"] <= top_k].sort_values(["label", "rank"]).reset_index(drop=True)
    report.heading(f"Top {top_k} failure-aligned examples per class")
    images = load_images(data, rows["index"].to_numpy())
    if images is not None:
        for c, sub in rows.groupby("label"):
            name = class_names[c] if class_names and c < len(class_names) else str(c)
            titles = [f"dv {v:.3g}{'' if ok else ' ✗'}"
                      for v, ok in zip(sub["decision_value"], sub["correct"], strict=True)]
            report.figure(f"top_examples_class_{c}", plot_image_grid(images[sub.index], titles, f"class {name}"),
                          "✗ marks the model's errors")
    report.table(rows[["index", "label", "prediction", "decision_value", "rank", "correct"]].round(4))


def load_images(data: dict[str, Any], indices: np.ndarray) -> np.ndarray | None:
    """Images (n, H, W, 3) in [0, 1] for ``indices`` from an ``images`` array or a path column."""
    if "images" in data:
        return to_hwc(np.asarray(data["images"])[indices])
    column = next((c for c in PATH_COLUMNS if c in data and np.asarray(data[c]).dtype.kind in "UO"), None)
    if column is None or len(indices) == 0:
        return None
    from PIL import Image

    loaded = []
    for p in np.asarray(data[column])[indices]:
        try:
            with Image.open(p) as img:
                loaded.append(np.asarray(img.convert("RGB").resize((64, 64)), dtype=np.float32) / 255.0)
        except OSError:
            loaded.append(np.zeros((64, 64, 3), np.float32))
    return np.stack(loaded)


def to_hwc(images: np.ndarray) -> np.ndarray:
    images = images.astype(np.float32)
    if images.max(initial=0) > 1.0:
        images = images / 255.0
    if images.ndim == 3:
        return np.repeat(images[..., None], 3, axis=-1)
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = np.transpose(images, (0, 2, 3, 1))
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.clip(images, 0, 1)
