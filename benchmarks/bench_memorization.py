"""Spurious memorization in RF/NTK regression: the dual kernel path against the naive way.

* **fast** (spurlab): kernels ``K``, ``K_s`` accumulated block by block over the features,
  one Cholesky factorization, then LOO residuals ``[K^-1 G]_i / [K^-1]_ii`` and alignments
  ``[K_s K^-1]_ii`` for every training point;
* **naive** (reference): the explicit ``N x p`` feature matrix, its pseudo-inverse for
  ``theta*``, then one pseudo-inverse refit per left-out sample.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=20_000, help="random features in the N = 1000 head-to-head")
    parser.add_argument("--refits", type=int, default=3, help="naive refits timed at N = 1000")
    parser.add_argument("--full", action="store_true", help="also time the full synthetic figure")
    parser.add_argument("--n", type=int, default=1000, help="N = d of the large head-to-head")
    parser.add_argument("--small-n", type=int, default=200, help="N = d of the small head-to-head (all refits)")
    parser.add_argument("--no-quick-sweep", action="store_true", help="skip timing the study's quick sweep")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda: where spurlab's kernels run")
    args = parser.parse_args()
    device = resolve_device(args.device)

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
