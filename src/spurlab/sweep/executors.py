"""Executors: run sweep specs somewhere and yield one record per run as it finishes.

* :class:`LocalExecutor` — a process pool on this machine (``workers=0`` runs in
  this process, for debugging);
* :class:`RayExecutor` — Ray tasks, on a local instance or a cluster
  (``address``), each with its own CPU/GPU request so GPU runs land on GPU nodes.

Both keep at most ``workers`` runs in flight, so an interruption loses at most
those. A run that raises comes back as a failure record with its traceback; it
never stops the others.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from typing import Any

from spurlab.errors import SpurlabError
from spurlab.params import Interval, Options, check_param, optional
from spurlab.utils import to_jsonable

EXECUTORS = ("local", "ray")
RAY_LOCAL_OBJECT_STORE = 256 * 1024**2  # results are small tables; keep a local instance light


# ------------------------------------------------------------------ one run
def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def execute_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec here and return its record; exceptions become failure records."""
    from spurlab.sweep.targets import parse_target

    record = {"run_id": spec["run_id"], "target": spec["target"], "seed": spec["seed"], "params": spec["params"],
              "config": spec["config"], "quick": spec["quick"], "device": spec["device"], "started": _now(),
              "host": platform.node(), "pid": os.getpid()}
    start = time.perf_counter()
    try:
        frame = parse_target(spec["target"]).run(spec["params"], seed=spec["seed"], quick=spec["quick"],
                                                 device=spec["device"])
        # through JSON here, so that a value JSON cannot hold (a timestamp, an object) becomes text
        rows = json.loads(json.dumps(to_jsonable(frame.to_dict(orient="records")), default=str))
        record.update(status="ok", rows=rows)
    except Exception as exc:  # a failing run is recorded, the sweep goes on
        record.update(failure_fields(exc, traceback.format_exc()))
    record.update(finished=_now(), duration_s=time.perf_counter() - start)
    return record


def failure_fields(exc: BaseException, trace: str) -> dict[str, Any]:
    return {"status": "failed", "error_type": type(exc).__name__, "error": str(exc) or repr(exc),
            "traceback": trace}


def lost_run_record(spec: dict[str, Any], exc: BaseException, why: str) -> dict[str, Any]:
    """The record of a run whose worker vanished (killed, out of memory, crashed)."""
    return {"run_id": spec["run_id"], "target": spec["target"], "seed": spec["seed"], "params": spec["params"],
            "config": spec["config"], "quick": spec["quick"], "device": spec["device"], "started": None,
            "finished": _now(), "duration_s": None, "host": platform.node(),
            **failure_fields(exc, f"{why}\n{type(exc).__name__}: {exc}")}


