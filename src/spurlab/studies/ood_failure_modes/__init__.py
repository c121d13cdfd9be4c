"""ood-failure-modes: geometric and statistical skew make GD-trained classifiers use spurious features.

Paper: ``../shared/papers/ood-failure-modes.md``; results and their sources: ``docs/studies/ood-failure-modes.md``.

This folder holds the study (``ood_study``), its linear, image and table experiments (``ood_linear``,
``ood_images``, ``ood_table``) and its figures (``ood_figures``). The paper's engines live lower down:

- ``spurlab.train.engines.linear_gd``   batched full-batch GD on many linear problems at once;
- ``spurlab.train.engines.max_margin``  the hard-margin SVM whose norm grows with n (geometric skew);
- ``spurlab.probes.skew``               spurious share/ratio and per-group accuracy of linear classifiers;
- ``spurlab.data.synthetic``            the easy task, ``LinearSkewData`` and majority duplication.
"""
from spurlab.studies.ood_failure_modes.ood_study import OodFailureModes

__all__ = ["OodFailureModes"]
