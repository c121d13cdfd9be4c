"""Image experiments of the ``feature-contamination`` study: distillation and padding.

* ``distillation`` — the small-scale version of the paper's CLIP experiment. A
  teacher is trained (cross-entropy) on images painted with ``n_domains`` background
  colours; a student of the same architecture is trained only by MSE to reproduce
  the teacher's penultimate representation on *one* domain (colour 0). Linear probes
  fitted on each model's representation of that domain are evaluated on held-out
  images of the same domain (ID) and of the other domains (OOD), and a background
  probe measures how prominent the domain is in each representation.
  ``teacher_view="invariant"`` gives the teacher the uncoloured image instead (the
  spec's "teacher given the invariant feature").
* ``padding`` — a classifier trained on images padded with brick red (150, 50, 50)
  and a control trained on the same canvas padded with black; both are tested on
  black-padded ("unpadded") and red-padded test images, and probed for how strongly
  their first layer and their features respond to the red padding.

The dataset is any registered image dataset (``image_dataset``), e.g. ``mnist``,
``fashion-mnist`` or ``cifar10`` once registered.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from spurlab.data.injections import BRICK_RED, PALETTE, inject, pad_constant, to_rgb
from spurlab.data.dataset_registry import get_entry, load_splits
from spurlab.errors import SpurlabError
from spurlab.models import make_model
from spurlab.probes.contamination import (background_probe_accuracy, background_variance_share, border_mask,
                                          colour_response, first_layer)
from spurlab.studies.study_base import StudyContext, StudyResult
from spurlab.studies.feature_contamination.contamination_figures import row_params
from spurlab.train.engines.distill import FeatureOutput, RepresentationDistiller, probe_accuracies, representations
from spurlab.train.trainer import TrainConfig, fit, predict

# injections that keep the image size (the invariant teacher view must match it)
DOMAIN_INJECTIONS = ("background_colour", "foreground_colour", "patch", "line", "texture")


def load_images(cfg: dict[str, Any], seed: int):
    """``(train, test)`` GroupedDatasets of the configured image dataset (no validation split)."""
    name = str(cfg["image_dataset"])
    known = get_entry(name).parameters()
    wanted = {"n_train": cfg["n_train_images"], "n_test": cfg["n_test_images"], "val_fraction": 0.0}
    params = {k: v for k, v in wanted.items() if k in known}
    if cfg["classes"]:
        params["classes"] = cfg["classes"]
    splits = load_splits(name, data_dir=cfg["data_dir"] or None, seed=seed, **params)
    train, test = splits["train"], splits["test"]
    if train.x.ndim != 4:
        raise SpurlabError(f"dataset {name!r} does not hold images (x has shape {train.x.shape})",
                           hint="use an image dataset such as mnist, fashion-mnist or cifar10")
    return train, test


def train_config(cfg: dict[str, Any], epochs: int, seed: int, device: str) -> TrainConfig:
    return TrainConfig(epochs=int(epochs), lr=cfg["image_lr"], batch_size=cfg["image_batch_size"], seed=seed,
                       device=device)


# ================================================================== distillation
class DomainViews:
    """The painted image sets of the distillation experiment and each one's domains."""

    def __init__(self, cfg: dict[str, Any], train, test, seed: int):
        if cfg["domain_injection"] not in DOMAIN_INJECTIONS:
            raise SpurlabError(f"domain_injection={cfg['domain_injection']!r} changes the image size",
                               hint=f"use one of {', '.join(DOMAIN_INJECTIONS)}")
        rng = np.random.default_rng(seed)
        k = int(cfg["n_domains"])
        self.kind, self.colours = cfg["domain_injection"], PALETTE[:k]
        self.train_clean, self.test_clean = train.x, test.x
        self.teacher_domains = rng.integers(0, k, len(train))
        self.domains = {"student_train": np.zeros(len(train), np.int64), "id_test": np.zeros(len(test), np.int64),
                        "ood_test": rng.integers(1, k, len(test)), "mixed_test": rng.integers(0, k, len(test))}
        self.images = {name: self.paint(train.x if name == "student_train" else test.x, d)
                       for name, d in self.domains.items()}

    def paint(self, x: np.ndarray, domains: np.ndarray) -> np.ndarray:
        return inject(x, domains, self.kind, colours=self.colours)

    def invariant(self, name: str) -> np.ndarray:
        """The uncoloured images of view ``name``, with the painted images' channels."""
        clean = self.train_clean if name == "student_train" else self.test_clean
        painted = self.images[name]
        return to_rgb(clean) if painted.shape[1] == 3 and clean.shape[1] == 1 else clean.astype(np.float32)


def train_teacher(cfg: dict[str, Any], views: DomainViews, train, seed: int, device: str):
    """A classifier trained on every domain (or on the uncoloured images for ``teacher_view=invariant``)."""
    if cfg["teacher_view"] == "invariant":
        x = views.invariant("student_train")
    else:
        x = views.paint(views.train_clean, views.teacher_domains)
    teacher = make_model(cfg["image_model"], x.shape[1:], train.n_classes, seed=seed)
    fit(teacher, x, train.y, train_config(cfg, cfg["teacher_epochs"], seed, device))
    return teacher


