"""critical-neurons: minority groups are memorized by a few units; edit them, or train with a pruned copy.

Paper: ``../shared/papers/critical-neurons.md``; results and their sources: ``docs/studies/critical-neurons.md``.

This folder holds the study (``neurons_study``) and its figures (``neurons_figures``). The paper's engines:

- ``spurlab.probes.neurons``                          ranking units by weight norm, gradient or activation;
- ``spurlab.probes.unit_evidence``                    per-group evidence that the ranked units memorize;
- ``spurlab.models.editing`` / ``batched_edits`` / ``shared_forward``  unit edits, many at once;
- ``spurlab.train.engines.pruned_copy_contrastive``   the pruned-copy contrastive training framework
  (also the ``pruned_contrastive`` method in ``spurlab.train.methods``).
"""
from spurlab.studies.critical_neurons.neurons_study import CriticalNeuronsStudy

__all__ = ["CriticalNeuronsStudy"]
