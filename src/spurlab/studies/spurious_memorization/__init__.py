"""spurious-memorization: what RF and NTK regression memorize of a spurious feature = stability x alignment.

Paper: ``../shared/papers/spurious-memorization-rf-ntk.md``; results: ``docs/studies/spurious-memorization.md``.

This folder holds the study (``memorization_study``) and its figures (``memorization_figures``). The engines:

- ``spurlab.models.features``      random-features and NTK feature maps;
- ``spurlab.probes.memorization``  the memorization measure, the closed forms gamma and gamma_at_ratio;
- ``spurlab.data.synthetic``       the Gaussian core + spurious data and spurious queries.
"""
from spurlab.studies.spurious_memorization.memorization_study import SpuriousMemorizationStudy

__all__ = ["SpuriousMemorizationStudy"]
