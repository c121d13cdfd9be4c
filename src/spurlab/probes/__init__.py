"""Probes: measure what a model relies on (skew, alignment, contamination, directions, neurons)."""
