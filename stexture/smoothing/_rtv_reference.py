"""Slow, obviously right RTV: NumPy/SciPy with an exact sparse direct solve.

This is the correctness reference for the CPU and CUDA kernels of
:mod:`stexture.smoothing.rtv`; it transcribes the authors' ``tsmooth`` formulation
(described in :mod:`._rtv_common`) in float64, except that every linear system is solved exactly
(sparse LU) instead of by a loose PCG.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import correlate1d
from scipy.sparse.linalg import splu

from ._rtv_common import GRADIENT_EPS, gaussian_taps, sigma_schedule
from .rtv import validate_rtv_params

__all__ = ["rtv_reference", "rtv_system", "texture_edge_weights"]


def _forward_differences(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fx, fy)`` of an ``(H, W, C)`` image, zero in the last column / last row."""
    fx = np.zeros_like(image)
    fy = np.zeros_like(image)
    fx[:, :-1] = image[:, 1:] - image[:, :-1]
    fy[:-1, :] = image[1:, :] - image[:-1, :]
    return fx, fy


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian of each channel, zero padding, output the input's size."""
    taps = gaussian_taps(sigma)
    # The taps are symmetric, so correlation equals MATLAB's conv2(..., 'same').
    rows = correlate1d(image, taps, axis=1, mode="constant", cval=0.0)
    return correlate1d(rows, taps, axis=0, mode="constant", cval=0.0)


def texture_edge_weights(
    estimate: np.ndarray, sigma: float, sharpness: float
) -> tuple[np.ndarray, np.ndarray]:
    """RTV edge weights ``(wx, wy)``, each ``(H, W)``, of an ``(H, W, C)`` estimate.

    ``wx[i, j]`` couples pixel ``(i, j)`` to ``(i, j + 1)`` and ``wy[i, j]`` couples it to
    ``(i + 1, j)``; both are ``u * w`` of the module docstring of :mod:`._rtv_common`, and zero on
    the last column (``wx``) and last row (``wy``).
    """
    fx, fy = _forward_differences(estimate)
    w = 1.0 / np.maximum(np.sqrt(fx * fx + fy * fy).mean(axis=2), sharpness)
    gx, gy = _forward_differences(_gaussian_blur(estimate, sigma))
    ux = 1.0 / np.maximum(np.abs(gx).mean(axis=2), GRADIENT_EPS)
    uy = 1.0 / np.maximum(np.abs(gy).mean(axis=2), GRADIENT_EPS)
    wx = ux * w
    wy = uy * w
    wx[:, -1] = 0.0
    wy[-1, :] = 0.0
    return wx, wy


def rtv_system(wx: np.ndarray, wy: np.ndarray, lam_half: float) -> sp.csc_matrix:
    """``1 + lam_half * L`` as a sparse matrix over row-major pixel indices, where ``L`` is
    the graph Laplacian of the edges weighted ``wx`` (right) and ``wy`` (down)."""
    h, w = wx.shape
    n = h * w
    index = np.arange(n).reshape(h, w)
    ex = lam_half * wx.ravel()
    ey = lam_half * wy.ravel()
    right = index.ravel() + 1
    down = index.ravel() + w
    keep_x = ex != 0
    keep_y = ey != 0
    rows = np.concatenate([index.ravel()[keep_x], index.ravel()[keep_y]])
    cols = np.concatenate([right[keep_x], down[keep_y]])
    vals = np.concatenate([ex[keep_x], ey[keep_y]])
    off = sp.coo_matrix((-vals, (rows, cols)), shape=(n, n))
    off = off + off.T
    degree = -np.asarray(off.sum(axis=1)).ravel()
    return (sp.identity(n, format="csc") + sp.diags(degree) + off).tocsc()


def _rtv_image(
    image: np.ndarray, lam: float, sigma: float, sharpness: float, n_iter: int
) -> np.ndarray:
    h, w, c = image.shape
    rhs = image.reshape(h * w, c)
    estimate = image
    for sigma_t in sigma_schedule(sigma, n_iter):
        wx, wy = texture_edge_weights(estimate, sigma_t, sharpness)
        # SPD system: symmetric ordering and no pivoting give the same exact solution as
        # the default LU at a third of the fill-in and time.
        factor = splu(
            rtv_system(wx, wy, lam / 2.0), permc_spec="MMD_AT_PLUS_A",
            diag_pivot_thresh=0.0, options={"SymmetricMode": True},
        )
        estimate = factor.solve(np.asfortranarray(rhs)).reshape(h, w, c)
    return estimate


def rtv_reference(
    batch: np.ndarray,
    *,
    lam: float = 0.01,
    sigma: float = 3.0,
    sharpness: float = 0.02,
    n_iter: int = 4,
) -> np.ndarray:
    """RTV structure of an ``(N, H, W, C)`` batch, float64, by exact sparse direct solves.

    Same formulation and parameters as :func:`stexture.smoothing.rtv.rtv_smooth`.
    """
    validate_rtv_params(lam=lam, sigma=sigma, sharpness=sharpness, n_iter=n_iter)
    batch = np.asarray(batch, dtype=np.float64)
    if batch.ndim != 4:
        raise ValueError(f"batch must be (N, H, W, C), got shape {batch.shape}")
    return np.stack([_rtv_image(image, lam, sigma, sharpness, n_iter) for image in batch])
