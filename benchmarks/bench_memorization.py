"""Spurious memorization in RF/NTK regression: the dual kernel path against the naive way.

* **fast** (spurlab): kernels ``K``, ``K_s`` accumulated block by block over the features,
  one Cholesky factorization, then LOO residuals ``[K^-1 G]_i / [K^-1]_ii`` and alignments
  ``[K_s K^-1]_ii`` for every training point;
* **naive** (reference): the explicit ``N x p`` feature matrix, its pseudo-inverse for
  ``theta*``, then one pseudo-inverse refit per left-out sample.

Part 0 (``--vectorized``) is the figure's sweep against the authors' per-N loop written as plain numpy
(``np.vectorize`` activations replaced by array expressions): for each N a fresh ``V`` (k x d), the
train, spurious-query and test feature matrices, ``theta = pinv(Phi) G`` and the three accuracies;
spurlab computes the kernels once at the largest N (the query's repeated spurious columns multiplied
once) and solves every N from them. Both are timed interleaved in one process, beside a plain GEMM
that gives the machine's float64 matmul rate at that moment.

Part 1 measures both completely at a small size. Part 2 is N = 1000: the naive refits
are timed on ``--refits`` left-out samples and scaled to N (each refit costs the same).
Part 3 times the study's quick synthetic sweep and, with ``--full``, the full synthetic
figure (RF, k = 100 000, N up to 1000, 4 settings). Both paths agree to ~1e-10.

``--device`` (auto, cpu, cuda) places spurlab's feature map and kernel solve (and so the
features the naive path starts from); the naive pseudo-inverses are numpy on the host CPU.

Run: ``.venv/bin/python -m benchmarks.bench_memorization [--full] [--k 20000] [--refits 3] [--device auto]``
(``--n 300 --small-n 60 --k 2000 --refits 1 --no-quick-sweep``: a seconds-long smoke run).
"""
from __future__ import annotations

import argparse
import datetime
import time

import numpy as np
import torch

from benchmarks._timing import machine_line, synchronize
from spurlab.data.synthetic import gaussian_core_spurious, signed, spurious_query
from spurlab.models.features import RandomFeatures
from spurlab.probes.memorization import refit_memorization, solve_memorization
from spurlab.studies.spurious_memorization.memorization_study import SpuriousMemorizationStudy, synthetic_setting
from spurlab.utils import resolve_device


def problem(n: int, d: int, alpha: float = 0.5, seed: int = 0):
    data = gaussian_core_spurious(n, d, alpha, seed)
    return data.z, spurious_query(data, "fresh", seed + 2), signed(data.y)


def fast_path(features: RandomFeatures, Z, Zq, g):
    synchronize(features.device_)
    start = time.perf_counter()
    K, Kq = features.gram_tensors(Z, Zq)
    sol = solve_memorization(K, Kq, g)  # its results are numpy arrays: the GPU work is done
    synchronize(features.device_)
    return sol, time.perf_counter() - start


def naive_path(features: RandomFeatures, Z, Zq, g, indices):
    """Returns the reference, the measured seconds and the seconds extrapolated to all N refits."""
    start = time.perf_counter()
    phi, phi_q = features.transform(Z), features.transform(Zq)
    built = time.perf_counter()
    refit_memorization(phi, g, phi_q, indices=[])  # theta* alone: one pseudo-inverse
    fitted = time.perf_counter()
    ref = refit_memorization(phi, g, phi_q, indices=indices)
    done = time.perf_counter()
    per_refit = (done - fitted - (fitted - built)) / len(indices)
    measured = done - start - (fitted - built)  # features + theta* + the refits timed
    full = (built - start) + (fitted - built) + per_refit * len(g)
    return ref, measured, full


def head_to_head(n: int, d: int, k: int, refits: int | None, device: str) -> dict:
    Z, Zq, g = problem(n, d)
    features = RandomFeatures(k, "phi2", seed=1, device=device).fit(Z)
    fast_path(RandomFeatures(k, "phi2", seed=1, device=device).fit(Z[:8]), Z[:8], Zq[:8], g[:8])  # warm-up
    sol, fast_s = fast_path(features, Z, Zq, g)
    indices = np.arange(n) if refits is None else np.linspace(0, n - 1, refits).astype(int)
    ref, measured_s, naive_s = naive_path(features, Z, Zq, g, indices)
    error = max(np.abs(sol.loo_residuals[indices] - ref["loo_residuals"]).max(),
                np.abs(sol.feature_alignment[indices] - ref["feature_alignment"]).max())
    return {"n": n, "d": d, "k": k, "fast_s": fast_s, "naive_s": naive_s, "naive_measured_s": measured_s,
            "refits": len(indices), "error": error, "dtype": str(features.dtype_).replace("torch.", "")}


