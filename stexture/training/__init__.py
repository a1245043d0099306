"""Training on cue-conflict batches and the k sweep.

- :mod:`.models`: ResNet-style classifiers in plain torch (``small``, ``resnet18``).
- :mod:`.trainer`: :func:`fit` (soft-target cross-entropy, AdamW/SGD, warm-up + cosine,
  early stopping, checkpoints) and :func:`evaluate` (the sweep's metrics of a model).
- :mod:`.aux_bn`: :func:`aux_bn` (auxiliary BatchNorm for composites, Li et al.'s MixBN)
  and :func:`route` (which rows of a batch use it).
- :mod:`.corruptions`: noise, blur, JPEG, contrast and pixelate at five severities, for
  robustness accuracy beside clean accuracy.
- :mod:`.stats`: paired-t and bootstrap intervals over seeds, seeds needed for a power.
- :mod:`.metrics`: accuracy, per-class accuracy, cue-conflict accuracies, shape bias.
- :mod:`.config`: :class:`SweepConfig`, every setting of a sweep in one frozen, validated
  object (the ``stexture sweep`` options are generated from its fields).
- :mod:`.runner`: :func:`~stexture.training.runner.sweep` (re-exported as
  ``stexture.sweep``), one run per (k, seed) plus baselines, resumable.
- :mod:`.runs`: the sweep's runs and the state they share, for the local loop and
  :mod:`.ray_tune` (the runs as Ray Tune trials).
- :mod:`.report`: ``results.csv``, ``summary.json``, ``sweep.png``, ``report.md``.
"""

from .aux_bn import DualBatchNorm, aux_bn, route
from .config import SweepConfig
from .metrics import accuracy, cue_conflict_metrics, per_class_accuracy, shape_bias
from .models import MODELS, build_model, resnet18, small_resnet
from .runner import stratified_subset
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
    "DualBatchNorm",
    "SweepConfig",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "aux_bn",
    "balanced_class_weights",
    "build_model",
    "cue_conflict_metrics",
    "evaluate",
    "fit",
    "load_init_weights",
    "per_class_accuracy",
    "predict",
    "resnet18",
    "route",
    "shape_bias",
    "small_resnet",
    "stratified_subset",
]
