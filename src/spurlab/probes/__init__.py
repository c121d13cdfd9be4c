"""Probes: measure what a model relies on, without training it further.

* failure directions (Jain et al. 2023): :class:`FailureDirections` (``directions``), described in words by
  :class:`AttributeCaptioner` / :class:`CaptionScorer` (``captions``), over the batched SVMs of ``svm``;
* critical units (You et al. 2025): :class:`CriticalUnitSelector`, :func:`find_critical_units` (``neurons``),
  and what editing them does to each group: :func:`unit_evidence` (``unit_evidence``);
* spurious memorization in kernels (Bombari & Mondelli 2024): :class:`KernelMemorization`, :func:`gamma`
  (``memorization``);
* feature contamination (Zhang et al. 2024): :class:`ContaminationTracker`, :func:`core_background_norms`
  (``contamination``);
* geometric and statistical skew of linear models (Nagarajan et al. 2021): :func:`spurious_share`,
  :func:`spurious_ratio`, :func:`linear_group_accuracies` (``skew``).

The names load on first use (PEP 562): most probes need torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from spurlab.lazy_exports import lazy_exports

_EXPORTS: dict[str, str] = {
    "FailureDirections": "spurlab.probes.directions",
    "AttributeCaptioner": "spurlab.probes.captions",
    "CaptionScorer": "spurlab.probes.captions",
    "CriticalUnitSelector": "spurlab.probes.neurons",
    "find_critical_units": "spurlab.probes.neurons",
    "unit_evidence": "spurlab.probes.unit_evidence",
    "KernelMemorization": "spurlab.probes.memorization",
    "gamma": "spurlab.probes.memorization",
    "ContaminationTracker": "spurlab.probes.contamination",
    "core_background_norms": "spurlab.probes.contamination",
    "spurious_share": "spurlab.probes.skew",
    "spurious_ratio": "spurlab.probes.skew",
    "linear_group_accuracies": "spurlab.probes.skew",
}

__all__ = ["AttributeCaptioner", "CaptionScorer", "ContaminationTracker", "CriticalUnitSelector", "FailureDirections",
           "KernelMemorization", "core_background_norms", "find_critical_units", "gamma", "linear_group_accuracies",
           "spurious_ratio", "spurious_share", "unit_evidence"]

if TYPE_CHECKING:
    from spurlab.probes.captions import AttributeCaptioner, CaptionScorer
    from spurlab.probes.contamination import ContaminationTracker, core_background_norms
    from spurlab.probes.directions import FailureDirections
    from spurlab.probes.memorization import KernelMemorization, gamma
    from spurlab.probes.neurons import CriticalUnitSelector, find_critical_units
    from spurlab.probes.skew import linear_group_accuracies, spurious_ratio, spurious_share
    from spurlab.probes.unit_evidence import unit_evidence


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
