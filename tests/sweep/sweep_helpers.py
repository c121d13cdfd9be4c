"""Fast sweep targets for tests/test_sweep.py (``python:tests.sweep.sweep_helpers:NAME``)."""
from __future__ import annotations

import time

import numpy as np


def noisy_quadratic(seed: int, x: float = 0.0, scale: float = 0.1, sleep: float = 0.0,
                    fail_at: float | None = None) -> list[dict]:
    """loss = (x - 1)^2 + seeded noise; raises at ``x == fail_at`` to test failure records."""
    if fail_at is not None and x == fail_at:
        raise RuntimeError(f"deliberate failure at x={x}")
    time.sleep(sleep)
    noise = np.random.default_rng(seed).normal(scale=scale, size=2)
    return [{"experiment": "quadratic", "metric": "loss", "value": (x - 1.0) ** 2 + noise[0]},
            {"experiment": "quadratic", "metric": "offset", "value": float(noise[1])}]


def wide_rows(seed: int, width: int = 2) -> dict:
    """A wide row: numeric columns become metrics."""
    return {"width": width, "area": float(width * width + seed), "label": "w"}


def crash_at(seed: int, x: float = 0.0, die_at: float = 1.0) -> list[dict]:
    """Kills its own process at ``x == die_at``, like the OOM killer would."""
    if x == die_at:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return [{"experiment": "crash", "metric": "x", "value": x}]


def blas_threads(seed: int) -> list[dict]:
    """How many threads this process's BLAS would use."""
    from threadpoolctl import threadpool_info

    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return [{"metric": "blas_threads", "value": float(max(counts, default=1))}]
