"""The papers' own training engines (the registry methods live in ``spurlab.train.methods``).

- ``linear_gd``                batched full-batch GD on linear problems           (ood-failure-modes)
- ``max_margin``               hard-margin SVM                                     (ood-failure-modes)
- ``two_layer_trainer``        two-layer network trainer                           (feature-contamination)
- ``distill``                  representation distillation                        (feature-contamination)
- ``fit_to_data``              cross-entropy training until every (unique) point is fitted, or for a fixed
                               budget with a step schedule (ood-failure-modes images, spurious-memorization nets)
- ``upweighting``              upweight / select flagged examples                  (failure-directions; wrapped by
                               the ``failure_directions`` method)
- ``pruned_copy_contrastive``  pruned-copy contrastive training                   (critical-neurons; wrapped by the
                               ``pruned_contrastive`` method)
"""
