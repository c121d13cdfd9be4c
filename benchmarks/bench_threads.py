"""Torch threads on a loaded machine: the quick audit's CPU time against its wall time x cores.

Runs ``spurlab --quiet audit --quick`` twice in a subprocess: once with the command line's own sizing (threads =
the free cores: core count less the 1-minute load average, at least one), once with one thread per core
(``OMP_NUM_THREADS = nproc``, torch's default). Reports wall time, CPU time (user + sys of the child) and
CPU / (wall x cores), with the load average before and after each run.

Run: ``.venv/bin/python -m benchmarks.bench_threads [--out-root /tmp/bench-threads] [--modes sized percore]``
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._timing import machine_line

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_once(mode: str, out: Path) -> dict[str, float | str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if mode == "percore":
        env.update({name: str(os.cpu_count() or 1) for name in THREAD_VARIABLES})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spurlab.cli", "--quiet", "audit", "--quick", "--out", str(out)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cores = os.cpu_count() or 1
    return {"mode": mode, "wall_s": wall, "cpu_s": cpu, "cpu_per_wall_core": cpu / (wall * cores),
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=None)
    parser.add_argument("--modes", nargs="+", default=["sized", "percore"], choices=["sized", "percore"])
    args = parser.parse_args()
    root = args.out_root or Path(tempfile.mkdtemp(prefix="bench-threads-"))
    print(f"## Thread sizing ({datetime.date.today()})\n\n{machine_line(when='at the start')}")
    print("- command: `.venv/bin/python -m benchmarks.bench_threads`\n")
    print("| threads | wall (s) | CPU (s) | CPU / (wall x cores) | load before | load after |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in args.modes:
        row = run_once(mode, root / mode)
        print(f"| {mode} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['cpu_per_wall_core']:.2f} | "
              f"{row['load_before']:.1f} | {row['load_after']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
