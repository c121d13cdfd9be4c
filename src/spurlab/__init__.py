"""spurlab: find, measure, explain and fix the spurious features a model relies on.

The public face (everything else is reachable by its module path):

* data: :func:`load_dataset`, :func:`load_splits`, :class:`GroupedDataset`, :class:`DatasetSplits`,
  :func:`dataset_entries`;
* models: :class:`ModelSpec`, :func:`register_model`, :func:`model_names` (what ``model=`` takes),
  :func:`embed_dataset` (penultimate embeddings through the feature cache);
* training: :func:`get_method`, :func:`compare_methods`, :func:`method_registry`;
* probes: :class:`FailureDirections`;
* studies: :func:`run_study`, :func:`study_registry`;
* the audit: :class:`Audit`, :func:`run_audit`, :class:`AuditFindings`, :class:`AuditReport`;
* sweeps: :func:`run_sweep`;
* :class:`SpurlabError`, ``__version__``.

The names load on first use (PEP 562), so ``import spurlab`` and ``spurlab --help`` stay light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from spurlab._version import __version__
from spurlab.errors import SpurlabError
from spurlab.lazy_exports import lazy_exports

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "DatasetSplits": "spurlab.data.grouped",
    "GroupedDataset": "spurlab.data.grouped",
    "dataset_entries": "spurlab.data.dataset_registry",
    "load_dataset": "spurlab.data.dataset_registry",
    "load_splits": "spurlab.data.dataset_registry",
    "FailureDirections": "spurlab.probes.directions",
    "ModelSpec": "spurlab.models.model_registry",
    "register_model": "spurlab.models.model_registry",
    "model_names": "spurlab.models.model_registry",
    "embed_dataset": "spurlab.train.embedding_run",
    "get_method": "spurlab.train.methods.method_base",
    "method_registry": "spurlab.train.methods.method_base",
    "compare_methods": "spurlab.train.methods.compare",
    "run_study": "spurlab.studies.study_base",
    "study_registry": "spurlab.studies.study_base",
    "Audit": "spurlab.audit.core",
    "run_audit": "spurlab.audit.core",
    "AuditFindings": "spurlab.audit.findings",
    "AuditReport": "spurlab.audit.findings",
    "run_sweep": "spurlab.sweep.runner",
}

__all__ = ["Audit", "AuditFindings", "AuditReport", "DatasetSplits", "FailureDirections", "GroupedDataset",
           "ModelSpec", "SpurlabError", "__version__", "compare_methods", "dataset_entries", "embed_dataset",
           "get_method", "load_dataset", "load_splits", "method_registry", "model_names", "register_model",
           "run_audit", "run_study", "run_sweep", "study_registry"]

if TYPE_CHECKING:
    from spurlab.audit.core import Audit, run_audit
    from spurlab.audit.findings import AuditFindings, AuditReport
    from spurlab.data.dataset_registry import dataset_entries, load_dataset, load_splits
    from spurlab.data.grouped import DatasetSplits, GroupedDataset
    from spurlab.models.model_registry import ModelSpec, model_names, register_model
    from spurlab.probes.directions import FailureDirections
    from spurlab.studies.study_base import run_study, study_registry
    from spurlab.sweep.runner import run_sweep
    from spurlab.train.embedding_run import embed_dataset
    from spurlab.train.methods.compare import compare_methods
    from spurlab.train.methods.method_base import get_method, method_registry


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
