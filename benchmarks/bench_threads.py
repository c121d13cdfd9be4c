"""Torch threads on a loaded machine: the quick audit's CPU time against its wall time x cores.

Runs ``spurlab --quiet audit --quick`` twice in a subprocess: once with the command line's own sizing (threads =
the free cores: core count less the 1-minute load average, at least one), once with one thread per core
(``OMP_NUM_THREADS = nproc``, torch's default). Reports wall time, CPU time (user + sys of the child) and
CPU / (wall x cores), with the load average before and after each run.

``--small`` times a small fixed torch workload instead, in this process, with ``torch.set_num_threads(n)`` for
each ``n`` of ``--threads`` (5 epochs of a 64-512-512-10 MLP on 4 x 1 797 digits, batch 256).

Run: ``.venv/bin/python -m benchmarks.bench_threads [--out-root /tmp/bench-threads] [--modes sized percore]``
or ``.venv/bin/python -m benchmarks.bench_threads --small --threads 1 2 1 2``
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


def small_workload(threads: int) -> dict[str, float]:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    torch.set_num_threads(threads)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(np.tile(x, (4, 1)), dtype=torch.float32), torch.tensor(np.tile(y, 4))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, 10))
    opt = torch.optim.Adam(net.parameters())
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(5):
        for i in range(0, len(x), 256):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i:i + 256]), y[i:i + 256]).backward()
            opt.step()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "cpu_per_wall_core": cpu / (wall * (os.cpu_count() or 1)),
            "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=None)
    parser.add_argument("--modes", nargs="+", default=["sized", "percore"], choices=["sized", "percore"])
    parser.add_argument("--small", action="store_true", help="time the small MLP workload instead")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2, 1, 2])
    args = parser.parse_args()
    if args.small:
        print(machine_line(when="at the start"))
        for n in args.threads:
            row = small_workload(n)
            print(f"threads={n} wall={row['wall_s']:.1f}s cpu={row['cpu_s']:.1f}s "
                  f"cpu/(wall*cores)={row['cpu_per_wall_core']:.2f} load={row['load']:.1f}", flush=True)
        return
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
