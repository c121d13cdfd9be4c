"""The papers' own training engines (the registry methods live in ``spurlab.train.methods``).

- ``linear_gd``                batched full-batch GD on linear problems           (ood-failure-modes)
- ``max_margin``               hard-margin SVM                                     (ood-failure-modes)
- ``two_layer_trainer``        two-layer network trainer                           (feature-contamination)
- ``distill``                  representation distillation                        (feature-contamination)
- ``upweighting``              upweight / select flagged examples                  (failure-directions; wrapped by
                               the ``failure_directions`` method)
- ``pruned_copy_contrastive``  pruned-copy contrastive training                   (critical-neurons; wrapped by the
                               ``pruned_contrastive`` method)
"""
