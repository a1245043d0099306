"""The RTV formulation that the CPU and CUDA kernels (and the reference) share.

Xu, Yan, Xia and Jia, "Structure Extraction from Texture via Relative Total Variation",
ACM Transactions on Graphics 31(6), SIGGRAPH Asia 2012. The formulation follows the
authors' reference code ``tsmooth``: every outer iteration ``t`` computes edge weights from
the current estimate ``S`` and solves the screened-Poisson system

.. math::

    (\\mathbf{1} + \\tfrac{\\lambda}{2} L_t)\\, S_{t+1} = I

per channel, where ``L_t`` is the weighted 5-point graph Laplacian with forward-difference
edges (no coupling across the image border). The weight of the horizontal edge from pixel
``p`` to its right neighbour is ``u_x(p) w(p)`` with

.. math::

    w = 1 / \\max(\\overline{\\sqrt{f_x^2 + f_y^2}}, \\varepsilon_s), \\qquad
    u_x = 1 / \\max(\\overline{|\\partial_x (G_\\sigma * S)|}, 10^{-3}),

(bars: mean over channels, ``f = S`` forward differences, zero in the last column/row),
likewise vertically. ``G_sigma`` is a separable Gaussian of ``round(5 sigma) | 1`` taps with
zero padding; ``sigma`` is halved after each outer iteration with a floor of 0.5. The
right-hand side is always the input ``I``.

This module holds the pieces both kernels need (the sigma schedule, the Gaussian taps and
the gradient floor), so that neither kernel imports the other or the public module.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["GRADIENT_EPS", "SIGMA_FLOOR", "gaussian_taps", "sigma_schedule"]

#: Floor of the blurred-gradient magnitude in ``u`` (``vareps`` in ``tsmooth``).
GRADIENT_EPS = 1e-3
#: Lower bound of the Gaussian scale as it is halved from one outer iteration to the next.
SIGMA_FLOOR = 0.5


def sigma_schedule(sigma: float, n_iter: int) -> list[float]:
    """Gaussian scale of each outer iteration: ``sigma`` halved each time, floored at 0.5."""
    schedule = []
    for _ in range(n_iter):
        schedule.append(float(sigma))
        sigma = max(sigma / 2.0, SIGMA_FLOOR)
    return schedule


def gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of ``round(5 sigma) | 1`` taps (float64), as MATLAB's
    ``fspecial('gaussian', [1, k], sigma)``; rounding is half away from zero like MATLAB's."""
    size = int(math.floor(5.0 * sigma + 0.5)) | 1
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return taps / taps.sum()
