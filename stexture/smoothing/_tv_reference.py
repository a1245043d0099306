"""Reference total-variation smoothing: scikit-image's ``denoise_tv_chambolle`` (slow path,
for tests and benchmarks).

The kernels of :mod:`stexture.smoothing.tv` define ``weight``, ``eps``, ``max_num_iter``, the
stopping rule and the per-channel treatment as scikit-image does, so its output is the
reference itself.
"""

from __future__ import annotations

import numpy as np
from skimage.restoration import denoise_tv_chambolle

__all__ = ["tv_reference"]


def tv_reference(
    batch: np.ndarray, *, weight: float = 0.1, eps: float = 2e-4, max_num_iter: int = 200
) -> np.ndarray:
    """ROF smoothing of a float32 ``(N, H, W, C)`` batch, each image and channel on its own,
    by ``skimage.restoration.denoise_tv_chambolle(..., channel_axis=-1)``; float32 out."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    out = np.empty_like(batch)
    for n, image in enumerate(batch):
        out[n] = denoise_tv_chambolle(
            image, weight=weight, eps=eps, max_num_iter=max_num_iter, channel_axis=-1
        )
    return out
