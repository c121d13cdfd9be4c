"""Robust training methods: the cost of each against ERM, and Group DRO's per-group loss.

* per-group minibatch losses with one ``index_add_`` / ``bincount`` (spurlab's
  Group DRO) vs the straightforward loop over groups with a boolean mask each,
  forward and backward, for 4, 16 and 64 groups;
* every registered method that runs here, fitted on ``spurious-digits`` with the
  same settings and seeds: fit time as a ratio to ERM's, and worst-group / mean-group /
  average test accuracy (mean ± std over the seeds).

Run: ``.venv/bin/python -m benchmarks.bench_methods [--seeds 3] [--epochs 20] [--device auto]``
(``--device`` places the method fits; the per-group loss timings run on the CPU).
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time

import pandas as pd
import torch

from benchmarks._timing import machine_line
from spurlab.data.dataset_registry import load_splits
from spurlab.errors import SpurlabError
from spurlab.train.methods import compare_methods, method_registry, summarize_comparison
from spurlab.train.methods.groupdro import batch_group_losses
from spurlab.utils import resolve_device


def reference_group_losses(losses: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """One masked mean per group (0 for a group absent from the batch)."""
    out = []
    for g in range(n_groups):
        mask = groups == g
        out.append(losses[mask].mean() if mask.any() else losses.new_zeros(()))
    return torch.stack(out)


def time_group_losses(fn, n_groups: int, batch: int = 128, steps: int = 300, repeats: int = 5) -> float:
    """Median seconds per forward+backward of ``fn`` on random minibatches."""
    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(batch, generator=gen, requires_grad=True)
    groups = torch.randint(0, n_groups, (batch,), generator=gen)
    q = torch.full((n_groups,), 1.0 / n_groups)
    times = []
    for _ in range(repeats + 1):  # the first repeat warms up
        start = time.perf_counter()
        for _ in range(steps):
            (q * fn(losses, groups, n_groups)).sum().backward()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times[1:])


def bench_group_losses() -> list[str]:
    lines = ["| groups | loop over groups (µs/step) | spurlab index_add (µs/step) | speed-up |", "|---|---|---|---|"]
    for n_groups in (4, 16, 64):
        ref = time_group_losses(reference_group_losses, n_groups)
        fast = time_group_losses(lambda l, g, n: batch_group_losses(l, g, n)[0], n_groups)
        lines.append(f"| {n_groups} | {ref * 1e6:.0f} | {fast * 1e6:.0f} | {ref / fast:.1f}x |")
    return lines


def available_methods() -> list[str]:
    """Registered methods whose fit can run in this installation (wrappers need their modules)."""
    names = []
    for name in method_registry():
        if name == "failure_directions":
            try:
                from spurlab.train.engines.upweighting import failure_direction_weights  # noqa: F401
            except ImportError:
                continue
        if name == "pruned_contrastive":
            try:
                from spurlab.train.engines.pruned_copy_contrastive import train_pruned_contrastive  # noqa: F401
            except ImportError:
                continue
        names.append(name)
    return names


def bench_methods(seeds: int, epochs: int, device: str) -> list[str]:
    splits = load_splits("spurious-digits", seed=0)
    methods = available_methods()
    # Seed-major, method-minor: every method's fits are spread over the whole run, so a load
    # spike on the shared machine does not land on one method only.
    frame = pd.concat([compare_methods(splits, [name], seeds=[seed], epochs=epochs, device=device)
                       for seed in range(seeds) for name in methods], ignore_index=True)
    frame["method"] = pd.Categorical(frame["method"], categories=methods, ordered=True)
    frame = frame.sort_values(["method", "seed"]).astype({"method": str})
    summary = summarize_comparison(frame).set_index("method")
    erm_time = statistics.median(frame.loc[frame["method"] == "erm", "fit_time_s"])
    lines = ["| method | fit time (s, median) | × ERM | worst-group test | mean-group test | average test |",
             "|---|---|---|---|---|---|"]
    for name in methods:
        t = statistics.median(frame.loc[frame["method"] == name, "fit_time_s"])
        row = summary.loc[name]
        cells = [f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}"
                 for m in ("worst_group_acc", "mean_group_acc", "average_acc")]
        lines.append(f"| {name} | {t:.2f} | {t / erm_time:.2f} | " + " | ".join(cells) + " |")
    missing = sorted(set(method_registry()) - set(methods))
    if missing:
        lines.append(f"\nNot run (their modules are not installed yet): {', '.join(missing)}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadier on a shared box)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda: where the method fits run")
    args = parser.parse_args()
    if args.seeds < 1 or args.epochs < 1 or args.threads < 1:
        raise SpurlabError("--seeds, --epochs and --threads must be at least 1")
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    group_lines = bench_group_losses()
    method_lines = bench_methods(args.seeds, args.epochs, device)
    total = time.perf_counter() - start
    print(f"\n## Robust training methods ({datetime.date.today().isoformat()})\n")
    print(machine_line(device))
    print(f"- command: `.venv/bin/python -m benchmarks.bench_methods --seeds {args.seeds} --epochs {args.epochs} "
          f"--threads {args.threads} --device {args.device}` "
          f"({total:.0f} s in all)")
    print("\nGroup DRO's per-group minibatch losses (batch 128, forward + backward, on the CPU, same run):\n")
    print("\n".join(group_lines))
    print(f"\nEvery method on `spurious-digits` (small CNN, {args.epochs} epochs, seeds 0..{args.seeds - 1}, "
          "selection by worst-group validation accuracy; fit time as a ratio to ERM's in the same run):\n")
    print("\n".join(method_lines))


if __name__ == "__main__":
    main()
