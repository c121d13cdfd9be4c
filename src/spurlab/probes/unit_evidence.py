"""The evidence experiment: how editing a few critical units moves each group's accuracy.

For every unit set (a selector's ranking), every ``k`` and every intervention
mode, :func:`unit_evidence` measures the per-group accuracy on each split and
its change against the unedited model. Random modes are repeated with
different seeds and averaged. The memorization signature is a large drop of
*minority* accuracy on the *training* split with the majority groups intact.

>>> units = find_critical_units(model, train, "weight_norm", k=10, layers="conv")  # doctest: +SKIP
>>> sets = [UnitSet("weight_norm", units)]                                             # doctest: +SKIP
>>> table = unit_evidence(model, {"train": train, "test": test}, sets, ks=[1, 2, 3])   # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from spurlab.data.grouped import GroupedDataset
from spurlab.errors import SpurlabError
from spurlab.models.editing import MODES, Intervention, rewind_reference
from spurlab.models.batched_edits import evaluate_interventions
from spurlab.models.layers import model_device
from spurlab.models.units import CriticalUnits
from spurlab.params import Interval, NumberList, OptionList, check_params, positive_int

KEYS = ["unit_set", "selector", "target_group", "mode", "k", "sigma", "rewind_epochs", "fraction"]


@dataclass
class UnitSet:
    """A selector's ranked units under a short label (e.g. ``group_gradient:g2``)."""

    label: str
    units: CriticalUnits
    fraction: float = float("nan")  # for unstructured selections: the share of weights selected

    @property
    def selector(self) -> str:
        return self.units.method or self.label

    @property
    def target_group(self) -> int:
        return -1 if self.units.group is None else int(self.units.group)


