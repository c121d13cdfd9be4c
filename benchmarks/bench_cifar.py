"""CIFAR loading speed: spurlab's readers against straightforward references, in the same run.

* binary layout: one vectorized ``np.fromfile`` per batch vs a per-record read loop;
* Python layout: the restricted unpickler vs the standard (unsafe) ``pickle.load``;
* building grouped splits with source tracing (``build_with_sources``) vs
  ``build_image_splits`` alone (the cost of keeping each example's file index).

Run: ``.venv/bin/python -m benchmarks.bench_cifar [--n-train 10000] [--repeats 3]``
on a generated replica (the real archives are not needed).
"""
from __future__ import annotations

import argparse
import datetime
import pickle
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._timing import machine_line, median_time
from spurlab.data.cifar import SPLIT_FILES, build_with_sources, read_cifar
from spurlab.data.images import build_image_splits
from spurlab.data.replicas import write_cifar_replica


def reference_binary(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read ``.bin`` batches record by record (the straightforward way)."""
    out = {}
    for split, names in SPLIT_FILES[("cifar10", "binary")].items():
        images, labels = [], []
        for name in names:
            with open(folder / name, "rb") as fh:
                while record := fh.read(3073):
                    labels.append(record[0])
                    images.append(np.frombuffer(record, np.uint8, offset=1).reshape(3, 32, 32))
        out[split] = (np.stack(images), np.asarray(labels, np.int64))
    return out


def reference_python(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the pickled batches with the standard, unrestricted ``pickle.load``."""
    out = {}
    for split, names in SPLIT_FILES[("cifar10", "python")].items():
        batches = []
        for name in names:
            with open(folder / name, "rb") as fh:
                batches.append(pickle.load(fh, encoding="latin1"))
        out[split] = (np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32),
                      np.concatenate([np.asarray(b["labels"], np.int64) for b in batches]))
    return out


def run(n_train: int, n_test: int, repeats: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar_replica(root, "cifar10", n_train=n_train, n_test=n_test, seed=0)
        ours_bin = read_cifar(root, "cifar10", "binary")
        ref_bin = reference_binary(root / "cifar-10-batches-bin")
        ours_py = read_cifar(root, "cifar10", "python")
        ref_py = reference_python(root / "cifar-10-batches-py")
        for split in ("train", "test"):  # same numbers before timing anything
            for ours, ref in ((ours_bin, ref_bin), (ours_py, ref_py)):
                np.testing.assert_array_equal(ours.splits[split].images, ref[split][0])
                np.testing.assert_array_equal(ours.splits[split].labels, ref[split][1])
        arrays = {k: (s.images, s.labels) for k, s in ours_bin.splits.items()}
        options = dict(name="cifar10", seed=0, classes="3/8", spurious="patch", p=0.9)
        rows = [
            ("binary layout: vectorized read vs per-record loop",
             median_time(lambda: read_cifar(root, "cifar10", "binary"), repeats),
             median_time(lambda: reference_binary(root / "cifar-10-batches-bin"), repeats)),
            ("Python layout: restricted unpickler vs stdlib pickle.load",
             median_time(lambda: read_cifar(root, "cifar10", "python"), repeats),
             median_time(lambda: reference_python(root / "cifar-10-batches-py"), repeats)),
            ("cats vs ships + patch: build_with_sources vs build_image_splits",
             median_time(lambda: build_with_sources(arrays, ours_bin.class_names, **options), repeats),
             median_time(lambda: build_image_splits(arrays, ours_bin.class_names, **options), repeats)),
        ]
    return _markdown(rows, n_train, n_test, repeats)


def _markdown(rows, n_train: int, n_test: int, repeats: int) -> str:
    lines = [
        f"## CIFAR loaders ({datetime.date.today().isoformat()})",
        "",
        machine_line("cpu") + " (loading is CPU work)",
        f"- command: `.venv/bin/python -m benchmarks.bench_cifar --n-train {n_train} --n-test {n_test} "
        f"--repeats {repeats}`",
        f"- data: generated CIFAR-10 replica, {n_train} train + {n_test} test images, both layouts; "
        f"median of {repeats} runs after a warm-up; outputs checked equal before timing",
        "",
        "| task | spurlab (s) | reference (s) | reference / spurlab |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {ours:.3f} | {ref:.3f} | {ref / ours:.2f}x |" for name, ours, ref in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(run(args.n_train, args.n_test, args.repeats))


if __name__ == "__main__":
    main()
