"""Rolling guidance filter (Zhang, Shen, Xu and Jia, ECCV 2014): parameter checks and dispatch.

The formulation and its OpenCV conventions are described in :mod:`._rgf_common`; the kernels
are :mod:`._rgf_cpu` and :mod:`._rgf_cuda`, the OpenCV-built reference :mod:`._rgf_reference`.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_count, check_positive
from ._dispatch import run_kernel

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
    return run_kernel(
        batch, device, "_rgf_cpu:rolling_guidance", "_rgf_cuda:rolling_guidance_cuda",
        sigma_s, sigma_r, n_iter,
    )
