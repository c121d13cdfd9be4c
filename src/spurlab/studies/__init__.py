"""Studies: one module per research work, each following the contract in ``base``."""
from spurlab.studies.study_base import (Study, StudyContext, StudyResult, get_study, register_study, run_study,
                                  study_registry)

__all__ = ["Study", "StudyContext", "StudyResult", "get_study", "register_study", "run_study", "study_registry"]
