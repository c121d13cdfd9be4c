"""Hyper-parameter spaces: a default and a seeded random draw per hyper-parameter.

As in DomainBed's ``hparams_registry``, every method declares its space; a
sweep draws trial ``i`` from ``random_hparams(name, seed=...)`` and trial 0 is
the defaults, so "one trial" always means "the defaults".
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from spurlab.errors import SpurlabError
from spurlab.params import Boolean, Constraint, Interval, Options, positive_int


@dataclass(frozen=True)
class Hparam:
    """One hyper-parameter: its default, a seeded sampler, a one-line help and what it accepts."""

    default: Any
    sample: Callable[[np.random.Generator], Any]
    help: str = ""
    constraint: Constraint | None = None  # checked when the method is constructed (spurlab.params)


def log_uniform(low_exp: float, high_exp: float) -> Callable[[np.random.Generator], float]:
    """Sampler of ``10 ** U(low_exp, high_exp)``."""
    return lambda rng: float(10 ** rng.uniform(low_exp, high_exp))


def choice(values: list | tuple) -> Callable[[np.random.Generator], Any]:
    values = list(values)
    return lambda rng: values[int(rng.integers(len(values)))]


def fixed(value: Any) -> Callable[[np.random.Generator], Any]:
    return lambda rng: value


# Shared by every method that trains a network with the trainer's optimizer.
OPTIMIZER_SPACE: dict[str, Hparam] = {
    "lr": Hparam(1e-3, log_uniform(-4, -2.5), "learning rate", Interval(float, 0, None, closed="neither")),
    "weight_decay": Hparam(0.0, choice([0.0, 1e-4, 1e-3, 1e-2]), "L2 weight decay", Interval(float, 0, None)),
    "batch_size": Hparam(64, choice([32, 64, 128]), "minibatch size", positive_int()),
    "optimizer": Hparam("adam", fixed("adam"), "adam, adamw or sgd (with momentum, nesterov)",
                        Options("adam", "adamw", "sgd")),
    "momentum": Hparam(0.9, fixed(0.9), "SGD momentum (sgd only)", Interval(float, 0, 1, closed="left")),
    "nesterov": Hparam(False, fixed(False), "Nesterov momentum (sgd only)", Boolean()),
}


def space_constraints(space: dict[str, Hparam]) -> dict[str, Constraint]:
    return {name: spec.constraint for name, spec in space.items() if spec.constraint is not None}


def space_defaults(space: dict[str, Hparam]) -> dict[str, Any]:
    return {name: spec.default for name, spec in space.items()}


def space_sample(space: dict[str, Hparam], seed: int) -> dict[str, Any]:
    """One random draw; the same seed always gives the same hyper-parameters."""
    rng = np.random.default_rng(seed)
    # Draw in sorted name order so adding a hyper-parameter keeps the others' draws stable.
    return {name: space[name].sample(rng) for name in sorted(space)}


def check_hparam_names(method: str, space: dict[str, Hparam], given: dict[str, Any]) -> None:
    unknown = sorted(set(given) - set(space))
    if unknown:
        raise SpurlabError(f"method {method!r} has no hyper-parameter(s) {', '.join(unknown)}",
                           hint=f"its hyper-parameters: {', '.join(sorted(space))}")
