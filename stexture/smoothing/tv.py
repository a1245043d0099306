"""Total-variation (ROF) smoothing by Chambolle's projection (2004): checks and dispatch.

The problem, the iteration and scikit-image's stopping rule are described in
:mod:`._tv_common`; the kernels are :mod:`._tv_cpu` and :mod:`._tv_cuda`, the reference
(scikit-image itself) :mod:`._tv_reference`.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_count, check_positive
from ._dispatch import run_kernel

__all__ = ["SUMMARY", "tv_smooth"]

SUMMARY = "ROF total variation by Chambolle's projection (weight as in scikit-image)"


def tv_smooth(
    batch: np.ndarray,
    *,
    weight: float = 0.1,
    eps: float = 2e-4,
    max_num_iter: int = 200,
    device: str = "cpu",
) -> np.ndarray:
    """Structure layer of a batch by total-variation smoothing.

    Parameters
    ----------
    batch : ndarray
        float32 ``(N, H, W, C)``, C in {1, 3}, values in [0, 1].
    weight : float
        Smoothing strength (``1 / lambda`` of the ROF problem): larger removes more.
    eps : float
        Relative energy change below which the iteration stops.
    max_num_iter : int
        Most iterations per channel.
    device : {"cpu", "cuda", "auto"}
        Where to run; ``"cuda"`` processes the whole batch per kernel launch.

    Returns
    -------
    ndarray
        float32 array of ``batch``'s shape.

    References
    ----------
    A. Chambolle, "An algorithm for total variation minimization and applications",
    Journal of Mathematical Imaging and Vision 20, 89-97 (2004).
    """
    weight = check_positive("weight", weight)
    eps = check_positive("eps", eps)
    max_num_iter = check_count("max_num_iter", max_num_iter)
    return run_kernel(
        batch, device, "_tv_cpu:chambolle_cpu", "_tv_cuda:chambolle_cuda", weight, eps, max_num_iter
    )
