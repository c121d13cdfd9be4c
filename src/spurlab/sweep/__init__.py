"""Sweeps over studies and methods (grid / random), resumable result store, executors.

>>> from spurlab.sweep import run_sweep, collect, ResultStore          # doctest: +SKIP
>>> run_sweep("examples/sweeps/ood-geometric.toml", "runs/ood-geometric")  # doctest: +SKIP
>>> ResultStore("runs/ood-geometric").table()                          # doctest: +SKIP
"""
from spurlab.sweep.collect import collect, summarize
from spurlab.sweep.config import RunSpec, SweepConfig, expand_runs, load_config
from spurlab.sweep.executors import LocalExecutor, RayExecutor, make_executor
from spurlab.sweep.runner import SweepOutcome, plan_sweep, run_sweep
from spurlab.sweep.store import ResultStore
from spurlab.sweep.targets import parse_target

__all__ = ["LocalExecutor", "RayExecutor", "ResultStore", "RunSpec", "SweepConfig", "SweepOutcome", "collect",
           "expand_runs", "load_config", "make_executor", "parse_target", "plan_sweep", "run_sweep", "summarize"]
