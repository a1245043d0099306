"""``decompose``: split an image (or a batch) into a structure and a texture layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._device import resolve_device
from .smoothing import get_method

__all__ = ["as_float_batch", "decompose"]

_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_batch(image: np.ndarray) -> np.ndarray:
    """Validate ``image`` and return it as a C-contiguous float32 ``(N, H, W, C)`` batch.

    Parameters
    ----------
    image : ndarray
        ``HxW``, ``HxWxC`` or ``NxHxWxC`` with C in {1, 3}, at least 2x2 pixels; uint8 and
        uint16 are scaled by their maximum, float32 / float64 must be finite and lie in
        [0, 1].

    Returns
    -------
    ndarray
        float32 ``(N, H, W, C)`` in [0, 1] (a single image has N = 1; a gray ``HxW`` one
        C = 1).

    Raises
    ------
    ValueError
        Naming the problem: not an array, another dtype, another number of dimensions or
        channels, too small, NaN or infinite values, floats outside [0, 1].
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    dtype = image.dtype
    if dtype not in _SCALE and dtype not in _FLOATS:
        raise ValueError(
            f"unsupported image dtype {dtype}; expected uint8, uint16, float32 or float64"
        )
    if image.ndim == 2:
        batch = image[None, :, :, None]
    elif image.ndim == 3:
        batch = image[None]
    elif image.ndim == 4:
        batch = image
    else:
        raise ValueError(
            f"image must be HxW, HxWxC or NxHxWxC, got an array with {image.ndim} dimension(s) "
            f"of shape {image.shape}"
        )
    n, h, w, c = batch.shape
    if c not in (1, 3):
        raise ValueError(
            f"image must have 1 or 3 channels in its last axis, got shape {image.shape}"
        )
    if n < 1 or h < 2 or w < 2:
        raise ValueError(f"image is too small: shape {image.shape} (need at least 2x2 pixels)")
    if dtype in _SCALE:
        return np.ascontiguousarray(batch, dtype=np.float32) / np.float32(_SCALE[dtype])
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if not np.isfinite(batch).all():
        raise ValueError("image contains NaN or infinite values")
    lo, hi = float(batch.min()), float(batch.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float images must lie in [0, 1]; this one spans [{lo:.4g}, {hi:.4g}]"
        )
    return batch


def decompose(
    image: np.ndarray, method: str = "rtv", device: str = "cpu", **params: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``image`` into ``(structure, texture)``.

    Parameters
    ----------
    image : ndarray
        ``HxW``, ``HxWxC`` (C = 1 or 3) or a batch ``NxHxWxC``; uint8, uint16, or float32 /
        float64 in [0, 1].
    method : str
        A name from :data:`stexture.METHODS` (``"rtv"``, ``"rgf"``, ``"tv"``).
    device : {"cpu", "cuda", "auto"}
        ``"auto"`` uses the GPU when one is usable.
    **params
        The method's parameters; see ``stexture.METHODS[method].defaults``.

    Returns
    -------
    structure, texture : ndarray
        float32 arrays of ``image``'s shape. The texture is the residual
        ``texture = x - structure`` computed in float32, where ``x`` is the image as float32
        in [0, 1]; hence ``structure + texture`` equals ``x`` up to one float32 rounding
        (at most 2**-24). Bit-exact equality of the sum is impossible in float32 in general
        (a dark pixel under a bright structure), so the residual is what is exact.

    Raises
    ------
    ValueError
        For an image :func:`as_float_batch` refuses, an unknown method, an unknown or
        out-of-range parameter, or an unknown device.
    stexture.CudaUnavailableError
        For ``device="cuda"`` on a machine without a usable CUDA GPU.
    """
    smoother = get_method(method)
    resolved = smoother.resolve_params(params)
    batch = as_float_batch(image)
    structure = smoother.function(batch, device=resolve_device(device), **resolved)
    texture = batch - structure
    return structure.reshape(image.shape), texture.reshape(image.shape)
