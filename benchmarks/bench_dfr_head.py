"""DFR's head stage on spuco-mnist: liblinear (DFR's and SpuCo's solver) against spurlab's batched solver (#19).

The features: the validation split (12,001 images) through the penultimate layer (84 units) of the
benchmark's ERM LeNet (seed 0, 5 epochs of SGD at SpuCo's budget), standardized; cached in ``--cache``
so that a rerun skips ERM. Timed on them:

* liblinear: one binary (class 0 vs rest) L1 fit per C of the authors' grid on one balanced draw of
  the tuning half (what DFR's code fits 5 classes x draws times); the head stage's total is
  extrapolated from them (tuning: ``tune_draws`` draws x 5 classes per C; refit: 20 draws x 5 classes
  on twice the examples, counted at the tuning fit's time for the chosen C, a lower bound);
* newton (``solver="newton"``): the whole stage as DFR runs it: every C x ``tune_draws`` draws x 5
  classes at once, then the 20-draw refit at the chosen C; and the same class-0 fits, to compare
  each one's objective with liblinear's.

Run: ``SPURLAB_DATA=/work/shared/data .venv/bin/python -m benchmarks.bench_dfr_head [--cache PATH]``
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks._timing import machine_line
from spurlab.data.dataset_registry import load_splits
from spurlab.models.penultimate import penultimate_features
from spurlab.train.methods import get_method
from spurlab.train.methods.dfr import balanced_subsample, fit_balanced_heads, l1_logistic, stratified_halves
from spurlab.train.methods.l1_logistic import fit_l1_logistic, l1_objective, with_bias_column

GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
BUDGET = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "batch_size": 64}


def load_average() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def val_features(cache: Path) -> dict[str, np.ndarray]:
    if cache.exists():
        return dict(np.load(cache))
    splits = load_splits("spuco-mnist", seed=0)
    erm = get_method("erm", model="lenet", epochs=5, selection="last", seed=0, device="cpu", **BUDGET).fit(splits)
    val = splits["val"]
    arrays = {"x": penultimate_features(erm.final_model_, val.x, device="cpu"), "y": val.y, "g": val.g}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **arrays)
    return arrays


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cpu_timed(fn):
    """Wall and CPU seconds (this process; the machine is shared, so the CPU time is the steadier figure)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/spurlab_dfr_head_features_s0.npz")
    parser.add_argument("--tune-draws", type=int, default=5)
    parser.add_argument("--skip-liblinear", action="store_true", help="time only the batched solver")
    args = parser.parse_args()
    torch.set_num_threads(1)
    arrays = val_features(Path(args.cache))
    x, y, g = arrays["x"], arrays["y"], arrays["g"]
    feats = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    fit_idx, _ = stratified_halves(g, np.random.default_rng(0))
    draw = fit_idx[balanced_subsample(g[fit_idx], np.random.default_rng(0))]
    signs = np.where(y[draw] == 0, 1.0, -1.0)
    print(machine_line())
    print(f"features {feats.shape}; one tuning draw: {len(draw)} examples; load at start {load_average()}\n")
    print("| C | liblinear, class 0 (s) | newton, class 0 (s) | objective liblinear | objective newton |")
    print("|---:|---:|---:|---:|---:|")
    per_c = {}
    xb = with_bias_column(feats[draw])
    for C in () if args.skip_liblinear else GRID:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf, t_lib = timed(lambda: l1_logistic(C, 0).fit(feats[draw], (y[draw] == 0).astype(np.int64)))
        w_lib = np.r_[clf.coef_[0], clf.intercept_]
        w_new, t_new = timed(lambda: fit_l1_logistic(feats[draw][None], signs[None, None], C)[0, 0])
        per_c[C] = t_lib
        print(f"| {C} | {t_lib:.2f} | {t_new:.2f} | {l1_objective(w_lib, signs * (xb @ w_lib), C):.4f} | "
              f"{l1_objective(w_new, signs * (xb @ w_new), C):.4f} |")
    n_classes = int(y.max()) + 1
    tune = sum(per_c.values()) * n_classes * args.tune_draws
    _, t_tune, cpu_tune = cpu_timed(lambda: fit_balanced_heads(feats[fit_idx], y[fit_idx], g[fit_idx], n_classes,
                                                               GRID, args.tune_draws, 0, solver="newton"))
    _, t_refit, cpu_refit = cpu_timed(lambda: fit_balanced_heads(feats, y, g, n_classes, [GRID[0]], 20, 0,
                                                                 solver="newton"))
    if per_c:
        print(f"\nhead stage, liblinear (extrapolated, lower bound): tuning {tune:.0f} s + refit at C=1 "
              f">= {per_c[GRID[0]] * n_classes * 20:.0f} s")
    print(f"head stage, newton (measured): tuning {t_tune:.1f} s wall, {cpu_tune:.1f} s CPU ({len(GRID)} C x "
          f"{args.tune_draws} draws x {n_classes} classes) + refit {t_refit:.1f} s wall, {cpu_refit:.1f} s CPU "
          f"(20 draws x {n_classes} classes at C=1); load at end {load_average()}")


if __name__ == "__main__":
    main()
