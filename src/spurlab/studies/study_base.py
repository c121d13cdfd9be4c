"""The study contract shared by every ``spurlab study``.

A study is a class with a name, default configurations for the quick and the
full run, and ``run(ctx) -> StudyResult``. :func:`run_study` resolves the
configuration (defaults, then ``--set key=value`` overrides), runs it and
writes into the output folder:

* ``results.csv`` — long format: ``experiment, metric, value, seed`` plus one
  column per swept parameter, named as the parameter;
* ``manifest.json`` — config, seed, versions, device, timings;
* one PNG per figure and a self-contained ``report.html``.
"""
from __future__ import annotations

import contextlib
import sys
from abc import ABC, abstractmethod
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from spurlab.errors import SpurlabError
from spurlab.params import Boolean, Constraint, Interval, NumberList, check_param, check_params
from spurlab.studies.study_names import STUDIES, STUDY_MODULES, STUDY_NAMES  # noqa: F401
from spurlab.runs import default_out_dir, package_versions, parse_value, split_key_values
from spurlab.report.html import HtmlReport
from spurlab.utils import atomic_write_csv, atomic_write_json, log, resolve_device

RESULT_COLUMNS = ("experiment", "metric", "value", "seed")


@dataclass
class StudyContext:
    """What a study's ``run`` receives."""

    config: dict[str, Any]
    seed: int = 0
    device: str = "cpu"
    quick: bool = True
    out_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def rng(self, offset: int = 0) -> np.random.Generator:
        return np.random.default_rng(self.seed + offset)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the wall time of a block under ``timings[name]``."""
        log(f"[spurlab] {name} ...")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


@dataclass
class StudyResult:
    """Tidy rows, figures and a headline table."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure or PNG bytes
    captions: dict[str, str] = field(default_factory=dict)
    headline: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, experiment: str, metric: str, value: float, seed: int, **params: Any) -> None:
        self.rows.append({"experiment": experiment, "metric": metric, "value": float(value),
                          "seed": int(seed), **params})

    def add_figure(self, name: str, fig: Any, caption: str = "") -> None:
        self.figures[name] = fig
        self.captions[name] = caption

    def extend(self, other: StudyResult) -> None:
        self.rows += other.rows
        self.figures.update(other.figures)
        self.captions.update(other.captions)
        self.notes += other.notes

    def frame(self) -> pd.DataFrame:
        """The rows as a long table with the contract's columns first."""
        if not self.rows:
            return pd.DataFrame(columns=list(RESULT_COLUMNS))
        frame = pd.DataFrame(self.rows)
        missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
        if missing:
            raise RuntimeError(f"study rows lack column(s) {missing}")
        rest = [c for c in frame.columns if c not in RESULT_COLUMNS]
        return frame[list(RESULT_COLUMNS) + rest]


class Study(ABC):
    """Base class: subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    @abstractmethod
    def default_config(self, quick: bool) -> dict[str, Any]:
        """The configuration of the quick (``quick=True``) or the full run."""
        ...

    # What each configuration key accepts (spurlab.params), checked by run_study before ``validate``; keys not
    # declared here must still have the type of their default.
    parameter_constraints: ClassVar[dict[str, Constraint]] = {}

    def validate(self, config: dict[str, Any]) -> None:
        """Raise :class:`SpurlabError` on an impossible configuration: the declared ``parameter_constraints``
        here; subclasses call ``super().validate(config)`` first, then check what spans several keys."""
        check_config(self, config)

    @abstractmethod
    def run(self, ctx: StudyContext) -> StudyResult:
        ...


# ------------------------------------------------------------------ registry
def register_study(cls: type[Study]) -> type[Study]:
    """Class decorator: make ``cls`` runnable as ``spurlab study <cls.name>``."""
    return STUDIES.add(cls.name, cls)


def study_registry() -> dict[str, type[Study]]:
    return STUDIES.entries()


def get_study(name: str) -> Study:
    return STUDIES.get(name)()


# ------------------------------------------------------------------ overrides
def apply_overrides(config: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Layer ``key=value`` strings (or a dict) over ``config``; unknown keys are an error."""
    config = dict(config)
    if not overrides:
        return config
    if isinstance(overrides, list):
        overrides = split_key_values(overrides)
    for key, value in overrides.items():
        if key not in config:
            raise SpurlabError(f"unknown study parameter {key!r}",
                               hint=f"parameters: {', '.join(sorted(config))}")
        try:
            config[key] = parse_value(value, config[key]) if isinstance(value, str) else value
        except SpurlabError as exc:
            raise SpurlabError(f"study parameter {key!r}: {exc}") from None
    return config


