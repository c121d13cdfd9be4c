"""Declared parameter constraints: what each parameter accepts, checked in one place before any work.

Datasets, studies, training methods and sweeps declare their parameters as data, next to the parameters'
definitions, in the manner of scikit-learn's ``_parameter_constraints``::

    constraints = {"p": Interval(float, 0, 1), "n_train": optional(Interval(int, 1, None)),
                   "core": Options("linear", "nonlinear")}
    values = check_params("dataset 'linear-skew'", constraints, values)

Every refusal names the owner and the parameter ("dataset 'binary-mnist': parameter 'p' must be a number in
[0, 1], got 'abc'"). Values arriving as text (``--set``, sweep configs) are converted by their constraint, so a
number typed on the command line and a number passed from Python are checked alike. Arrays of class or group
indices are declared with :class:`Labels`; a constraint that can say what is wrong raises :class:`Refusal`, whose
text the message shows ("parameter 'y_true' has negative values (min -1)"). This module sits low in the tree: it
imports nothing from spurlab but ``errors``.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
import numbers
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spurlab.errors import SpurlabError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class Refusal(ValueError):
    """What is wrong with a value, in words the message shows (a plain ValueError's text is not shown)."""

    def __init__(self, reason: str, hint: str | None = None):
        super().__init__(reason)
        self.hint = hint


class Constraint(ABC):
    """One parameter's accepted values; ``convert`` returns the value in canonical form or raises ValueError."""

    @abstractmethod
    def convert(self, value: Any) -> Any: ...

    @abstractmethod
    def describe(self) -> str: ...

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


def _number(value: Any, kind: type) -> float | int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, str):
        value = float(value.strip())
    if not isinstance(value, numbers.Real):
        raise ValueError("not a number")
    value = float(value) if kind is float else value
    if kind is int:
        if isinstance(value, numbers.Integral):
            return int(value)
        if not math.isfinite(float(value)) or float(value) != int(float(value)):
            raise ValueError("not a whole number")
        return int(float(value))
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


