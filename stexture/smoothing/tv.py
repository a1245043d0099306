r"""Total-variation (ROF) smoothing by Chambolle's projection algorithm (Chambolle 2004).

Each channel ``f`` of each image is smoothed on its own by solving the Rudin-Osher-Fatemi
problem

.. math::

    \min_u \; \sum |\nabla u| + \frac{1}{2\,\mathrm{weight}} \sum (u - f)^2,

through its dual: ``u = f - div p`` with the fixed-point iteration

.. math::

    p \leftarrow \frac{p - \tau \nabla(f - \operatorname{div} p)}
                       {1 + \frac{\tau}{\mathrm{weight}} |\nabla(f - \operatorname{div} p)|},
    \qquad \tau = 1/4,

forward differences for the gradient and the matching backward differences for the
divergence. ``weight``, ``eps``, ``max_num_iter``, the stopping rule and the per-channel
treatment mean what they mean in ``skimage.restoration.denoise_tv_chambolle`` with
``channel_axis=-1``: the energy ``E_k = (sum (div p)^2 + weight sum |grad u|) / (H W)`` is
tracked and the iteration stops at the first ``k > 0`` with ``|E_{k-1} - E_k| < eps E_0``.
"""

from __future__ import annotations

import numpy as np

from .._device import resolve_device
from ._checks import check_batch, check_count, check_positive
from ._tv_cpu import chambolle_planes

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
    batch = check_batch(batch)
    if resolve_device(device) == "cuda":
        from ._tv_cuda import chambolle_cuda

        return chambolle_cuda(batch, weight, eps, max_num_iter)
    n, h, w, c = batch.shape
    planes = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).reshape(n * c, h, w)
    smoothed, _ = chambolle_planes(planes, weight, eps, max_num_iter)
    return np.ascontiguousarray(smoothed.reshape(n, c, h, w).transpose(0, 2, 3, 1))
