"""Training: the ERM trainer (``trainer``), the robust methods behind one registry (``methods``) and the papers'
own training engines (``engines``). The names load on first use (PEP 562), so a bad method name answers at once."""
from __future__ import annotations

from typing import TYPE_CHECKING

from spurlab.lazy_exports import lazy_exports

_EXPORTS = {name: "spurlab.train.trainer" for name in ("TrainConfig", "TrainResult", "fit", "predict",
                                                       "predict_logits")}
__all__ = ["TrainConfig", "TrainResult", "fit", "predict", "predict_logits"]

if TYPE_CHECKING:
    from spurlab.train.trainer import TrainConfig, TrainResult, fit, predict, predict_logits


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
