"""What a sweep can run: a study, a training method, or any importable function.

* ``study:NAME`` — a registered study; parameters are its ``--set`` keys.
* ``method:NAME`` — a method of the robust-methods registry, trained on a
  registered dataset and evaluated on each split.
* ``python:module:function`` — ``function(seed, **params)`` returning a
  DataFrame or a list of row dicts (long ``metric``/``value`` rows, or wide rows
  whose numeric columns become metrics).

Every target resolves a setting to its full configuration (defaults filled in,
names validated) before anything runs, and runs it to a long table.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import pandas as pd

from spurlab.errors import SpurlabError

TARGET_KINDS = ("study", "method", "python")
# How a method run is set up (beside the method's hyper-parameters), with defaults.
METHOD_RUN_SETTINGS: dict[str, Any] = {"dataset": "spurious-digits", "dataset_params": {}, "data_dir": None,
                                       "eval_splits": ["val", "test"]}
METHOD_METRICS = ("worst_group_acc", "mean_group_acc", "average_acc", "accuracy")


class Target(ABC):
    """Resolve a parameter setting, then run it to a long table of results."""

    kind: str = ""
    uses_quick: bool = False  # whether ``quick`` changes what a run does (and so its id)

    def __init__(self, name: str):
        self.name = name

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.name}"

    @abstractmethod
    def parameters(self, quick: bool = True) -> dict[str, Any]:
        """The parameters a sweep may set, with their defaults."""
        ...

    @abstractmethod
    def resolve(self, params: dict[str, Any], quick: bool = True) -> dict[str, Any]:
        """The full configuration of a run with ``params`` (raises on unknown names)."""
        ...

    @abstractmethod
    def run(self, params: dict[str, Any], seed: int, quick: bool, device: str) -> pd.DataFrame:
        ...


def parse_target(text: str) -> Target:
    """``"study:NAME"`` / ``"method:NAME"`` / ``"python:module:function"`` -> a :class:`Target`."""
    kind, _, rest = str(text).partition(":")
    if kind not in TARGET_KINDS or not rest:
        raise SpurlabError(f"cannot read target {text!r}",
                           hint='use "study:NAME", "method:NAME" or "python:module:function"')
    if kind == "study":
        return StudyTarget(rest)
    if kind == "method":
        return MethodTarget(rest)
    module, _, function = rest.rpartition(":")
    if not module or not function:
        raise SpurlabError(f"python target {text!r} needs a module and a function",
                           hint='write it as "python:package.module:function"')
    return PythonTarget(module, function)


# ------------------------------------------------------------------ studies
class StudyTarget(Target):
    kind = "study"
    uses_quick = True

    def _study(self):
        from spurlab.studies.study_base import get_study

        return get_study(self.name)

    def parameters(self, quick: bool = True) -> dict[str, Any]:
        return self._study().default_config(quick)

    def resolve(self, params: dict[str, Any], quick: bool = True) -> dict[str, Any]:
        from spurlab.studies.study_base import apply_overrides, check_config

        study = self._study()
        config = check_config(study, apply_overrides(study.default_config(quick), dict(params)))
        study.validate(config)
        return config

    def run(self, params: dict[str, Any], seed: int, quick: bool, device: str) -> pd.DataFrame:
        from spurlab.studies.study_base import run_study

        result, _ = run_study(self.name, quick=quick, seed=seed, device=device, overrides=dict(params),
                              write=False)
        _close_figures(result.figures.values())  # a sweep keeps tables only; figures would pile up
        return result.frame()


# ------------------------------------------------------------------ training methods
class MethodTarget(Target):
    """Adapter to the robust-methods registry (``spurlab.train.methods``), looked up lazily."""

    kind = "method"

    def _method_class(self):
        try:
            from spurlab.train.methods.method_base import get_method_class
        except ImportError as exc:
            raise SpurlabError(f"method targets need the training-methods registry, which failed to import: {exc}",
                               hint="use a study: or python: target") from None
        return get_method_class(self.name)

    def parameters(self, quick: bool = True) -> dict[str, Any]:
        from spurlab.train.methods.hparams import space_defaults

        cls = self._method_class()
        settings = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty and name not in ("seed", "device")}
        return {**METHOD_RUN_SETTINGS, **settings, **space_defaults(cls.hparam_space())}

    def resolve(self, params: dict[str, Any], quick: bool = True) -> dict[str, Any]:
        defaults = self.parameters(quick)
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise SpurlabError(f"method {self.name!r} has no parameter(s) {unknown}",
                               hint=f"parameters: {', '.join(sorted(defaults))}")
        config = {**defaults, **params}
        if not isinstance(config["dataset_params"], dict):
            raise SpurlabError(f"dataset_params must be a table, got {config['dataset_params']!r}")
        self._method_class()(**{k: v for k, v in config.items() if k not in METHOD_RUN_SETTINGS})  # declared checks
        return config

    def run(self, params: dict[str, Any], seed: int, quick: bool, device: str) -> pd.DataFrame:
        from spurlab.data.dataset_registry import load_splits
        from spurlab.train.methods.method_base import get_method

        config = self.resolve(params, quick)
        settings = {k: config.pop(k) for k in list(METHOD_RUN_SETTINGS)}
        splits = load_splits(settings["dataset"], data_dir=settings["data_dir"], seed=seed,
                             **settings["dataset_params"])
        method = get_method(self.name, seed=seed, device=device, **config).fit(splits)
        rows: list[dict[str, Any]] = []
        for split in settings["eval_splits"]:
            if split not in splits:
                continue
            scores = method.evaluate(splits[split])
            rows += [{"experiment": self.name, "metric": m, "value": scores[m], "seed": seed, "split": split}
                     for m in METHOD_METRICS if scores.get(m) is not None]
            rows += [{"experiment": self.name, "metric": "group_acc", "value": acc, "seed": seed, "split": split,
                      "group": group} for group, acc in scores["group_accuracy"].items()]
        return pd.DataFrame(rows)


# ------------------------------------------------------------------ python functions
class PythonTarget(Target):
    """``function(seed, **params)`` from an importable module."""

    kind = "python"

    def __init__(self, module: str, function: str):
        super().__init__(f"{module}:{function}")
        self.module = module
        self.function = function

    def _load(self) -> Callable[..., Any]:
        # Like `python -m`: modules in the working folder are importable (appended, never shadowing).
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise SpurlabError(f"cannot import module {self.module!r}: {exc}",
                               hint="run from its folder, install it, or put its folder on PYTHONPATH") from None
        func = getattr(module, self.function, None)
        if not callable(func):
            raise SpurlabError(f"module {self.module!r} has no function {self.function!r}")
        return func

    def _signature(self) -> inspect.Signature:
        return inspect.signature(self._load())

    def parameters(self, quick: bool = True) -> dict[str, Any]:
        return {name: p.default for name, p in self._signature().parameters.items()
                if name not in ("seed", "device") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.default is not inspect.Parameter.empty and _is_plain(p.default)}

    def resolve(self, params: dict[str, Any], quick: bool = True) -> dict[str, Any]:
        sig = self._signature()
        named = {n: p for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        if "seed" not in named and not takes_any:
            raise SpurlabError(f"{self.spec} does not take a `seed` argument",
                               hint="sweep functions have the form f(seed, **params)")
        unknown = [] if takes_any else sorted(set(params) - set(named))
        if unknown:
            raise SpurlabError(f"{self.spec} has no parameter(s) {unknown}",
                               hint=f"its parameters: {', '.join(n for n in named if n != 'seed')}")
        missing = sorted(n for n, p in named.items()
                         if p.default is inspect.Parameter.empty and n not in params and n not in ("seed", "device"))
        if missing:
            raise SpurlabError(f"{self.spec} needs parameter(s) {missing}", hint="set them in [fixed] or [grid]")
        return {**self.parameters(quick), **params}

    def run(self, params: dict[str, Any], seed: int, quick: bool, device: str) -> pd.DataFrame:
        func = self._load()
        kwargs = dict(params)
        if "device" in inspect.signature(func).parameters and "device" not in kwargs:
            kwargs["device"] = device
        out = func(seed=seed, **kwargs)
        return as_long_frame(out, seed=seed, id_columns=list(params), source=self.spec)


def _close_figures(figures) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    for fig in figures:
        if isinstance(fig, Figure):
            plt.close(fig)


def _is_plain(value: Any) -> bool:
    """JSON-like values only, so that function defaults hash the same in every process."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def as_long_frame(out: Any, seed: int, id_columns: list[str], source: str) -> pd.DataFrame:
    """A function's return value -> long rows with ``metric``, ``value`` and ``seed``."""
    if isinstance(out, dict):
        out = [out]
    if isinstance(out, list) and all(isinstance(r, dict) for r in out):
        frame = pd.DataFrame(out)
    elif isinstance(out, pd.DataFrame):
        frame = out.copy()
    else:
        raise SpurlabError(f"{source} returned {type(out).__name__}",
                           hint="return a pandas DataFrame or a list of row dicts")
    if "seed" not in frame.columns:
        frame["seed"] = seed
    if {"metric", "value"} <= set(frame.columns) or frame.empty:
        return frame
    keep = [c for c in frame.columns if c == "seed" or c in id_columns or not pd.api.types.is_numeric_dtype(frame[c])]
    metrics = [c for c in frame.columns if c not in keep]
    if not metrics:
        raise SpurlabError(f"{source} returned no numeric column to use as a metric",
                           hint="return rows with `metric` and `value`, or numeric columns")
    return frame.melt(id_vars=keep, value_vars=metrics, var_name="metric", value_name="value")
