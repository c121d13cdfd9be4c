"""Hard-margin SVM: spurlab's batched interior point (formulation by shape) vs cvxpy + ECOS.

The reference is the authors' kind of solve, re-implemented here: ``min 1/2 |w|^2  s.t.
y_i (w . x_i + b) >= 1`` written in cvxpy and solved by ECOS (timing includes cvxpy's
canonicalization, as a user pays it). Data: Gaussian points pushed apart along a random unit
direction (gap 0.05), so the problem is separable with a non-degenerate support. For each shape
the two solvers alternate (spurlab, ECOS, spurlab, ...); margins are compared first.

    .venv/bin/pip install -e .[bench]        # cvxpy + ecos: benchmark-only
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_max_margin [--ecos-timeout 900]

ECOS runs in a child process stopped after ``--ecos-timeout`` seconds; a stopped run is reported as a
lower bound.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from datetime import date

import numpy as np
import torch

from benchmarks._timing import machine_line
from spurlab.train.engines.max_margin import choose_formulation, fit_max_margin

SHAPES = [(64, 20), (64, 1000), (1000, 20), (1000, 1000), (10000, 20), (10000, 1000)]


def separable(n: int, d: int, seed: int = 0, gap: float = 0.05, problems: int | None = None):
    rng = np.random.default_rng(seed)
    shape = (n, d) if problems is None else (problems, n, d)
    x = rng.normal(size=shape) / np.sqrt(d)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    y = np.where(x @ u >= 0, 1.0, -1.0)
    return x + gap * y[..., None] * u, y


def ecos_margin(x: np.ndarray, y: np.ndarray) -> float:
    import cvxpy as cp

    w, b = cp.Variable(x.shape[1]), cp.Variable()
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(w)), [cp.multiply(y, x @ w + b) >= 1])
    problem.solve(solver=cp.ECOS)
    if problem.status != "optimal":
        raise RuntimeError(f"ECOS: {problem.status}")
    return float(1.0 / np.linalg.norm(w.value))


def _ecos_child(n, d, seed, queue) -> None:
    torch.set_num_threads(1)
    x, y = separable(n, d, seed)
    start = time.perf_counter()
    margin = ecos_margin(x, y)
    queue.put((time.perf_counter() - start, margin))


def time_ecos(n: int, d: int, seed: int, timeout: float) -> tuple[float, float | None]:
    """(seconds, margin); margin None when the run was stopped at ``timeout``."""
    queue: mp.Queue = mp.Queue()
    child = mp.get_context("fork").Process(target=_ecos_child, args=(n, d, seed, queue))
    start = time.perf_counter()
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.terminate()
        child.join()
        return time.perf_counter() - start, None
    return queue.get()


def time_ours(x, y) -> tuple[float, object]:
    start = time.perf_counter()
    sol = fit_max_margin(x, y, fit_intercept=True)
    return time.perf_counter() - start, sol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ecos-timeout", type=float, default=900.0)
    parser.add_argument("--batch", type=int, default=100, help="problems of 64 x 20 solved as one batch")
    parser.add_argument("--shapes", default="all", help="'all' or e.g. '64x20,1000x20'")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shapes = SHAPES if args.shapes == "all" else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    fit_max_margin(*separable(20, 5), fit_intercept=True)  # warm-ups: imports and first calls are not timed
    ecos_margin(*separable(20, 5))
    rows = []
    for n, d in shapes:
        x, y = separable(n, d, seed=0)
        t1, sol = time_ours(x, y)
        t_ref, ref_margin = time_ecos(n, d, 0, args.ecos_timeout)
        t2, _ = time_ours(x, y)
        ours = statistics.median([t1, t2])
        rows.append((n, d, sol.formulation, sol.n_iter, bool(sol.polished[0]), float(sol.margin[0]), ours, t_ref,
                     ref_margin))
        print(rows[-1], flush=True)
    xb, yb = separable(64, 20, seed=1, problems=args.batch)
    start = time.perf_counter()
    batch = fit_max_margin(xb, yb, fit_intercept=True)
    t_batch = time.perf_counter() - start
    n_ref = min(args.batch, 20)
    start = time.perf_counter()
    ref_margins = [ecos_margin(xb[i], yb[i]) for i in range(n_ref)]
    t_loop = (time.perf_counter() - start) * args.batch / n_ref
    batch_diff = float(np.max(np.abs(batch.margin[:n_ref] - ref_margins)))
    print_markdown(args, rows, (t_batch, t_loop, batch_diff, n_ref))


def print_markdown(args, rows, batch) -> None:
    print(f"\n## Hard-margin SVM: batched interior point vs cvxpy + ECOS ({date.today().isoformat()})\n")
    print(machine_line("cpu"))
    print(f"- command: `OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_max_margin --ecos-timeout "
          f"{args.ecos_timeout:g} --batch {args.batch}`")
    print("- reference: cvxpy (canonicalization included) + ECOS, `min 1/2|w|^2 s.t. y(w.x+b) >= 1`; spurlab: "
          "median of 2 runs around the reference's; both with a bias\n")
    print("| n | d | formulation | IPM iterations | polished | spurlab (s) | ECOS (s) | ECOS / spurlab | "
          "margin | abs diff of margins |")
    print("|---:|---:|---|---:|---|---:|---:|---:|---:|---:|")
    for n, d, form, it, pol, margin, ours, t_ref, ref_margin in rows:
        assert form == choose_formulation(n, d)
        if ref_margin is None:
            ref, ratio, diff = f"> {t_ref:.0f} (stopped)", f"> {t_ref / ours:.0f}x", "-"
        else:
            ref, ratio, diff = f"{t_ref:.3f}", f"{t_ref / ours:.1f}x", f"{abs(margin - ref_margin):.1e}"
        print(f"| {n} | {d} | {form} | {it} | {pol} | {ours:.3f} | {ref} | {ratio} | {margin:.8f} | {diff} |")
    t_batch, t_loop, diff, n_ref = batch
    print(f"\nBatched: {args.batch} problems of 64 x 20 in one call: {t_batch:.3f} s; ECOS one by one: {t_loop:.2f} s "
          f"({n_ref} solved, scaled to {args.batch}) = {t_loop / t_batch:.1f}x; max |margin diff| {diff:.1e}")


if __name__ == "__main__":
    main()
