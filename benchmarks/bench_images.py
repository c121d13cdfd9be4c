"""Lazy image data at CelebA scale: peak memory and images per second, first pass against the cached pass.

On a CelebA-layout replica written at the real size (202,599 JPEGs of 178x218 by default; a few distinct
encoded pictures per group are reused so the replica is written in a minute or two), each measurement runs
in its own child process so its peak resident memory (``VmHWM``) is its own:

* ``pipeline``: ``load_splits("celeba", image_size=S, cache=DIR)`` and every split iterated in batches of
  256 (decode + resize + float32 transform), twice: the first pass decodes the JPEGs and fills the
  memory-mapped uint8 cache, the second reads the cache. Peak RSS of each pass, wall time, images/s,
  against the float32 in-memory requirement of the same splits (computed, never allocated);
* ``embed``: the same two passes over the first ``--embed-images`` training images, each batch also
  embedded by EfficientNet-Lite0 (the offline ImageNet weights) on the CPU;
* ``audit`` (with ``--audit-limit N``): ``spurlab audit --quick`` on the replica with
  ``--model efficientnet-lite0 --set freeze=backbone --set image_size=S --set limit=N`` (N images per split),
  its peak RSS and wall time.

Run: ``.venv/bin/python -m benchmarks.bench_images --data-dir /tmp/celeba-replica [--n-images 202599]
[--image-size 64] [--limit N] [--embed-images 2048] [--audit-limit 2000]``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CELEBA_IMAGES = 202_599
CELEBA_FRACTIONS = (162_770 / CELEBA_IMAGES, 19_867 / CELEBA_IMAGES)  # the real train / val shares
BATCH = 256


# ------------------------------------------------------------------ measurements (child processes)
def peak_rss_bytes() -> int:
    """This process's peak resident set (``VmHWM``) since start or the last reset."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> bool:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _one_pass(splits, embed=None, limit: int | None = None) -> dict:
    start, n, checksum = time.perf_counter(), 0, 0.0
    for name in ("train", "val", "test") if limit is None else ("train",):
        x = splits[name].x
        stop = len(x) if limit is None else min(limit, len(x))
        for begin in range(0, stop, BATCH):
            batch = x[begin:min(begin + BATCH, stop)]
            checksum += float(batch[:, :, 0, 0].sum())
            if embed is not None:
                embed(batch)
            n += len(batch)
    return {"images": n, "seconds": time.perf_counter() - start, "checksum": checksum}


def child(args: argparse.Namespace) -> dict:
    """One measurement in this process; prints a JSON line."""
    from spurlab.data import load_splits

    os.environ.setdefault("SPURLAB_QUIET", "1")
    embed = None
    if args.child == "embed":
        from spurlab.models.embedders import EfficientNetLite0Embedder

        embedder = EfficientNetLite0Embedder(image_size=args.image_size, batch_size=BATCH, device="cpu")
        embedder.embed(__import__("numpy").zeros((2, 3, args.image_size, args.image_size), "float32"))  # load
        embed = embedder.embed
    baseline = current_rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    params = {"image_size": args.image_size, "cache": args.cache}
    if args.limit:
        params["limit"] = args.limit
    splits = load_splits("celeba", data_dir=args.data_dir, **params)
    load_seconds = time.perf_counter() - start
    sizes = {k: len(v) for k, v in splits.items()}
    limit = args.embed_images if args.child == "embed" else None
    first = _one_pass(splits, embed, limit)
    first["peak_rss"] = peak_rss_bytes()
    reset_peak_rss()
    second = _one_pass(splits, embed, limit)
    second["peak_rss"] = peak_rss_bytes()
    stats = splits["train"].x.stats
    return {"baseline_rss": baseline, "load_seconds": load_seconds, "sizes": sizes, "first": first,
            "second": second, "train_decoded": stats.decoded, "train_cache_hits": stats.cache_hits,
            "same_pixels": abs(first["checksum"] - second["checksum"]) < 1e-3 * max(1.0, abs(first["checksum"]))}


