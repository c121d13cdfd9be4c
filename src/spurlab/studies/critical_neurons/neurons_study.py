"""critical-neurons: spurious memorization lives in a few units (You et al., 2025).

Two experiments on a four-group task (a class task with a spurious feature at
~95% correlation, minority groups of a few percent) and a network trained to
100% training accuracy:

* ``evidence`` — rank units three ways, edit the top-k (zero, re-initialize,
  add noise, rewind) and record each group's accuracy change on the train and
  the test split, plus the per-group train - test gap before and after;
* ``framework`` — fine-tune the ERM model with the pruned-copy contrastive loss
  and, for the same number of epochs, with plain cross-entropy; compare their
  worst-group and mean group accuracy over several seeds.
"""
from __future__ import annotations

import copy
from typing import Any

import pandas as pd

from spurlab import metrics
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.dataset_registry import get_entry, load_splits, resolve_data_dir
from spurlab.errors import DataNotFoundError, SpurlabError
from spurlab.models import as_model_spec, make_model
from spurlab.models.editing import MODES
from spurlab.probes.neurons import find_critical_units
from spurlab.probes.unit_evidence import UnitSet, group_accuracies_of, minority_contrast, unit_evidence
from spurlab.studies.critical_neurons import neurons_figures as figs
from spurlab.studies.study_base import Study, StudyContext, StudyResult, register_study
from spurlab.train.engines.pruned_copy_contrastive import PrunedContrastiveConfig, train_pruned_contrastive
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
            "dataset": "binary-mnist", "spurious": "patch", "p": 0.95, "n_train": 1200, "n_test": 800,
            "dataset_params": {}, "data_dir": None,
            "model": "flatcnn", "channels": [8, 16], "erm_epochs": 20, "erm_lr": 1e-3, "erm_batch": 32,
            "selectors": list(SELECTORS), "selector_layers": "conv", "gradient_groups": "minority", "n_worst": 200,
            "magnitude_fractions": [0.05], "magnitude_largest": False,
            "modes": list(MODES), "ks": [1, 2, 3, 5], "sigmas": [0.1], "repeats": 2, "rewind_epochs": [10],
            "n_seeds": 2, "framework_epochs": 10, "framework_lr": 2e-4, "framework_batch": 100, "lam": 0.2,
            "temperature": 0.5, "prune_fraction": 0.01, "mask_method": "magnitude", "representation": "logits",
            "eval_batch": 128,
        }
        if not quick:
            config.update({
                "dataset": "auto", "n_train": 10000, "n_test": 4000, "model": "auto", "channels": [],
                "erm_epochs": 30, "ks": list(range(1, 11)), "sigmas": [0.005, 0.01, 0.05, 0.1, 0.15],
                "repeats": 10, "rewind_epochs": [5, 10], "n_seeds": 5, "framework_epochs": 21,
                "gradient_groups": "all",
            })
        return config

    def validate(self, config: dict[str, Any]) -> None:
        bad = [s for s in config["selectors"] if s not in SELECTORS]
        if bad or not config["selectors"]:
            raise SpurlabError(f"unknown or no selectors {bad or config['selectors']}",
                               hint=f"choose from {', '.join(SELECTORS)}")
        bad = [m for m in config["modes"] if m not in MODES]
        if bad:
            raise SpurlabError(f"unknown intervention modes {bad}", hint=f"choose from {', '.join(MODES)}")
        if not config["ks"] or min(config["ks"]) < 1:
            raise SpurlabError(f"ks must be positive unit counts, got {config['ks']}")
        if any(r >= config["erm_epochs"] or r < 1 for r in config["rewind_epochs"]) and "rewind" in config["modes"]:
            raise SpurlabError(f"rewind_epochs {config['rewind_epochs']} must lie in 1..erm_epochs-1 "
                               f"({config['erm_epochs'] - 1})", hint="lower rewind_epochs or raise erm_epochs")
        if int(config["n_seeds"]) < 1 or int(config["repeats"]) < 1:
            raise SpurlabError("n_seeds and repeats must be at least 1")
        if config["gradient_groups"] not in ("minority", "all") and not isinstance(config["gradient_groups"], list):
            raise SpurlabError(f"gradient_groups must be 'minority', 'all' or a list of group ids, "
                               f"got {config['gradient_groups']!r}")

    # ------------------------------------------------------------ run
    def run(self, ctx: StudyContext) -> StudyResult:
        cfg = ctx.config
        result = StudyResult()
        with ctx.timed("data"):
            splits, dataset = load_task(cfg, ctx.seed)
        train, test = splits["train"], splits["test"]
        minority = minority_of(train)
        with ctx.timed("erm"):
            erm = train_erm(cfg, train, ctx.seed, ctx.device)
        with ctx.timed("evidence"):
            evidence, unit_sets = run_evidence(cfg, erm, train, test, ctx.seed)
        add_evidence_rows(result, evidence, ctx.seed)
        with ctx.timed("framework"):
            curves, finals = run_framework(cfg, splits, erm, ctx)
        add_framework_rows(result, curves, finals)

        result.headline = headline(evidence, finals, minority)
        result.notes += evidence_notes(evidence, minority, train, dataset)
        result.notes.append("Top critical units: " + "; ".join(
            f"{us.label}: {', '.join(us.units.top(min(5, len(us.units))).labels())}"
            for us in unit_sets if us.units.granularity == "channel"))
        result.notes += framework_notes(finals, ctx.seed, int(cfg["n_seeds"]))
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
    """``cfg["model"]``: a registered name (``auto``: flatcnn up to 32 px, else resnet), a factory,
    a ModelSpec or your own nn.Module (a copy of it is trained)."""
    model = cfg["model"]
    if not isinstance(model, str):
        return as_model_spec(model).build(train.input_shape, train.n_classes, seed=seed)
    name = ("flatcnn" if train.x.shape[-1] <= 32 else "resnet") if model == "auto" else model
    return make_model(name, train.input_shape, train.n_classes, seed=seed,
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


# ------------------------------------------------------------------ framework
def _epoch_metrics(splits: DatasetSplits):
    evaluated = {s: splits[s] for s in ("val", "test") if s in splits}

    def callback(epoch, model) -> dict[str, float]:
        return {f"{s}_g{g}": acc for s, ds in evaluated.items()
                for g, acc in enumerate(group_accuracies_of(model, ds))}

    return callback


def run_framework(cfg, splits: DatasetSplits, erm0, ctx: StudyContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-epoch curves and final metrics of ERM fine-tuning vs the framework, for every seed."""
    train = splits["train"]
    callback = _epoch_metrics(splits)
    curves, finals = [], []
    for i in range(int(cfg["n_seeds"])):
        seed = ctx.seed + i
        erm = erm0 if i == 0 else train_erm(cfg, train, seed, ctx.device)
        start = callback(0, erm["model"])
        runs = {"erm": copy.deepcopy(erm["model"]), "pruned_contrastive": copy.deepcopy(erm["model"])}
        tcfg = TrainConfig(epochs=int(cfg["framework_epochs"]), lr=float(cfg["framework_lr"]),
                           batch_size=int(cfg["framework_batch"]), seed=seed, device=ctx.device)
        history = {"erm": fit(runs["erm"], train.x, train.y, tcfg, on_epoch_end=callback).history}
        pcfg = PrunedContrastiveConfig(epochs=tcfg.epochs, lr=tcfg.lr, batch_size=tcfg.batch_size,
                                       lam=float(cfg["lam"]), temperature=float(cfg["temperature"]),
                                       prune_fraction=float(cfg["prune_fraction"]), mask_method=cfg["mask_method"],
                                       representation=cfg["representation"], seed=seed, device=ctx.device)
        history["pruned_contrastive"] = train_pruned_contrastive(runs["pruned_contrastive"], train, pcfg,
                                                                 on_epoch_end=callback)
        for method, hist in history.items():
            for record in [{"epoch": 0, **start}, *hist]:
                curves.append({"seed": seed, "method": method, **record})
            for split in ("val", "test"):
                if split in splits:
                    finals += final_metrics(runs[method], splits[split], train, method, split, seed)
        for split in ("val", "test"):
            if split in splits:
                finals += final_metrics(erm["model"], splits[split], train, "erm_start", split, seed)
    return pd.DataFrame(curves), pd.DataFrame(finals)


def final_metrics(model, ds: GroupedDataset, train: GroupedDataset, method: str, split: str, seed: int) -> list[dict]:
    from spurlab.train.trainer import predict

    device = str(next(model.parameters()).device)
    preds = predict(model, ds.x, device=device)
    summary = metrics.summarize_predictions(ds.y, preds, ds.g, train_groups=train.g)
    return [{"seed": seed, "method": method, "split": split, "metric": k, "value": v} for k, v in summary.items()]


def add_framework_rows(result: StudyResult, curves: pd.DataFrame, finals: pd.DataFrame) -> None:
    for row in finals.itertuples(index=False):
        result.add("framework", row.metric, row.value, row.seed, method=row.method, split=row.split)
    group_cols = [c for c in curves.columns if c.startswith(("val_g", "test_g"))]
    for row in curves.to_dict("records"):
        for col in group_cols:
            split, g = col.split("_g")
            result.add("framework", "group_acc", row[col], row["seed"], method=row["method"], split=split,
                       group=int(g), epoch=int(row["epoch"]))


# ------------------------------------------------------------------ summaries
def headline(evidence: pd.DataFrame, finals: pd.DataFrame, minority: list[int]) -> pd.DataFrame:
    """A two-column summary: the strongest few-unit edit and the framework vs ERM on test."""
    rows = []
    contrast = minority_contrast(evidence, minority, "train", max_k=3)
    if not contrast.empty:
        best = contrast.iloc[0]
        test = minority_contrast(evidence, minority, "test", max_k=3)
        match = test[(test.unit_set == best.unit_set) & (test["mode"] == best["mode"]) & (test.k == best.k)]
        rows += [("strongest edit with k <= 3", f"{best.unit_set}, {best['mode']}, k={int(best.k)}"),
                 ("Δ train acc minority / majority", f"{best.minority_delta:+.3f} / {best.majority_delta:+.3f}"),
                 ("Δ test acc minority / majority",
                  f"{match.minority_delta.mean():+.3f} / {match.majority_delta.mean():+.3f}")]
    test = finals[finals.split == "test"]
    for metric in ("worst_group_acc", "mean_group_acc"):
        for method in ("erm_start", "erm", "pruned_contrastive"):
            values = test[(test.metric == metric) & (test.method == method)]["value"]
            if len(values):
                spread = f" ± {values.std():.3f}" if len(values) > 1 else ""
                rows.append((f"test {metric}: {method}", f"{values.mean():.3f}{spread} (n={len(values)})"))
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


def framework_notes(finals: pd.DataFrame, seed: int, n_seeds: int) -> list[str]:
    test = finals[(finals.split == "test") & (finals.metric == "worst_group_acc")]
    wide = test.pivot(index="seed", columns="method", values="value")
    diff = wide["pruned_contrastive"] - wide["erm"]
    if len(diff) > 1:
        sem = diff.std() / len(diff) ** 0.5
        verdict = ("improved" if diff.mean() - 2 * sem > 0 else "lowered" if diff.mean() + 2 * sem < 0
                   else "did not clearly change")
        spread = f" ± {diff.std():.3f} (std; ± {sem:.3f} standard error)"
    else:
        verdict = "improved" if diff.mean() > 0 else "did not improve"
        spread = " (one seed: no spread; raise n_seeds)"
    return [f"Framework vs ERM at the same budget: the pruned-copy framework {verdict} test worst-group accuracy: "
            f"{diff.mean():+.3f}{spread} over seeds {seed}..{seed + n_seeds - 1} "
            f"(per seed: {', '.join(f'{d:+.3f}' for d in diff)}). Final epoch, no model selection."]
