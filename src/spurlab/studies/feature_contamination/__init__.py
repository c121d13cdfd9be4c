"""feature-contamination: networks learn label-uncorrelated background features; distillation still fails OOD.

Paper: ``../shared/papers/feature-contamination.md``; results: ``docs/studies/feature-contamination.md``.

This folder holds the study (``contamination_study``), its image experiments (``contamination_images``) and its
figures (``contamination_figures``). The engines:

- ``spurlab.models.two_layer``                      the two-layer network of the theory;
- ``spurlab.train.engines.two_layer_trainer``       its trainer (losses, optimizers, weight tracking);
- ``spurlab.train.engines.distill``                 representation distillation from a robust teacher;
- ``spurlab.probes.contamination``                  background weight growth and probes;
- ``spurlab.data.synthetic.structured_features``    the core + background data model.
"""
from spurlab.studies.feature_contamination.contamination_study import FeatureContaminationStudy

__all__ = ["FeatureContaminationStudy"]
