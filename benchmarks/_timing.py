"""Helpers shared by the benchmarks: timing, CUDA synchronization and the machine header line."""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def synchronize(device: str | None) -> None:
    """Wait for queued CUDA work, so a clock stopped next measures the work itself, not its launch."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], repeats: int, warmup: bool = True, device: str | None = None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one untimed warm-up run.

    With a CUDA ``device`` each run is synchronized before the clock starts and stops.
    """
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo``), else whatever ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> str:
    total = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    return f"{total} cores" if usable == total else f"{total} cores ({usable} usable by this process)"


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return "load average unknown"
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def machine_line(device: str | None = "cpu", when: str = "at the end of the run") -> str:
    """The ``- machine: ...`` header line: what actually ran the benchmark.

    Host CPU model, cores, load average (read now: ``when`` says when that is), Python,
    torch and its CPU threads, the device used, and the GPU's name when it is CUDA.
    """
    parts = [f"{cpu_model()} ({platform.machine()}, {_cores()}, {_load()} {when})",
             f"Python {platform.python_version()}"]
    gpu = "no GPU used"
    try:
        import torch
    except ImportError:
        parts.append("torch not installed")
    else:
        parts.append(f"torch {torch.__version__}, {torch.get_num_threads()} torch CPU thread(s)")
        if device is not None and str(device).startswith("cuda"):
            gpu = f"GPU: {torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    return f"- machine: {'; '.join(parts)}; device {device or 'none (no torch work)'}; {gpu}"
