"""A crop's label from a label map (:func:`pool_label_map`) and the mix of ``s`` and
``t`` (:func:`mix_soft_labels`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# probabilities are floored here before pooling in log space: below float16's smallest value
_FLOOR = 2.0 ** -24


def _cell_weights(start: int, length: int, extent: int, grid: int) -> np.ndarray:
    """The length of ``[start, start + length)`` inside each of ``grid`` equal cells of
    ``[0, extent)``."""
    edges = np.arange(grid + 1, dtype=np.float64) * (extent / grid)
    low = np.maximum(edges[:-1], start)
    high = np.minimum(edges[1:], start + length)
    return np.clip(high - low, 0.0, None)


def pool_label_map(label_map: np.ndarray, box: tuple[int, int, int, int],
                   shape: Sequence[int]) -> np.ndarray:
    """The class distribution of a crop: the ``G x G x C`` ``label_map`` of an image of
    ``shape`` (height, width, ...) pooled over ``box`` (top, left, h, w): the mean of the
    cells' log-probabilities, each cell weighted by the area it shares with the box, then a
    softmax (see the module docstring for why). Probabilities are floored at 2**-24 (under
    float16's smallest) before the log."""
    height, width = int(shape[0]), int(shape[1])
    top, left, h, w = box
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(f"crop box {box} is not inside a {height}x{width} image")
    grid = label_map.shape[0]
    rows = _cell_weights(top, h, height, grid)
    cols = _cell_weights(left, w, width, grid)
    total = rows.sum() * cols.sum()
    if not total > 0:
        raise ValueError("the crop covers no cell of the label map")
    logs = np.log(np.maximum(label_map.astype(np.float64), _FLOOR))
    pooled = np.einsum("i,j,ijc->c", rows, cols, logs) / total
    pooled = np.exp(pooled - pooled.max())
    return (pooled / pooled.sum()).astype(np.float32)


def mix_soft_labels(s: np.ndarray | Any, t: np.ndarray | Any, structure_index: Any,
                    texture_index: Any, k: float, label_smoothing: float = 0.0) -> Any:
    """``y = k * s[structure_index] + (1 - k) * t[texture_index]``, then label smoothing
    ``(1 - eps) * y + eps / C`` (torch tensors or arrays, ``B x C`` each).

    For an original row the two indices are the same sample; for a cue-conflict composite
    (structure of ``a``, texture of ``b``) ``s`` is the structure model's label of ``a``'s
    crop and ``t`` the texture model's label of ``b``'s crop: the model that reads the
    structure speaks for the structure, the one that reads the texture for the texture.
    """
    y = k * s[structure_index] + (1.0 - k) * t[texture_index]
    if label_smoothing:
        y = (1.0 - label_smoothing) * y + label_smoothing / y.shape[-1]
    return y
