"""The package version, low in the tree so that run records can stamp it without importing the package face."""
__version__ = "0.1.0"
