"""Failure directions: spurlab's batched torch SVM path vs scikit-learn ``SVC(kernel="linear")``.

Both sides do the same work per class: the same pre-processed embeddings, the same C grid
(logspace(-6, 0, 7)), the same stratified 2-fold splits, C chosen on balanced accuracy,
then a refit on all of the class's examples; the per-class AUROC of the decision value for
the model's errors is measured on a held-out evaluation set from the same distribution.

The reference takes minutes per class, so by default it runs on ``--ref-classes`` of the
classes and its total is extrapolated (mean time per class x classes); the fast path is
timed on every class.

    .venv/bin/python -m benchmarks.bench_directions                 # 50 000 x 512, 10 classes
    .venv/bin/python -m benchmarks.bench_directions --ref-classes 10  # full reference (slow)
    python -m benchmarks.bench_directions --device cuda --ref-classes 2  # fast path on the GPU

``--device`` moves spurlab's solver only; the SVC reference is libsvm on the CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import date

import numpy as np

from benchmarks._timing import machine_line, synchronize
from spurlab.probes.directions import FailureDirections, auroc, balanced_accuracy, stratified_folds
from spurlab.utils import resolve_device


def planted_embeddings(n_per_class: int, dim: int, n_classes: int, seed: int, minority: float = 0.15,
                       shift: float = 3.5, err_minority: float = 0.5, err_majority: float = 0.05):
    """Embeddings with a planted minority per class (shifted along a random direction); the
    model errs on half of the minority and on 5% of the rest."""
    rng = np.random.default_rng(seed)
    centers = 0.5 * rng.normal(size=(n_classes, dim))
    shifts = rng.normal(size=(n_classes, dim))
    shifts /= np.linalg.norm(shifts, axis=1, keepdims=True)
    y = np.repeat(np.arange(n_classes), n_per_class)
    is_min = rng.random(len(y)) < minority
    x = centers[y] + rng.normal(size=(len(y), dim)) + shift * is_min[:, None] * shifts[y]
    wrong = rng.random(len(y)) < np.where(is_min, err_minority, err_majority)
    pred = np.where(wrong, (y + 1 + rng.integers(0, n_classes - 1, len(y))) % n_classes, y)
    return x.astype(np.float32), y, pred


def reference_class(z: np.ndarray, ok: np.ndarray, cs: np.ndarray, seed: int):
    """SVC(kernel='linear') with balanced class weights, C by 2-fold CV on balanced accuracy, refit."""
    from sklearn.svm import SVC

    folds = stratified_folds(ok, 2, seed)
    scores = []
    for c in cs:
        per_fold = []
        for f in range(2):
            clf = SVC(kernel="linear", C=c, class_weight="balanced").fit(z[folds != f], ok[folds != f])
            per_fold.append(balanced_accuracy(ok[folds == f], clf.predict(z[folds == f])))
        scores.append(np.mean(per_fold))
    best = int(np.argmax(scores))
    return SVC(kernel="linear", C=cs[best], class_weight="balanced").fit(z, ok), cs[best]


def time_fast_path(x, y, pred, threads: int, seed: int, device: str) -> tuple[FailureDirections, float]:
    FailureDirections(seed=seed, device=device, n_threads=threads).fit(x[::25], y[::25], pred[::25])  # warm-up
    synchronize(device)
    start = time.perf_counter()
    fd = FailureDirections(seed=seed, device=device, n_threads=threads).fit(x, y, pred)
    synchronize(device)
    return fd, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=5000)
    parser.add_argument("--n-eval-per-class", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--ref-classes", type=int, default=3, help="classes the SVC reference runs on")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads for the fast path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda: where spurlab's solver runs")
    args = parser.parse_args()
    device = resolve_device(args.device)

    n_total = args.n_per_class + args.n_eval_per_class
    x, y, pred = planted_embeddings(n_total, args.dim, args.classes, args.seed)
    fit = (np.arange(len(y)) % n_total) < args.n_per_class
    fast = {}
    for threads in args.threads:
        fast[threads] = time_fast_path(x[fit], y[fit], pred[fit], threads, args.seed, device)
    fd = fast[args.threads[0]][0]
    z_fit, z_eval = fd.transform(x[fit]), fd.transform(x[~fit])
    y_fit, y_eval = y[fit], y[~fit]
    ok_fit, err_eval = pred[fit] == y_fit, pred[~fit] != y_eval
    dv_fast = fd.decision_function(x[~fit], y_eval)

    rows, ref_times = [], []
    for c in range(min(args.ref_classes, args.classes)):
        rows_c, rows_e = y_fit == c, y_eval == c
        start = time.perf_counter()
        clf, c_ref = reference_class(z_fit[rows_c], ok_fit[rows_c], fd.cs_, seed=args.seed + c)
        ref_times.append(time.perf_counter() - start)
        auc_ref = auroc(err_eval[rows_e], -clf.decision_function(z_eval[rows_e]))
        auc_fast = auroc(err_eval[rows_e], -dv_fast[rows_e])
        rows.append((c, auc_fast, auc_ref, fd.C_[c], c_ref, ref_times[-1]))
        print(f"class {c}: AUROC fast {auc_fast:.4f} / SVC {auc_ref:.4f}  C {fd.C_[c]:g} / {c_ref:g}  "
              f"SVC {ref_times[-1]:.1f} s", file=sys.stderr, flush=True)
    print_markdown(args, fast, rows, ref_times, device)


def print_markdown(args, fast, rows, ref_times, device: str) -> None:
    ref_per_class = float(np.mean(ref_times))
    ref_total = ref_per_class * args.classes
    how = "measured" if len(rows) == args.classes else "extrapolated"
    diffs = [abs(r[1] - r[2]) for r in rows]
    print(f"\n## Failure directions: batched torch SVMs vs SVC(kernel='linear') ({date.today().isoformat()})\n")
    print(machine_line(device))
    print(f"- command: `.venv/bin/python -m benchmarks.bench_directions --n-per-class {args.n_per_class} "
          f"--n-eval-per-class {args.n_eval_per_class} --dim {args.dim} --classes {args.classes} "
          f"--ref-classes {args.ref_classes} --device {args.device}`")
    print(f"- work: {args.classes * args.n_per_class} x {args.dim} embeddings, {args.classes} classes; per class "
          f"7 C values x 2 folds + refit; AUROC on {args.n_eval_per_class} held-out examples per class")
    print(f"- reference: SVC on {len(rows)} of {args.classes} classes ({ref_per_class:.1f} s per class), total "
          f"{how}: {ref_total:.0f} s\n")
    print("| path | total for all classes (s) | per class (s) | speed-up vs SVC |")
    print("|---|---:|---:|---:|")
    print(f"| SVC(kernel='linear'), libsvm (1 thread) | {ref_total:.1f} ({how}) | {ref_per_class:.2f} | 1.0x |")
    for threads, (_, seconds) in fast.items():
        where = f"torch {device}" + (f", {threads} CPU thread(s)" if device == "cpu" else "")
        print(f"| spurlab FailureDirections, {where} | {seconds:.2f} | "
              f"{seconds / args.classes:.3f} | {ref_total / seconds:.0f}x |")
    print("\n| class | AUROC spurlab | AUROC SVC | abs diff | C spurlab (squared hinge) | C SVC (hinge) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c, a_fast, a_ref, c_fast, c_ref, _ in rows:
        print(f"| {c} | {a_fast:.4f} | {a_ref:.4f} | {abs(a_fast - a_ref):.4f} | {c_fast:g} | {c_ref:g} |")
    print(f"\nmax AUROC difference: {max(diffs):.4f} (goal: <= 0.01)")


if __name__ == "__main__":
    main()
