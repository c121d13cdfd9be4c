"""Sweeps: assembling the result table from many run records, and the local executor's throughput.

* the store's table: spurlab builds one DataFrame from every record's row dicts
  (``records_table``) vs the straightforward per-record DataFrame + ``pd.concat``;
  measured on the records in memory and end to end (reading the JSON files);
* the local executor: a process pool of ``--workers`` vs a plain in-process loop
  over the same CPU-bound runs (``burn``), both through ``run_sweep`` and the store;
* writing records: atomic per-run writes (temp file + rename) per second.

Run: ``.venv/bin/python -m benchmarks.bench_sweep [--records 2000] [--runs 8] [--workers 2]``
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._timing import machine_line
from spurlab.errors import SpurlabError
from spurlab.sweep import ResultStore, run_sweep
from spurlab.sweep.store import cell, records_table

ROWS_PER_RECORD = 20


def burn(seed: int, size: int = 256, repeats: int = 400) -> list[dict]:
    """A CPU-bound run: products of random matrices (single-threaded BLAS in workers)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(size, size)) / np.sqrt(size)
    for _ in range(repeats):
        a = np.tanh(a @ rng.normal(size=(size, size)) / np.sqrt(size))
    return [{"experiment": "burn", "metric": "norm", "value": float(np.linalg.norm(a))}]


def fake_record(i: int) -> dict:
    rows = [{"experiment": "e", "metric": f"m{j % 4}", "value": float(i * j), "seed": i % 5, "step": j}
            for j in range(ROWS_PER_RECORD)]
    return {"run_id": f"{i:016x}", "target": "python:bench:f", "seed": i % 5, "status": "ok",
            "params": {"lr": 10.0 ** -(i % 4), "width": [64, 128][i % 2], "layers": [2, 2]}, "rows": rows}


