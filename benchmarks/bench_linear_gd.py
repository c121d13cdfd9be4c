"""Batched linear GD (``spurlab.train.engines.linear_gd``) against a per-run loop doing the same work.

Two workloads of ``--runs`` problems with ``--n`` points each, ``--steps``
full-batch GD steps on the mean logistic loss (lr 0.5, float64):

* ``statistical-skew``: the study's workload, duplicate_majority problems
  (seeds x p in {0.5, 0.75, 0.85, 0.99}, 1-D check: x_inv = y, B = 1), the
  majority duplicated so every run has ~n points;
* ``distinct``: easy-task problems with n distinct points (D = 10), where only
  batching helps (no duplicates to collapse). For it the script also measures the
  work floor: two streaming reads of the runs' data and one sigmoid per point per
  step, which any engine touching every point every step must spend; the
  reference's time over that floor bounds the ratio this machine allows.

The reference is the straightforward loop: for each run, its own GD loop over
its n points with the same torch operations. It is timed on ``--ref-runs`` runs
and scaled to ``--runs`` (its cost is linear in the runs); its final weights
are checked against the batched engine's. Prints a markdown section.

    .venv/bin/python -m benchmarks.bench_linear_gd [--runs 100 --steps 10000 --n 1000]
"""
from __future__ import annotations

import argparse
import time
from datetime import date

import numpy as np
import torch

from benchmarks._timing import machine_line, synchronize
from spurlab.data.synthetic import duplicate_majority, easy_task
from spurlab.train.engines.linear_gd import BatchedLinearGD
from spurlab.utils import resolve_device

LR = 0.5
PS = (0.5, 0.75, 0.85, 0.99)


def statistical_problems(runs: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(X (R, n, 2), y (R, n)): each run n (1 - p) unique minority points, the rest majority copies."""
    xs, ys = [], []
    for r in range(runs):
        p = PS[r % len(PS)]
        n_unique = max(1, int(round(n * (1 - p))))
        data = duplicate_majority(n_unique, p, D=1, margin=1.0, seed=r // len(PS))
        idx = np.resize(np.arange(len(data.y)), n)  # exactly n rows per run
        xs.append(data.x[idx])
        ys.append(2.0 * data.y[idx] - 1.0)
    return np.stack(xs), np.stack(ys)


def distinct_problems(runs: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    datas = [easy_task(n - n // 10, n // 10, D=10, seed=r) for r in range(runs)]
    return np.stack([d.x for d in datas]), np.stack([2.0 * d.y - 1.0 for d in datas])


def reference_loop(x: np.ndarray, y: np.ndarray, steps: int, device: str) -> np.ndarray:
    """One GD loop per run over all its points (no batching across runs, no collapsing)."""
    out = []
    for r in range(len(x)):
        z = torch.as_tensor(y[r][:, None] * x[r], dtype=torch.float64, device=device)
        w = torch.zeros(z.shape[1], dtype=torch.float64, device=device)
        scale = LR / len(z)
        for _ in range(steps):
            g = torch.sigmoid(-(z @ w))
            w.add_(g @ z, alpha=scale)
        out.append(w.cpu().numpy())  # a copy to the host: waits for the run's GPU work
    return np.stack(out)


def work_floor(x: np.ndarray, steps: int, device: str, repeats: int = 20) -> float:
    """Seconds that any engine touching every point at every step must spend: two streaming
    reads of the (runs, n, d) float64 data (margins, gradient) and one sigmoid per point."""
    z = torch.as_tensor(x, dtype=torch.float64, device=device)
    margins = z[..., 0].contiguous()

    def one_step() -> None:
        z.sum()
        torch.sigmoid(margins)
        z.sum()

    one_step()
    best = float("inf")
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            one_step()
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return steps * best


def measure(name: str, x: np.ndarray, y: np.ndarray, steps: int, ref_runs: int, device: str) -> dict:
    BatchedLinearGD(lr=LR, n_steps=10, device=device).fit(x[:2], y[:2])  # warm-up
    synchronize(device)
    start = time.perf_counter()
    gd = BatchedLinearGD(lr=LR, n_steps=steps, n_logged=50, device=device).fit(x, y)  # results land in numpy
    synchronize(device)
    batched = time.perf_counter() - start
    k = min(ref_runs, len(x))
    synchronize(device)
    start = time.perf_counter()
    ref_w = reference_loop(x[:k], y[:k], steps, device)
    synchronize(device)
    reference = (time.perf_counter() - start) * len(x) / k
    work = len(x) * steps
    floor = work_floor(x, steps, device) if gd.parametrization_ == "primal" else float("nan")
    return {"workload": name, "runs": len(x), "n": x.shape[1], "d": x.shape[2], "steps": steps,
            "floor_s": floor, "max_ratio": reference / floor,
            "path": f"{gd.parametrization_}, {gd.n_distinct_} distinct rows", "batched_s": batched,
            "reference_s": reference, "batched_rate": work / batched, "reference_rate": work / reference,
            "ratio": reference / batched, "max_abs_diff": float(np.abs(ref_w - gd.coef_[:k]).max()), "ref_runs": k}


def markdown(results: list[dict], args, device: str) -> str:
    lines = [f"## Batched linear GD vs per-run loop ({date.today().isoformat()})", "",
             machine_line(device),
             f"- command: `.venv/bin/python -m benchmarks.bench_linear_gd --runs {args.runs} --steps {args.steps} "
             f"--n {args.n} --ref-runs {args.ref_runs} --device {args.device}`",
             f"- reference: a per-run torch GD loop over all n points on the same device, timed on "
             f"{results[0]['ref_runs']} runs and scaled linearly to all runs; final weights compared with the "
             "batched engine", "",
             "| workload | runs x n x d | steps | engine path | batched (s) | reference (s) | batched runs*steps/s "
             "| reference runs*steps/s | ratio | max abs diff | work floor (s) | ratio at the floor |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['workload']} | {r['runs']} x {r['n']} x {r['d']} | {r['steps']} | {r['path']} | "
                     f"{r['batched_s']:.2f} | {r['reference_s']:.1f} | {r['batched_rate']:,.0f} | "
                     f"{r['reference_rate']:,.0f} | {r['ratio']:.1f}x | {r['max_abs_diff']:.1e} | "
                     + ("- | - |" if np.isnan(r["floor_s"]) else f"{r['floor_s']:.2f} | {r['max_ratio']:.1f}x |"))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--ref-runs", type=int, default=10)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    results = [measure("statistical-skew (study)", *statistical_problems(args.runs, args.n), args.steps,
                       args.ref_runs, device),
               measure("distinct points", *distinct_problems(args.runs, args.n), args.steps, args.ref_runs, device)]
    print(markdown(results, args, device))


if __name__ == "__main__":
    main()
