"""The studies registry and its built-in names, importable without numpy, pandas or torch."""
from __future__ import annotations

from typing import TYPE_CHECKING

from spurlab.registry import Registry

if TYPE_CHECKING:
    from spurlab.studies.study_base import Study

STUDY_MODULES: list[str] = [
    # paper folders under spurlab.studies that register a study when imported
    "spurious_memorization",
    "ood_failure_modes",
    "feature_contamination",
    "critical_neurons",
    "failure_directions",
]
STUDY_NAMES = ("critical-neurons", "failure-directions", "feature-contamination", "ood-failure-modes",
               "spurious-memorization")  # what STUDY_MODULES register: a bad name is refused without importing them
STUDIES: Registry[type[Study]] = Registry("study", [f"spurlab.studies.{m}" for m in STUDY_MODULES], order="name",
                                          builtin_names=STUDY_NAMES)
