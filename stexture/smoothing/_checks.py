"""Parameter and batch checks shared by the smoothing methods: a ``ValueError`` that names
the parameter and, where the kernels limit it, the range they can compute.

The ranges (:data:`PARAMETER_RANGES`) come from what the kernels hold in memory and in
float32, not from taste:

- a filter's tap table holds at most :data:`MAX_TAPS` entries (8 MiB at float64): RTV's
  Gaussian has ``round(5 sigma) | 1`` taps, so ``sigma <= (MAX_TAPS - 1) / 5``; the rolling
  guidance filter's joint bilateral disc of radius ``round(1.5 sigma_s)`` is cut from a
  square table of side ``2 radius + 1``, so that side must stay within
  ``sqrt(MAX_TAPS)``;
- RTV solves ``(1 + lam/2 L) S = I`` by float32 conjugate gradients. With edge weights up to
  ``1 / (sharpness * 1e-3)`` (1e-3 is RTV's gradient floor ``GRADIENT_EPS``), Gershgorin
  bounds the system's condition number by ``1 + 4 lam / (sharpness * 1e-3)``; past
  ``2**23`` (float32's 24-bit significand) the solve returns nonsense (measured: ``lam=1e8``
  gave a structure in [-644, 8426]), so ``sharpness >= 1e-3`` (the low end of the authors'
  range) and ``lam <= 2**23 * 1e-3 * 1e-3 / 4``;
- the rolling guidance filter's range weight uses ``1 / (2 sigma_r**2)`` in float32, which
  overflows (and turns the weights into NaN) below ``sigma_r`` of about 5e-20;
- iteration counts are at most :data:`MAX_COUNT` (RTV's sigma schedule holds one entry
  per iteration).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "MAX_COUNT",
    "MAX_TAPS",
    "PARAMETER_RANGES",
    "check_batch",
    "check_count",
    "check_parameters",
    "check_positive",
]

#: The most entries of one filter's tap table.
MAX_TAPS = 1 << 20
#: The largest iteration count any method accepts.
MAX_COUNT = 1_000_000
# RTV's floor of the blurred gradient, ``rtv.GRADIENT_EPS`` (rtv imports this module, so the
# value is repeated here; a test checks that the two agree)
_RTV_GRADIENT_EPS = 1e-3
_FLOAT32_CONDITION_LIMIT = 2.0**23
_MIN_SHARPNESS = 1e-3

#: ``name: (low, high, why)`` for every parameter whose range the kernels limit; ``low`` is
#: exclusive when 0, inclusive otherwise, ``high`` inclusive. See the module docstring.
PARAMETER_RANGES: dict[str, tuple[float, float, str]] = {
    "lam": (0.0, _FLOAT32_CONDITION_LIMIT * _RTV_GRADIENT_EPS * _MIN_SHARPNESS / 4,
            "past it RTV's linear system is beyond float32 conjugate gradients"),
    "sharpness": (_MIN_SHARPNESS, math.inf,
                  "below it RTV's linear system is beyond float32 conjugate gradients"),
    "sigma": (0.0, (MAX_TAPS - 1) / 5, f"RTV's Gaussian would pass {MAX_TAPS} taps"),
    "sigma_s": (0.0, (math.isqrt(MAX_TAPS) // 2 - 1) / 1.5,
                f"the joint bilateral disc's table would pass {MAX_TAPS} taps"),
    "sigma_r": (1e-18, math.inf, "below it the float32 range weights overflow to NaN"),
}


def _range_text(low: float, high: float) -> str:
    opening = "(0" if low == 0 else f"[{low:g}"
    return f"{opening}, {high:g}]" if math.isfinite(high) else f"{opening}, inf)"


def check_positive(name: str, value: object) -> float:
    """``value`` as a float; it must be a finite real number > 0, within the parameter's
    range in :data:`PARAMETER_RANGES` where it has one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if name in PARAMETER_RANGES:
        low, high, why = PARAMETER_RANGES[name]
        if not low <= value <= high:
            raise ValueError(f"{name} must lie in {_range_text(low, high)}, got {value!r} "
                             f"({why})")
    return float(value)


def check_count(name: str, value: object) -> int:
    """``value`` as an int; it must be an integer in 1..:data:`MAX_COUNT` (not a bool)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or not 1 <= value <= MAX_COUNT):
        raise ValueError(f"{name} must be an integer in 1..{MAX_COUNT}, got {value!r}")
    return int(value)


def check_parameters(defaults: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Check a method's ``params`` before any work, by the kind of each one's default: an
    integer default takes a count (:func:`check_count`), a float default a finite number
    > 0 within its range (:func:`check_positive`, :data:`PARAMETER_RANGES`). Every
    parameter of the registered methods is of one of these kinds; a method checks its own
    further constraints (RTV's ``tol < 1``) when it runs."""
    for name, value in params.items():
        default = defaults.get(name)
        if isinstance(default, bool) or default is None:
            continue
        if isinstance(default, numbers.Integral):
            check_count(name, value)
        elif isinstance(default, numbers.Real):
            check_positive(name, value)


def check_batch(batch: object) -> np.ndarray:
    """A C-contiguous float32 ``(N, H, W, C)`` batch with C in {1, 3}."""
    if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[-1] not in (1, 3):
        shape = getattr(batch, "shape", None)
        raise ValueError(f"batch must be an (N, H, W, C) array with C in {{1, 3}}, got {shape}")
    if batch.dtype != np.float32:
        raise ValueError(f"batch must be float32, got {batch.dtype}")
    return np.ascontiguousarray(batch)
