"""Scan: how the measured feature alignment F approaches gamma(high N) as N/d and d grow.

Infinite-width kernels (k = 0), Gaussian core + spurious data, fresh-core spurious queries
(the study's ``alignment`` experiment), several seeds. For each setting, alpha, d and N/d it
prints the mean F (± sd over seeds) against

* ``gamma_high`` / ``gamma_low``: the paper's closed forms (``N/d -> inf`` / ``N/d -> 0``);
* ``F_DE``: :func:`spurlab.probes.memorization.gamma_at_ratio`, the ``d -> inf`` value at this
  N/d, ``(1 - w) gamma_high + w alpha`` with the linear-part weight ``w ~ d / N``;
* ``d (F - F_DE)``: the remaining finite-d gap (roughly constant if it is O(1/d)).

A second table extrapolates F to ``d -> inf`` at each N/d (least squares in 1/d over the d's)
and sets it beside ``F_DE``. Runs on one BLAS thread; the default scan takes about 5 minutes.

Run: ``.venv/bin/python -m benchmarks.scan_alignment [--d 50,100,200,400] [--ratios 1,3,10,30]
[--seeds 3] [--max-n 4000] [--max-n-over-d2 0.3]``
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from spurlab.probes.memorization import gamma, gamma_at_ratio
from spurlab.studies.spurious_memorization.memorization_study import synthetic_setting

SETTINGS = "rf:phi2,rf:phi4,ntk:h0+h1,ntk:h0+h3"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def measure(settings: list[tuple[str, str]], alphas: list[float], ds: list[int], ratios: list[float],
            seeds: int, max_n: int, max_n_over_d2: float) -> pd.DataFrame:
    """One row per (setting, alpha, d, N, seed) with the mean alignment F.

    Sizes with ``N > max_n`` or ``N > max_n_over_d2 d^2`` are skipped: besides the regime
    assumption, a degree-2 kernel (phi2, h0+h1) has rank ``d + d(d+1)/2`` and cannot interpolate
    more points than that."""
    rows = []
    for d in ds:
        Ns = sorted({int(round(r * d)) for r in ratios if r * d <= min(max_n, max_n_over_d2 * d * d)})
        for (model, activation), alpha, seed in (
                (s, a, sd) for s in settings for a in alphas for sd in range(seeds)):
            for row in synthetic_setting(model, activation, 0, alpha, d, Ns, 0, seed=seed):
                rows.append({"setting": f"{model} {activation}", "model": model, "activation": activation,
                             "alpha": alpha, "d": d, "N": row["N"], "seed": seed,
                             "F": row["feature_alignment"]})
    return pd.DataFrame(rows)


def summarize(raw: pd.DataFrame) -> pd.DataFrame:
    keys = ["setting", "model", "activation", "alpha", "d", "N"]
    out = raw.groupby(keys, sort=False)["F"].agg(["mean", "std", "count"]).reset_index()
    out["n_over_d"] = out["N"] / out["d"]
    out["n_over_d2"] = out["N"] / out["d"] ** 2
    out["gamma_high"] = [gamma(m, a, al, "high_n") for m, a, al in zip(out.model, out.activation, out.alpha)]
    out["gamma_low"] = [gamma(m, a, al, "low_n") for m, a, al in zip(out.model, out.activation, out.alpha)]
    out["F_DE"] = [gamma_at_ratio(m, a, al, r) for m, a, al, r in
                   zip(out.model, out.activation, out.alpha, out.n_over_d)]
    return out


def extrapolate(summary: pd.DataFrame, max_n_over_d2: float) -> pd.DataFrame:
    """``F = F_inf + b / d`` fitted over the d's at each (setting, alpha, N/d) with >= 2 d's,
    using only sizes with ``N / d^2 <= max_n_over_d2`` (the regime assumes ``N << d^2``)."""
    rows = []
    kept = summary[summary["n_over_d2"] <= max_n_over_d2]
    for (setting, alpha, ratio), grp in kept.groupby(["setting", "alpha", "n_over_d"], sort=False):
        if len(grp) < 2:
            continue
        slope, intercept = np.polyfit(1.0 / grp["d"].to_numpy(float), grp["mean"].to_numpy(), 1)
        rows.append({"setting": setting, "alpha": alpha, "n_over_d": ratio, "d's": ",".join(map(str, grp["d"])),
                     "F_inf (fit)": intercept, "b (F = F_inf + b/d)": slope, "F_DE": grp["F_DE"].iloc[0],
                     "gamma_high": grp["gamma_high"].iloc[0]})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    def cell(v):
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=SETTINGS, help="model:activation pairs, comma separated")
    parser.add_argument("--alphas", default="0.5,0.25")
    parser.add_argument("--d", default="50,100,200,400", help="input dimensions")
    parser.add_argument("--ratios", default="1,3,10,30", help="N/d values")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-n", type=int, default=4000, help="skip N above this (cost ~ N^3)")
    parser.add_argument("--max-n-over-d2", type=float, default=0.3, help="skip N above this times d^2")
    parser.add_argument("--fit-max-n-over-d2", type=float, default=0.1,
                        help="the d -> inf fit uses only sizes with N/d^2 at most this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = [tuple(s.split(":", 1)) for s in args.settings.split(",")]
    ds = [int(v) for v in _floats(args.d)]
    start = time.perf_counter()
    summary = summarize(measure(settings, _floats(args.alphas), ds, _floats(args.ratios), args.seeds, args.max_n,
                                args.max_n_over_d2))
    elapsed = time.perf_counter() - start

    table = summary.assign(
        F=[f"{m:.4f} ± {s:.4f}" if c > 1 else f"{m:.4f}" for m, s, c in
           zip(summary["mean"], summary["std"].fillna(0.0), summary["count"])],
        **{"(F - γ_high) / γ_high": (summary["mean"] - summary.gamma_high) / summary.gamma_high,
           "d (F - F_DE)": summary.d * (summary["mean"] - summary.F_DE)})
    table = table[["setting", "alpha", "d", "n_over_d", "N", "n_over_d2", "F", "gamma_high", "gamma_low", "F_DE",
                   "(F - γ_high) / γ_high", "d (F - F_DE)"]].rename(
        columns={"n_over_d": "N/d", "n_over_d2": "N/d²", "gamma_high": "γ_high", "gamma_low": "γ_low"})
    print(f"# Feature alignment F vs gamma (infinite width, {args.seeds} seeds, {elapsed:.0f} s)\n")
    print(markdown(table) + "\n")
    fits = extrapolate(summary, args.fit_max_n_over_d2)
    if len(fits):
        print(f"# F extrapolated to d -> inf at fixed N/d (fit F = F_inf + b/d over sizes with "
              f"N/d² <= {args.fit_max_n_over_d2:g})\n")
        print(markdown(fits) + "\n")


if __name__ == "__main__":
    main()
