"""The result store of a sweep: one JSON record per finished run, written atomically.

Layout of a sweep folder::

    DIR/plan.json              the runs of the config last launched into DIR (id -> spec)
    DIR/runs/<run_id>.json     one record per finished run (its rows + timings)
    DIR/failures/<run_id>.json one record per failed run (error + traceback)
    DIR/.lock                  held (flock) by the sweep writing into DIR

A record is written to a temporary file in the same folder, flushed to disk
(``fsync`` of the file and of the folder), then renamed onto its final name and
the folder synced again, so a crash (even SIGKILL or a power loss) leaves either
the whole record or none; stray temporary files are never read and are removed
by the next sweep. The run id is the file name, so a run can be stored at most
once. Records are readable by the group and others (mode 0644), not only the owner.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from spurlab.errors import SpurlabError
from spurlab.utils import to_jsonable

RECORD_NAME = re.compile(r"^[0-9a-f]{16}\.json$")
RUN_COLUMNS = ("run_id", "target")
RECORD_MODE = 0o644


def _fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a new file, a rename) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically and durably: temp file fsynced, folder fsynced before and
    after the rename; on any failure the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(to_jsonable(obj), indent=2) + "\n").encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, RECORD_MODE)
        _fsync_dir(path.parent)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@dataclass(frozen=True)
class StoreStatus:
    planned: int
    done: int
    failed: int
    pending: int
    unplanned: int  # records in the store that the plan does not list
    stale_temp: int  # temporary files left by a crash

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ResultStore:
    """Read and write the records of one sweep folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.failures_dir = self.root / "failures"
        self.plan_path = self.root / "plan.json"

    # ------------------------------------------------------------ locking
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the folder; released by the OS even on SIGKILL."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / ".lock", "a+", encoding="utf-8")
        try:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows: no advisory lock, single writer assumed
                fcntl = None
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise SpurlabError(f"another sweep is writing into {self.root}",
                                       hint="wait for it to finish, or use another --out folder") from None
            yield
        finally:
            handle.close()

    # ------------------------------------------------------------ the plan
    def plan(self) -> dict[str, dict[str, Any]]:
        """The runs of the config last launched into the folder (id -> spec)."""
        if not self.plan_path.is_file():
            return {}
        return json.loads(self.plan_path.read_text(encoding="utf-8"))["runs"]

    def write_plan(self, specs: list[dict[str, Any]], config_source: str = "") -> None:
        """Record the runs of the config being launched; stored runs of earlier configs stay."""
        durable_write_json(self.plan_path, {"source": config_source, "runs": {s["run_id"]: s for s in specs}})

    # ------------------------------------------------------------ writing
    def write(self, record: dict[str, Any]) -> Path:
        """Store a finished (``status == "ok"``) or failed record atomically."""
        run_id = record["run_id"]
        if record["status"] == "ok":
            path = durable_write_json(self.runs_dir / f"{run_id}.json", record)
            with contextlib.suppress(FileNotFoundError):
                (self.failures_dir / f"{run_id}.json").unlink()
            return path
        previous = self._read(self.failures_dir / f"{run_id}.json")
        record = {**record, "attempts": (previous or {}).get("attempts", 0) + 1}
        return durable_write_json(self.failures_dir / f"{run_id}.json", record)

    def clean(self) -> int:
        """Remove temporary files a crash left behind, set aside unreadable records; returns the count."""
        removed = 0
        for folder in (self.runs_dir, self.failures_dir):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
                    removed += 1
                elif RECORD_NAME.match(path.name) and self._read(path) is None:
                    path.replace(path.with_name(path.name + ".corrupt"))
                    removed += 1
        return removed

    # ------------------------------------------------------------ reading
    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def _ids(self, folder: Path) -> set[str]:
        if not folder.is_dir():
            return set()
        return {p.name[:-5] for p in folder.iterdir() if RECORD_NAME.match(p.name)}

    def done_ids(self) -> set[str]:
        return self._ids(self.runs_dir)

    def failed_ids(self) -> set[str]:
        """Runs whose last attempt failed (a later success removes the failure)."""
        return self._ids(self.failures_dir) - self.done_ids()

    def _records(self, folder: Path) -> list[dict[str, Any]]:
        records = []
        if not folder.is_dir():
            return records
        for path in sorted(folder.iterdir()):
            if RECORD_NAME.match(path.name):
                record = self._read(path)
                if record is None:
                    print(f"spurlab: skipping unreadable record {path}", file=sys.stderr)
                    continue
                records.append(record)
        return records

    def records(self) -> list[dict[str, Any]]:
        """Every finished run's record, ordered by run id."""
        return self._records(self.runs_dir)

    def failures(self) -> pd.DataFrame:
        """One row per failed run: id, seed, params, error and traceback."""
        done = self.done_ids()
        rows = [{"run_id": r["run_id"], "target": r["target"], "seed": r["seed"],
                 "params": json.dumps(r.get("params", {}), sort_keys=True), "error_type": r.get("error_type"),
                 "error": r.get("error"), "attempts": r.get("attempts", 1), "traceback": r.get("traceback")}
                for r in self._records(self.failures_dir) if r["run_id"] not in done]
        return pd.DataFrame(rows, columns=["run_id", "target", "seed", "params", "error_type", "error",
                                           "attempts", "traceback"])

    def runs(self) -> pd.DataFrame:
        """One row per finished run: id, seed, parameters, rows written and timings."""
        rows = [{"run_id": r["run_id"], "target": r["target"], "seed": r["seed"], "n_rows": len(r["rows"]),
                 "duration_s": r.get("duration_s"), "host": r.get("host"),
                 **{k: cell(v) for k, v in r.get("params", {}).items()}} for r in self.records()]
        return pd.DataFrame(rows)

    def table(self) -> pd.DataFrame:
        """Every result row of every finished run as one long table.

        Columns: ``run_id``, ``target``, the rows' own columns (``experiment``,
        ``metric``, ``value``, ``seed``, ...) and one column per parameter the
        config set, unless the rows already carry a column of that name.
        """
        return records_table(self.records())

    def status(self) -> StoreStatus:
        plan = set(self.plan())
        done, failed = self.done_ids(), self.failed_ids()
        stale = sum(1 for folder in (self.runs_dir, self.failures_dir) if folder.is_dir()
                    for p in folder.iterdir() if p.name.endswith(".tmp"))
        return StoreStatus(planned=len(plan), done=len(done & plan), failed=len(failed & plan),
                           pending=len(plan - done - failed), unplanned=len((done | failed) - plan),
                           stale_temp=stale)


def cell(value: Any) -> Any:
    """A parameter value as a table cell: lists and tables become their JSON text."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def records_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Concatenate the rows of many records into one frame, built once from plain dicts."""
    rows: list[dict[str, Any]] = []
    for record in records:
        extra = {"run_id": record["run_id"], "target": record["target"]}
        params = {k: cell(v) for k, v in record.get("params", {}).items()}
        for row in record["rows"]:
            rows.append({**extra, **params, **row})
    if not rows:
        return pd.DataFrame(columns=["run_id", "target", "experiment", "metric", "value", "seed"])
    frame = pd.DataFrame.from_records(rows)
    first = [c for c in ("run_id", "target", "experiment", "metric", "value", "seed") if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
