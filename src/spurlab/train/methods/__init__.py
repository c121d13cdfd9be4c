"""Robust training methods behind one registry, with seeded hyper-parameter grids and model selection.

>>> from spurlab.train.methods import get_method, compare_methods
>>> get_method("dfr", epochs=20).fit(splits).evaluate(splits["test"])   # doctest: +SKIP
>>> compare_methods(splits, ["erm", "groupdro", "dfr"], seeds=[0, 1])     # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from spurlab.lazy_exports import lazy_exports

_EXPORTS = {
    **{name: "spurlab.train.methods.method_base" for name in ("Method", "get_method", "get_method_class",
                                                              "method_registry", "register_method")},
    **{name: "spurlab.train.methods.compare" for name in ("compare_methods", "default_hparams", "evaluate_splits",
                                                          "hparam_grid", "random_hparams", "summarize_comparison",
                                                          "tune_method")},
    "Hparam": "spurlab.train.methods.hparams",
    **{name: "spurlab.train.methods.selection" for name in ("CRITERIA", "EpochSelector", "resolve_criterion",
                                                            "selection_score")},
}
__all__ = ["CRITERIA", "EpochSelector", "Hparam", "Method", "compare_methods", "default_hparams", "evaluate_splits",
           "get_method", "get_method_class", "hparam_grid", "method_registry", "random_hparams", "register_method",
           "resolve_criterion", "selection_score", "summarize_comparison", "tune_method"]

if TYPE_CHECKING:
    from spurlab.train.methods.compare import (compare_methods, default_hparams, evaluate_splits, hparam_grid,
                                               random_hparams, summarize_comparison, tune_method)
    from spurlab.train.methods.hparams import Hparam
    from spurlab.train.methods.method_base import (Method, get_method, get_method_class, method_registry,
                                                   register_method)
    from spurlab.train.methods.selection import CRITERIA, EpochSelector, resolve_criterion, selection_score


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