def reference_table(records: list[dict]) -> pd.DataFrame:
    """The straightforward way: one DataFrame per record, then concat."""
    frames = []
    for record in records:
        frame = pd.DataFrame(record["rows"])
        frame.insert(0, "run_id", record["run_id"])
        frame.insert(1, "target", record["target"])
        for key, value in record["params"].items():
            if key not in frame.columns:
                frame[key] = cell(value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def reference_store_table(root: Path) -> pd.DataFrame:
    records = [json.loads(p.read_text()) for p in sorted((root / "runs").glob("*.json"))]
    return reference_table(records)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_table(n_records: int) -> list[str]:
    records = [fake_record(i) for i in range(n_records)]
    fast, ref = records_table(records), reference_table(records)
    key = ["run_id", "step"]
    pd.testing.assert_frame_equal(fast.sort_values(key).reset_index(drop=True)[sorted(fast.columns)],
                                  ref.sort_values(key).reset_index(drop=True)[sorted(ref.columns)],
                                  check_dtype=False)
    mem_fast, mem_ref = best_of(lambda: records_table(records)), best_of(lambda: reference_table(records), 2)
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(tmp)
        start = time.perf_counter()
        for record in records:
            store.write(record)
        write_rate = n_records / (time.perf_counter() - start)
        disk_fast = best_of(store.table)
        disk_ref = best_of(lambda: reference_store_table(Path(tmp)), 2)
    rows = n_records * ROWS_PER_RECORD
    return [f"| what ({n_records} records × {ROWS_PER_RECORD} rows = {rows} rows) | reference: per-record "
            "DataFrame + concat (s) | spurlab: one frame from all row dicts (s) | speed-up |",
            "|---|---|---|---|",
            f"| table from records in memory | {mem_ref:.3f} | {mem_fast:.3f} | {mem_ref / mem_fast:.1f}x |",
            f"| `ResultStore.table()` incl. reading the JSON files | {disk_ref:.3f} | {disk_fast:.3f} | "
            f"{disk_ref / disk_fast:.1f}x |",
            f"\nAtomic record writes (temp file + rename): {write_rate:.0f} records/s."]


def machine_headroom(workers: int) -> float:
    """Control: ``workers`` plain processes running ``burn`` one after another vs all at once.

    On an idle machine with enough cores this is ``workers``; on a shared one it is the
    parallelism the other jobs leave, the ceiling for any process pool measured now.
    """
    cmd = [sys.executable, "-c", "from benchmarks.bench_sweep import burn; burn(0)"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    for _ in range(workers):
        subprocess.run(cmd, env=env, check=True)
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
    if any(p.wait() for p in procs):
        raise SpurlabError("a headroom probe process failed")
    return sequential / (time.perf_counter() - start)


def bench_executor(n_runs: int, workers: int, repeats: int = 2) -> list[str]:
    """Best of ``repeats`` interleaved timings of the loop and the pool, one BLAS thread per run in both."""
    from threadpoolctl import threadpool_limits

    config = {"name": "burn", "target": "python:benchmarks.bench_sweep:burn", "seeds": n_runs}
    times: dict[str, list[float]] = {"loop": [], "pool": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for label, n_workers in (("loop", 0), ("pool", workers)):
                out = Path(tmp) / f"{label}{i}"
                start = time.perf_counter()
                with threadpool_limits(limits=1):  # the pool's workers get OMP_NUM_THREADS=1 too
                    outcome = run_sweep(config, out, executor="local", workers=n_workers)
                times[label].append(time.perf_counter() - start)
                if outcome.succeeded != n_runs:
                    raise SpurlabError(f"{outcome.failed} benchmark runs failed")
        loop = ResultStore(Path(tmp) / "loop0").table()["value"].sort_values().to_numpy()
        assert np.allclose(loop, ResultStore(Path(tmp) / "pool0").table()["value"].sort_values().to_numpy())
    t_loop, t_pool = min(times["loop"]), min(times["pool"])
    headroom = machine_headroom(workers)
    return [f"| executor ({n_runs} CPU-bound runs, best of {repeats}) | wall time (s) | runs/s | speed-up vs loop |",
            "|---|---|---|---|",
            f"| in-process loop (`--workers 0`) | {t_loop:.2f} | {n_runs / t_loop:.2f} | 1.0x |",
            f"| local process pool (`--workers {workers}`, spawn start included) | {t_pool:.2f} | "
            f"{n_runs / t_pool:.2f} | {t_loop / t_pool:.2f}x |",
            f"\nControl in the same run: {workers} plain processes doing one run each, all at once vs one after "
            f"another: {headroom:.2f}x (the parallelism the machine gave; the pool's speed-up is "
            f"{t_loop / t_pool / headroom:.0%} of it)."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.records < 1 or args.runs < 1 or args.workers < 1:
        raise SpurlabError("--records, --runs and --workers must be at least 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one BLAS thread per run: the pool splits the cores
    start = time.perf_counter()
    table_lines = bench_table(args.records)
    executor_lines = bench_executor(args.runs, args.workers)
    total = time.perf_counter() - start
    print(f"\n## Sweeps: result table and local executor ({datetime.date.today().isoformat()})\n")
    print(machine_line("cpu"))
    print(f"- command: `.venv/bin/python -m benchmarks.bench_sweep --records {args.records} --runs {args.runs} "
          f"--workers {args.workers}` ({total:.0f} s in all; table timings: best of 3 (spurlab) "
          "and of 2 (reference))")
    print("\nAssembling the results table (same rows, checked equal):\n")
    print("\n".join(table_lines))
    print("\nRunning a sweep of CPU-bound runs through `run_sweep` (same results, checked equal):\n")
    print("\n".join(executor_lines))
    print(f"\nOn an idle machine the pool can reach {min(args.workers, os.cpu_count() or 1)}x over the loop; "
          "on a shared one, at most the control's ratio.")


if __name__ == "__main__":
    main()
