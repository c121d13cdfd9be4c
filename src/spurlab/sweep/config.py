"""Sweep configuration: a TOML or YAML file -> the list of runs it stands for.

A config names a target and the parameters to vary::

    name = "ood-geometric"
    target = "study:ood-failure-modes"   # or "method:NAME", "python:module:function"
    quick = true
    seeds = [0, 1, 2]                     # or `seeds = 3` for 0, 1, 2
    device = "auto"
    samples = 4                           # settings drawn from [random] (random search)
    sampler_seed = 0

    [fixed]    # passed as-is to every run (a list here is ONE value)
    experiments = ["geometric"]
    [grid]     # every combination; each list item is one value
    n_maj = [250, 500]
    [random]   # one distribution per parameter, drawn `samples` times
    lr = { log_uniform = [1e-4, 1e-1] }
    [resources]  # per-run requests for the Ray executor
    num_cpus = 1
    num_gpus = 0

Settings are grid x random draws; every setting runs once per seed. Each run is
keyed by a hash of its *resolved* configuration (target defaults filled in), so
re-running a config skips the runs that already finished.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spurlab.errors import SpurlabError
from spurlab.params import AnyOf, Boolean, Interval, NumberList, check_count, check_params, positive_int
from spurlab.sweep.targets import Target, parse_target
from spurlab.utils import to_jsonable

TOP_LEVEL_KEYS = {"name", "description", "target", "quick", "seeds", "device", "samples", "sampler_seed",
                  "fixed", "grid", "random", "resources"}
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
MAX_RUNS = 100_000  # runs one sweep may plan: checked on the counts, before any setting is enumerated
# What the top-level settings and [resources] accept (spurlab.params), checked by name before any run is planned.
# ``seeds = N`` means seeds 0..N-1; a list gives the seeds themselves.
CONFIG_CONSTRAINTS = {"quick": Boolean(), "samples": Interval(int, 0, None), "sampler_seed": Interval(int, 0, None),
                       "seeds": AnyOf(positive_int(), NumberList(Interval(int, 0, None), scalar=False))}
RESOURCE_CONSTRAINTS = {"num_cpus": Interval(float, 0, None), "num_gpus": Interval(float, 0, None)}


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: everything a worker needs, as plain data."""

    run_id: str
    target: str
    seed: int
    params: dict[str, Any]  # what the config set (fixed + grid + random), passed to the target
    config: dict[str, Any]  # the resolved configuration the run id hashes
    quick: bool = True
    device: str = "auto"
    resources: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "target": self.target, "seed": self.seed, "params": self.params,
                "config": self.config, "quick": self.quick, "device": self.device,
                "resources": dict(self.resources)}


@dataclass
class SweepConfig:
    """A validated sweep configuration (see the module docstring for the file format)."""

    target: str
    name: str = "sweep"
    description: str = ""
    quick: bool = True
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    random: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: int = 0
    sampler_seed: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def swept_keys(self) -> list[str]:
        """The parameters that vary between settings (grid first, then random)."""
        return list(self.grid) + [k for k in self.random if k not in self.grid]