def time_sweep(config: dict, settings: list[tuple[str, str, int]], device: str) -> tuple[float, list[float]]:
    per_setting = []
    for model, activation, k in settings:
        for alpha in config["alpha"]:
            synchronize(device)
            start = time.perf_counter()
            synthetic_setting(model, activation, k, alpha, config["d"], config["N"], config["n_test"], seed=0,
                              device=device)
            synchronize(device)
            per_setting.append(time.perf_counter() - start)
    return sum(per_setting), per_setting


def phi2_numpy(t: np.ndarray) -> np.ndarray:
    return t + (t * t - 1.0) / np.sqrt(2.0)


def vectorized_reference(d: int, k: int, Ns, n_test: int, seed: int) -> dict[int, dict[str, float]]:
    """The authors' per-N loop (synthetic data, RF phi2), vectorized: accuracies per N."""
    rng = np.random.default_rng(seed)
    out = {}
    for n in Ns:
        dx = d - d // 2
        u = rng.normal(size=dx) / np.sqrt(dx)
        x, sp = rng.normal(size=(n, dx)), rng.normal(size=(n, d - dx))
        z, g = np.concatenate([x, sp], 1), np.sign(x @ u)
        zq = np.concatenate([rng.normal(size=(n, dx)), sp], 1)
        xt = rng.normal(size=(n_test, dx))
        zt, gt = np.concatenate([xt, rng.normal(size=(n_test, d - dx))], 1), np.sign(xt @ u)
        v = rng.normal(size=(k, d)) / np.sqrt(d)
        phi, phi_q, phi_t = phi2_numpy(z @ v.T), phi2_numpy(zq @ v.T), phi2_numpy(zt @ v.T)
        theta = np.linalg.pinv(phi) @ g
        out[n] = {"train_acc": float(np.mean(phi @ theta * g > 0)), "test_acc": float(np.mean(phi_t @ theta * gt > 0)),
                  "spurious_acc": float(np.mean(phi_q @ theta * g > 0))}
    return out


def gemm_rate(device: str, size: int = 1500) -> float:
    """float64 GFLOP/s of one ``size``-cubed matmul, now."""
    a = torch.randn(size, size, dtype=torch.float64, device=device)
    a @ a
    synchronize(device)
    start = time.perf_counter()
    a @ a
    synchronize(device)
    return 2 * size**3 / (time.perf_counter() - start) / 1e9


def sweep_flops(d: int, k: int, n_max: int, n_test: int, alpha: float = 0.5) -> float:
    """Matmul FLOPs of spurlab's sweep: pre-activations (the query's spurious columns once) and kernels."""
    d_core = d - int(round(alpha * d))
    pre = (n_max * d + n_max * d_core + n_test * d) * k
    gram = (2 * n_max + n_test) * n_max * k
    return 2.0 * (pre + gram)


