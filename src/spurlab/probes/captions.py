"""Describing failure directions in words.

* :class:`CaptionScorer` — candidate captions built from templates and vocabularies kept as
  data (``resources/captions/*.json`` or your own file), embedded by the text side of a
  joint image-text encoder, minus the class's reference caption, pre-processed like the
  images and scored by the class's SVM: the lowest-scoring captions describe the failure
  mode, the highest the easy direction.
* :class:`AttributeCaptioner` — for data with attribute metadata: a direction is described
  by the attribute values over-represented at its low (failing) end versus its high end.

Both return ``{class: {"name", "failure": [...], "easy": [...]}}`` where each entry is a dict
with at least ``caption`` and ``score``.
"""
from __future__ import annotations

import itertools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spurlab.errors import SpurlabError
from spurlab.params import Interval, check_params, positive_int
from spurlab.utils import check_labels, check_same_length

VOCAB_KEYS = ("templates", "reference", "adjectives", "contexts")


# ------------------------------------------------------------------ vocabularies
def available_vocabularies() -> list[str]:
    folder = resources.files("spurlab") / "resources" / "captions"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_vocabulary(source: str | Path | dict | None = None) -> dict[str, Any]:
    """A vocabulary from a built-in name (``default``, ``digits``), a JSON file or a dict.

    Keys: ``templates`` (with ``{adjective}``, ``{noun}``, ``{context}``), ``reference``
    (with ``{noun}``), ``adjectives``, ``contexts``; optional ``subtypes``
    (``{class name or "*": [nouns]}``) and ``nouns`` (``{class name: reference noun}``).
    """
    if source is None:
        source = "default"
    if isinstance(source, dict):
        vocab = dict(source)
    else:
        path = Path(source)
        if not path.suffix and str(source) in available_vocabularies():
            text = (resources.files("spurlab") / "resources" / "captions" / f"{source}.json").read_text("utf-8")
        elif path.is_file():
            text = path.read_text("utf-8")
        else:
            raise SpurlabError(f"caption vocabulary {str(source)!r} not found",
                               hint=f"pass a JSON file or one of: {', '.join(available_vocabularies())}")
        try:
            vocab = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpurlabError(f"caption vocabulary {source} is not valid JSON: {exc}") from None
    return _check_vocabulary(vocab)


def _check_vocabulary(vocab: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in VOCAB_KEYS if k not in vocab]
    if missing:
        raise SpurlabError(f"caption vocabulary lacks {', '.join(missing)}",
                           hint=f"a vocabulary needs {', '.join(VOCAB_KEYS)} (see resources/captions/default.json)")
    if isinstance(vocab["templates"], str):
        vocab["templates"] = [vocab["templates"]]
    for template in vocab["templates"]:
        if "{noun}" not in template:
            raise SpurlabError(f"caption template {template!r} has no {{noun}} slot")
    if "{noun}" not in vocab["reference"]:
        raise SpurlabError(f"reference caption {vocab['reference']!r} has no {{noun}} slot")
    vocab.setdefault("subtypes", {})
    vocab.setdefault("nouns", {})
    return vocab


def class_noun(vocab: dict[str, Any], class_name: str) -> str:
    return vocab["nouns"].get(class_name) or class_name.replace("_", " ").replace("-", " ")


def _fill(template: str, adjective: str, noun: str, context: str) -> str:
    text = template.format(adjective=adjective, noun=noun, context=context)
    return " ".join(text.split())


def candidate_captions(vocab: dict[str, Any], class_name: str, max_captions: int | None = None,
                       seed: int = 0) -> tuple[list[str], str]:
    """(candidate captions, reference caption) for one class; subsampled to ``max_captions``."""
    noun = class_noun(vocab, class_name)
    reference = _fill(vocab["reference"], "", noun, "")
    nouns = list(dict.fromkeys([noun, *vocab["subtypes"].get(class_name, []), *vocab["subtypes"].get("*", [])]))
    captions = []
    for template, n, adj, ctx in itertools.product(vocab["templates"], nouns, ["", *vocab["adjectives"]],
                                                   ["", *vocab["contexts"]]):
        text = _fill(template, adj, n, ctx)
        if text != reference:
            captions.append(text)
    captions = list(dict.fromkeys(captions))
    if max_captions is not None and len(captions) > max_captions:
        keep = np.sort(np.random.default_rng(seed).choice(len(captions), size=int(max_captions), replace=False))
        captions = [captions[i] for i in keep]
    return captions, reference


def _entries(frame: pd.DataFrame, k: int) -> tuple[list[dict], list[dict]]:
    ordered = frame.sort_values("score", kind="stable")
    failure = ordered.head(k).to_dict("records")
    easy = ordered.iloc[::-1].head(k).to_dict("records")
    return failure, easy


def _class_name(class_names, c: int) -> str:
    return str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)


