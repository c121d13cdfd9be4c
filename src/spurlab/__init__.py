"""spurlab: find, measure, explain and fix the spurious features a model relies on."""
from spurlab.data import DatasetSplits, GroupedDataset, load_dataset, load_splits
from spurlab.errors import SpurlabError
from spurlab.probes.directions import FailureDirections

__version__ = "0.1.0"
__all__ = ["DatasetSplits", "FailureDirections", "GroupedDataset", "SpurlabError", "load_dataset", "load_splits",
           "__version__"]
