"""The audit's typed findings record: what ``Audit.find_issues()`` measured, and what the renderer reads.

Each step fills one field; a step that did not run leaves its field ``None`` and says why in
``skipped_steps``. Adding a step means adding one field here and one section in ``render.py``;
a misspelled field fails loudly instead of hiding a section.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurlab.data.grouped import DatasetSplits

# name -> (matplotlib figure, caption)
Figures = dict[str, tuple[Any, str]]
CHANCE_AUROC = 0.5


def _measured(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def nothing_found_reason(error_auroc: float | None, minority_recall: float | None = None,
                         flag_minority_precision: float | None = None) -> str | None:
    """Why a failure direction shows no failure mode (None when it does): error AUROC at or below chance, or
    flags that catch no minority example. Such a direction is reported as "found nothing", never captioned."""
    if not _measured(error_auroc):
        return "no error AUROC could be measured"
    if error_auroc <= CHANCE_AUROC:
        return f"error AUROC {error_auroc:.2f} is at or below chance ({CHANCE_AUROC:.2f})"
    if (_measured(minority_recall) and minority_recall == 0) or \
            (_measured(flag_minority_precision) and flag_minority_precision == 0):
        return "its flags catch no minority example"
    return None


@dataclass
class DirectionsFindings:
    """Per-class failure directions fit on ``fit_split`` and scored on the test split."""
    fit_split: str
    table: pd.DataFrame  # one row per class plus a "mean" row
    skipped: dict[str, str]
    captions: dict[str, Any] = field(default_factory=dict)
    flag_minority_precision: float | None = None
    minority_recall: float | None = None
    error_auroc: float | None = None
    cv_balanced_acc: float | None = None
    figures: Figures = field(default_factory=dict)

    @property
    def nothing_found(self) -> str | None:
        """Why the directions, taken together, found nothing (None when they found a failure mode); when no
        class could be scored, each class's own reason (e.g. a model that makes no errors to explain)."""
        reason = nothing_found_reason(self.error_auroc, self.minority_recall, self.flag_minority_precision)
        if reason is not None and not _measured(self.error_auroc) and self.skipped:
            per_class = "; ".join(f"class {name}: {why}" for name, why in self.skipped.items())
            return f"no class could be scored ({per_class})"
        return reason

    def class_nothing_found(self) -> dict[str, str]:
        """Class name -> why that class's direction found nothing."""
        out = {}
        per_class = self.table["class"] >= 0 if "class" in self.table else self.table["name"] != "mean"
        for row in self.table[per_class].to_dict("records"):
            reason = nothing_found_reason(row.get("error_auroc"), row.get("minority_recall"),
                                          row.get("flag_minority_precision"))
            if reason:
                out[str(row["name"])] = reason
        return out

    def failure_captions(self) -> dict[str, str]:
        """Class name -> the caption of its failing end, for the classes whose direction found something."""
        empty = self.class_nothing_found()
        return {str(c["name"]): c["failure"][0]["caption"] for c in self.captions.values()
                if c.get("failure") and str(c["name"]) not in empty and not self.nothing_found}


@dataclass
class UnitsFindings:
    """Critical units ranked two ways and what editing the top-k does to every group."""
    target_group: str | None
    units: pd.DataFrame
    deltas: pd.DataFrame
    headline: dict[str, Any]
    figures: Figures = field(default_factory=dict)
    sample_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (examples used, in split)


@dataclass
class FixesFindings:
    """The robust methods compared over seeds: one row per run, and their mean/std summary."""
    runs: pd.DataFrame
    summary: pd.DataFrame
    notes: list[str]
    figures: Figures = field(default_factory=dict)


@dataclass
class AuditFindings:
    """Everything one audit measured, step by step."""
    dataset: str  # the resolved dataset name ("embeddings" for an embeddings file)
    dataset_params: dict[str, Any]
    splits: DatasetSplits
    seed: int
    seeds: tuple[int, ...]  # the fixes' seeds
    device: str
    quick: bool
    epochs: int
    mode: str = "custom"  # "quick" or "full" when the resolved epochs, seeds and methods are that preset's
    model_name: str | None = None  # None when the audit read embeddings and predictions from a file
    model_source: str = "erm"  # "erm": trained by the audit; "given": your trained model, audited as it is
    features_missing: str | None = None  # why the model's penultimate features cannot be read, if so
    features_from_cache: dict[str, bool] = field(default_factory=dict)  # per split: from the feature cache
    history: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    group_table: pd.DataFrame | None = None  # split x group: name, count, accuracy
    split_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_test_gap: dict[str, float] = field(default_factory=dict)
    directions: DirectionsFindings | None = None
    units: UnitsFindings | None = None
    fixes: FixesFindings | None = None
    verdict: dict[str, Any] = field(default_factory=dict)  # facts, plus the sentence under "text"
    skipped_steps: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def model_description(self) -> str:
        if self.model_name is None:
            return "embeddings and predictions from a file"
        if self.model_source == "given":
            return f"{self.model_name}, audited as it is (no training step)"
        return f"model {self.model_name} (ERM)"

    @property
    def verdict_text(self) -> str:
        return self.verdict.get("text", "")

    @property
    def figures(self) -> Figures:
        out: Figures = {}
        for step in (self.directions, self.units, self.fixes):
            if step is not None:
                out.update(step.figures)
        return out


@dataclass
class AuditReport:
    out_dir: Path
    summary: dict[str, Any]
    group_table: pd.DataFrame
    verdict: str
