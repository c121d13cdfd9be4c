"""failure-directions: linear SVMs on embeddings find, rank, caption and fix a model's failure modes.

Paper: ``../shared/papers/failure-directions.md``; results: ``docs/failure-directions.md``.

This folder holds the study (``directions_study``) and its figures (``directions_figures``). The engines:

- ``spurlab.probes.directions`` / ``svm``   the per-class SVM directions and their ranking;
- ``spurlab.probes.captions``               attribute and CLIP-template captions of a direction;
- ``spurlab.models.embedders``              EfficientNet-Lite0 / penultimate-layer / CLIP embeddings;
- ``spurlab.train.engines.upweighting``     the fixes: upweighting and selecting flagged examples
  (also the ``failure_directions`` method in ``spurlab.train.methods``);
- ``spurlab.audit.directions_run``          ``spurlab directions`` over an embeddings file.
"""
from spurlab.studies.failure_directions.directions_study import FailureDirectionsStudy

__all__ = ["FailureDirectionsStudy"]
