"""Studies: one folder per research work (``studies/<paper>/``), each following the contract in ``study_base``."""
from spurlab.studies.study_base import (Study, StudyContext, StudyResult, get_study, register_study, run_study,
                                  study_registry)

__all__ = ["Study", "StudyContext", "StudyResult", "get_study", "register_study", "run_study", "study_registry"]
