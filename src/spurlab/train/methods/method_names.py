"""The methods registry and its built-in names, importable without torch (a bad name answers at once)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from spurlab.registry import Registry

if TYPE_CHECKING:
    from spurlab.train.methods.method_base import Method

METHOD_MODULES: list[str] = ["erm", "reweighting", "groupdro", "jtt", "dfr", "failure_directions",
                             "pruned_contrastive"]
METHOD_NAMES = ("erm", "reweight", "upsample", "groupdro", "jtt", "dfr", "failure_directions",
                "pruned_contrastive")  # what METHOD_MODULES register (a test keeps the two equal)
METHODS: Registry[type[Method]] = Registry("method", [f"spurlab.train.methods.{m}" for m in METHOD_MODULES],
                                           builtin_names=METHOD_NAMES)
