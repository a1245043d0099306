r"""The rolling guidance filter (Zhang, Shen, Xu and Jia, ECCV 2014) both kernels compute.

Small structures (texture) are removed by a Gaussian, then large-scale edges are recovered
iteratively by joint bilateral filters of the input image ``I`` guided by the previous
result:

.. math::

    J^1 = G_{\sigma_s} * I, \qquad
    J^{t+1}(p) = \frac{1}{K_p} \sum_{q \in D(p)}
        e^{-\frac{\|p - q\|^2}{2 \sigma_s^2}}
        e^{-\frac{\|J^t(p) - J^t(q)\|_1^2}{2 \sigma_r^2}} I(q),

with ``K_p`` the sum of the weights. The first pass is the paper's iteration from a constant
guide. Conventions follow OpenCV (``cv2.GaussianBlur`` with ``ksize=(0, 0)`` and
``cv2.ximgproc.jointBilateralFilter`` with ``d=-1`` on float32): a ``round(8 sigma_s + 1) | 1``
tap Gaussian, the disc ``D(p)`` of radius ``round(1.5 sigma_s)``, the L1 colour distance over
channels, reflect-101 borders. ``cv2.ximgproc.rollingGuidanceFilter`` differs: it starts from
the input as its guide (opencv_contrib issue 1738).

The CPU and CUDA kernels take their kernel radii, Gaussian taps and disc of joint-bilateral
taps from here, so they filter with the same numbers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["blur_radius", "gaussian_kernel", "jbf_radius", "joint_bilateral_taps"]


def blur_radius(sigma_s: float) -> int:
    """Radius of ``cv2.GaussianBlur(ksize=(0, 0), sigma)`` on float32: ``ksize =
    round(8 sigma + 1) | 1`` taps."""
    ksize = int(np.rint(sigma_s * 8.0 + 1.0)) | 1
    return ksize // 2


def jbf_radius(sigma_s: float) -> int:
    """Radius of ``cv2.ximgproc.jointBilateralFilter`` with ``d <= 0``: ``round(1.5 sigma)``
    (ties to even, like ``cvRound``), at least 1."""
    return max(int(np.rint(sigma_s * 1.5)), 1)


def gaussian_kernel(sigma_s: float) -> np.ndarray:
    """Normalised 1-D Gaussian of :func:`blur_radius` taps each side, float32."""
    radius = blur_radius(sigma_s)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma_s) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def joint_bilateral_taps(sigma_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets ``(dy, dx)`` and spatial weights of the disc ``dy^2 + dx^2 <= r^2`` that
    OpenCV's joint bilateral filter visits, in its order (row by row)."""
    radius = jbf_radius(sigma_s)
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    inside = dy * dy + dx * dx <= radius * radius
    dy, dx = dy[inside], dx[inside]
    weight = np.exp((dy * dy + dx * dx) * (-0.5 / (sigma_s * sigma_s))).astype(np.float32)
    return dy.astype(np.int64), dx.astype(np.int64), weight
