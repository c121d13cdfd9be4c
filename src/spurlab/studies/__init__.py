"""Studies: one folder per research work (``studies/<paper>/``), each following the contract in ``study_base``.
The names load on first use (PEP 562), so a bad study name answers at once."""
from __future__ import annotations

from typing import TYPE_CHECKING

from spurlab.lazy_exports import lazy_exports

_EXPORTS = {name: "spurlab.studies.study_base" for name in ("Study", "StudyContext", "StudyResult", "get_study",
                                                            "register_study", "run_study", "study_registry")}
__all__ = ["Study", "StudyContext", "StudyResult", "get_study", "register_study", "run_study", "study_registry"]

if TYPE_CHECKING:
    from spurlab.studies.study_base import (Study, StudyContext, StudyResult, get_study, register_study, run_study,
                                            study_registry)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
