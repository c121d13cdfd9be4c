"""Study ``ood-failure-modes``: geometric and statistical skew (Nagarajan, Andreassen, Neyshabur, ICLR 2021).

Experiments (the ``experiment`` column of results.csv):

* ``norm_growth`` — max-margin norm of the invariant features vs n;
* ``geometric`` — max-margin classifier with ``n_maj`` fixed and ``n_min`` swept;
* ``statistical`` — batched GD on a balanced unique set with the majority
  duplicated to ``p``, against the ``ln(p/(1-p)) / (2B ln t)`` overlay (the paper's
  1-D check by default: there the minority is classified correctly for every p);
* ``statistical_highd`` — the same on the high-dimensional easy task
  (``stat_hd_D = 1000``, ``stat_hd_margin = 0.1``), where the OOD (minority) accuracy drops with p;
* ``images`` — networks on image datasets isolating each mode;
* with ``table`` set, ``geometric`` and ``statistical`` run on the user's CSV instead.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from spurlab.errors import SpurlabError
from spurlab.params import Interval, NumberList, OptionList, Options, positive_int, probability
from spurlab.studies.study_base import Study, StudyContext, StudyResult, register_study
from spurlab.studies.ood_failure_modes.ood_figures import (fig_geometric, fig_images, fig_norm_growth, fig_statistical,
                                                           headline_table)
from spurlab.studies.ood_failure_modes.ood_images import (DUPLICATION_MODES, IMAGE_MODELS, IMAGE_MODES,
                                                          IMAGE_OPTIMIZERS, ImageSpec, images_experiment)
from spurlab.studies.ood_failure_modes.ood_linear import (geometric_experiment,
                                                          norm_growth_experiment, statistical_experiment)
from spurlab.studies.ood_failure_modes.ood_table import (load_table_task, table_geometric_experiment,
                                                         table_statistical_experiment)

EXPERIMENTS = ("norm_growth", "geometric", "statistical", "statistical_highd", "images")
TABLE_EXPERIMENTS = ("geometric", "statistical")


def _quick_or_full(quick: bool, quick_value: Any, full_value: Any) -> Any:
    return quick_value if quick else full_value


@register_study
class OodFailureModes(Study):
    name = "ood-failure-modes"
    title = "Geometric and statistical skew: why easy-to-learn tasks still fail out of distribution"
    paper = "Nagarajan, Andreassen, Neyshabur (ICLR 2021, arXiv 2010.15775)"
    summary = ("Even when invariant features alone separate the classes, a gradient-descent-trained linear "
               "classifier leans on a spurious feature: the max-margin norm grows with n, so a small minority "
               "makes the spurious weight cheap (geometric skew), and duplicated majority points keep GD "
               "spurious for ~1/ln t steps (statistical skew). Networks on images show the same two modes.")

    # Declared bounds (checked by run_study before validate, each refusal naming its key).
    parameter_constraints = {
        **{key: positive_int() for key in ("n_seeds", "image_n_seeds", "D", "stat_D", "geo_n_maj", "stat_n_unique",
                                           "stat_steps", "stat_logged", "image_max_steps", "image_batch_size",
                                           "image_n_test", "geo_n_test", "table_steps",
                                           "stat_hd_D")},
        **{key: Interval(float, 0, None, closed="neither") for key in ("margin", "B", "stat_margin", "stat_lr",
                                                                      "image_B", "image_lr", "table_B", "table_lr",
                                                                      "stat_hd_margin")},
        "image_momentum": Interval(float, 0, 1, closed="left"),
        "image_norm_steps": Interval(int, 0, None),  # 0: the steps the smallest n needs to fit
        # p: the majority share after duplicating majority points
        **{key: NumberList(Interval(float, 0.5, 1, closed="left"), min_len=0) for key in ("stat_p", "image_p",
                                                                                          "table_p")},
        "norm_ns": NumberList(Interval(int, 2, None), min_len=0),  # both classes need a point
        "geo_n_min": NumberList(positive_int(), min_len=0),  # the minority group needs a point
        "table_test_fraction": probability(closed="neither"),
        "image_duplication": Options(*DUPLICATION_MODES),
        "image_optimizer": Options(*IMAGE_OPTIMIZERS),
        "image_models": OptionList(*IMAGE_MODELS, min_len=0),
        "experiments": OptionList(*EXPERIMENTS, min_len=0),
        "image_modes": OptionList(*IMAGE_MODES, min_len=0),
    }

    def default_config(self, quick: bool) -> dict[str, Any]:
        q = quick
        return {
            "experiments": list(EXPERIMENTS),
            "n_seeds": _quick_or_full(q, 2, 5),
            # the easy-to-learn linear task
            "D": 1000, "margin": 0.1, "B": 1.0,
            "norm_ns": [4, 16, 64, 256, 1024],
            "geo_n_maj": 500, "geo_n_min": [500, 100, 20, 5], "geo_n_test": _quick_or_full(q, 500, 2000),
            "stat_p": [0.5, 0.75, 0.85, 0.99], "stat_D": 1, "stat_margin": 1.0,
            "stat_n_unique": _quick_or_full(q, 10, 50), "stat_steps": _quick_or_full(q, 100_000, 1_000_000),
            "stat_lr": 0.5, "stat_loss": "logistic", "stat_logged": _quick_or_full(q, 40, 60),
            "stat_batch_size": 0, "stat_n_test": 500,
            "stat_hd_D": 1000, "stat_hd_margin": 0.1,  # statistical_highd: the easy task in high dimension
            # images
            "image_datasets": _quick_or_full(q, ["binary-mnist"], ["binary-mnist", "binary-fashion-mnist"]),
            "image_models": ["mlp", "convnet"],
            "image_modes": list(IMAGE_MODES),
            "image_n_seeds": 1,
            "image_spurious": "patch", "image_B": 1.0,
            "image_n_maj": _quick_or_full(q, 200, 2000), "image_n_min": _quick_or_full(q, [50, 10, 2],
                                                                                      [500, 100, 20, 5]),
            "image_n_unique": _quick_or_full(q, 100, 1000), "image_p": _quick_or_full(q, [0.5, 0.9, 0.99],
                                                                                   [0.5, 0.75, 0.9, 0.99]),
            "image_norm_ns": _quick_or_full(q, [50, 200], [100, 500, 2000, 8000]),
            "image_n_test": _quick_or_full(q, 500, 5000),
            # plain SGD until every unique training point is fitted (image_max_steps caps a run)
            "image_optimizer": "sgd", "image_lr": 0.1, "image_momentum": 0.0, "image_batch_size": 32,
            "image_max_steps": _quick_or_full(q, 8000, 200_000), "image_norm_steps": 0,
            "image_mlp_hidden": _quick_or_full(q, [128], [256, 128]),
            "image_cnn_channels": _quick_or_full(q, [8, 16, 32], [16, 32, 64]),
            "image_duplication": "copies",
            "data_dir": None,
            # a user's own table (--table/--label/--spurious/--positive)
            "table": None, "label": None, "spurious": None, "positive": None, "negative": None,
            "spurious_positive": None, "table_B": 0.5, "table_n_min": [0, 100, 50, 20, 10],
            "table_p": [0.5, 0.75, 0.9, 0.99], "table_n_unique": 0, "table_test_fraction": 0.4,
            "table_steps": _quick_or_full(q, 10_000, 100_000), "table_lr": 0.5,
        }

    # ------------------------------------------------------------------ validation
    def validate(self, config: dict[str, Any]) -> None:
        super().validate(config)
        if config["table"] is not None and (not config["label"] or not config["spurious"]):
            raise SpurlabError("--table needs --label COL and --spurious COL")
        if config["table"] is None and (config["label"] or config["spurious"]):
            raise SpurlabError("--label/--spurious only apply together with --table FILE.csv")

    # ------------------------------------------------------------------ running
    def run(self, ctx: StudyContext) -> StudyResult:
        cfg = ctx.config
        seeds = [ctx.seed + i for i in range(int(cfg["n_seeds"]))]
        result = StudyResult()
        if cfg["table"] is not None:
            frames = self._run_table(ctx, seeds, result)
        else:
            frames = self._run_synthetic(ctx, seeds, result)
        frame = pd.concat([f for f in frames if not f.empty], ignore_index=True) if frames else pd.DataFrame()
        result.rows = frame.astype(object).where(frame.notna(), None).to_dict("records") if len(frame) else []
        if len(frame):
            self._add_figures(result, frame, cfg)
            result.headline = headline_table(frame)
        return result

    def _run_synthetic(self, ctx: StudyContext, seeds: list[int], result: StudyResult) -> list[pd.DataFrame]:
        cfg, frames = ctx.config, []
        todo = cfg["experiments"]
        if "norm_growth" in todo:
            with ctx.timed("norm_growth"):
                frames.append(norm_growth_experiment(cfg["norm_ns"], seeds, D=cfg["D"], margin=cfg["margin"]))
        if "geometric" in todo:
            with ctx.timed("geometric"):
                frames.append(geometric_experiment(cfg["geo_n_maj"], cfg["geo_n_min"], seeds, D=cfg["D"],
                                                   margin=cfg["margin"], B=cfg["B"], n_test=cfg["geo_n_test"]))
        variants = {"statistical": (cfg["stat_D"], cfg["stat_margin"]),
                    "statistical_highd": (cfg["stat_hd_D"], cfg["stat_hd_margin"])}
        for experiment, (dim, margin) in variants.items():
            if experiment in todo:
                with ctx.timed(experiment):
                    frames.append(statistical_experiment(
                        cfg["stat_p"], seeds, n_unique=cfg["stat_n_unique"], D=dim, margin=margin, B=cfg["B"],
                        n_steps=cfg["stat_steps"], lr=cfg["stat_lr"], loss=cfg["stat_loss"],
                        n_logged=cfg["stat_logged"], batch_size=cfg["stat_batch_size"] or None,
                        n_test=cfg["stat_n_test"], device=ctx.device, experiment=experiment))
        if "images" in todo:
            with ctx.timed("images"):
                frame, notes = self._run_images(ctx)
                frames.append(frame)
                result.notes += notes
        return frames

    def _run_images(self, ctx: StudyContext) -> tuple[pd.DataFrame, list[str]]:
        cfg = ctx.config
        spec = ImageSpec(spurious=cfg["image_spurious"], B=cfg["image_B"], lr=cfg["image_lr"],
                         batch_size=cfg["image_batch_size"], optimizer=cfg["image_optimizer"],
                         momentum=cfg["image_momentum"], max_steps=cfg["image_max_steps"],
                         norm_steps=cfg["image_norm_steps"], mlp_hidden=tuple(cfg["image_mlp_hidden"]),
                         cnn_channels=tuple(cfg["image_cnn_channels"]),
                         duplication=cfg["image_duplication"], device=ctx.device)
        seeds = [ctx.seed + i for i in range(int(cfg["image_n_seeds"]))]
        return images_experiment(cfg["image_datasets"], cfg["image_models"], cfg["image_modes"], seeds, spec,
                                 n_maj=cfg["image_n_maj"], n_mins=cfg["image_n_min"], n_unique=cfg["image_n_unique"],
                                 ps=cfg["image_p"], norm_ns=cfg["image_norm_ns"], n_test=cfg["image_n_test"],
                                 data_dir=cfg["data_dir"])

    def _run_table(self, ctx: StudyContext, seeds: list[int], result: StudyResult) -> list[pd.DataFrame]:
        cfg, frames = ctx.config, []
        task = load_table_task(cfg["table"], cfg["label"], cfg["spurious"], positive=cfg["positive"],
                               negative=cfg["negative"], spurious_positive=cfg["spurious_positive"], B=cfg["table_B"])
        result.notes += [f"Table {task.source}: {len(task.y)} rows, {task.x.shape[1] - 1} scaled feature columns, "
                         f"{int(task.minority.sum())} minority rows.", *task.notes]
        skipped = sorted(set(cfg["experiments"]) - set(TABLE_EXPERIMENTS))
        if skipped:
            result.notes.append(f"With --table only {', '.join(TABLE_EXPERIMENTS)} run "
                                f"(skipped: {', '.join(skipped)}).")
        if "geometric" in cfg["experiments"]:
            with ctx.timed("geometric"):
                frames.append(table_geometric_experiment(task, cfg["table_n_min"], seeds,
                                                         test_fraction=cfg["table_test_fraction"]))
        if "statistical" in cfg["experiments"]:
            with ctx.timed("statistical"):
                frames.append(table_statistical_experiment(
                    task, cfg["table_p"], seeds, n_unique=int(cfg["table_n_unique"]),
                    test_fraction=cfg["table_test_fraction"], n_steps=cfg["table_steps"], lr=cfg["table_lr"],
                    loss=cfg["stat_loss"], n_logged=cfg["stat_logged"], device=ctx.device))
        return frames

    # ------------------------------------------------------------------ figures
    @staticmethod
    def _add_figures(result: StudyResult, frame: pd.DataFrame, cfg: dict[str, Any]) -> None:
        present = set(frame["experiment"])
        if "norm_growth" in present:
            result.add_figure("norm_growth", fig_norm_growth(frame, cfg["margin"]),
                              "Max-margin norm on the invariant features vs n (log scale); dashed: 1/gamma.")
        if "geometric" in present:
            result.add_figure("geometric", fig_geometric(frame),
                              "Spurious share and test accuracy of the max-margin classifier as n_min shrinks.")
        if "statistical" in present:
            result.add_figure("statistical", fig_statistical(frame),
                              "Spurious share of GD vs step for each duplication p; dashed: the overlay.")
        if "statistical_highd" in present:
            result.add_figure("statistical_highd", fig_statistical(frame, "statistical_highd"),
                              f"The same on the easy task in D = {cfg['stat_hd_D']} "
                              f"(margin {cfg['stat_hd_margin']:g}); dashed: the 1-D overlay scaled by the margin, "
                              "for reference only (it is derived for the 1-D check). Its minority (OOD) accuracy "
                              "is in the headline table.")
        if "images" in present:
            fig = fig_images(frame)
            if fig is not None:
                result.add_figure("images", fig, "Networks on images: OOD accuracy under each isolated mode "
                                                 "and distance from initialization vs n.")
