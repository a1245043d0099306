"""Reference rolling guidance filter built from OpenCV primitives (slow path, for tests and
benchmarks).

Zhang et al. (ECCV 2014) start from a constant guide, so the first pass is a plain Gaussian
blur; every further pass is a joint bilateral filter of the *input* guided by the previous
result. ``cv2.ximgproc.rollingGuidanceFilter`` instead starts from the input as its guide
(opencv_contrib issue 1738), so it is not used here.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["rgf_reference"]


def rgf_reference(
    batch: np.ndarray, *, sigma_s: float = 3.0, sigma_r: float = 0.1, n_iter: int = 4
) -> np.ndarray:
    """Rolling guidance filter of a float32 ``(N, H, W, C)`` batch with OpenCV.

    ``cv2.GaussianBlur(ksize=(0, 0), sigma_s)`` followed by ``n_iter - 1`` passes of
    ``cv2.ximgproc.jointBilateralFilter(guide, image, d=-1, sigmaColor=sigma_r,
    sigmaSpace=sigma_s)``, default (reflect-101) borders, each image on its own.
    """
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    out = np.empty_like(batch)
    for n, image in enumerate(batch):
        guide = cv2.GaussianBlur(image, (0, 0), sigma_s)
        for _ in range(n_iter - 1):
            guide = cv2.ximgproc.jointBilateralFilter(guide, image, -1, sigma_r, sigma_s)
        out[n] = guide.reshape(image.shape)
    return out
