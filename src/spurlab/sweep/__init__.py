"""Sweeps over studies and methods (grid / random), resumable result store, executors."""
