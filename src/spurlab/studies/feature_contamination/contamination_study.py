"""Study ``feature-contamination``: Zhang, Zhao, Chen, Jiang, Chen, ICML 2024 (arXiv 2406.03345).

Networks also learn features that are *uncorrelated* with the label (background
features) and fail when those shift. Experiments (the ``experiments`` config key):

* ``dynamics`` — two-layer networks on the structured feature model (linear core,
  hinge, SGD momentum 0.9, wd 1e-3, full batch), trajectories of ID/OOD loss and
  accuracy, core/background weight norms and activation asymmetry;
* ``activations`` — the final background norm (and the rest) per activation;
* ``shift`` — OOD accuracy and loss against the background shift scale ``s``;
* ``distillation`` — teacher on several colour domains of an image dataset, a student
  fitted by MSE to its representation on one domain, linear probes on both;
* ``padding`` — brick-red padding on the training images only, and how much the
  learned features respond to the padding colour.

``dynamics``, ``activations`` and ``shift`` share one training run: every activation
(and seed) is a replica of one stacked :class:`~spurlab.models.two_layer.TwoLayerNet`.
Quick mode takes 10x fewer steps at a 10x larger learning rate (the same
gradient-flow time ``lr x steps = 20``), which reproduces the full run's numbers closely.
"""
from __future__ import annotations

from typing import Any

import torch

from spurlab.data.injections import PALETTE
from spurlab.data.synthetic import structured_features
from spurlab.errors import SpurlabError
from spurlab.params import Interval, NumberList, OptionList, Options, positive_int
from spurlab.models.two_layer import ACTIVATION_NAMES, TwoLayerNet
from spurlab.probes.contamination import ContaminationTracker
from spurlab.studies.study_base import Study, StudyContext, StudyResult, register_study
from spurlab.studies.feature_contamination.contamination_images import DOMAIN_INJECTIONS, run_distillation, run_padding
from spurlab.studies.feature_contamination.contamination_figures import add_figures, headline_table, row_params
from spurlab.utils import signed_labels
from spurlab.train.engines.two_layer_trainer import LOSS_NAMES, OPTIMIZER_NAMES, TwoLayerTrainer, loss_values

EXPERIMENTS = ("dynamics", "activations", "activations_toy", "shift", "distillation", "padding")
TWO_LAYER_EXPERIMENTS = ("dynamics", "activations", "shift")
TRAJECTORY_METRICS = ("train_loss", "train_acc", "id_loss", "id_acc", "ood_loss", "ood_acc", "core_norm",
                      "bg_norm", "activation_asymmetry")
# ================================================================== two-layer networks
def structured_data(cfg: dict[str, Any], seed: int):
    """Train, ID test and OOD test (background ``-s U[0, 1]``) sets sharing one transform ``T``."""
    dims = dict(d_core=cfg["d_core"], d_bg=cfg["d_bg"], d_in=cfg["d_in"], core=cfg["core"])
    train = structured_features(cfg["n"], seed=seed, **dims)
    test_id = structured_features(cfg["n_test"], seed=seed + 1, transform=train.transform, **dims)
    test_ood = structured_features(cfg["n_test"], shift_scale=cfg["shift_scale"], seed=seed + 2,
                                   transform=train.transform, **dims)
    return train, test_id, test_ood


def two_layer_activations(cfg: dict[str, Any]) -> list[str]:
    """The activations to train: the configured ones, plus relu and identity for dynamics/shift."""
    names = list(cfg["activations"]) if "activations" in cfg["experiments"] else []
    if {"dynamics", "shift"} & set(cfg["experiments"]):
        names += [a for a in ("relu", "identity") if a not in names]
    return list(dict.fromkeys(str(a) for a in names))


def train_two_layer(cfg: dict[str, Any], seed: int, device: str):
    """Train every (activation, seed) replica at once; returns ``(model, trainer, data)``."""
    train, test_id, test_ood = structured_data(cfg, seed)
    acts = two_layer_activations(cfg)
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    model = TwoLayerNet(cfg["d_in"], cfg["width"], activation=[a for a in acts for _ in seeds],
                        seed=[s for _ in acts for s in seeds], frozen_output=cfg["frozen_output"])
    trainer = TwoLayerTrainer(loss=cfg["loss"], optimizer=cfg["optimizer"], lr=cfg["lr"], momentum=cfg["momentum"],
                              weight_decay=cfg["weight_decay"], steps=cfg["steps"],
                              batch_size=cfg["batch_size"] or None, log_every=cfg["log_every"], seed=seed,
                              device=device)
    tracker = ContaminationTracker(train.transform, cfg["d_core"], train.x, train.y)
    trainer.fit(model, train.x, train.y, eval_sets={"id": (test_id.x, test_id.y), "ood": (test_ood.x, test_ood.y)},
                track=tracker)
    return model, trainer.history_, (train, test_id, test_ood)


def add_dynamics_rows(result: StudyResult, history) -> None:
    for row in history.itertuples(index=False):
        for metric in TRAJECTORY_METRICS:
            result.add("dynamics", metric, getattr(row, metric), row.seed,
                       **row_params(activation=row.activation, step=int(row.step)))


