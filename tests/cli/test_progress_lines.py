"""Progress: timed plain lines on stderr when it is not a terminal, silence with --quiet, threads sized to the
free cores."""
from __future__ import annotations

import os
import re

import pytest
from typer.testing import CliRunner

from spurlab import utils
from spurlab.cli import _guard, app


@pytest.fixture
def lines_mode(monkeypatch):
    monkeypatch.delenv("SPURLAB_QUIET", raising=False)
    monkeypatch.setenv("SPURLAB_PROGRESS", "lines")
    monkeypatch.setattr(utils, "LINE_EVERY_S", 0.0)


def test_steps_print_timed_lines(lines_mode, capsys):
    utils.log("[spurlab] audit: load ...")
    for _ in utils.progress(range(20), "training", total=20):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\[spurlab +\d+\.\d+s\] audit: load \.\.\.", lines[0])
    assert [line.split("] ")[1] for line in lines[1:]] == [f"training {k}/20" for k in range(2, 21, 2)]


def test_short_loops_stay_quiet_between_steps(lines_mode, capsys, monkeypatch):
    monkeypatch.setattr(utils, "LINE_EVERY_S", 3600.0)
    utils.log("step")
    list(utils.progress(range(100), "inner", total=100))
    assert capsys.readouterr().err.count("\n") == 1


def test_mode_follows_the_terminal_and_quiet(monkeypatch):
    monkeypatch.delenv("SPURLAB_PROGRESS", raising=False)
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("SPURLAB_QUIET", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(utils.sys.stderr, "isatty", lambda: False, raising=False)
    assert utils.progress_mode() == "lines"
    monkeypatch.setattr(utils.sys.stderr, "isatty", lambda: True, raising=False)
    assert utils.progress_mode() == "bar"
    monkeypatch.setenv("SPURLAB_QUIET", "1")
    assert utils.progress_mode() == "off"


def test_quiet_option_silences_progress(monkeypatch):
    monkeypatch.delenv("SPURLAB_QUIET", raising=False)
    result = CliRunner().invoke(app, ["--quiet", "datasets", "list"])
    assert result.exit_code == 0 and os.environ.get("SPURLAB_QUIET") == "1"
    monkeypatch.delenv("SPURLAB_QUIET")


def test_threads_follow_the_free_cores(monkeypatch):
    monkeypatch.setattr(_guard.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(_guard.os, "getloadavg", lambda: (5.2, 0.0, 0.0))
    assert _guard.free_cores() == 3
    monkeypatch.setattr(_guard.os, "getloadavg", lambda: (40.0, 0.0, 0.0))
    assert _guard.free_cores() == 1
    monkeypatch.setattr(_guard.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert _guard.free_cores() == 8


def test_a_slow_loop_prints_at_least_every_max_gap(lines_mode, capsys, monkeypatch):
    """A long pass (an embedding over 600+ batches) shows it is alive between its tenths."""
    monkeypatch.setattr(utils, "LINE_EVERY_S", 3600.0)
    monkeypatch.setattr(utils, "LINE_MAX_GAP_S", 0.0)
    list(utils.progress(range(25), "slow", total=25))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ")[1] for line in lines] == [f"slow {k}/25" for k in range(1, 26)]
