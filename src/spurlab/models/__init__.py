"""Models: the models registry (names, factories, your own modules), spurlab's networks, pretrained backbones.

``make_model`` builds a registered network by name; :class:`ModelSpec` is a model choice with its
options; ``penultimate_features`` reads any model's penultimate layer by the documented convention.
"""
from spurlab.models.model_registry import (MODELS, ModelSpec, as_model_spec, make_model, model_names,
                                           register_model)
from spurlab.models.nets import MLP, SmallCNN
from spurlab.models.penultimate import feature_function, penultimate_features

__all__ = ["MLP", "MODELS", "ModelSpec", "SmallCNN", "as_model_spec", "feature_function", "make_model",
           "model_names", "penultimate_features", "register_model"]
