r"""Rolling guidance filter (Zhang, Shen, Xu and Jia, ECCV 2014).

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
"""

from __future__ import annotations

import numpy as np

from .._device import resolve_device
from ._checks import check_batch, check_count, check_positive
from ._rgf_cpu import rolling_guidance

__all__ = ["SUMMARY", "rgf_smooth"]

SUMMARY = "Rolling guidance filter (Zhang et al. 2014): Gaussian, then joint bilateral passes"


def rgf_smooth(
    batch: np.ndarray,
    *,
    sigma_s: float = 3.0,
    sigma_r: float = 0.1,
    n_iter: int = 4,
    device: str = "cpu",
) -> np.ndarray:
    """Structure layer of a batch by the rolling guidance filter.

    Parameters
    ----------
    batch : ndarray
        float32 ``(N, H, W, C)``, C in {1, 3}, values in [0, 1].
    sigma_s : float
        Spatial scale in pixels: structures smaller than about ``sigma_s`` are removed.
    sigma_r : float
        Range scale in intensity units ([0, 1]): edges with a larger (L1, over channels)
        contrast are kept.
    n_iter : int
        Number of passes, the Gaussian included (``n_iter=1`` is the Gaussian alone).
    device : {"cpu", "cuda", "auto"}
        Where to run; ``"cuda"`` processes the whole batch per kernel launch.

    Returns
    -------
    ndarray
        float32 array of ``batch``'s shape.

    References
    ----------
    Q. Zhang, X. Shen, L. Xu, J. Jia, "Rolling Guidance Filter", ECCV 2014.
    """
    sigma_s = check_positive("sigma_s", sigma_s)
    sigma_r = check_positive("sigma_r", sigma_r)
    n_iter = check_count("n_iter", n_iter)
    batch = check_batch(batch)
    if resolve_device(device) == "cuda":
        from ._rgf_cuda import rolling_guidance_cuda

        return rolling_guidance_cuda(batch, sigma_s, sigma_r, n_iter)
    return rolling_guidance(batch, sigma_s, sigma_r, n_iter)
