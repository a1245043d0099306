"""CPU kernels of Chambolle's projection algorithm for ROF total variation (Numba).

The image is a stack of independent float32 planes ``(P, H, W)`` (one per image and
channel). Each iteration is one fused sweep over the rows of a plane: the primal row
``u = f - div p`` is formed on the fly, its forward differences update the dual field
``p`` (ping-pong buffers), and the two sums of the stopping rule are accumulated in the
same pass.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._tv_common import TAU

__all__ = ["chambolle_cpu", "chambolle_planes"]


@njit(cache=True, fastmath=True, error_model="numpy")
def _primal_row(image, p, y, out_row):
    """``out_row <- f - div p`` on row ``y`` (backward differences, scikit-image's border
    convention: no inflow through the first row/column); returns ``sum d^2`` with
    ``d = -div p``."""
    width = out_row.size
    py, px = p[0, y], p[1, y]
    for x in range(width):
        out_row[x] = -(py[x] + px[x])
    if y > 0:
        py_up = p[0, y - 1]
        for x in range(width):
            out_row[x] += py_up[x]
    for x in range(1, width):
        out_row[x] += px[x - 1]
    f = image[y]
    d2 = np.float32(0.0)
    for x in range(width):
        d = out_row[x]
        d2 += d * d
        out_row[x] = f[x] + d
    return d2


@njit(cache=True, fastmath=True, error_model="numpy")
def _dual_row(p_old, p_new, y, here, below, tau, tau_over_weight):
    """Projected gradient step on row ``y``: p <- (p - tau g) / (1 + tau/weight |g|), with
    ``g`` the forward differences of the primal (zero past the last row/column); returns
    ``sum |g|``. ``below`` is the next primal row, or ``here`` itself on the last row."""
    width = here.size
    oy, ox = p_old[0, y], p_old[1, y]
    ny, nx = p_new[0, y], p_new[1, y]
    total = np.float32(0.0)
    for x in range(width - 1):
        gy = below[x] - here[x]
        gx = here[x + 1] - here[x]
        norm = np.sqrt(gy * gy + gx * gx)
        total += norm
        denom = norm * tau_over_weight + np.float32(1.0)
        ny[x] = (oy[x] - tau * gy) / denom
        nx[x] = (ox[x] - tau * gx) / denom
    last = width - 1
    gy = below[last] - here[last]
    norm = abs(gy)
    total += norm
    denom = norm * tau_over_weight + np.float32(1.0)
    ny[last] = (oy[last] - tau * gy) / denom
    nx[last] = ox[last] / denom
    return total


@njit(cache=True, fastmath=True, error_model="numpy")
def _sweep(image, p_old, p_new, tau, tau_over_weight):
    """One iteration over a plane ``image`` (H, W), dual fields (2, H, W); returns
    (sum d^2, sum |g|), each row's partial sum accumulated in float64."""
    height, width = image.shape
    here = np.empty(width, np.float32)
    below = np.empty(width, np.float32)
    d2 = np.float64(_primal_row(image, p_old, 0, here))
    grad = 0.0
    for y in range(height - 1):
        d2 += _primal_row(image, p_old, y + 1, below)
        grad += _dual_row(p_old, p_new, y, here, below, tau, tau_over_weight)
        here, below = below, here
    grad += _dual_row(p_old, p_new, height - 1, here, here, tau, tau_over_weight)
    return d2, grad


@njit(cache=True, fastmath=True, error_model="numpy")
def _chambolle_plane(image, out, weight, eps, max_num_iter):
    """Iterate one plane (H, W) to scikit-image's stopping rule; write its primal to
    ``out``; return the 0-based iteration whose primal that is."""
    height, width = image.shape
    tau = np.float32(TAU)
    tau_over_weight = np.float32(TAU / weight)
    p = np.zeros((2, 2, height, width), np.float32)  # dual field, ping-pong
    stopped_at = max_num_iter - 1
    energy_init = energy_prev = 0.0
    for it in range(max_num_iter):
        d2, grad = _sweep(image, p[it % 2], p[(it + 1) % 2], tau, tau_over_weight)
        energy = (d2 + weight * grad) / (height * width)
        if it == 0:
            energy_init = energy_prev = energy
            if energy <= 0.0:  # a flat plane has no gradient: p stays 0, u = f throughout
                stopped_at = 0
                break
        elif abs(energy_prev - energy) < eps * energy_init:
            stopped_at = it
            break
        else:
            energy_prev = energy
    dual = p[stopped_at % 2]
    for y in range(height):
        _primal_row(image, dual, y, out[y])
    return stopped_at


@njit(cache=True, parallel=True, error_model="numpy")
def chambolle_planes(image, weight, eps, max_num_iter):
    """ROF smoothing of every plane of ``image`` (P, H, W) by Chambolle's algorithm.

    Returns ``(u, iterations)``: ``iterations[i]`` is the 0-based iteration whose primal
    ``u = f - div p`` was returned for plane ``i``. The stopping rule is scikit-image's:
    E_k = (sum d^2 + weight sum |grad u|) / (H W) with d = -div p, stop at the first k > 0
    with |E_{k-1} - E_k| < eps E_0, else after ``max_num_iter`` evaluations.

    Planes run in parallel, each iterated start to finish by one thread: no barrier per
    iteration, which row-parallel sweeps would need (and which stall badly on a loaded
    machine).
    """
    n_planes = image.shape[0]
    out = np.empty_like(image)
    iterations = np.empty(n_planes, np.int64)
    for plane in prange(n_planes):
        iterations[plane] = _chambolle_plane(
            image[plane], out[plane], weight, eps, max_num_iter
        )
    return out, iterations


def chambolle_cpu(
    batch: np.ndarray, weight: float, eps: float, max_num_iter: int
) -> np.ndarray:
    """ROF smoothing of every channel of a float32 NHWC batch (planes in parallel)."""
    n, h, w, c = batch.shape
    planes = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).reshape(n * c, h, w)
    smoothed, _ = chambolle_planes(planes, weight, eps, max_num_iter)
    return np.ascontiguousarray(smoothed.reshape(n, c, h, w).transpose(0, 2, 3, 1))