# ------------------------------------------------------------------ loading
def load_config(source: str | Path | dict[str, Any]) -> SweepConfig:
    """Read and validate a sweep config from a TOML/YAML file or a dict."""
    if isinstance(source, dict):
        return config_from_dict(source, origin="<dict>")
    path = Path(source)
    if not path.is_file():
        raise SpurlabError(f"sweep config {str(path)!r} does not exist",
                           hint="pass a .toml or .yaml file (see examples/sweeps/)")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpurlabError(f"{path} is not valid TOML: {exc}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise SpurlabError(f"{path} is not valid YAML: {exc}") from None
    else:
        raise SpurlabError(f"cannot tell the format of {path.name!r}", hint="name it *.toml, *.yaml or *.yml")
    if not isinstance(data, dict):
        raise SpurlabError(f"{path} must hold a table of settings, got {type(data).__name__}")
    return config_from_dict(data, origin=str(path))


def config_from_dict(data: dict[str, Any], origin: str = "<dict>") -> SweepConfig:
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise SpurlabError(f"{origin}: unknown key(s) {unknown}",
                           hint=f"known keys: {', '.join(sorted(TOP_LEVEL_KEYS))}")
    if "target" not in data:
        raise SpurlabError(f"{origin}: no `target`",
                           hint='set target = "study:NAME", "method:NAME" or "python:module:function"')
    settings = check_params(f"sweep config {origin}", CONFIG_CONSTRAINTS,
                            {"quick": True, "seeds": [0], "samples": 0, "sampler_seed": 0,
                             **{key: data[key] for key in CONFIG_CONSTRAINTS if key in data}})
    cfg = SweepConfig(
        target=str(data["target"]), name=str(data.get("name", Path(origin).stem if origin != "<dict>" else "sweep")),
        description=str(data.get("description", "")), quick=settings["quick"], seeds=_seed_list(settings["seeds"]),
        device=str(data.get("device", "auto")), fixed=_table(data, "fixed"), grid=_parse_grid(_table(data, "grid")),
        random=_parse_random(_table(data, "random")), samples=settings["samples"],
        sampler_seed=settings["sampler_seed"], resources=_parse_resources(_table(data, "resources"), origin),
        source=origin)
    parse_target(cfg.target)  # fail early on a malformed target string
    if cfg.device not in ("auto", "cpu", "mps") and not cfg.device.startswith("cuda"):
        raise SpurlabError(f"unknown device {cfg.device!r}", hint="use auto, cpu or cuda[:N]")
    if cfg.random and cfg.samples < 1:
        raise SpurlabError("[random] is set but `samples` is not", hint="add e.g. samples = 8 at the top level")
    if cfg.samples and not cfg.random:
        raise SpurlabError("`samples` is set but there is no [random] table",
                           hint="add [random] distributions or drop `samples`")
    if any("seed" in table for table in (cfg.fixed, cfg.grid, cfg.random)):
        raise SpurlabError("`seed` is set in a parameter table", hint="list the seeds in `seeds = [...]` at the top")
    overlap = sorted((set(cfg.fixed) & set(cfg.grid)) | (set(cfg.fixed) & set(cfg.random))
                     | (set(cfg.grid) & set(cfg.random)))
    if overlap:
        raise SpurlabError(f"parameter(s) {overlap} are set in more than one of [fixed], [grid], [random]",
                           hint="give each parameter in exactly one table")
    check_count("`samples`", cfg.samples, MAX_RUNS, hint="draw fewer random settings")
    cells = math.prod(len(values) for values in cfg.grid.values())
    check_count(f"the number of runs ({cells:,} grid cells x {max(cfg.samples, 1):,} samples x "
                f"{len(cfg.seeds):,} seeds)", cells * max(cfg.samples, 1) * len(cfg.seeds), MAX_RUNS,
                hint="shrink the [grid] lists, `samples` or `seeds`, or split the sweep")
    return cfg


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpurlabError(f"[{key}] must be a table of parameters, got {type(value).__name__}")
    return dict(value)


def _seed_list(seeds: int | list[int]) -> list[int]:
    """The checked ``seeds`` setting as the list of seeds: N means 0..N-1 (counted before it is listed)."""
    if isinstance(seeds, int):
        check_count("`seeds`", seeds, MAX_RUNS, hint="use fewer seeds")
        return list(range(seeds))
    if len(set(seeds)) != len(seeds):
        raise SpurlabError(f"`seeds` repeats a seed: {seeds}", hint="list each seed once")
    return seeds


def _parse_grid(grid: dict[str, Any]) -> dict[str, list[Any]]:
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SpurlabError(f"[grid] {key} must be a non-empty list of values, got {values!r}",
                               hint="a single value belongs in [fixed]")
        if len({canonical_json(v) for v in values}) != len(values):
            raise SpurlabError(f"[grid] {key} repeats a value: {values}")
    return grid


def _parse_random(random: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for key, spec in random.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise SpurlabError(f"[random] {key} must be one distribution, got {spec!r}",
                               hint="e.g. { uniform = [0, 1] }, { log_uniform = [1e-4, 1e-1] }, "
                                    "{ int_uniform = [1, 10] } or { choice = [a, b] }")
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args:
            raise SpurlabError(f"[random] {key}: {kind} needs a list of arguments, got {args!r}")
        if kind != "choice":
            _check_range(key, kind, args)
    return random


def _check_range(key: str, kind: str, args: list[Any]) -> None:
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise SpurlabError(f"[random] {key}: {kind} needs [low, high] numbers, got {args!r}",
                           hint="in YAML write exponents with a dot (1.0e-4): PyYAML reads 1e-4 as text")
    low, high = args
    ordered = low <= high if kind == "int_uniform" else low < high
    if not ordered:
        raise SpurlabError(f"[random] {key}: low must be below high, got {args!r}")
    if kind == "log_uniform" and low <= 0:
        raise SpurlabError(f"[random] {key}: log_uniform needs positive bounds, got {args!r}")
    if kind == "int_uniform" and not all(isinstance(a, int) for a in args):
        raise SpurlabError(f"[random] {key}: int_uniform needs integer bounds, got {args!r}")


def _parse_resources(resources: dict[str, Any], origin: str) -> dict[str, float]:
    unknown = sorted(set(resources) - set(RESOURCE_CONSTRAINTS))
    if unknown:
        raise SpurlabError(f"[resources]: unknown key(s) {unknown}", hint="use num_cpus and num_gpus")
    return check_params(f"sweep config {origin} [resources]", RESOURCE_CONSTRAINTS, resources)


# ------------------------------------------------------------------ expansion
def canonical_json(value: Any) -> str:
    """A stable text form: sorted keys, no whitespace, numpy types made plain."""
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def run_key(material: dict[str, Any]) -> str:
    """The run id: the first 16 hex digits of the SHA-256 of the canonical resolved config."""
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()[:16]


def draw_random(random: dict[str, dict[str, Any]], samples: int, seed: int) -> list[dict[str, Any]]:
    """``samples`` parameter settings drawn from the [random] distributions with ``seed``."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        draw = {}
        for key, spec in random.items():  # insertion order keeps draws reproducible
            kind, args = next(iter(spec.items()))
            if kind == "uniform":
                draw[key] = float(rng.uniform(args[0], args[1]))
            elif kind == "log_uniform":
                draw[key] = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
            elif kind == "int_uniform":
                draw[key] = int(rng.integers(args[0], args[1] + 1))
            else:
                draw[key] = args[int(rng.integers(len(args)))]
        draws.append(draw)
    return draws


def settings(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every parameter setting of the sweep: fixed, then one grid point, then one random draw."""
    keys = list(cfg.grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(cfg.grid[k] for k in keys))]
    draws = draw_random(cfg.random, cfg.samples, cfg.sampler_seed) if cfg.random else [{}]
    return [{**cfg.fixed, **point, **draw} for point in points for draw in draws]


def expand_runs(cfg: SweepConfig) -> list[RunSpec]:
    """Resolve every setting x seed against the target (validating it) into run specs."""
    target: Target = parse_target(cfg.target)
    runs: dict[str, RunSpec] = {}
    for params in settings(cfg):
        resolved = target.resolve(params, quick=cfg.quick)
        for seed in cfg.seeds:
            material = {"target": cfg.target, "config": resolved, "seed": seed}
            if target.uses_quick:
                material["quick"] = cfg.quick
            run_id = run_key(material)
            runs.setdefault(run_id, RunSpec(run_id=run_id, target=cfg.target, seed=seed,
                                            params=to_jsonable(params), config=to_jsonable(resolved),
                                            quick=cfg.quick, device=cfg.device, resources=dict(cfg.resources)))
    return list(runs.values())
