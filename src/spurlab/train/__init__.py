"""Training: the ERM trainer (``trainer``), the robust methods behind one registry (``methods``) and the papers'
own training engines (``engines``)."""
from spurlab.train.trainer import TrainConfig, TrainResult, fit, predict, predict_logits

__all__ = ["TrainConfig", "TrainResult", "fit", "predict", "predict_logits"]