def check_config(study: Study, config: dict[str, Any]) -> dict[str, Any]:
    """The declared constraints, then the default's type for undeclared keys, each error naming the key."""
    owner = f"study {study.name!r}"
    config = check_params(owner, study.parameter_constraints, config)
    for key, default in study.default_config(quick=True).items():
        if key in study.parameter_constraints or key not in config or default is None:
            continue
        check_param(owner, key, _default_type(default), config[key])
    return config


def _default_type(default: Any) -> Constraint:
    if isinstance(default, bool):
        return Boolean()
    if isinstance(default, (int, float)):
        return Interval(type(default) if isinstance(default, float) else float)
    if isinstance(default, (list, tuple)) and default and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in default):
        return NumberList(min_len=0)
    return _Anything()


class _Anything(Constraint):
    def convert(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "any value"


# ------------------------------------------------------------------ running
def run_study(name: str, out_dir: str | Path | None = None, quick: bool = False, seed: int = 0,
              device: str = "auto", overrides: dict[str, Any] | list[str] | None = None,
              write: bool = True) -> tuple[StudyResult, Path | None]:
    """Run study ``name`` and write its outputs; returns the result and the folder."""
    study = get_study(name)
    config = check_config(study, apply_overrides(study.default_config(quick), overrides))
    study.validate(config)
    ctx = StudyContext(config=config, seed=int(seed), device=resolve_device(device), quick=quick)
    out = Path(out_dir) if out_dir is not None else default_out_dir(f"study-{name}")
    ctx.out_dir = out
    start = time.perf_counter()
    result = study.run(ctx)
    total = time.perf_counter() - start
    if write:
        write_study_outputs(study, ctx, result, out, total)
    return result, out if write else None


def run_label(study: Study, ctx: StudyContext) -> str:
    """"quick run" / "full run", naming the settings that differ from that preset when any do."""
    preset = study.default_config(ctx.quick)
    changed = sorted(k for k, v in ctx.config.items() if k in preset and preset[k] != v)
    base = "quick run" if ctx.quick else "full run"
    if not changed:
        return base
    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    return f"{base} with {len(changed)} setting(s) changed ({shown})"


def write_study_outputs(study: Study, ctx: StudyContext, result: StudyResult, out: Path, total: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame = result.frame()
    atomic_write_csv(out / "results.csv", frame)
    report = HtmlReport(f"spurlab study: {study.title or study.name}",
                        subtitle=f"{study.paper} · {run_label(study, ctx)} · seed {ctx.seed} · "
                                 f"device {ctx.device} · {total:.1f} s")
    if study.summary:
        report.text(study.summary)
    if result.headline is not None and not result.headline.empty:
        report.heading("Headline numbers").table(result.headline)
    for note in result.notes:
        report.text(note)
    if result.figures:
        report.heading("Figures")
        for fig_name, fig in result.figures.items():
            report.figure(fig_name, fig, result.captions.get(fig_name, ""))
    report.heading("Configuration").table(
        pd.DataFrame({"parameter": list(ctx.config), "value": [str(v) for v in ctx.config.values()]}))
    report.write(out / "report.html", save_figures=True)
    atomic_write_json(out / "manifest.json", {
        "study": study.name, "title": study.title, "paper": study.paper, "quick": ctx.quick,
        "seed": ctx.seed, "device": ctx.device, "config": ctx.config,
        "timings": {"total_s": total, **{k: v for k, v in ctx.timings.items()}},
        "versions": package_versions(), "created": datetime.now(timezone.utc).isoformat(),
        "command": " ".join(sys.argv), "files": sorted(["results.csv", "report.html", "manifest.json",
                                                        *(f"{n}.png" for n in result.figures)]),
        "rows": len(frame),
    })
