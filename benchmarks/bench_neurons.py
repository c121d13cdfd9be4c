"""Critical-unit ablations: batched strategies against the one-at-a-time loop, in the same run.

1. Every conv channel of a CNN zeroed on its own (the "which single unit matters"
   scan): ``loop`` (edit, forward, restore, per channel) vs ``shared`` (one
   forward pass for all channels) vs ``vmap`` (``torch.func`` over stacked
   weights). Accuracies are checked equal before timing.
2. The full evidence sweep of the critical-neurons study (full-mode grid: 3
   selectors, 4 modes, k = 1..10, 5 sigmas x 10 repeats, 2 rewind depths) on the
   quick task's trained network, with the ``auto`` strategy; the loop's time for
   the same sweep is measured on a seeded sample of the interventions and scaled up.

Run: ``.venv/bin/python -m benchmarks.bench_neurons [--n-eval 300] [--sweep-eval 100] [--repeats 2]
[--device auto|cpu|cuda]``. Every timed path runs on ``--device``; CUDA timings are synchronized.
"""
from __future__ import annotations

import argparse
import datetime
import os
import time

import numpy as np
import torch

from benchmarks._timing import machine_line, median_time, synchronize
from spurlab.models import make_model
from spurlab.models.editing import Intervention
from spurlab.models.batched_edits import evaluate_interventions
from spurlab.models.units import CriticalUnits
from spurlab.probes.neurons import find_critical_units
from spurlab.probes.unit_evidence import build_interventions
from spurlab.utils import resolve_device


def single_channel_zeroes(model) -> list[Intervention]:
    every = find_critical_units(model, method="weight_norm", k=10**6, layers="conv")
    return [Intervention(CriticalUnits(every.layers[i:i + 1], every.indices[i:i + 1], every.scores[i:i + 1]), "zero")
            for i in range(len(every))]


def bench_all_channels(name: str, model, n_eval: int, repeats: int, device: str) -> list[tuple]:
    rng = np.random.default_rng(0)
    x = rng.random((n_eval, 3, 28, 28)).astype(np.float32)
    y = rng.integers(0, 2, n_eval)
    g = y * 2 + rng.integers(0, 2, n_eval)
    model = model.to(device).eval()
    with torch.no_grad():  # centre the logits so ablations move predictions (equality check below)
        model.head.bias -= model(torch.as_tensor(x[:256], device=device)).median(dim=0).values
    ivs = single_channel_zeroes(model)
    results = {s: evaluate_interventions(model, ivs, x, y, g, strategy=s) for s in ("loop", "shared", "vmap")}
    for s in ("shared", "vmap"):
        if not np.allclose(results[s], results["loop"]):
            raise AssertionError(f"{s} disagrees with the loop on {name}")
    times = {s: median_time(lambda s=s: evaluate_interventions(model, ivs, x, y, g, strategy=s), repeats,
                            warmup=False, device=device)
             for s in ("loop", "shared", "vmap")}
    return [(f"{name}: zero each of {len(ivs)} conv channels, {n_eval} images, {s} vs loop", times[s], times["loop"])
            for s in ("shared", "vmap")]


def bench_sweep(n_eval: int, loop_sample: int, device: str) -> tuple[tuple, int]:
    from spurlab.studies.study_base import get_study
    from spurlab.studies.critical_neurons.neurons_study import load_task, select_unit_sets, train_erm
    from spurlab.models.editing import rewind_reference

    quick = get_study("critical-neurons").default_config(quick=True)
    full = get_study("critical-neurons").default_config(quick=False)
    splits, _ = load_task(quick, seed=0)
    erm = train_erm(quick, splits["train"], seed=0, device=device)
    cfg = {**quick, **{k: full[k] for k in ("ks", "sigmas", "repeats", "gradient_groups")}, "rewind_epochs": [5, 10]}
    unit_sets = select_unit_sets(cfg, erm["model"], splits["train"])
    rewinds = {r: rewind_reference(erm["checkpoints"], r) for r in cfg["rewind_epochs"]}
    ivs = build_interventions(unit_sets, cfg["modes"], cfg["ks"], cfg["sigmas"], cfg["repeats"], rewinds)
    data = [(splits[s].x[:n_eval], splits[s].y[:n_eval], splits[s].g[:n_eval]) for s in ("train", "test")]

    def sweep(strategy, subset):
        for x, y, g in data:
            evaluate_interventions(erm["model"], subset, x, y, g, 4, strategy=strategy)

    synchronize(device)
    start = time.perf_counter()
    sweep("auto", ivs)
    synchronize(device)
    fast = time.perf_counter() - start
    sample = [ivs[i] for i in np.random.default_rng(0).choice(len(ivs), size=min(loop_sample, len(ivs)), replace=False)]
    start = time.perf_counter()
    sweep("loop", sample)
    synchronize(device)
    loop = (time.perf_counter() - start) * len(ivs) / len(sample)
    return (f"full evidence sweep: {len(ivs)} interventions x (train + test, {n_eval} images each), "
            f"auto vs loop (loop scaled from {len(sample)})", fast, loop), len(ivs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-eval", type=int, default=300, help="images per ablation scan")
    parser.add_argument("--sweep-eval", type=int, default=100, help="images per split in the sweep")
    parser.add_argument("--loop-sample", type=int, default=150, help="interventions the loop is timed on")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    rows = bench_all_channels("SmallCNN(16,32,64)", make_model("cnn", (3, 28, 28), 2, seed=0), args.n_eval,
                              args.repeats, device)
    rows += bench_all_channels("FlatCNN(8,16) [study default]", make_model("flatcnn", (3, 28, 28), 2),
                               args.n_eval, args.repeats, device)
    sweep_row, _ = bench_sweep(args.sweep_eval, args.loop_sample, device)
    rows.append(sweep_row)

    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    print(f"\n## Critical-unit ablations: batched vs one at a time ({datetime.date.today().isoformat()})\n")
    print(machine_line(device))
    print(f"- command: `OMP_NUM_THREADS={threads} .venv/bin/python -m benchmarks.bench_neurons --n-eval {args.n_eval} "
          f"--sweep-eval {args.sweep_eval} --loop-sample {args.loop_sample} --repeats {args.repeats} "
          f"--device {args.device}`")
    print("- scans: median of the repeats, after a first run whose accuracies are checked equal to the loop's; "
          "sweep: one run each\n")
    print("| task | batched (s) | loop (s) | loop / batched |")
    print("|---|---:|---:|---:|")
    for task, fast, slow in rows:
        print(f"| {task} | {fast:.2f} | {slow:.2f} | {slow / fast:.2f}x |")


if __name__ == "__main__":
    main()
