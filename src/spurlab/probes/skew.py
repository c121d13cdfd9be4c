"""Probes of geometric and statistical skew in linear classifiers (ood-failure-modes).

* :func:`spurious_share` — ``w_sp / ||w||`` (any leading batch/time axes);
* :func:`spurious_ratio` — ``w_sp / ||w_inv||``, the quantity of the theory;
* :func:`linear_group_accuracies` — majority / minority accuracy of linear models;
* :func:`theory_spurious_ratio` — the overlay ``margin ln(p/(1-p)) / (2 B ln t)``.
"""
from __future__ import annotations

import numpy as np

from spurlab.errors import SpurlabError
from spurlab.params import Interval, check_params, probability


def _weights(coef) -> np.ndarray:
    w = np.asarray(coef, dtype=np.float64)
    if w.ndim == 0 or w.shape[-1] < 2:
        raise SpurlabError(f"coef must have at least two features (invariant + spurious), got shape {w.shape}")
    return w


def spurious_share(coef, spurious_index: int = -1) -> np.ndarray:
    """``w_sp / ||w||`` along the last axis (0 where ``w = 0``); signed: > 0 follows the majority."""
    w = _weights(coef)
    norm = np.linalg.norm(w, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, w[..., spurious_index] / np.where(norm > 0, norm, 1.0), 0.0)


def spurious_ratio(coef, spurious_index: int = -1) -> np.ndarray:
    """``w_sp / ||w_inv||`` along the last axis (``w_inv``: every other coordinate)."""
    w = _weights(coef)
    inv = np.delete(w, spurious_index % w.shape[-1], axis=-1)
    inv_norm = np.linalg.norm(inv, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inv_norm > 0, w[..., spurious_index] / np.where(inv_norm > 0, inv_norm, 1.0), 0.0)


def linear_predictions(coef, x, intercept=0.0) -> np.ndarray:
    """Signs in {-1, +1} of ``x @ w + b``: (m,) for one model, (R, m) for coefs (R, d)."""
    w = np.asarray(coef, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != w.shape[-1]:
        raise SpurlabError(f"x has shape {x.shape}, expected (m, {w.shape[-1]})")
    scores = x @ w.T if w.ndim == 2 else x @ w
    scores = scores.T if w.ndim == 2 else scores
    intercept = np.asarray(intercept, dtype=np.float64)
    scores = scores + (intercept[..., None] if intercept.ndim else intercept)
    return np.where(scores > 0, 1, -1)


def linear_accuracy(coef, x, y, intercept=0.0) -> np.ndarray:
    """Accuracy of linear model(s) on labels ``y`` (0/1 or -1/+1); one value per model."""
    from spurlab.utils import signed_labels

    return np.mean(linear_predictions(coef, x, intercept) == signed_labels(y), axis=-1)


def linear_group_accuracies(coef, x, y, minority, intercept=0.0) -> dict[str, np.ndarray]:
    """``{"majority_acc", "minority_acc"}`` of linear model(s) given a minority mask."""
    minority = np.asarray(minority, dtype=bool)
    y = np.asarray(y)
    if len(minority) != len(y) or len(y) != len(x):
        raise SpurlabError(f"x, y and minority have different lengths ({len(x)}, {len(y)}, {len(minority)})")
    out = {}
    for name, mask in (("majority_acc", ~minority), ("minority_acc", minority)):
        if not mask.any():
            raise SpurlabError(f"no {name.split('_')[0]} examples to score", hint="use a split with both groups")
        out[name] = linear_accuracy(coef, x[mask], y[mask], intercept)
    return out


# What the theory curves accept (spurlab.params).
THEORY_CONSTRAINTS = {"p": probability("neither"), "B": Interval(float, 0, None, "neither")}


def theory_spurious_ratio(p, B: float, steps, margin: float = 1.0) -> np.ndarray:
    """Asymptotic ``w_sp / w_inv`` of GD under statistical skew: ``margin ln(p/(1-p)) / (2 B ln t)``.

    With ``margin = 1`` this is the paper's ``ln(p/(1-p)) / (2B ln t)`` (the 1-D
    check, ``x_inv = y``); for an invariant margin ``gamma`` the invariant weight
    grows like ``ln(t) / gamma``, hence the factor. ``nan`` for ``t <= 1``."""
    p, B = check_params("theory_spurious_ratio", THEORY_CONSTRAINTS, {"p": p, "B": B}).values()
    t = np.asarray(steps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 1, margin * np.log(p / (1.0 - p)) / (2.0 * B * np.log(np.where(t > 1, t, 2.0))), np.nan)


def theory_spurious_share(p, B: float, steps, margin: float = 1.0) -> np.ndarray:
    """The overlay as a share of the norm: ``r / sqrt(1 + r^2)`` for the ratio ``r``."""
    ratio = theory_spurious_ratio(p, B, steps, margin)
    return ratio / np.sqrt(1.0 + ratio**2)