def add_activation_rows(result: StudyResult, history, activations: list[str],
                        experiment: str = "activations") -> None:
    first, last = history["step"].min(), history["step"].max()
    for row in history[history["step"] == last].itertuples(index=False):
        if row.activation not in activations:
            continue
        start = history[(history["step"] == first) & (history["replica"] == row.replica)].iloc[0]
        params = row_params(activation=row.activation, step=int(row.step))
        for metric in ("core_norm", "bg_norm", "train_loss", "train_acc", "id_loss", "ood_loss", "id_acc", "ood_acc",
                       "activation_asymmetry"):
            result.add(experiment, metric, getattr(row, metric), row.seed, **params)
        for metric in ("core_norm", "bg_norm"):
            result.add(experiment, f"{metric}_init", start[metric], row.seed, **params)
            result.add(experiment, f"{metric}_ratio", getattr(row, metric) / start[metric], row.seed, **params)


@torch.no_grad()
def add_shift_rows(result: StudyResult, model: TwoLayerNet, cfg: dict[str, Any], transform, seed: int,
                   loss: str) -> None:
    """OOD accuracy and loss of every trained replica at every background shift scale."""
    dims = dict(d_core=cfg["d_core"], d_bg=cfg["d_bg"], d_in=cfg["d_in"], core=cfg["core"])
    device = model.weight.device
    for i, s in enumerate(cfg["shift_scales"]):
        data = structured_features(cfg["n_test"], shift_scale=float(s), seed=seed + 100 + i, transform=transform,
                                   **dims)
        x = torch.as_tensor(data.x, dtype=torch.float32, device=device)
        y = torch.as_tensor(signed_labels(data.y), dtype=torch.float32, device=device)
        scores = model.forward_all(x)
        accs = (scores * y > 0).float().mean(dim=1).cpu().numpy()
        losses = loss_values(scores, y, loss).mean(dim=1).cpu().numpy()
        for r, (act, run_seed) in enumerate(zip(model.activations, model.seeds)):
            params = row_params(activation=act, shift_scale=float(s))
            result.add("shift", "ood_acc", accs[r], run_seed, **params)
            result.add("shift", "ood_loss", losses[r], run_seed, **params)


def run_two_layer(ctx: StudyContext, result: StudyResult) -> None:
    cfg, exps = ctx.config, set(ctx.config["experiments"])
    with ctx.timed("two-layer training"):
        model, history, (train, _, _) = train_two_layer(cfg, ctx.seed, ctx.device)
    if "dynamics" in exps:
        add_dynamics_rows(result, history)
    if "activations" in exps:
        add_activation_rows(result, history, [str(a) for a in cfg["activations"]])
        note_unfitted(result, history[history["activation"].isin([str(a) for a in cfg["activations"]])],
                      "activations")
    if "shift" in exps:
        add_shift_rows(result, model, cfg, train.transform, ctx.seed, cfg["loss"])