class Interval(Constraint):
    """An int or a float between ``low`` and ``high`` (None: unbounded); ``closed`` in both/left/right/neither."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, closed: str = "both"):
        if kind not in (int, float) or closed not in ("both", "left", "right", "neither"):
            raise TypeError(f"Interval({kind!r}, closed={closed!r})")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def convert(self, value: Any) -> Any:
        value = _number(value, self.kind)
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        if not (low_ok and high_ok):
            raise ValueError("out of range")
        return value

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        left_closed, right_closed = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            return f"{what} in {'[' if left_closed else '('}{self.low}, {self.high}{']' if right_closed else ')'}"
        if self.low is not None:
            return f"{what} {'>=' if left_closed else '>'} {self.low}"
        if self.high is not None:
            return f"{what} {'<=' if right_closed else '<'} {self.high}"
        return what


class Options(Constraint):
    """One of a fixed set of values."""

    def __init__(self, *values: Any):
        self.values = tuple(values)

    def convert(self, value: Any) -> Any:
        for option in self.values:
            if value == option and type(value) is type(option) or (isinstance(value, str) and value == str(option)):
                return option
        raise ValueError("not an option")

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


class Boolean(Constraint):
    def convert(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        raise ValueError("not a boolean")

    def describe(self) -> str:
        return "true or false"


class Text(Constraint):
    """A non-empty string."""

    def convert(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("not a string")
        return value

    def describe(self) -> str:
        return "a non-empty text"


def _list_of(min_len: int) -> str:
    return f"a list of at least {min_len}" if min_len else "a list (possibly empty)"


class NumberList(Constraint):
    """A non-empty list of numbers, each in ``item`` (a list, a tuple, a 1-d array or comma-separated text);
    ``scalar``: a single number stands for a list of one (off where a number means something else: ``seeds = N``)."""

    def __init__(self, item: Interval | None = None, min_len: int = 1, scalar: bool = True):
        self.item = item or Interval(float)
        self.min_len = min_len
        self.scalar = scalar

    def convert(self, value: Any) -> list:
        if isinstance(value, str):
            value = [t for t in value.strip().strip("[]").split(",") if t.strip()]
        elif self.scalar and isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = [value]
        elif isinstance(value, np.ndarray) and value.ndim == 1:
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
            raise ValueError("not a list")
        return [self.item.convert(v) for v in value]

    def describe(self) -> str:
        return f"{_list_of(self.min_len)} value(s), each {self.item.describe()}"


class OptionList(Constraint):
    """A list (or comma-separated text) whose every item is one of ``options``."""

    def __init__(self, *options: Any, min_len: int = 1):
        self.options = Options(*options)
        self.min_len = min_len

    def convert(self, value: Any) -> list:
        if isinstance(value, str):
            value = [t.strip() for t in value.strip().strip("[]").split(",") if t.strip()]
        if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
            raise ValueError("not a list")
        return [self.options.convert(v) for v in value]

    def describe(self) -> str:
        return f"{_list_of(self.min_len)} of {', '.join(repr(v) for v in self.options.values)}"


class PathArg(Constraint):
    """A file-system path; ``must_exist`` checks that it is an existing file."""

    def __init__(self, must_exist: bool = False):
        self.must_exist = must_exist

    def convert(self, value: Any) -> Path:
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise ValueError("not a path")
        path = Path(value).expanduser()
        if self.must_exist and not path.is_file():
            raise ValueError("no such file")
        return path

    def describe(self) -> str:
        return "the path of an existing file" if self.must_exist else "a path"


def label_array(values: Any, min_len: int = 0) -> np.ndarray:
    """``values`` as a 1-d int64 array of class indices (whole floats accepted), or a :class:`Refusal`."""
    labels = np.asarray(values)
    if labels.ndim != 1:
        raise Refusal(f"must be 1-d, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        whole = np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels))
        if not (whole and np.all(labels == np.round(labels))):
            raise Refusal(f"must hold integer class indices, got dtype {labels.dtype}",
                          hint="map class names to 0..K-1 first")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        raise Refusal(f"has negative values (min {labels.min()})", hint="labels must be 0..K-1")
    if len(labels) < min_len:
        raise Refusal("has no examples" if len(labels) == 0 else f"has {len(labels)} examples, fewer than {min_len}",
                      hint=f"pass at least {min_len} example(s)")
    return labels


class Labels(Constraint):
    """A 1-d array of class (or group) indices 0..K-1 with at least ``min_len`` entries."""

    def __init__(self, min_len: int = 1):
        self.min_len = min_len

    def convert(self, value: Any) -> np.ndarray:
        return label_array(value, self.min_len)

    def describe(self) -> str:
        return f"a 1-d array of at least {self.min_len} class indices 0..K-1"


class NoneValue(Constraint):
    def convert(self, value: Any) -> None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        raise ValueError("not None")

    def describe(self) -> str:
        return "None"


class AnyOf(Constraint):
    """The first of several constraints that accepts the value."""

    def __init__(self, *options: Constraint):
        self.options = options

    def convert(self, value: Any) -> Any:
        refusal = None
        for option in self.options:
            try:
                return option.convert(value)
            except Refusal as exc:  # an option that took the value's kind and says what is wrong with it
                refusal = refusal or exc
            except (ValueError, TypeError, OverflowError):
                continue
        raise refusal or ValueError("no option accepts it")

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)


def optional(constraint: Constraint) -> AnyOf:
    """``constraint`` or None (the parameter's "not set")."""
    return AnyOf(constraint, NoneValue())


# Shorthands for the common cases.
def positive_int(high: int | None = None) -> Interval:
    return Interval(int, 1, high)


def probability(closed: str = "both") -> Interval:
    return Interval(float, 0, 1, closed)


# ------------------------------------------------------------------ checking
def check_param(owner: str, name: str, constraint: Constraint, value: Any) -> Any:
    """``value`` converted by ``constraint``, or a :class:`SpurlabError` naming ``owner`` and ``name``."""
    try:
        return constraint.convert(value)
    except Refusal as exc:
        raise SpurlabError(f"{owner}: parameter {name!r} {exc}",
                           hint=exc.hint or f"pass {name}=<{constraint.describe()}>") from None
    except (ValueError, TypeError, OverflowError):
        raise SpurlabError(f"{owner}: parameter {name!r} must be {constraint.describe()}, got {shown(value)}",
                           hint=f"pass {name}=<{constraint.describe()}>") from None


def shown(value: Any, limit: int = 80) -> str:
    """A value as a message shows it: arrays by shape and dtype, long reprs cut."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0:
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_params(owner: str, constraints: Mapping[str, Constraint], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with each declared parameter converted and checked (undeclared ones pass unchanged)."""
    return {name: check_param(owner, name, constraints[name], value) if name in constraints else value
            for name, value in values.items()}


def check_requires(owner: str, requires: Mapping[str, str], given: Mapping[str, Any],
                   settings: Mapping[str, Any]) -> None:
    """Refuse a parameter the current settings ignore: ``requires[p] = q`` means p only acts when q is set."""
    for name in given:
        needed = requires.get(name)
        if needed is not None and settings.get(needed) is None:
            raise SpurlabError(f"{owner}: parameter {name!r} has no effect because {needed!r} is not set",
                               hint=f"set {needed}=... as well, or drop {name}")


def check_size(what: str, n_bytes: float, limit_bytes: float | None = None, hint: str | None = None) -> None:
    """Refuse an allocation estimated at ``n_bytes`` above ``limit_bytes`` (default: half the free memory)."""
    if limit_bytes is None:
        limit_bytes = memory_limit_bytes()
    if n_bytes > limit_bytes:
        raise SpurlabError(f"{what} would need about {format_bytes(n_bytes)}, above the limit of "
                           f"{format_bytes(limit_bytes)}", hint=hint or "use smaller sizes")


def check_count(what: str, count: float, limit: int, hint: str | None = None) -> None:
    """Refuse a count (runs, samples, grid cells) above ``limit`` before anything is enumerated."""
    if count > limit:
        raise SpurlabError(f"{what} is {count:,.0f}, above the limit of {limit:,}", hint=hint)


def memory_limit_bytes() -> float:
    """Half the memory the OS can give now (``MemAvailable``), or 8 GiB when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 2
    except OSError:
        pass
    return 8 * 2**30


def format_bytes(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n_bytes) < 1024 or unit == "PiB":
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.3g} PiB"  # pragma: no cover


def footprint(*dims: Any, itemsize: int = 8) -> Callable[[Mapping[str, Any]], float]:
    """A size estimate ``prod(dims) * itemsize`` where each dim is a parameter name, a number or a callable."""
    def estimate(params: Mapping[str, Any]) -> float:
        total = float(itemsize)
        for dim in dims:
            value = dim(params) if callable(dim) else params.get(dim, dim) if isinstance(dim, str) else dim
            total *= float(value or 0)
        return total

    return estimate
