"""The last-layer fast path: DFR on cached features against retraining the network for one epoch.

A frozen ``efficientnet-lite0`` backbone embeds the splits once (the feature cache's first pass);
every later fit with ``freeze="backbone"`` reads the features back and trains only the last layer.
Rows, on generated images (two classes, a spurious colour, ``--n-train`` training examples):

* first pass: embed train + val (+ test) and write the cache;
* DFR with the frozen backbone, features from the cache (the whole ``fit``: reading the cache, the
  head's ERM epochs on the features, the C grid of group-balanced L1 logistic regressions);
* the reference: one epoch of ERM retraining the whole network on the training images.

Run: ``.venv/bin/python -m benchmarks.bench_feature_cache [--n-train 10000] [--image-size 32] [--device auto]``
"""
from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time

import numpy as np
import torch

from benchmarks._timing import machine_line, synchronize
from spurlab.data.grouped import DatasetSplits
from spurlab.models import ModelSpec, make_model
from spurlab.train.feature_cache import CACHE_STATS, embed_splits
from spurlab.train.methods import get_method
from spurlab.train.trainer import TrainConfig, fit
from spurlab.utils import resolve_device


def make_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright square (class 1) or none (class 0) on a background whose colour follows the class 90% of
    the time (the spurious attribute), plus noise: float32 (n, 3, size, size) in [0, 1]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.9, y, 1 - y)
    x = rng.random((n, 3, size, size), dtype=np.float32) * 0.2
    x[:, 0] += 0.5 * a[:, None, None]
    x[:, 2] += 0.5 * (1 - a)[:, None, None]
    q = size // 4
    x[y == 1, :, q:3 * q, q:3 * q] += 0.3
    return np.clip(x, 0, 1), y, a


def build_splits(n_train: int, n_held: int, size: int) -> DatasetSplits:
    n = n_train + 2 * n_held
    x, y, a = make_images(n, size, seed=0)
    split = np.array(["train"] * n_train + ["val"] * n_held + ["test"] * n_held)
    return DatasetSplits.from_arrays(x, y, attributes=a, split=split, name="bench-colour-squares")


def timed(fn, device: str) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-held", type=int, default=2000, help="examples in val and in test each")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--head-epochs", type=int, default=20, help="ERM epochs of the head before DFR refits it")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    splits = build_splits(args.n_train, args.n_held, args.image_size)
    spec = ModelSpec("efficientnet-lite0", freeze="backbone")
    with tempfile.TemporaryDirectory() as cache:
        backbone = spec.build(splits["train"].input_shape, 2, seed=0)
        first_s, _ = timed(lambda: embed_splits(backbone, splits, token=spec.cache_token(), device=device,
                                                cache=cache), device)
        os.environ["SPURLAB_CACHE"] = cache
        hits = CACHE_STATS.hits
        dfr_s, dfr = timed(lambda: get_method("dfr", model=spec, epochs=args.head_epochs, seed=0, device=device,
                                              batch_size=args.batch_size).fit(splits), device)
        assert CACHE_STATS.hits == hits + 2 and all(dfr.features_from_cache_.values())
    dfr_test = dfr.evaluate(splits["test"])
    dfr_train = dfr.evaluate(splits["train"])
    net = make_model("efficientnet-lite0", splits["train"].input_shape, 2, seed=0)
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=args.batch_size, seed=0, device=device)
    epoch_s, _ = timed(lambda: fit(net, splits["train"].x, splits["train"].y, cfg), device)
    print(f"## Feature cache: DFR on cached features vs one epoch of retraining ({datetime.date.today()})\n")
    print(machine_line(device))
    print(f"- command: `.venv/bin/python -m benchmarks.bench_feature_cache --n-train {args.n_train} "
          f"--n-held {args.n_held} --image-size {args.image_size} --head-epochs {args.head_epochs} "
          f"--device {args.device}`")
    print(f"- data: generated colour-square images, {args.n_train} train + {args.n_held} val + {args.n_held} test, "
          f"3x{args.image_size}x{args.image_size}; model efficientnet-lite0 (ImageNet weights), batch "
          f"{args.batch_size}; one run each\n")
    print("| step | seconds | vs one retraining epoch |")
    print("|---|---:|---:|")
    print(f"| first pass: embed train+val+test ({args.n_train + 2 * args.n_held} images), write the cache | "
          f"{first_s:.1f} | {first_s / epoch_s:.2f}x |")
    print(f"| DFR, frozen backbone, features from the cache ({args.head_epochs} head epochs + C grid) | "
          f"{dfr_s:.2f} | {dfr_s / epoch_s:.3f}x |")
    print(f"| reference: ERM retraining the whole network, 1 epoch over {args.n_train} images | {epoch_s:.1f} | 1x |")
    print(f"\nDFR (cached) test worst-group {dfr_test['worst_group_acc']:.3f}, test accuracy "
          f"{dfr_test['accuracy']:.3f}, train accuracy {dfr_train['accuracy']:.3f}; torch threads "
          f"{torch.get_num_threads()}.")


if __name__ == "__main__":
    main()