def toy_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The authors' toy default (``toy.py``): non-linear core, logistic loss, AdamW, trainable output layer."""
    steps = int(cfg["toy_steps"])
    return {**cfg, "core": cfg["toy_core"], "loss": cfg["toy_loss"], "optimizer": cfg["toy_optimizer"],
            "lr": cfg["toy_lr"], "weight_decay": cfg["toy_weight_decay"], "frozen_output": cfg["toy_frozen_output"],
            "steps": steps, "batch_size": 0, "log_every": max(1, steps // 10), "activations": cfg["toy_activations"],
            "experiments": ["activations"]}


def run_toy_activations(ctx: StudyContext, result: StudyResult) -> None:
    """Every activation in the authors' toy default setting; rows under ``activations_toy``."""
    cfg = toy_config(ctx.config)
    with ctx.timed("two-layer training (authors' toy setting)"):
        _, history, _ = train_two_layer(cfg, ctx.seed, ctx.device)
    add_activation_rows(result, history, [str(a) for a in cfg["activations"]], experiment="activations_toy")
    note_unfitted(result, history, "activations_toy")


def note_unfitted(result: StudyResult, history, experiment: str, min_acc: float = 0.99,
                  max_loss: float = 0.1) -> None:
    """Name every replica that ends below ``min_acc`` training accuracy or above ``max_loss`` training loss
    (a hinge loss of 0.73 with every sign right is a net that barely moved): its norms describe a net that
    has not learned the task, so they say nothing about what training does to a fitted one."""
    last = history[history["step"] == history["step"].max()]
    for row in last.itertuples(index=False):
        if row.train_acc < min_acc or row.train_loss > max_loss:
            result.notes.append(f"UNDERTRAINED ({experiment}): {row.activation} seed {row.seed} ends at train "
                                f"accuracy {row.train_acc:.3f}, train loss {row.train_loss:.3f}")


# ================================================================== the study
@register_study
class FeatureContaminationStudy(Study):
    name = "feature-contamination"
    title = "Feature contamination: networks learn label-uncorrelated features and fail OOD"
    paper = "Zhang, Zhao, Chen, Jiang, Chen, ICML 2024 (arXiv 2406.03345)"
    summary = ("A two-layer ReLU network trained by SGD on the structured feature model grows its weights "
               "along background features that are uncorrelated with the label (activation asymmetry); a "
               "linear network does not, so only the ReLU network fails when the background shifts. A student "
               "distilled from a robust teacher's representation on one domain inherits the teacher's "
               "in-distribution accuracy but not its OOD accuracy, and its representation carries more "
               "background. Training-only brick-red padding leaves a red tint in the learned features.")

    def default_config(self, quick: bool) -> dict[str, Any]:
        return {
            "experiments": list(EXPERIMENTS),
            # structured feature model and two-layer networks (the theory setting)
            "n": 1000, "n_test": 1000, "d_core": 32, "d_bg": 32, "d_in": 256, "core": "linear",
            "shift_scale": 1.0, "width": 256, "frozen_output": True, "loss": "hinge", "optimizer": "sgd",
            "lr": 1e-2 if quick else 1e-3, "momentum": 0.9, "weight_decay": 1e-3,
            "steps": 2000 if quick else 20_000, "batch_size": 0, "log_every": 100 if quick else 500,
            "n_seeds": 1, "activations": list(ACTIVATION_NAMES), "shift_scales": [1.0, 2.0, 4.0, 8.0, 16.0],
            # activations_toy: the authors' toy.py defaults (20 000 full-batch AdamW steps: a GPU-sized run)
            "toy_core": "nonlinear", "toy_loss": "logistic", "toy_optimizer": "adamw", "toy_lr": 1e-3,
            "toy_weight_decay": 1e-3, "toy_frozen_output": False, "toy_steps": 300 if quick else 20_000,
            "toy_activations": ["relu", "gelu", "sigmoid", "tanh"],
            # image experiments (distillation, padding)
            "image_dataset": "mnist", "classes": None, "data_dir": None,
            "n_train_images": 3000 if quick else 20_000, "n_test_images": 2000 if quick else 5000,
            "image_model": "mlp", "image_lr": 1e-3, "image_batch_size": 128,
            "n_domains": 4, "domain_injection": "background_colour", "teacher_view": "domains",
            "teacher_epochs": 6 if quick else 15, "distill_epochs": 8 if quick else 20, "bg_probe": "centroid",
            "pad_width": 4, "pad_epochs": 4 if quick else 10,
        }

    # Declared bounds (checked by run_study before validate, each refusal naming its key).
    parameter_constraints = {
        "experiments": OptionList(*EXPERIMENTS),
        "activations": OptionList(*ACTIVATION_NAMES),
        "toy_activations": OptionList(*ACTIVATION_NAMES),
        "toy_loss": Options(*LOSS_NAMES),
        "toy_optimizer": Options(*OPTIMIZER_NAMES),
        "toy_core": Options("linear", "nonlinear"),
        "toy_steps": positive_int(),
        "toy_lr": Interval(float, 0, None, closed="neither"),
        "toy_weight_decay": Interval(float, 0, None),
        "loss": Options(*LOSS_NAMES),
        "optimizer": Options(*OPTIMIZER_NAMES),
        "core": Options("linear", "nonlinear"),
        "image_model": Options("linear", "mlp", "cnn"),
        "teacher_view": Options("domains", "invariant"),
        "bg_probe": Options("centroid", "logistic"),
        "domain_injection": Options(*DOMAIN_INJECTIONS),
        **{key: positive_int() for key in ("n", "n_test", "d_core", "d_bg", "d_in", "width", "steps", "log_every",
                                           "n_seeds", "n_train_images", "n_test_images", "teacher_epochs",
                                           "distill_epochs", "pad_epochs", "image_batch_size", "pad_width")},
        "shift_scales": NumberList(Interval(float, 0, None, closed="neither")),
        # one domain for the student plus at least one held out
        "n_domains": Interval(int, 2, len(PALETTE)),
    }

    def validate(self, config: dict[str, Any]) -> None:
        super().validate(config)
        if config["d_core"] + config["d_bg"] > config["d_in"]:
            raise SpurlabError(f"d_core + d_bg = {config['d_core'] + config['d_bg']} exceeds d_in = {config['d_in']}",
                               hint="raise d_in or lower d_core/d_bg")

    def run(self, ctx: StudyContext) -> StudyResult:
        result = StudyResult()
        exps = set(ctx.config["experiments"])
        if exps & set(TWO_LAYER_EXPERIMENTS):
            run_two_layer(ctx, result)
        if "activations_toy" in exps:
            run_toy_activations(ctx, result)
        if "distillation" in exps:
            run_distillation(ctx, result)
        if "padding" in exps:
            run_padding(ctx, result)
        add_figures(result)
        result.headline = headline_table(result.frame())
        return result


__all__ = ["FeatureContaminationStudy", "structured_data", "train_two_layer", "EXPERIMENTS"]