def _init_worker(threads: int) -> None:
    """Split the cores between workers instead of letting each grab all of them.

    numpy is already loaded here (unpickling this function imported spurlab), so its
    BLAS pool is resized directly; the variables cover libraries loaded later (torch).
    """
    from threadpoolctl import threadpool_limits

    try:  # a thread count the user set wins
        threads = max(1, int(os.environ.get("OMP_NUM_THREADS", threads)))
    except ValueError:
        pass
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    threadpool_limits(limits=threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


# ------------------------------------------------------------------ local
class LocalExecutor:
    """A pool of ``workers`` processes on this machine (default: one per CPU core)."""

    name = "local"

    def __init__(self, workers: int | None = None, start_method: str = "spawn"):
        workers = check_param("LocalExecutor", "workers", optional(Interval(int, 0, None)), workers)  # 0: this process
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.start_method = start_method

    def run(self, specs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        specs = list(specs)
        if self.workers == 0:
            for spec in specs:
                yield execute_run(spec)
            return
        yield from self._run_pool(specs, min(self.workers, max(1, len(specs))))

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // workers)
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(self.start_method),
                                   initializer=_init_worker, initargs=(threads,))

    def _run_pool(self, specs: list[dict[str, Any]], workers: int) -> Iterator[dict[str, Any]]:
        """Keep ``workers`` runs in flight; when a worker dies, find which run killed it.

        The runs in flight when a worker died become suspects and run again one at a
        time: a suspect whose worker dies while it runs alone is the culprit and is
        recorded as failed; the others finish normally.
        """
        queue, suspects = deque(specs), deque()
        inflight: dict[Any, dict[str, Any]] = {}
        alone: set[str] = set()  # runs submitted with nothing else in flight, as suspects
        pool = self._new_pool(workers)
        try:
            while queue or suspects or inflight:
                try:
                    if suspects and not inflight:
                        alone.add(suspects[0]["run_id"])
                        future = pool.submit(execute_run, suspects[0])
                        inflight[future] = suspects.popleft()
                    while not suspects and queue and len(inflight) < workers:
                        future = pool.submit(execute_run, queue[0])
                        inflight[future] = queue.popleft()
                except BrokenProcessPool:
                    # a worker died between two submissions: the spec stays queued; its dead
                    # neighbours come back from wait() below as broken futures
                    if not inflight:
                        _stop_pool(pool)
                        pool = self._new_pool(workers)
                        continue
                finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                broken = None
                for future in finished:
                    spec = inflight.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool as exc:
                        broken = exc
                        if spec["run_id"] in alone:
                            yield lost_run_record(spec, exc, "its worker process died while it ran alone "
                                                             "(killed, out of memory, or a crash in native code)")
                        else:
                            suspects.append(spec)
                if broken is not None:
                    for future, spec in inflight.items():
                        if future.done() and future.exception() is None:
                            yield future.result()
                        else:
                            suspects.append(spec)
                    inflight.clear()
                    _stop_pool(pool)
                    pool = self._new_pool(workers)
            pool.shutdown(wait=True)
        finally:
            _stop_pool(pool)  # after an interruption: stop the runs still in flight


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down now: cancel queued runs and stop workers still busy."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # private, but the only handle
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()


# ------------------------------------------------------------------ ray
class RayExecutor:
    """Ray tasks on the cluster at ``address`` (default: start a local instance).

    Each task asks for ``resources["num_cpus"]`` CPUs (default 1) and
    ``resources["num_gpus"]`` GPUs; without an explicit ``num_gpus``, a run asks
    for one GPU when its device is ``cuda`` or when it is ``auto`` and the cluster
    has GPUs.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None,
                 object_store_memory: int | None = RAY_LOCAL_OBJECT_STORE):
        if workers is not None and int(workers) < 1:
            raise SpurlabError(f"the ray executor needs workers >= 1, got {workers}")
        self.address = address
        self.workers = workers
        self.object_store_memory = object_store_memory

    def _init(self):
        try:
            import ray
        except ImportError:
            raise SpurlabError("the ray executor needs Ray, which is not installed",
                               hint="pip install 'spurlab[ray]', or use --executor local") from None
        if ray.is_initialized():
            return ray, False
        import logging

        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "logging_level": logging.WARNING, "ignore_reinit_error": True}
        if self.address:
            ray.init(address=self.address, **options)
        else:
            ray.init(num_cpus=self.workers, object_store_memory=self.object_store_memory,
                     runtime_env={"env_vars": {"PYTHONPATH": _driver_python_path()}}, **options)
        return ray, True

    def run(self, specs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        specs = list(specs)
        if not specs:
            return
        ray, started = self._init()
        try:
            yield from self._run_tasks(ray, specs)
        finally:
            if started:
                ray.shutdown()

    def _run_tasks(self, ray, specs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        cluster = ray.cluster_resources()
        limit = self.workers or max(1, int(cluster.get("CPU", 1)))
        remote = ray.remote(max_retries=0)(execute_run)
        queue = deque(specs)
        inflight: dict[Any, dict[str, Any]] = {}
        try:
            while queue or inflight:
                while queue and len(inflight) < limit:
                    spec = queue.popleft()
                    request = task_resources(spec, cluster_gpus=float(cluster.get("GPU", 0)))
                    inflight[remote.options(**request).remote(spec)] = spec
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    spec = inflight.pop(ref)
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        yield lost_run_record(spec, exc, "the Ray task died before returning")
        finally:
            for ref in inflight:
                ray.cancel(ref, force=True)


def task_resources(spec: dict[str, Any], cluster_gpus: float) -> dict[str, float]:
    """The Ray resource request of one run."""
    resources = spec.get("resources", {})
    device = str(spec.get("device", "auto"))
    if "num_gpus" in resources:
        gpus = float(resources["num_gpus"])
    elif device.startswith("cuda") or (device == "auto" and cluster_gpus > 0):
        gpus = 1.0
    else:
        gpus = 0.0
    return {"num_cpus": float(resources.get("num_cpus", 1.0)), "num_gpus": gpus}


def _driver_python_path() -> str:
    """This process's import folders outside the interpreter, for a local Ray instance's workers."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    keep = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if os.path.isdir(path) and not any(path.startswith(p + os.sep) or path == p for p in prefixes):
            keep.append(path)
    existing = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(dict.fromkeys(keep + ([existing] if existing else [])))


def make_executor(kind: str = "local", workers: int | None = None, address: str | None = None):
    """The executor named ``kind`` (``local`` or ``ray``)."""
    kind = check_param("make_executor", "kind", Options(*EXECUTORS), kind)
    if kind == "local":
        if address:
            raise SpurlabError("--address is a Ray cluster address", hint="add --executor ray")
        return LocalExecutor(workers)
    return RayExecutor(address=address, workers=workers)
