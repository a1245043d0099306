"""Training on cue-conflict batches and the k sweep.

- :mod:`.models`: ResNet-style classifiers in plain torch (``small``, ``resnet18``).
- :mod:`.trainer`: :func:`fit` (soft-target cross-entropy, AdamW/SGD, warm-up + cosine,
  early stopping, checkpoints) and :func:`evaluate` (the sweep's metrics of a model).
- :mod:`.metrics`: accuracy, per-class accuracy, cue-conflict accuracies, shape bias.
- :mod:`.sweep`: ``sweep.sweep`` (re-exported as ``stexture.sweep``), one run per (k, seed)
  plus baselines, resumable. The function is not re-exported here, so that
  ``stexture.training.sweep`` stays the module.
- :mod:`.report`: ``results.csv``, ``summary.json``, ``sweep.png``, ``report.md``.
"""

from .metrics import accuracy, cue_conflict_metrics, per_class_accuracy, shape_bias
from .models import MODELS, build_model, resnet18, small_resnet
from .sweep import stratified_subset
from .trainer import (
    TrainConfig,
    TrainResult,
    balanced_class_weights,
    evaluate,
    fit,
    load_init_weights,
    predict,
)

__all__ = [
    "MODELS",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "balanced_class_weights",
    "build_model",
    "cue_conflict_metrics",
    "evaluate",
    "fit",
    "load_init_weights",
    "per_class_accuracy",
    "predict",
    "resnet18",
    "shape_bias",
    "small_resnet",
    "stratified_subset",
]
