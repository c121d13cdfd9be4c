"""The sweep store's records are durable by construction: fsync of the record and of the folder before and after
the rename, group-readable, nothing left behind when a write fails."""
from __future__ import annotations

import os
import stat

import pytest

import spurlab.sweep.store as store_module
from spurlab.sweep.store import ResultStore


def _record(run_id: str = "0123456789abcdef", status: str = "ok") -> dict:
    return {"run_id": run_id, "status": status, "target": "python:m:f", "seed": 0, "rows": [], "error": "x"}


def test_record_and_folder_are_synced_around_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    monkeypatch.setattr(store_module.os, "replace", replace)
    path = ResultStore(tmp_path).write(_record())
    assert events == ["fsync-file", "fsync-dir", "rename", "fsync-dir"]
    assert path.is_file() and not list(path.parent.glob("*.tmp"))


def test_records_are_readable_by_the_group(tmp_path):
    store = ResultStore(tmp_path)
    for record in (_record(), _record("fedcba9876543210", status="failed")):
        mode = stat.S_IMODE(store.write(record).stat().st_mode)
        assert mode & stat.S_IRGRP and mode & stat.S_IROTH and mode == 0o644


def test_a_failed_write_leaves_no_temporary_file_and_no_record(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        ResultStore(tmp_path).write(_record())
    assert [p.name for p in (tmp_path / "runs").iterdir()] == []