def compare_vectorized(d: int, k: int, Ns, n_test: int, device: str, repeats: int) -> dict:
    times = {"spurlab": [], "reference": [], "gemm_gflops": []}
    for _ in range(repeats):
        times["gemm_gflops"].append(gemm_rate(device))
        synchronize(device)
        start = time.perf_counter()
        ours = synthetic_setting("rf", "phi2", k, 0.5, d, list(Ns), n_test, seed=0, device=device)
        synchronize(device)
        times["spurlab"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = vectorized_reference(d, k, Ns, n_test, seed=0)
        times["reference"].append(time.perf_counter() - start)
    return {"times": times, "ours": ours, "ref": ref}


def print_vectorized(args, device: str) -> None:
    Ns = [n for n in (10, 20, 50, 100, 200, 500, 1000) if n <= args.n]
    res = compare_vectorized(args.d_sweep, args.k_sweep, Ns, args.n_test, device, args.repeats)
    t = {key: float(np.median(v)) for key, v in res["times"].items()}
    flops = sweep_flops(args.d_sweep, args.k_sweep, max(Ns), args.n_test)
    print(f"## spurious-memorization: RF sweep vs the authors' loop, vectorized ({datetime.date.today()})\n")
    print(machine_line(device))
    print(f"- command: `OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_memorization --vectorized "
          f"--d-sweep {args.d_sweep} --k-sweep {args.k_sweep} --n {args.n} --n-test {args.n_test} "
          f"--repeats {args.repeats}`")
    print(f"- work: RF phi2, d = {args.d_sweep}, k = {args.k_sweep}, N in {Ns}, {args.n_test} test points, "
          f"alpha = 1/2; medians of {args.repeats} interleaved repeats (reference and spurlab alternate)\n")
    print("| path | seconds | reference / this | matmul GFLOP/s reached | share of the machine's GEMM rate |")
    print("|---|---:|---:|---:|---:|")
    print(f"| reference: authors' loop, numpy activations, pinv per N | {t['reference']:.2f} | 1.00x | - | - |")
    reached = flops / t["spurlab"] / 1e9
    print(f"| spurlab synthetic_setting (kernels once, shared spurious columns) | {t['spurlab']:.2f} | "
          f"{t['reference'] / t['spurlab']:.2f}x | {reached:.1f} | {reached / t['gemm_gflops']:.0%} |")
    print(f"\nplain float64 GEMM (1500^3) in the same run: {t['gemm_gflops']:.1f} GFLOP/s (median)")
    diffs = [abs(r["test_acc"] - res["ref"][r["N"]]["test_acc"]) for r in res["ours"]]
    print(f"test accuracy, spurlab vs reference (different random draws): max |diff| {max(diffs):.3f}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=20_000, help="random features in the N = 1000 head-to-head")
    parser.add_argument("--refits", type=int, default=3, help="naive refits timed at N = 1000")
    parser.add_argument("--full", action="store_true", help="also time the full synthetic figure")
    parser.add_argument("--n", type=int, default=1000, help="N = d of the large head-to-head")
    parser.add_argument("--small-n", type=int, default=200, help="N = d of the small head-to-head (all refits)")
    parser.add_argument("--no-quick-sweep", action="store_true", help="skip timing the study's quick sweep")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda: where spurlab's kernels run")
    parser.add_argument("--vectorized", action="store_true", help="only the sweep vs the vectorized authors' loop")
    parser.add_argument("--d-sweep", type=int, default=1000)
    parser.add_argument("--k-sweep", type=int, default=20_000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.vectorized:
        print_vectorized(args, device)
        return

    small = head_to_head(args.small_n, args.small_n, 2000, refits=None, device=device)
    large = head_to_head(args.n, args.n, args.k, refits=args.refits, device=device)
    study = SpuriousMemorizationStudy()
    quick = study.default_config(quick=True)
    quick_settings = [(m, a, quick[f"{m}_k"]) for m in quick["models"] for a in quick[f"{m}_activations"]]
    quick_s = None if args.no_quick_sweep else time_sweep(quick, quick_settings, device)[0]

    sizes = "" if (args.n, args.small_n, args.k, args.refits) == (1000, 200, 20_000, 3) else \
        f" --n {args.n} --small-n {args.small_n} --k {args.k} --refits {args.refits}"
    lines = [f"## spurious-memorization: dual kernel solve vs naive refits ({datetime.date.today()})", "",
             machine_line(device),
             "- command: `.venv/bin/python -m benchmarks.bench_memorization"
             f"{' --full' if args.full else ''}{sizes}{' --no-quick-sweep' if args.no_quick_sweep else ''} "
             f"--device {args.device}`",
             f"- where: fast path (spurlab) on {device}, random features in {large['dtype']}, kernels and solve in "
             f"float64; naive path: numpy pseudo-inverses on the host CPU ({torch.get_num_threads()} torch "
             "threads; numpy's BLAS threads follow OMP_NUM_THREADS)", "",
             "| case | fast (s) | naive (s) | ratio | max abs diff |", "|---|---|---|---|---|"]
    for case, label in ((small, "all refits measured"),
                        (large, f"{large['refits']} refits measured ({large['naive_measured_s']:.1f} s), "
                                f"scaled to N")):
        lines.append(f"| RF phi2, N={case['n']}, d={case['d']}, k={case['k']} ({label}) | {case['fast_s']:.2f} | "
                     f"{case['naive_s']:.1f} | {case['naive_s'] / case['fast_s']:.0f}x | {case['error']:.1e} |")
    if quick_s is not None or args.full:
        lines.append("")
    if quick_s is not None:
        lines.append(f"- quick synthetic sweep (study defaults: d={quick['d']}, N up to {max(quick['N'])}, "
                     f"RF k={quick['rf_k']}, NTK k={quick['ntk_k']}, {len(quick_settings) * len(quick['alpha'])} "
                     f"settings): {quick_s:.1f} s")
    if args.full:
        full = study.default_config(quick=False)
        rf_settings = [("rf", a, full["rf_k"]) for a in full["rf_activations"]]
        full_s, per = time_sweep(full, rf_settings, device)
        lines.append(f"- full synthetic figure (RF, k={full['rf_k']}, d={full['d']}, N up to {max(full['N'])}, "
                     f"{full['n_test']} test points, {len(per)} settings): {full_s:.0f} s "
                     f"({', '.join(f'{s:.0f}' for s in per)} s per setting); target < 600 s")
    print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
