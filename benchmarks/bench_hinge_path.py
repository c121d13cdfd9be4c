"""The hinge SVM inside FailureDirections: the active-set path against the interior point alone, interleaved.

Both fit the same default pipeline (the authors' folds, C grid and first-best-C rule) on the planted
embeddings of ``bench_directions``; "interior point" disables the path (what ``solve_hinge`` did before it),
so the two differ only in the solver. Repeats alternate the two; the medians are compared.

    .venv/bin/python -m benchmarks.bench_hinge_path --shape 2500x512x4 --shape 5000x512x10 --shape 300x32x2
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._timing import machine_line
from benchmarks.bench_directions import planted_embeddings
from spurlab.probes import svm
from spurlab.probes.directions import FailureDirections


def fit_seconds(x, y, pred, path: bool) -> tuple[float, float, FailureDirections]:
    solve = svm._HingePath.solve
    if not path:
        svm._HingePath.solve = lambda self, target: None  # every C that is not in closed form: interior point
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        fd = FailureDirections(device="cpu", n_threads=1).fit(x, y, pred)
        return time.perf_counter() - wall, time.process_time() - cpu, fd
    finally:
        svm._HingePath.solve = solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", help="n_per_class x dim x classes", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_line("cpu"))
    print("\n| examples per class x dim x classes | interior point: wall / CPU per class (s) | path: wall / CPU "
          "per class (s) | path speed-up (wall, CPU) | same C, max abs(w) difference |")
    print("|---|---:|---:|---:|---:|")
    for shape in args.shape or ["2500x512x4"]:
        n, dim, classes = (int(v) for v in shape.split("x"))
        x, y, pred = planted_embeddings(n, dim, classes, seed=0)
        times = {True: [], False: []}
        fitted = {}
        for _ in range(args.repeats):
            for path in (False, True):
                wall, cpu, fitted[path] = fit_seconds(x, y, pred, path)
                times[path].append((wall / classes, cpu / classes))
        ipm, act = (np.median(np.array(times[p]), axis=0) for p in (False, True))
        same_c = bool(np.array_equal(fitted[True].C_, fitted[False].C_))
        diff = float(np.nanmax(np.abs(fitted[True].coef_ - fitted[False].coef_)))
        print(f"| {n} x {dim} x {classes} | {ipm[0]:.3f} / {ipm[1]:.3f} | {act[0]:.3f} / {act[1]:.3f} | "
              f"{ipm[0] / act[0]:.1f}x, {ipm[1] / act[1]:.1f}x | {same_c}, {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