def probe_role(cfg: dict[str, Any], model, inputs: dict[str, np.ndarray], views: DomainViews, y_train, y_test,
               seed: int, device: str) -> dict[str, float]:
    """ID/OOD accuracy of a linear probe on ``model``'s representation, and background probes."""
    reps = {name: representations(FeatureOutput(model), x, device=device) for name, x in inputs.items()}
    accs = probe_accuracies(reps["student_train"], y_train, {"id_acc": (reps["id_test"], y_test),
                                                              "ood_acc": (reps["ood_test"], y_test)}, seed=seed)
    mixed, domains = reps["mixed_test"], views.domains["mixed_test"]
    centroid = background_probe_accuracy(mixed, domains, kind="centroid", seed=seed)
    logistic = background_probe_accuracy(mixed, domains, kind="logistic", seed=seed)
    return {**accs, "bg_probe_acc": centroid if cfg["bg_probe"] == "centroid" else logistic,
            "bg_centroid_acc": centroid, "bg_logistic_acc": logistic,
            "bg_variance_share": background_variance_share(mixed, domains)}


def run_distillation(ctx: StudyContext, result: StudyResult) -> None:
    cfg, seed, device = ctx.config, ctx.seed, ctx.device
    with ctx.timed("distillation/data"):
        train, test = load_images(cfg, seed)
        views = DomainViews(cfg, train, test, seed + 7)
    with ctx.timed("distillation/teacher"):
        teacher = train_teacher(cfg, views, train, seed, device)
    invariant = cfg["teacher_view"] == "invariant"
    teacher_inputs = {name: views.invariant(name) if invariant else x for name, x in views.images.items()}
    with ctx.timed("distillation/student"):
        student = make_model(cfg["image_model"], views.images["student_train"].shape[1:], train.n_classes,
                             seed=seed + 1)
        distiller = RepresentationDistiller(epochs=cfg["distill_epochs"], lr=cfg["image_lr"],
                                            batch_size=cfg["image_batch_size"], seed=seed, device=device)
        distiller.fit(FeatureOutput(teacher), FeatureOutput(student), views.images["student_train"],
                      teacher_x=teacher_inputs["student_train"])
    with ctx.timed("distillation/probes"):
        for role, model, inputs in (("teacher", teacher, teacher_inputs), ("student", student, views.images)):
            metrics = probe_role(cfg, model, inputs, views, train.y, test.y, seed, device)
            if role == "student":
                metrics["distill_mse"] = float(distiller.history_["mse"].iloc[-1])
            for metric, value in metrics.items():
                result.add("distillation", metric, value, seed,
                           **row_params(role=role, model=cfg["image_model"], dataset=cfg["image_dataset"]))


# ================================================================== padding
def feature_shift(model, x_plain: np.ndarray, x_marked: np.ndarray, device: str) -> float:
    """Mean ``||phi(marked) - phi(plain)||`` over mean ``||phi(plain)||`` (penultimate features)."""
    z_plain = representations(FeatureOutput(model), x_plain, device=device)
    z_marked = representations(FeatureOutput(model), x_marked, device=device)
    scale = float(np.linalg.norm(z_plain, axis=1).mean())
    return float(np.linalg.norm(z_marked - z_plain, axis=1).mean()) / max(scale, 1e-12)


def run_padding(ctx: StudyContext, result: StudyResult) -> None:
    cfg, seed, device = ctx.config, ctx.seed, ctx.device
    width = int(cfg["pad_width"])
    with ctx.timed("padding/data"):
        train, test = load_images(cfg, seed)
        black = np.zeros(3)
        test_plain, test_red = pad_constant(test.x, width, black), pad_constant(test.x, width, BRICK_RED)
    shape = test_plain.shape[1:]
    mask = border_mask(shape[1], shape[2], width)
    for role, colour in (("padded", BRICK_RED), ("control", black)):
        with ctx.timed(f"padding/{role}"):
            model = make_model(cfg["image_model"], shape, train.n_classes, seed=seed)
            init = copy.deepcopy(model)
            fit(model, pad_constant(train.x, width, colour), train.y,
                train_config(cfg, cfg["pad_epochs"], seed, device))
        before = colour_response(first_layer(init), shape, mask, BRICK_RED)
        metrics = {
            "acc_plain": float(np.mean(predict(model, test_plain, device=device) == test.y)),
            "acc_padded": float(np.mean(predict(model, test_red, device=device) == test.y)),
            "red_response_ratio": colour_response(first_layer(model), shape, mask, BRICK_RED) / max(before, 1e-12),
            "feature_red_shift": feature_shift(model, test_plain, test_red, device),
        }
        for metric, value in metrics.items():
            result.add("padding", metric, value, seed,
                       **row_params(role=role, model=cfg["image_model"], dataset=cfg["image_dataset"]))