# ------------------------------------------------------------------ joint image-text encoders
class CaptionScorer:
    """Score candidate captions with the class SVMs through a joint image-text ``encoder``.

    ``encoder`` must be the one the SVMs' image embeddings came from (anything with
    ``embed_text(list[str]) -> (N, D)``, e.g. :class:`spurlab.models.embedders.HFClipEncoder`).
    """

    def __init__(self, encoder, vocabulary: str | Path | dict | None = None, max_captions: int | None = 2000,
                 seed: int = 0):
        if not hasattr(encoder, "embed_text"):
            raise SpurlabError(f"{type(encoder).__name__} cannot embed text",
                               hint="captions need a joint image-text encoder (CLIP); without one use "
                                    "AttributeCaptioner on attribute metadata")
        self.encoder = encoder
        self.vocabulary = vocabulary
        self.max_captions = max_captions
        self.seed = seed

    def score(self, directions, label: int, class_name: str) -> pd.DataFrame:
        """Every candidate caption of one class with its SVM score, lowest (failure) first."""
        vocab = load_vocabulary(self.vocabulary)
        captions, reference = candidate_captions(vocab, class_name, self.max_captions, self.seed)
        text = np.asarray(self.encoder.embed_text(captions + [reference]), dtype=np.float32)
        shifted = text[:-1] - text[-1]
        scores = directions.score_direction(shifted, label)
        frame = pd.DataFrame({"caption": captions, "score": scores})
        return frame.sort_values("score", kind="stable").reset_index(drop=True)

    def describe(self, directions, class_names=None, k: int = 5) -> dict[int, dict[str, Any]]:
        out = {}
        for c in directions.classes_:
            c = int(c)
            if c in directions.skipped_:
                continue
            name = _class_name(class_names, c)
            failure, easy = _entries(self.score(directions, c, name), k)
            out[c] = {"name": name, "failure": failure, "easy": easy}
        return out


# ------------------------------------------------------------------ attribute metadata
# What AttributeCaptioner accepts (spurlab.params), checked when it is built.
CAPTIONER_CONSTRAINTS = {"fraction": Interval(float, 0, 0.5, closed="right"), "max_categories": positive_int()}


class AttributeCaptioner:
    """Describe each direction by the attribute values that separate its low and high ends.

    ``embeddings``, ``labels`` and ``metadata`` (one row per example; categorical or numeric
    columns) describe a set of examples, usually the split the SVMs were fit on. Within each
    class, the ``fraction`` of examples with the lowest decision values is the low end and the
    same number with the highest the high end. A categorical value scores the difference of its
    share between the high and the low end; a numeric column the standardized difference of
    means. Negative scores belong to the failing end, positive ones to the easy end.
    """

    def __init__(self, embeddings, labels, metadata: pd.DataFrame, fraction: float = 0.2,
                 columns: list[str] | None = None, max_categories: int = 30):
        fraction, max_categories = check_params("AttributeCaptioner", CAPTIONER_CONSTRAINTS,
                                                {"fraction": fraction, "max_categories": max_categories}).values()
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        self.labels = check_labels("labels", labels)
        if not isinstance(metadata, pd.DataFrame):
            metadata = pd.DataFrame(metadata)
        check_same_length(embeddings=self.embeddings, labels=self.labels, metadata=metadata.index)
        columns = list(metadata.columns) if columns is None else list(columns)
        unknown = [c for c in columns if c not in metadata.columns]
        if unknown:
            raise SpurlabError(f"metadata has no column(s) {unknown}", hint=f"columns: {list(metadata.columns)}")
        if not columns:
            raise SpurlabError("the attribute captioner needs at least one metadata column")
        self.metadata = metadata[columns].reset_index(drop=True)
        self.fraction = fraction
        self.max_categories = max_categories

    def _is_numeric(self, column: pd.Series) -> bool:
        return (pd.api.types.is_float_dtype(column) or
                (pd.api.types.is_numeric_dtype(column) and column.nunique() > self.max_categories))

    def contrast(self, low: pd.DataFrame, high: pd.DataFrame) -> pd.DataFrame:
        """One row per attribute value (or numeric column): caption, score, low, high."""
        rows = []
        for col in low.columns:
            both = pd.concat([low[col], high[col]])
            if self._is_numeric(both):
                spread = float(both.std()) or 1.0
                lo, hi = float(low[col].mean()), float(high[col].mean())
                # "high col" describes whichever end has the larger mean
                rows.append({"caption": f"high {col}", "score": (hi - lo) / spread,
                             "direction": "failure" if lo > hi else "easy", "low": lo, "high": hi})
                continue
            for value in both.dropna().unique()[: self.max_categories]:
                lo, hi = float(np.mean(low[col] == value)), float(np.mean(high[col] == value))
                rows.append({"caption": f"{col}={value}", "score": hi - lo,
                             "direction": "failure" if lo > hi else "easy", "low": lo, "high": hi})
        return pd.DataFrame(rows)

    def describe(self, directions, class_names=None, k: int = 5) -> dict[int, dict[str, Any]]:
        dv = directions.decision_function(self.embeddings, self.labels)
        out = {}
        for c in directions.classes_:
            c = int(c)
            idx = np.flatnonzero(self.labels == c)
            if c in directions.skipped_ or len(idx) < 2:
                continue
            order = idx[np.argsort(dv[idx], kind="stable")]
            m = max(1, int(round(self.fraction * len(idx))))
            table = self.contrast(self.metadata.iloc[order[:m]], self.metadata.iloc[order[-m:]])
            failure = table[table["direction"] == "failure"].sort_values("score", kind="stable")
            easy = table[table["direction"] == "easy"].sort_values("score", ascending=False, kind="stable")
            out[c] = {"name": _class_name(class_names, c),
                      "failure": failure.head(k).drop(columns="direction").to_dict("records"),
                      "easy": easy.head(k).drop(columns="direction").to_dict("records")}
        return out
