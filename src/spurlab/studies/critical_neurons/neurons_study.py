"""critical-neurons: spurious memorization lives in a few units (You et al., 2025).

Two experiments on a four-group task (a class task with a spurious feature at
~95% correlation, minority groups of a few percent) and a network trained to
100% training accuracy:

* ``evidence`` — rank units three ways, edit the top-k (zero, re-initialize,
  add noise, rewind) and record each group's accuracy change on the train and
  the test split, plus the per-group train - test gap before and after;
* ``paper_edit`` — the paper's own edit (re-initialize the single largest-norm
  conv channel), repeated many times on every seed's ERM model, per group;
* ``framework`` — fine-tune each seed's ERM model with the pruned-copy contrastive
  loss (one arm per mask) and, for the same number of epochs, with plain
  cross-entropy; compare worst-group accuracy at the final epoch and at the epoch
  with the best worst-group validation accuracy (``neurons_framework``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

import pandas as pd

from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.dataset_registry import get_entry, load_splits, resolve_data_dir
from spurlab.errors import DataNotFoundError, SpurlabError
from spurlab.params import AnyOf, Interval, NumberList, OptionList, Options, positive_int, probability
from spurlab.models import as_model_spec, make_model
from spurlab.models.editing import MODES
from spurlab.models.layers import prunable_layers
from spurlab.probes.neurons import find_critical_units
from spurlab.models.batched_edits import evaluate_interventions
from spurlab.probes.unit_evidence import (UnitSet, build_interventions, group_accuracies_of, minority_contrast,
                                          unit_evidence)
from spurlab.studies.critical_neurons import neurons_figures as figs
from spurlab.studies.critical_neurons import neurons_framework as fw
from spurlab.studies.study_base import Study, StudyContext, StudyResult, register_study
from spurlab.train.engines.pruned_copy_contrastive import (MASK_LAYERS, MASK_METHODS, REPRESENTATIONS,
                                                           VACUOUS_POLICIES)
from spurlab.train.trainer import TrainConfig, fit

SELECTORS = ("weight_norm", "group_gradient", "magnitude")
IMAGE_TASK_KEYS = ("spurious", "p", "n_train", "n_test")


@register_study
class CriticalNeuronsStudy(Study):
    name = "critical-neurons"
    title = "Spurious memorization in a few critical neurons, and the pruned-copy training framework"
    paper = "You, Dai, Min, Sekhon, Joshi, Duncan 2025 (arXiv 2501.00961)"
    summary = ("A network fits its minority-group training examples through a handful of units: editing the "
               "top-k units found by weight norm or by the gradient of a group's worst examples lowers minority "
               "training accuracy far more than majority accuracy. Fine-tuning jointly with a pruned copy "
               "(NT-Xent between the two paths + 0.2 CE) is meant to remove that memorization.")

    def default_config(self, quick: bool) -> dict[str, Any]:
        config: dict[str, Any] = {
            "dataset": "binary-mnist", "spurious": "auto", "p": 0.95, "n_train": 1200, "n_test": 800,
            "dataset_params": {}, "data_dir": None,
            "model": "flatcnn", "channels": [8, 16], "erm_epochs": 20, "erm_lr": 1e-3, "erm_batch": 32,
            "selectors": list(SELECTORS), "selector_layers": "conv", "gradient_groups": "minority", "n_worst": 200,
            "magnitude_fractions": [0.05], "magnitude_largest": False,
            "modes": list(MODES), "ks": [1, 2, 3, 5], "sigmas": [0.1], "repeats": 2, "rewind_epochs": [10],
            "paper_edit_sigma": 0.1, "paper_edit_repeats": 20,
            "n_seeds": 2, "framework_epochs": 10, "framework_lr": 2e-4, "framework_batch": 100, "lam": 0.2,
            "temperature": 0.5, "prune_fraction": 0.01, "framework_masks": ["magnitude", "gradient"],
            "framework_ablation": True,
            "mask_layers": "hidden", "representation": "softmax", "on_vacuous_mask": "warn",
            "eval_batch": 128,
        }
        if not quick:
            config.update({
                "dataset": "auto", "n_train": 10000, "n_test": 4000, "model": "auto", "channels": [],
                "erm_epochs": 30, "ks": list(range(1, 11)), "sigmas": [0.005, 0.01, 0.05, 0.1, 0.15],
                "repeats": 10, "rewind_epochs": [5, 10], "n_seeds": 5, "framework_epochs": 21,
                "paper_edit_repeats": 50,
                "gradient_groups": "all",
            })
        return config

    parameter_constraints = {
        "p": probability(), "n_train": positive_int(), "n_test": positive_int(),
        "erm_epochs": positive_int(), "erm_lr": Interval(float, 0, None, closed="neither"),
        "erm_batch": positive_int(), "selectors": OptionList(*SELECTORS), "n_worst": positive_int(),
        "magnitude_fractions": NumberList(probability(closed="right")), "modes": OptionList(*MODES),
        "ks": NumberList(positive_int()), "sigmas": NumberList(Interval(float, 0, None, closed="neither")),
        "repeats": positive_int(), "rewind_epochs": NumberList(positive_int(), min_len=0),
        "paper_edit_sigma": Interval(float, 0, None, closed="neither"), "paper_edit_repeats": Interval(int, 2),
        "n_seeds": positive_int(), "framework_epochs": positive_int(),
        "framework_lr": Interval(float, 0, None, closed="neither"), "framework_batch": Interval(int, 2),
        "lam": Interval(float, 0, None), "temperature": Interval(float, 0, None, closed="neither"),
        "prune_fraction": probability(closed="neither"), "framework_masks": OptionList(*MASK_METHODS),
        "mask_layers": Options(*MASK_LAYERS), "representation": Options(*REPRESENTATIONS),
        "on_vacuous_mask": Options(*VACUOUS_POLICIES), "eval_batch": positive_int(),
        "gradient_groups": AnyOf(Options("minority", "all"), NumberList(Interval(int, 0))),
    }

    def validate(self, config: dict[str, Any]) -> None:
        """What the declared constraints cannot say: the rewind epochs must fall inside the ERM run."""
        if "rewind" in config["modes"] and any(r >= config["erm_epochs"] for r in config["rewind_epochs"]):
            raise SpurlabError(f"rewind_epochs {config['rewind_epochs']} must lie in 1..erm_epochs-1 "
                               f"({config['erm_epochs'] - 1})", hint="lower rewind_epochs or raise erm_epochs")

    # ------------------------------------------------------------ run
    def run(self, ctx: StudyContext) -> StudyResult:
        cfg = ctx.config
        result = StudyResult()
        with ctx.timed("data"):
            splits, dataset = load_task(cfg, ctx.seed)
        train, test = splits["train"], splits["test"]
        minority = minority_of(train)
        with ctx.timed("erm"):
            erm_runs = [train_erm(cfg, train, ctx.seed + i, ctx.device) for i in range(int(cfg["n_seeds"]))]
        with ctx.timed("evidence"):
            evidence, unit_sets = run_evidence(cfg, erm_runs[0], train, test, ctx.seed)
        add_evidence_rows(result, evidence, ctx.seed)
        with ctx.timed("paper_edit"):
            edit = paper_edit(cfg, erm_runs, train, test)
        add_paper_edit_rows(result, edit)
        with ctx.timed("framework"):
            curves = fw.run_framework(cfg, splits, erm_runs, ctx.device)
            summary = fw.selected_metrics(curves, train.group_counts())
            divergence = fw.divergence_rows(curves)
        add_framework_rows(result, curves, summary, divergence)
        methods = [fw.method_name(m) for m in cfg["framework_masks"]] + [fw.ABLATION] * bool(cfg["framework_ablation"])
        table = fw.difference_table(summary, methods)

        result.headline = headline(evidence, edit, table, minority, train)
        result.notes += evidence_notes(evidence, minority, train, dataset)
        result.notes.append("Top critical units: " + "; ".join(
            f"{us.label}: {', '.join(us.units.top(min(5, len(us.units))).labels())}"
            for us in unit_sets if us.units.granularity == "channel"))
        result.notes += fw.framework_notes(table, divergence, 1e-3)
        names = train.group_names
        result.add_figure("delta_vs_k", figs.delta_vs_k(evidence, minority, cfg["modes"], cfg["sigmas"]),
                          "Δ group accuracy vs number of edited units k, per mode (rows: train / test). Solid: "
                          "mean over minority groups; dashed: majority groups. Random modes: median σ.")
        if len(cfg["sigmas"]) > 1:
            result.add_figure("delta_vs_sigma", figs.delta_vs_sigma(evidence, minority),
                              "Δ minority / majority training accuracy vs σ for the random modes (k=3).")
        result.add_figure("top_units", figs.top_units(unit_sets), "The top critical units of each selector "
                          "(scores scaled to the selector's largest); layer[index] names the output channel.")
        result.add_figure("framework_curves", figs.framework_curves(curves, names),
                          "Test accuracy per epoch while fine-tuning the ERM model: plain CE (ERM) vs the "
                          "pruned-copy contrastive framework, mean ± std over seeds.")
        result.add_figure("group_gap", figs.group_gap(evidence, names),
                          "Per-group accuracy of the ERM model on train and test: the train − test gap of the "
                          "minority groups is the memorization signature.")
        return result


# ------------------------------------------------------------------ data and ERM
def load_task(cfg: dict[str, Any], seed: int) -> tuple[DatasetSplits, str]:
    """The configured dataset (``auto``: Waterbirds when on disk, else the MNIST task)."""
    name = cfg["dataset"]
    if name == "auto":
        name = "waterbirds" if _waterbirds_on_disk(cfg["data_dir"]) else "binary-mnist"
    entry = get_entry(name)
    accepted = entry.parameters()
    params = {}
    if entry.kind == "image":
        params = {k: cfg[k] for k in IMAGE_TASK_KEYS if k in accepted and cfg[k] is not None}
        if params.get("spurious") == "auto":  # a preset's own attribute (colored-mnist: the digit's colour)
            params["spurious"] = (entry.defaults or {}).get("spurious") or "patch"
    params.update(cfg["dataset_params"] or {})
    splits = load_splits(name, data_dir=cfg["data_dir"], seed=seed, **params)
    for split in ("train", "test"):
        if split not in splits:
            raise SpurlabError(f"dataset {name!r} has no {split!r} split", hint="the study needs train and test")
        if not splits[split].has_groups or splits[split].a is None:
            raise SpurlabError(f"dataset {name!r} has no spurious attribute, so no groups",
                               hint="for image tasks set spurious=patch or background_colour")
    return splits, name


def _waterbirds_on_disk(data_dir: str | None) -> bool:
    from spurlab.data.benchmarks import find_waterbirds

    try:
        find_waterbirds(resolve_data_dir(data_dir))
    except DataNotFoundError:
        return False
    return True


def minority_of(ds: GroupedDataset) -> list[int]:
    return [g for g in range(ds.n_groups) if g in ds.minority_groups()]


def make_network(cfg: dict[str, Any], train: GroupedDataset, seed: int):
    """``cfg["model"]``: a registered name (``auto``: flatcnn up to 32 px, else resnet), a factory, a
    TorchScript file or ``pkg.module:factory``, a ModelSpec or your own nn.Module (a copy of it is trained)."""
    model = cfg["model"]
    if model == "auto":
        model = "flatcnn" if train.x.shape[-1] <= 32 else "resnet"
    spec = as_model_spec(model)
    if spec.kind != "name":
        return spec.build(train.input_shape, train.n_classes, seed=seed)
    return make_model(spec.model, train.input_shape, train.n_classes, seed=seed,
                      channels=tuple(int(c) for c in cfg["channels"]) or None)


def train_erm(cfg: dict[str, Any], train: GroupedDataset, seed: int, device: str) -> dict[str, Any]:
    """An ERM model trained with a checkpoint every epoch (epoch 0: the initialization)."""
    model = make_network(cfg, train, seed)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tcfg = TrainConfig(epochs=int(cfg["erm_epochs"]), lr=float(cfg["erm_lr"]), batch_size=int(cfg["erm_batch"]),
                       seed=seed, device=device, checkpoint_every=1)
    res = fit(model, train.x, train.y, tcfg)
    return {"model": model, "checkpoints": {0: init, **res.checkpoints}, "seed": seed}


# ------------------------------------------------------------------ evidence
def select_unit_sets(cfg: dict[str, Any], model, train: GroupedDataset) -> list[UnitSet]:
    k_max = max(int(k) for k in cfg["ks"])
    layers = None if cfg["selector_layers"] in ("all", None) else cfg["selector_layers"]
    sets = []
    if "weight_norm" in cfg["selectors"]:
        sets.append(UnitSet("weight_norm", find_critical_units(model, train, "weight_norm", k=k_max, layers=layers)))
    if "group_gradient" in cfg["selectors"]:
        for g in gradient_groups(cfg["gradient_groups"], train):
            units = find_critical_units(model, train, "group_gradient", k=k_max, group=g, layers=layers,
                                        n_worst=int(cfg["n_worst"]))
            sets.append(UnitSet(f"group_gradient:g{g}", units))
    if "magnitude" in cfg["selectors"]:
        for f in cfg["magnitude_fractions"]:
            units = find_critical_units(model, train, "magnitude", fraction=float(f),
                                        largest=bool(cfg["magnitude_largest"]))
            sets.append(UnitSet(f"magnitude:{float(f):g}", units, fraction=float(f)))
    return sets


def gradient_groups(spec: Any, train: GroupedDataset) -> list[int]:
    present = [g for g, n in enumerate(train.group_counts()) if n > 0]
    if spec == "all":
        return present
    if spec == "minority":
        return minority_of(train)
    missing = [g for g in spec if g not in present]
    if missing:
        raise SpurlabError(f"gradient_groups {missing} have no training examples", hint=f"groups present: {present}")
    return [int(g) for g in spec]


def run_evidence(cfg, erm, train, test, seed) -> tuple[pd.DataFrame, list[UnitSet]]:
    model = erm["model"]
    unit_sets = select_unit_sets(cfg, model, train)
    evidence = unit_evidence(model, {"train": train, "test": test}, unit_sets, modes=cfg["modes"], ks=cfg["ks"],
                             sigmas=cfg["sigmas"], repeats=int(cfg["repeats"]), checkpoints=erm["checkpoints"],
                             rewind_epochs=cfg["rewind_epochs"], seed=seed, batch_size=int(cfg["eval_batch"]))
    base = pd.DataFrame([{"split": split, "group": g, "acc": acc}
                         for split, ds in (("train", train), ("test", test))
                         for g, acc in enumerate(group_accuracies_of(model, ds))])
    evidence.attrs["base"] = base
    return evidence, unit_sets


def add_evidence_rows(result: StudyResult, evidence: pd.DataFrame, seed: int) -> None:
    base = evidence.attrs["base"]
    for row in base.itertuples(index=False):
        result.add("evidence", "group_acc", row.acc, seed, group=row.group, split=row.split, mode="none", k=0)
    pivot = base.pivot(index="group", columns="split", values="acc")
    for g, row in pivot.iterrows():
        result.add("evidence", "train_test_gap", row["train"] - row["test"], seed, group=g, split="train-test",
                   mode="none", k=0)
    keys = ["selector", "unit_set", "target_group", "mode", "k", "sigma", "rewind_epochs", "fraction"]
    for row in evidence.to_dict("records"):
        cols = {k: row[k] for k in keys}
        result.add("evidence", "delta_acc", row["delta"], seed, group=row["group"], split=row["split"], **cols)
        if row["n_repeats"] > 1:
            result.add("evidence", "delta_acc_std", row["acc_std"], seed, group=row["group"], split=row["split"],
                       **cols)
    # groupby, not pivot_table: the keys hold NaN (no sigma for `zero`) and pivot_table(dropna=False)
    # would build every combination of them.
    after = evidence.groupby(keys + ["group", "split"], dropna=False)["acc"].mean().unstack("split").reset_index()
    for row in after.dropna(subset=["train", "test"]).to_dict("records"):
        result.add("evidence", "train_test_gap", row["train"] - row["test"], seed, group=row["group"],
                   split="train-test", **{k: row[k] for k in keys})


# ------------------------------------------------------------------ the paper's edit
def paper_edit(cfg: dict[str, Any], erm_runs: list[dict], train: GroupedDataset,
               test: GroupedDataset) -> pd.DataFrame:
    """The paper's exact edit on every seed's ERM model: re-initialize (N(0, σ²)) the one conv channel with the
    largest weight norm, ``paper_edit_repeats`` times; one row per (seed, repeat, split, group)."""
    rows = []
    for erm in erm_runs:
        model, seed = erm["model"], erm["seed"]
        units = find_critical_units(model, train, "weight_norm", k=1, layers=paper_edit_layers(model, cfg))
        ivs = build_interventions([UnitSet("weight_norm", units)], ["random_init"], [1],
                                  [float(cfg["paper_edit_sigma"])], int(cfg["paper_edit_repeats"]), seed=seed)
        for split, ds in (("train", train), ("test", test)):
            base = group_accuracies_of(model, ds)
            accs = evaluate_interventions(model, ivs, ds.x, ds.y, ds.g, ds.n_groups,
                                          batch_size=int(cfg["eval_batch"]))
            rows += [{"seed": seed, "rep": r, "split": split, "group": g, "unit": units.labels()[0],
                      "sigma": float(cfg["paper_edit_sigma"]),
                      "acc": accs[r, g], "base_acc": base[g], "delta": accs[r, g] - base[g]}
                     for r in range(len(ivs)) for g in range(ds.n_groups) if np.isfinite(base[g])]
    return pd.DataFrame(rows)


def paper_edit_layers(model, cfg: dict[str, Any]) -> list[str] | str | None:
    """The layers the paper's edit ranks: the study's selector layers without residual shortcut convs
    (the authors' ``get_largest_neuron`` skips ``downsample``, ``bn`` and ``fc`` parameters)."""
    layers = None if cfg["selector_layers"] in ("all", None) else cfg["selector_layers"]
    names = list(prunable_layers(model, include_output=False, only=layers))
    kept = [n for n in names if not any(part in ("shortcut", "downsample") for part in n.split("."))]
    return kept or names


def add_paper_edit_rows(result: StudyResult, edit: pd.DataFrame) -> None:
    for row in edit.itertuples(index=False):
        result.add("paper_edit", "delta_acc", row.delta, row.seed, group=row.group, split=row.split,
                   mode="random_init", k=1, sigma=row.sigma, rep=row.rep, selector="weight_norm",
                   unit_set="weight_norm", unit=row.unit)


# ------------------------------------------------------------------ framework rows
def add_framework_rows(result: StudyResult, curves: pd.DataFrame, summary: pd.DataFrame,
                       divergence: pd.DataFrame) -> None:
    for row in summary.itertuples(index=False):
        result.add("framework", row.metric, row.value, row.seed, method=row.method, split=row.split,
                   selection=row.selection, epoch=row.epoch)
    group_cols = [c for c in curves.columns if c.startswith(("train_g", "val_g", "test_g"))]
    for row in curves.to_dict("records"):
        for col in group_cols:
            if np.isfinite(row[col]):
                split, g = col.split("_g")
                result.add("framework", "group_acc", row[col], row["seed"], method=row["method"], split=split,
                           group=int(g), epoch=int(row["epoch"]))
    for row in divergence.itertuples(index=False):
        extra = {} if np.isnan(row.group) else {"group": int(row.group)}
        result.add("framework", row.metric, row.value, row.seed, method=row.method, split="train",
                   epoch=int(row.epoch), **extra)


# ------------------------------------------------------------------ summaries
def _spread(values: pd.Series) -> str:
    return f"{values.mean():+.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values.mean():+.3f}"


def paper_edit_summary(edit: pd.DataFrame, split: str) -> str:
    """Per group: mean ± std of Δ accuracy over every (seed, repeat)."""
    sub = edit[edit["split"] == split]
    return " / ".join(f"g{g} {_spread(rows['delta'])}" for g, rows in sub.groupby("group"))


def headline(evidence: pd.DataFrame, edit: pd.DataFrame, table: pd.DataFrame, minority: list[int],
             train: GroupedDataset) -> pd.DataFrame:
    """The paper's edit first, then the best cell of the grid (a maximum), then the framework vs ERM."""
    counts = train.group_counts()
    sizes = ", ".join(f"g{g} {int(counts[g])} (one example = {100 / counts[g]:.1f} points)" for g in minority)
    n_seeds, n_reps = edit["seed"].nunique(), edit["rep"].nunique()
    rows = [(f"paper's edit: re-init (N(0, σ²), σ={edit['sigma'].iloc[0]:g}) the top-1 weight-norm conv channel",
             f"{n_reps} repeats x {n_seeds} seed(s); minority training examples: {sizes}"),
            ("  Δ train acc per group (mean ± std)", paper_edit_summary(edit, "train")),
            ("  Δ test acc per group (mean ± std)", paper_edit_summary(edit, "test"))]
    contrast = minority_contrast(evidence, minority, "train", max_k=3)
    if not contrast.empty:
        best = contrast.iloc[0]
        test = minority_contrast(evidence, minority, "test", max_k=3)
        match = test[(test.unit_set == best.unit_set) & (test["mode"] == best["mode"]) & (test.k == best.k)]
        same_sigma = evidence["sigma"].isna() if np.isnan(best.sigma) else np.isclose(evidence["sigma"], best.sigma)
        cell = evidence[(evidence["unit_set"] == best.unit_set) & (evidence["mode"] == best["mode"])
                        & (evidence["k"] == best.k) & same_sigma]
        match = match[match["sigma"].isna() if np.isnan(best.sigma) else np.isclose(match["sigma"], best.sigma)]
        spread = cell[(cell["split"] == "train") & cell["group"].isin(minority)]["acc_std"].mean()
        spread = f"; minority acc std over repeats {spread:.3f}" if np.isfinite(spread) else ""
        rows += [(f"best cell of the grid (MAXIMUM over {len(contrast)} cells with k <= 3, seed 0)",
                  f"{best.unit_set}, {best['mode']}, k={int(best.k)}"
                  + ("" if np.isnan(best.sigma) else f", σ={best.sigma:g}") + f", {int(cell['n_repeats'].max())} "
                  f"repeat(s){spread}"),
                 ("  Δ train acc minority / majority", f"{best.minority_delta:+.3f} / {best.majority_delta:+.3f}"),
                 ("  Δ test acc minority / majority",
                  f"{match.minority_delta.mean():+.3f} / {match.majority_delta.mean():+.3f}")]
    for row in table.itertuples(index=False):
        rows.append((f"{row.method} - ERM, test worst-group ({row.selection})",
                     f"{row.diff_mean:+.3f}" + (f" ± {row.diff_std:.3f}" if row.n_seeds > 1 else "")
                     + f" over {row.n_seeds} seeds: {row.verdict} (test {row.test_worst:.3f} vs "
                     f"{row.test_worst_erm:.3f}; train {row.train_worst:.3f} vs {row.train_worst_erm:.3f})"))
    return pd.DataFrame(rows, columns=["result", "value"])


def evidence_notes(evidence: pd.DataFrame, minority: list[int], train: GroupedDataset, dataset: str) -> list[str]:
    base = evidence.attrs["base"].pivot(index="group", columns="split", values="acc")
    gaps = ", ".join(f"g{g} {row['train']:.2f}/{row['test']:.2f}" for g, row in base.iterrows())
    notes = [f"Dataset {dataset}: training groups {train.group_counts().tolist()} (minority groups {minority}). "
             f"ERM group accuracy train/test: {gaps}."]
    contrast = minority_contrast(evidence, minority, "train", max_k=3)
    if not contrast.empty:
        best = contrast.iloc[0]
        notes.append(f"Evidence: editing {int(best.k)} unit(s) of {best.unit_set} ({best['mode']}) moves minority "
                     f"training accuracy by {best.minority_delta:+.3f} and majority by {best.majority_delta:+.3f}.")
    return notes
