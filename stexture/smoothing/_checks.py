"""Parameter and batch checks shared by the smoothing methods: a ``ValueError`` that names
the parameter."""

from __future__ import annotations

import math
import numbers

import numpy as np


def check_positive(name: str, value: object) -> float:
    """``value`` as a float; it must be a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_count(name: str, value: object) -> int:
    """``value`` as an int; it must be an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_batch(batch: object) -> np.ndarray:
    """A C-contiguous float32 ``(N, H, W, C)`` batch with C in {1, 3}."""
    if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[-1] not in (1, 3):
        shape = getattr(batch, "shape", None)
        raise ValueError(f"batch must be an (N, H, W, C) array with C in {{1, 3}}, got {shape}")
    if batch.dtype != np.float32:
        raise ValueError(f"batch must be float32, got {batch.dtype}")
    return np.ascontiguousarray(batch)
