"""Training: the ERM trainer (and, later, robust methods behind one registry)."""
from spurlab.train.trainer import TrainConfig, TrainResult, fit, predict, predict_logits

__all__ = ["TrainConfig", "TrainResult", "fit", "predict", "predict_logits"]
