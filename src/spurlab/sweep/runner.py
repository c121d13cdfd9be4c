"""Run a sweep into a folder, skipping the runs already stored there."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spurlab.sweep.config import RunSpec, SweepConfig, expand_runs, load_config
from spurlab.sweep.executors import make_executor
from spurlab.sweep.store import ResultStore
from spurlab.utils import atomic_path, progress


@dataclass
class SweepOutcome:
    """What one ``run_sweep`` call did."""

    out_dir: Path
    planned: int
    skipped: int  # already finished (or failed, with retry_failed=False) before this call
    succeeded: int = 0
    failed: int = 0
    failed_ids: list[str] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.succeeded + self.failed


def plan_sweep(config: str | os.PathLike | dict[str, Any] | SweepConfig) -> tuple[SweepConfig, list[RunSpec]]:
    """Load and validate a config and expand it into its runs (nothing runs)."""
    cfg = config if isinstance(config, SweepConfig) else load_config(config)
    return cfg, expand_runs(cfg)


def run_sweep(config: str | os.PathLike | dict[str, Any] | SweepConfig, out_dir: str | os.PathLike,
              executor: str = "local", workers: int | None = None, address: str | None = None,
              retry_failed: bool = True) -> SweepOutcome:
    """Run every run of ``config`` not yet stored in ``out_dir``; returns the counts.

    Each finished run is stored as soon as it arrives, so an interruption (Ctrl-C,
    a crash, SIGKILL) loses at most the runs in flight: calling this again resumes.
    Failed runs are recorded with their traceback and tried again on the next call
    unless ``retry_failed=False``.
    """
    cfg, specs = plan_sweep(config)
    runner = make_executor(executor, workers=workers, address=address)
    store = ResultStore(out_dir)
    with store.lock():
        store.clean()
        store.write_plan([s.to_dict() for s in specs], cfg.source)
        done, failed = store.done_ids(), store.failed_ids()
        todo = [s for s in specs if s.run_id not in done and (retry_failed or s.run_id not in failed)]
        outcome = SweepOutcome(out_dir=Path(out_dir), planned=len(specs), skipped=len(specs) - len(todo))
        records = runner.run([s.to_dict() for s in todo])
        with contextlib.closing(records):
            for record in progress(records, description=f"sweep {cfg.name}: runs done", total=len(todo), each=True):
                store.write(record)
                if record["status"] == "ok":
                    outcome.succeeded += 1
                else:
                    outcome.failed += 1
                    outcome.failed_ids.append(record["run_id"])
        write_table(store.table(), Path(out_dir) / "results.parquet")
    return outcome


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as Parquet atomically; columns Arrow cannot type are stored as text."""
    import pyarrow as pa

    with atomic_path(path) as tmp:
        try:
            frame.to_parquet(tmp, index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            frame = frame.copy()
            for col in frame.select_dtypes(include="object").columns:
                frame[col] = frame[col].map(lambda v: None if v is None or v != v else str(v))
            frame.to_parquet(tmp, index=False)
    return path
