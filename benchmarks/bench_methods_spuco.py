"""Every robust method on ``spuco-mnist`` at SpuCo's budget, beside SpuCo 2.0.3's own numbers (issue #19).

Budget (the peer's): SpuCoMNIST, 5 digit-pair classes, strength 0.995, easy (whole-background) colour;
LeNet (SpuCo's shape); SGD lr 1e-2, momentum 0.9, Nesterov, weight decay 1e-4, batch 64, 5 epochs;
seeds 0, 1, 2. Model selection by worst-group validation accuracy; the final epoch is reported too.

Method settings beyond the budget, chosen before looking at test numbers:

* ``groupdro``: the released code's recipe (group-balanced minibatches, eta 0.01, no size adjustment);
* ``reweight``: group-balanced minibatches (``by=sampler``);
* ``upsample``: 1 epoch over the upsampled set (25 groups x the largest group = 5x the training set),
  i.e. the same number of steps as the others' 5 epochs (SpuCo gave it 5 upsampled epochs, 5x more);
* ``jtt``: the JTT paper's CelebA setting, first stage 1 epoch, error set upsampled 50x; second stage 5 epochs;
* ``dfr``: the last layer of the same seed's ERM network refit (``base_model=``: ERM is not trained twice;
  its fit time below adds ERM's), 20 balanced draws, C tuned on half of val over the paper's grid 1 ... 0.01
  (5 draws per C); the L1 heads by the batched solver (``solver="auto"`` picks it here; liblinear, the
  authors' solver, would take hours per seed: ``benchmarks/bench_dfr_head.py``); its head stage's time is
  ``details.head_time_s``;
* ``failure_directions``: a 1-epoch base model, then 5 epochs with the flagged examples upweighted
  (``scheme=balanced``) by sampling (``by=sampler``); the first runs used loss weights (``by=loss``) and
  collapsed to chance (reported on their own line).

Every finished run is appended to ``--out`` (JSON lines) at once, so an interrupted benchmark keeps what
finished; ``--summarize [FILE ...]`` prints the tables from those files (default: ``--out``), with the
reason under the table for every method that misses its target. ``--speed`` measures the training loop's
images/s against a plain PyTorch loop doing the same work (same LeNet, batch 64, SGD) in the same run.

Run: ``.venv/bin/python -m benchmarks.bench_methods_spuco [--seeds 0 1 2] [--methods ...] [--threads 1]``
     ``.venv/bin/python -m benchmarks.bench_methods_spuco --speed``
     ``.venv/bin/python -m benchmarks.bench_methods_spuco --summarize benchmarks/results/spuco_methods.jsonl
     benchmarks/results/spuco_dfr.jsonl``
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks._timing import machine_line
from spurlab.data.dataset_registry import load_splits
from spurlab.models import make_model
from spurlab.train.methods import get_method
from spurlab.train.trainer import TrainConfig, fit

METHODS = ("erm", "groupdro", "reweight", "upsample", "jtt", "dfr", "failure_directions")
BUDGET = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "batch_size": 64}
EPOCHS = 5
METHOD_SETTINGS = {
    "upsample": {"epochs": 1},
    "jtt": {"first_epochs": 1, "lambda_up": 50},
    "failure_directions": {"base_epochs": 1, "by": "sampler"},
    # the paper's (and SpuCo's) C grid: the balanced held-out halves here hold thousands of images, and the
    # extended grid's large C values (spurlab's default, for held-out sets of a few hundred) made liblinear
    # crawl on the nearly separable features of a colour classifier (>20 min per seed under load)
    "dfr": {"C_grid": [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]},
    "reweight": {"by": "sampler"},
    "groupdro": {"eta": 0.01, "adjustment": 0.0, "group_balanced": True},
}
# SpuCo 2.0.3 on SpuCoMNIST built by SpuCo's own code, same budget, test worst-group accuracy (%), mean ± std
# over seeds 0-2, final epoch: measured by the session that filed issue #19 and quoted from the issue.
PEER = {"erm": (0.0, 0.0), "groupdro": (34.2, 6.8), "reweight": (40.5, 4.2), "upsample": (39.5, 10.3),
        "jtt": (30.1, 9.2), "dfr": (22.7, 15.7)}
PEER_NAME = {"reweight": "group-balanced sampling"}
LOSS_WEIGHTED_FD = "failure_directions (by=loss)"
DEFAULT_OUT = Path("benchmarks/results/spuco_methods.jsonl")


def load_average() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def method_kwargs(name: str, seed: int, erm_model: nn.Module | None) -> dict:
    settings = {**BUDGET, **{k: v for k, v in METHOD_SETTINGS.get(name, {}).items() if k != "epochs"}}
    kwargs = {"model": "lenet", "epochs": METHOD_SETTINGS.get(name, {}).get("epochs", EPOCHS),
              "selection": "worst_group", "seed": seed, "device": "cpu", **settings}
    if name == "dfr":
        kwargs.update(base_model=erm_model, n_draws=20)
    return kwargs


def scores(method, ds, final: bool = False) -> dict:
    result = method.evaluate(ds, final=final)
    return {k: result[k] for k in ("worst_group_acc", "mean_group_acc", "average_acc", "accuracy")}


def run_one(name: str, seed: int, splits, erm_run: dict | None) -> dict:
    erm_model = erm_run["model"] if erm_run else None
    start_load = load_average()
    method = get_method(name, **method_kwargs(name, seed, erm_model)).fit(splits)
    fit_time = method.fit_time_s_ + (erm_run["fit_time_s"] if name == "dfr" and erm_run else 0.0)
    row = {"method": name, "seed": seed, "epochs": method.epochs, "fit_time_s": fit_time,
           "own_fit_time_s": method.fit_time_s_, "best_epoch": method.best_epoch_, "val_score": method.val_score_,
           "test": scores(method, splits["test"]), "test_final": scores(method, splits["test"], final=True),
           "train": scores(method, splits["train"]), "load_start": start_load, "load_end": load_average(),
           "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "details": {k: v for k, v in method.details_.items() if k in (
               "error_set_size", "n_upweighted", "flagged_minority_share", "C", "n_upsampled", "head_time_s")},
           "hparams": {k: v for k, v in method.hparams_.items() if not isinstance(v, (tuple, list))}}
    if name == "erm":  # DFR refits the last epoch's network, as its own ERM stage would
        row["_model"] = method.final_model_
    return row


def run_benchmark(args) -> None:
    torch.set_num_threads(args.threads)
    splits = load_splits("spuco-mnist", seed=0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(machine_line(), f"| torch threads {args.threads} | writing {out}", flush=True)
    for seed in args.seeds:
        erm_run = None
        for name in args.methods:
            if name == "dfr" and erm_run is None:
                erm_run = {"model": None, "fit_time_s": 0.0}  # no ERM in this run: DFR trains its own
            t0 = time.perf_counter()
            try:
                row = run_one(name, seed, splits, erm_run)
            except Exception as exc:  # keep the other runs going; the failure is recorded
                row = {"method": name, "seed": seed, "error": f"{type(exc).__name__}: {exc}"}
            if name == "erm" and "_model" in row:
                erm_run = {"model": row.pop("_model"), "fit_time_s": row["fit_time_s"]}
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            wg = row.get("test", {}).get("worst_group_acc")
            print(f"{name} seed {seed}: test worst-group {wg} ({time.perf_counter() - t0:.0f} s, "
                  f"load {load_average()})", flush=True)


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


# Why a method misses its target here (printed under the table when it does; docs/methods.md has the longer story).
WHY_MISSED = {
    "upsample": "one pass over the upsampled set (the same steps as the others' 5 epochs) leaves a single "
                "checkpoint, so nothing is selected on validation: its number is a final-epoch number, like SpuCo's "
                "(which ran 5 passes, 5x the steps); the same balanced data with per-epoch selection is `reweight`",
    "jtt": "the 1-epoch first stage is a colour classifier, so the error set is exactly the 243 minority images and "
           "JTT is minority upsampling by lambda_up = 50 (the JTT paper's CelebA value): the 20 minority groups get "
           "~20% of the draws against ~80% under group balancing (balance would need lambda_up ~ 800, outside JTT's "
           "grid)",
    "dfr": "the last layer can only reweight what ERM's 84 LeNet features hold, and ERM here is a colour classifier "
           "(train 99.5%, balanced test at chance): the head's validation worst group stays low at every C of the "
           "authors' grid",
    LOSS_WEIGHTED_FD: "each flagged image weighs ~200 in minibatches that rarely hold one; the rare huge steps wreck "
                      "SGD at lr 1e-2 (train and test at chance) although the flagged set is right; sampling by the "
                      "same weights (the `failure_directions` row) meets the target",
}


def read_rows(paths: list[Path]) -> list[dict]:
    rows, seen = [], set()
    for line in (text for path in paths for text in path.read_text().splitlines()):
        # parallel processes may finish a run twice: keep the first
        row = json.loads(line) if line.strip() else None
        if row is not None and row.get("hparams", {}).get("by") == "loss" and row["method"] == "failure_directions":
            row["method"] = LOSS_WEIGHTED_FD  # the first runs, before by=sampler: reported on their own line
        if row is not None and (row["method"], row["seed"]) not in seen:
            seen.add((row["method"], row["seed"]))
            rows.append(row)
    return rows


def summarize(paths: list[Path]) -> str:
    rows = read_rows(paths)
    ok = [r for r in rows if "error" not in r]
    lines = ["| method | seeds | test worst-group (selected) | test worst-group (final epoch) | test average "
             "(selected) | test accuracy | train accuracy | fit time (s) | SpuCo worst-group (final) | "
             "target met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    erm_wg = [r["test"]["worst_group_acc"] for r in ok if r["method"] == "erm"]
    missed = []
    for name in (*METHODS, LOSS_WEIGHTED_FD):
        runs = [r for r in ok if r["method"] == name]
        if not runs:
            continue
        wg = [r["test"]["worst_group_acc"] for r in runs]
        final = [r["test_final"]["worst_group_acc"] for r in runs]
        avg = [r["test"]["average_acc"] for r in runs if r["test"]["average_acc"] is not None]
        acc = [r["test"]["accuracy"] for r in runs]
        train = [r["train"]["accuracy"] for r in runs]
        times = [r["fit_time_s"] for r in runs]
        peer = PEER.get(name)
        peer_text = f"{peer[0]:.1f} ± {peer[1]:.1f}" if peer else "—"
        if name.startswith("failure_directions"):
            target = 100 * statistics.mean(erm_wg) + 20 if erm_wg else None
        elif name == "erm" or peer is None:
            target = None
        else:
            target = peer[0] + 10
        met = "—" if target is None else ("yes" if 100 * statistics.mean(wg) >= target else f"no (needs {target:.1f})")
        if met.startswith("no") and name in WHY_MISSED:
            missed.append(f"- {name} misses its target ({100 * statistics.mean(wg):.1f} < {target:.1f}): "
                          f"{WHY_MISSED[name]}.")
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in runs)} | {mean_std(wg)} | {mean_std(final)} | "
                     f"{mean_std(avg)} | {mean_std(acc)} | {mean_std(train)} | "
                     f"{statistics.mean(times):.0f} | {peer_text} | {met} |")
    failed = [f"{r['method']} seed {r['seed']}: {r['error']}" for r in rows if "error" in r]
    one_minute = [float(r[k].split("/")[0]) for r in ok for k in ("load_start", "load_end") if k in r]
    lines.append("")
    if one_minute:
        lines.append(f"1-minute load average at run starts and ends: {min(one_minute):.1f} to {max(one_minute):.1f} "
                     f"(median {statistics.median(one_minute):.1f}) on {os.cpu_count()} cores")
    head_times = [r["details"]["head_time_s"] for r in ok if "head_time_s" in r.get("details", {})]
    if head_times:
        lines.append(f"dfr's head stage (penultimate features of val, C tuning, the 20-draw refit): "
                     f"{statistics.mean(head_times):.1f} s per seed (mean of {len(head_times)}; "
                     "its fit time adds ERM's)")
    if failed:
        lines.append("Failed runs: " + "; ".join(failed))
    if missed:
        lines += ["", "Where a target is missed, and why:", *missed]
    return "\n".join(lines)


# ------------------------------------------------------------------ speed: trainer vs a plain loop
def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> None:
    """What a user writes by hand: shuffle, slice, scale uint8, step."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = loss_fn(model(x[idx].float().div_(255.0)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def speed(threads: int, n_images: int = 9600, repeats: int = 3) -> str:
    torch.set_num_threads(threads)
    train = load_splits("spuco-mnist", seed=0)["train"]
    x, y = train.x[:n_images], train.y[:n_images]
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(y)
    cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=64, optimizer="sgd", momentum=0.9, nesterov=True,
                      weight_decay=1e-4, device="cpu")
    ours, plain = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        model = make_model("lenet", (3, 28, 28), 5, seed=0)
        t0 = time.perf_counter()
        fit(model, x, y, cfg)
        ours.append(n_images / (time.perf_counter() - t0))
        model = make_model("lenet", (3, 28, 28), 5, seed=0)
        t0 = time.perf_counter()
        plain_loop(model, xt, yt, cfg)
        plain.append(n_images / (time.perf_counter() - t0))
    mo, mp = statistics.median(ours), statistics.median(plain)
    return (f"| spurlab fit (LeNet, batch 64, SGD nesterov, uint8 spuco-mnist, {n_images} images x 1 epoch, "
            f"{threads} thread(s), median of {repeats} interleaved) | {mo:.0f} img/s | plain loop {mp:.0f} img/s | "
            f"plain/spurlab {mp / mo:.2f}x | load {load_average()} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (set explicitly: see issue #19)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--summarize", nargs="*", metavar="JSONL",
                        help="print the tables of these result files together (default: --out) and stop")
    parser.add_argument("--speed", action="store_true", help="the training loop against a plain loop, and stop")
    args = parser.parse_args()
    if args.speed:
        print(machine_line())
        print(speed(args.threads))
    elif args.summarize is not None:
        print(summarize([Path(p) for p in args.summarize] or [Path(args.out)]))
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