def run_child(kind: str, args: argparse.Namespace, cache: Path, limit: int | None) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_images", "--child", kind, "--data-dir", str(args.data_dir),
               "--image-size", str(args.image_size), "--cache", str(cache), "--embed-images", str(args.embed_images)]
    if limit:
        command += ["--limit", str(limit)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_audit(args: argparse.Namespace, cache: Path, out_dir: Path) -> dict:
    """``spurlab audit --quick`` in a child; its peak RSS from the kernel's child accounting."""
    command = [sys.executable, "-m", "spurlab.cli", "audit", "--quick", "--dataset", "celeba", "--data-dir",
               str(args.data_dir), "--model", "efficientnet-lite0", "--set", "freeze=backbone", "--set",
               f"image_size={args.image_size}", "--set", f"limit={args.audit_limit}", "--set", f"cache={cache}",
               "--device", "cpu", "--out", str(out_dir), *shlex.split(args.audit_args)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"command": " ".join(command[3:]), "returncode": done.returncode, "seconds": seconds,
            "peak_rss": peak if peak > before * 1024 else None, "tail": (done.stdout + done.stderr)[-1500:]}


# ------------------------------------------------------------------ the replica
def ensure_replica(data_dir: Path, n_images: int) -> float | None:
    """Write the replica unless one of this size is there; seconds spent writing (None: reused)."""
    from spurlab.data.replicas import write_celeba_replica

    attrs = data_dir / "celeba" / "list_attr_celeba.txt"
    if attrs.is_file() and attrs.open().readline().strip() == str(n_images):
        return None
    start = time.perf_counter()
    write_celeba_replica(data_dir, n_images=n_images, image_size=(178, 218), split_fractions=CELEBA_FRACTIONS,
                         seed=0, distinct_images=16)
    return time.perf_counter() - start


# ------------------------------------------------------------------ report
def gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def report(args, machine: str, write_seconds, pipe: dict | None, embed: dict | None, audit: dict | None) -> str:
    if pipe is None:
        return audit_report(args, machine, audit)
    n = sum(pipe["sizes"].values())
    float32 = n * 3 * args.image_size ** 2 * 4
    lines = [f"## Lazy image data: CelebA-layout replica, {n:,} images ({datetime.date.today()})", "",
             machine, f"- command: `{' '.join(['.venv/bin/python -m benchmarks.bench_images', *sys.argv[1:]])}`",
             f"- data: CelebA-layout replica, {n:,} JPEGs of 178x218 (`write_celeba_replica(distinct_images=16)`, "
             + ("reused" if write_seconds is None else f"written in {write_seconds:.0f} s") + f"); image_size "
             f"{args.image_size}; batches of {BATCH}; the decoded cache is a uint8 memmap "
             f"({gib(n * 3 * args.image_size ** 2)} on disk)", "",
             "| measurement | images | wall (s) | images/s | peak RSS |", "|---|---:|---:|---:|---:|",
             f"| python + spurlab imported (baseline RSS) | | | | {gib(pipe['baseline_rss'])} |",
             f"| load_splits (parse the tables, stat every file) | {n:,} | {pipe['load_seconds']:.1f} | | |"]
    for label, key in (("decode + transform, first pass (fills the cache)", "first"),
                       ("cached pass (memmap uint8 -> float32)", "second")):
        p = pipe[key]
        lines.append(f"| {label} | {p['images']:,} | {p['seconds']:.1f} | {p['images'] / p['seconds']:,.0f} | "
                     f"{gib(p['peak_rss'])} |")
    if embed is not None:
        for label, key in (("decode + transform + EfficientNet-Lite0 embed, first pass", "first"),
                           ("cached pass + embed", "second")):
            p = embed[key]
            lines.append(f"| {label} | {p['images']:,} | {p['seconds']:.1f} | {p['images'] / p['seconds']:,.0f} | "
                         f"{gib(p['peak_rss'])} |")
    if audit is not None:
        status = "" if audit["returncode"] == 0 else f" (exit {audit['returncode']})"
        lines.append(f"| `spurlab audit --quick` ... limit={args.audit_limit} per split{status} | "
                     f"{min(args.audit_limit, n):,}/split | {audit['seconds']:.0f} | | {gib(audit['peak_rss'])} |")
    lines += ["", f"- float32 in-memory requirement of the same splits (computed, not allocated): {gib(float32)} "
              f"(at 224 px: {gib(n * 3 * 224 ** 2 * 4)})",
              f"- first and second pass gave the same pixels: {pipe['same_pixels']}; train rows decoded "
              f"{pipe['train_decoded']:,}, read from the cache {pipe['train_cache_hits']:,}"]
    if audit is not None:
        lines.append(f"- audit command: `spurlab {audit['command']}`")
    return "\n".join(lines) + "\n"


def audit_report(args, machine: str, audit: dict) -> str:
    status = "completed" if audit["returncode"] == 0 else f"failed (exit {audit['returncode']})"
    return "\n".join([
        f"## `spurlab audit --quick` on a {args.n_images:,}-image CelebA-layout replica, limit={args.audit_limit} "
        f"per split ({datetime.date.today()})", "", machine,
        f"- command: `{' '.join(['.venv/bin/python -m benchmarks.bench_images', *sys.argv[1:]])}`",
        f"- audit: `spurlab {audit['command']}`",
        f"- {status} in {audit['seconds']:.0f} s; peak RSS of the audit process {gib(audit['peak_rss'])}"]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "spurlab-celeba-replica")
    parser.add_argument("--n-images", type=int, default=CELEBA_IMAGES)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--limit", type=int, help="measure at most this many images per split (seeded subsample)")
    parser.add_argument("--embed-images", type=int, default=2048)
    parser.add_argument("--audit-limit", type=int, default=0, help="images per split for the audit (0: skip)")
    parser.add_argument("--audit-args", default="", help="extra audit flags in one string, e.g. '--epochs 1'")
    parser.add_argument("--skip-pipeline", action="store_true", help="measure the audit only")
    parser.add_argument("--keep-cache", action="store_true")
    parser.add_argument("--out", type=Path, help="also append the markdown to this file")
    parser.add_argument("--child", choices=("pipeline", "embed"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    from benchmarks._timing import machine_line

    write_seconds = ensure_replica(args.data_dir, args.n_images)
    limit = args.limit
    cache_root = Path(tempfile.mkdtemp(prefix="spurlab-bench-cache-", dir=args.data_dir))
    try:
        pipe = None if args.skip_pipeline else run_child("pipeline", args, cache_root / "pipeline", limit)
        embed = run_child("embed", args, cache_root / "embed", limit) if args.embed_images and pipe else None
        audit = run_audit(args, cache_root / "audit", cache_root / "audit-run") if args.audit_limit else None
    finally:
        if not args.keep_cache:
            shutil.rmtree(cache_root, ignore_errors=True)
    text = report(args, machine_line("cpu"), write_seconds, pipe, embed, audit)
    if limit is not None:
        text += (f"- measured on a fraction: limit={limit:,} images per split (a seeded subsample) of the "
                 f"{args.n_images:,}-image replica\n")
    print(text)
    if audit is not None and audit["returncode"] != 0:
        print(audit["tail"], file=sys.stderr)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
