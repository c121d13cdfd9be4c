"""Models: linear, MLP, small CNN, two-layer networks; ``make_model`` builds one by name."""
from spurlab.models.nets import MLP, SmallCNN, make_model, penultimate_features

__all__ = ["MLP", "SmallCNN", "make_model", "penultimate_features"]
