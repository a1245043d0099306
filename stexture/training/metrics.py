"""Metrics of a trained classifier: clean top-1 accuracy and the cue-conflict shape bias.

Shape bias follows Geirhos et al., "ImageNet-trained CNNs are biased towards texture;
increasing shape bias improves accuracy and robustness" (ICLR 2019): on cue-conflict images
(the structure of an image of class ``s``, the texture of one of class ``t``),

    shape_bias = #(pred == s) / (#(pred == s) + #(pred == t)),

counting only images with ``s != t`` (a pair whose classes coincide cannot tell shape from
texture). Predictions that are neither class do not enter the fraction.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["accuracy", "cue_conflict_metrics", "per_class_accuracy", "shape_bias"]


def _as_labels(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays differ in length: {lengths}")


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Fraction of ``pred == target``; NaN for no samples."""
    pred, target = _as_labels(pred, "pred"), _as_labels(target, "target")
    _same_length(pred=pred, target=target)
    return float(np.mean(pred == target)) if len(pred) else math.nan


def per_class_accuracy(pred: ArrayLike, target: ArrayLike, num_classes: int) -> list[float]:
    """Accuracy over the samples of each class ``0 .. num_classes-1`` (NaN for a class with
    no samples)."""
    pred, target = _as_labels(pred, "pred"), _as_labels(target, "target")
    _same_length(pred=pred, target=target)
    if len(target) and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target holds classes outside 0..{num_classes - 1}")
    correct = np.bincount(target, weights=pred == target, minlength=num_classes)
    counts = np.bincount(target, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [float(v) for v in correct / counts]


def shape_bias(pred: ArrayLike, structure_cls: ArrayLike, texture_cls: ArrayLike) -> float:
    """Geirhos et al. (2019) shape bias (module docstring); NaN when no prediction names
    either class."""
    return cue_conflict_metrics(pred, structure_cls, texture_cls)["shape_bias"]


def cue_conflict_metrics(
    pred: ArrayLike, structure_cls: ArrayLike, texture_cls: ArrayLike
) -> dict[str, float]:
    """Accuracy w.r.t. the structure class and the texture class, and the shape bias, over
    the cue-conflict samples whose two classes differ.

    Returns ``conflict_structure_acc``, ``conflict_texture_acc``, ``shape_bias`` and
    ``conflict_n`` (the number of samples with differing classes).
    """
    pred = _as_labels(pred, "pred")
    structure_cls = _as_labels(structure_cls, "structure_cls")
    texture_cls = _as_labels(texture_cls, "texture_cls")
    _same_length(pred=pred, structure_cls=structure_cls, texture_cls=texture_cls)
    differ = structure_cls != texture_cls
    pred, structure_cls, texture_cls = pred[differ], structure_cls[differ], texture_cls[differ]
    shape_hits = int(np.sum(pred == structure_cls))
    texture_hits = int(np.sum(pred == texture_cls))
    n = int(differ.sum())
    decisive = shape_hits + texture_hits
    return {
        "conflict_structure_acc": shape_hits / n if n else math.nan,
        "conflict_texture_acc": texture_hits / n if n else math.nan,
        "shape_bias": shape_hits / decisive if decisive else math.nan,
        "conflict_n": n,
    }
