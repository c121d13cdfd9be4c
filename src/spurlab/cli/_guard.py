"""What wraps every command: the global options (``--debug``, ``--quiet``), user errors as one message, anything
unexpected as a one-line summary plus a log file holding the traceback, and torch threads sized to the free cores.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from spurlab.cli._console import err_console, fail
from spurlab.errors import SpurlabError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class GuardState:
    debug: bool = False


def set_global_options(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an "
                                                  "unexpected error."),
                       quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines or bars.")) -> None:
    """Find, measure, explain and fix the spurious features a model relies on."""
    GuardState.debug = debug
    if quiet:
        os.environ["SPURLAB_QUIET"] = "1"
    size_threads()


def free_cores() -> int:
    """Cores not busy right now: the core count less the 1-minute load average, at least one."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - platforms without a load average
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def size_threads() -> None:
    """Torch/OpenMP threads = the free cores, unless the user set them; set before torch is imported, so a
    loaded machine is not oversubscribed (a thread per core on busy cores spins more than it computes)."""
    if any(os.environ.get(name) for name in THREAD_VARIABLES) or "torch" in sys.modules:
        return  # the user's choice, or torch already sized (the CLI called from Python, e.g. tests)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(free_cores())


def crash_log(exc: BaseException) -> Path:
    """Write the traceback of an unexpected error to a log file; returns its path."""
    folder = Path(tempfile.gettempdir()) / "spurlab-logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), encoding="utf-8")
    return path


def report_crash(exc: BaseException) -> None:
    """One line for an unexpected error, where its traceback is, and how to see it (exit status 1)."""
    if GuardState.debug:
        err_console.print(traceback.format_exc(), markup=False, highlight=False)
        raise typer.Exit(code=1)
    summary = (str(exc).strip().splitlines() or [""])[0][:200]
    try:
        where = f"the traceback is in {crash_log(exc)}"
    except OSError:
        where = "the traceback could not be written to a log file"
    err_console.print(f"error: unexpected {type(exc).__name__}: {summary}", markup=False, highlight=False)
    err_console.print(f"  {where}; run again with --debug to see it here (spurlab --debug ...)",
                      markup=False, highlight=False)
    raise typer.Exit(code=1)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr (``warning: ...``), without Python's source-line echo."""
    err_console.print(f"warning: {message}", markup=False, highlight=False)


class GuardedGroup(TyperGroup):
    """The top command group: no traceback ever reaches the user unless ``--debug`` asks for it."""

    def invoke(self, ctx):
        warnings.showwarning = show_warning
        try:
            return super().invoke(ctx)
        except (Exit, Abort, TyperException, KeyboardInterrupt):  # exits, usage errors: typer prints them
            raise
        except SpurlabError as exc:
            fail(exc)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: summarized, logged
            report_crash(exc)