@torch.no_grad()
def group_accuracies_of(model: nn.Module, ds: GroupedDataset, batch_size: int = 512) -> np.ndarray:
    """Per-group accuracy (NaN for empty groups), on the model's own device, in eval mode."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        preds = [model(torch.as_tensor(ds.x[i:i + batch_size], dtype=torch.float32, device=device)).argmax(1).cpu()
                 for i in range(0, len(ds), batch_size)]
    finally:
        model.train(was_training)
    hits = (torch.cat(preds).numpy() == ds.y).astype(float)
    counts = np.bincount(ds.g, minlength=ds.n_groups)
    correct = np.bincount(ds.g, weights=hits, minlength=ds.n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, correct / counts, np.nan)


def build_interventions(unit_sets: Sequence[UnitSet], modes: Sequence[str], ks: Sequence[int],
                        sigmas: Sequence[float] = (0.1,), repeats: int = 1,
                        rewinds: Mapping[int, Mapping[str, torch.Tensor]] | None = None,
                        seed: int = 0) -> list[Intervention]:
    """Every (unit set, k, mode, sigma or rewind depth, repeat) as a tagged :class:`Intervention`.

    Channel selections are cut at each ``k``; a single-weight selection is
    applied whole (its ``k`` is its size).
    """
    modes, ks, sigmas, repeats = check_params(
        "build_interventions", {"modes": OptionList(*MODES, min_len=0), "ks": NumberList(positive_int(), min_len=0),
                                "sigmas": NumberList(Interval(float, 0, None), min_len=0), "repeats": positive_int()},
        {"modes": modes, "ks": ks, "sigmas": sigmas, "repeats": repeats}).values()
    if "rewind" in modes and not rewinds:
        raise SpurlabError("the rewind mode needs checkpoints", hint="pass rewinds={epochs_back: state_dict}")
    out = []
    for n_set, us in enumerate(unit_sets):
        n_units = len(us.units)
        sizes = sorted({min(int(k), n_units) for k in ks}) if us.units.granularity == "channel" else [n_units]
        for k in sizes:
            units = us.units.top(k)
            base = {"unit_set": us.label, "selector": us.selector, "target_group": us.target_group, "k": k,
                    "fraction": us.fraction}
            for mode in modes:
                for variant in _variants(mode, sigmas, repeats, rewinds):
                    tags = {**base, "mode": mode, "sigma": variant["sigma"],
                            "rewind_epochs": variant["rewind_epochs"], "rep": variant["rep"]}
                    # Distinct, reproducible noise for every set, size, sigma and repeat.
                    iv_seed = seed + 1009 * n_set + 101 * k + variant["rep"]
                    out.append(Intervention(units, mode, sigma=variant["sigma"] if mode.startswith("random") else 0.0,
                                            seed=iv_seed, reference=variant["reference"], tags=tags))
    return out


def _variants(mode, sigmas, repeats, rewinds):
    nan = float("nan")
    if mode == "zero":
        return [{"sigma": nan, "rewind_epochs": nan, "rep": 0, "reference": None}]
    if mode == "rewind":
        return [{"sigma": nan, "rewind_epochs": float(r), "rep": 0, "reference": ref} for r, ref in rewinds.items()]
    return [{"sigma": float(s), "rewind_epochs": nan, "rep": rep, "reference": None}
            for s in sigmas for rep in range(int(repeats))]


def unit_evidence(model: nn.Module, splits: Mapping[str, GroupedDataset], unit_sets: Sequence[UnitSet],
                  modes: Sequence[str] = ("zero", "random_init", "random_noise"), ks: Sequence[int] = (1, 2, 3),
                  sigmas: Sequence[float] = (0.1,), repeats: int = 3,
                  checkpoints: Mapping[int, Mapping[str, torch.Tensor]] | None = None,
                  rewind_epochs: Sequence[int] = (5,), seed: int = 0, strategy: str = "auto",
                  batch_size: int = 128) -> pd.DataFrame:
    """Long table: one row per (unit set, k, mode, sigma/rewind, split, group) with
    ``acc`` (mean over repeats), ``acc_std``, ``base_acc``, ``delta`` and ``n_repeats``."""
    rewinds = ({int(r): rewind_reference(checkpoints, int(r)) for r in rewind_epochs}
               if "rewind" in modes else None)
    interventions = build_interventions(unit_sets, modes, ks, sigmas, repeats, rewinds, seed)
    frames = []
    for split, ds in splits.items():
        base = group_accuracies_of(model, ds)
        accs = evaluate_interventions(model, interventions, ds.x, ds.y, ds.g, ds.n_groups, strategy=strategy,
                                      batch_size=batch_size)
        rows = [{**iv.tags, "split": split, "group": g, "acc": accs[i, g], "base_acc": base[g]}
                for i, iv in enumerate(interventions) for g in range(ds.n_groups)]
        frames.append(pd.DataFrame(rows))
    table = pd.concat(frames, ignore_index=True)
    grouped = table.groupby(KEYS + ["split", "group"], dropna=False, sort=False)
    out = grouped.agg(acc=("acc", "mean"), acc_std=("acc", "std"), base_acc=("base_acc", "first"),
                      n_repeats=("rep", "count")).reset_index()
    out["delta"] = out["acc"] - out["base_acc"]
    return out


def minority_contrast(evidence: pd.DataFrame, minority: Sequence[int], split: str = "train",
                      max_k: int = 3) -> pd.DataFrame:
    """Per (unit set, mode, k, sigma, rewind) with ``k <= max_k``: mean Δ of the minority and of the
    majority groups on ``split``, and their difference (negative: minority hit harder)."""
    sub = evidence[(evidence["split"] == split) & (evidence["k"] <= max_k)].copy()
    sub["is_minority"] = sub["group"].isin(list(minority))
    keys = ["unit_set", "mode", "k", "sigma", "rewind_epochs"]
    means = sub.groupby(keys + ["is_minority"], dropna=False)["delta"].mean().unstack("is_minority")
    means = means.rename(columns={True: "minority_delta", False: "majority_delta"}).reset_index()
    means["contrast"] = means["minority_delta"] - means["majority_delta"]
    return means.sort_values("contrast", kind="stable").reset_index(drop=True)
