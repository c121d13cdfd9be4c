"""Datasets: the grouped data model, generators, loaders, injections and the registry."""
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.dataset_registry import dataset_entries, load_dataset, load_splits, register_dataset, resolve_data_dir

__all__ = ["DatasetSplits", "GroupedDataset", "dataset_entries", "load_dataset", "load_splits",
           "register_dataset", "resolve_data_dir"]
