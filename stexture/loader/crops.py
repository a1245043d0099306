"""Crops shared by the training and evaluation loaders: one box, applied to every layer."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["center_crop_box", "check_min_scale", "crop_layers", "random_resized_crop_box"]

_LOG_RATIOS = (math.log(3 / 4), math.log(4 / 3))


def check_min_scale(min_scale: float) -> None:
    """A ``ValueError`` unless ``min_scale`` (the smallest crop area of
    :func:`random_resized_crop_box`, a share of the image) lies in (0, 1]."""
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")


def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator, min_scale: float
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``U(min_scale, 1)`` of the area with an
    aspect ratio log-uniform in [3/4, 4/3] (the Inception crop, Szegedy et al. 2015); after
    10 failed draws, the largest centred crop with an aspect ratio in that range."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(*_LOG_RATIOS))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    h, w = height, width
    if width / height < 3 / 4:
        h = round(width * 4 / 3)
    elif width / height > 4 / 3:
        w = round(height * 4 / 3)
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The central square: resizing it to S is the resize-shorter-side-to-S + centre crop."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    # pixel-area averaging when shrinking keeps fine texture from aliasing; bilinear otherwise
    shrinking = crop.shape[0] >= size and crop.shape[1] >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def crop_layers(
    layers: Sequence[np.ndarray], box: tuple[int, int, int, int], size: int, flip: bool
) -> list[np.ndarray]:
    """The same crop ``box`` (top, left, h, w), resize to ``size`` and optional horizontal
    flip applied to every layer."""
    top, left, h, w = box
    out = [_resize(layer[top:top + h, left:left + w], size) for layer in layers]
    return [cv2.flip(o, 1) for o in out] if flip else out
