"""CUDA kernels of Chambolle's TV algorithm (Numba CUDA), twin of :mod:`._tv_cpu`.

The batch stays ``(N, H, W, C)`` on the device; plane ``n * C + c`` (one image channel,
smoothed on its own as in scikit-image) is the grid's z index. One thread per pixel and
iteration: it forms ``u = f - div p_old`` at its pixel and at the two forward neighbours,
writes ``p_new`` (ping-pong buffers, so no thread reads what another writes), and adds
``d^2`` and ``|grad u|`` to shared-memory block sums. A second kernel (one block per plane)
sums the block partials, applies scikit-image's stopping rule and marks finished planes
inactive, so the image never leaves the device; the host reads back only the per-plane
active flags, every few iterations, to stop launching when all planes are done.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64

from ._cuda import MAX_THREADS, block_shape, grid_shape
from ._tv_common import TAU

__all__ = ["chambolle_cuda"]

_DECIDE_THREADS = 32  # one warp per plane sums its block partials
_CHECK_EVERY = 8  # iterations between host reads of the active flags


@cuda.jit(device=True, inline=True)
def _neg_divergence(p, plane, y, x):
    d = -(p[plane, 0, y, x] + p[plane, 1, y, x])
    if y > 0:
        d += p[plane, 0, y - 1, x]
    if x > 0:
        d += p[plane, 1, y, x - 1]
    return d


@cuda.jit
def _chambolle_step(image, p_old, p_new, tau, tau_over_weight, active, partial):
    x, y, plane = cuda.grid(3)
    n_ch = image.shape[3]
    height, width = image.shape[1], image.shape[2]
    if active[plane] == 0:  # uniform over the block: the whole block leaves together
        return
    n, c = plane // n_ch, plane % n_ch
    tid = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    sum_d2 = cuda.shared.array(MAX_THREADS, float32)
    sum_grad = cuda.shared.array(MAX_THREADS, float32)
    d2 = float32(0.0)
    grad = float32(0.0)
    if x < width and y < height:
        d = _neg_divergence(p_old, plane, y, x)
        u = image[n, y, x, c] + d
        d2 = d * d
        gy = float32(0.0)
        gx = float32(0.0)
        if y + 1 < height:
            gy = (image[n, y + 1, x, c] + _neg_divergence(p_old, plane, y + 1, x)) - u
        if x + 1 < width:
            gx = (image[n, y, x + 1, c] + _neg_divergence(p_old, plane, y, x + 1)) - u
        grad = math.sqrt(gy * gy + gx * gx)
        denom = grad * tau_over_weight + float32(1.0)
        p_new[plane, 0, y, x] = (p_old[plane, 0, y, x] - tau * gy) / denom
        p_new[plane, 1, y, x] = (p_old[plane, 1, y, x] - tau * gx) / denom
    sum_d2[tid] = d2
    sum_grad[tid] = grad
    cuda.syncthreads()
    stride = (cuda.blockDim.x * cuda.blockDim.y) // 2
    while stride > 0:
        if tid < stride:
            sum_d2[tid] += sum_d2[tid + stride]
            sum_grad[tid] += sum_grad[tid + stride]
        cuda.syncthreads()
        stride //= 2
    if tid == 0:
        part = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x
        partial[plane, part, 0] = sum_d2[0]
        partial[plane, part, 1] = sum_grad[0]


@cuda.jit
def _decide(partial, it, weight, eps, n_pixels, active, energy_init, energy_prev, stopped_at):
    """Per plane: E = (sum d^2 + weight sum |g|) / n_pixels; stop when the relative change
    drops below eps (scikit-image's rule), or at once for a flat plane (E_0 = 0)."""
    plane = cuda.blockIdx.x
    if active[plane] == 0:
        return
    tid = cuda.threadIdx.x
    sum_d2 = cuda.shared.array(_DECIDE_THREADS, float64)
    sum_grad = cuda.shared.array(_DECIDE_THREADS, float64)
    a = float64(0.0)
    b = float64(0.0)
    for j in range(tid, partial.shape[1], _DECIDE_THREADS):
        a += partial[plane, j, 0]
        b += partial[plane, j, 1]
    sum_d2[tid] = a
    sum_grad[tid] = b
    cuda.syncthreads()
    stride = _DECIDE_THREADS // 2
    while stride > 0:
        if tid < stride:
            sum_d2[tid] += sum_d2[tid + stride]
            sum_grad[tid] += sum_grad[tid + stride]
        cuda.syncthreads()
        stride //= 2
    if tid == 0:
        energy = (sum_d2[0] + weight * sum_grad[0]) / n_pixels
        stop = False
        if it == 0:
            energy_init[plane] = energy
            energy_prev[plane] = energy
            stop = energy <= 0.0
        elif abs(energy_prev[plane] - energy) < eps * energy_init[plane]:
            stop = True
        else:
            energy_prev[plane] = energy
        if stop:
            active[plane] = 0
            stopped_at[plane] = it


@cuda.jit
def _zero_dual(p):
    x, y, plane = cuda.grid(3)
    if x < p.shape[3] and y < p.shape[2]:
        p[plane, 0, y, x] = float32(0.0)
        p[plane, 1, y, x] = float32(0.0)


@cuda.jit
def _primal_out(image, p, stopped_at, out):
    x, y, plane = cuda.grid(3)
    n_ch = image.shape[3]
    if x >= image.shape[2] or y >= image.shape[1]:
        return
    n, c = plane // n_ch, plane % n_ch
    dual = p[stopped_at[plane] % 2]
    out[n, y, x, c] = image[n, y, x, c] + _neg_divergence(dual, plane, y, x)


def chambolle_cuda(
    batch: np.ndarray, weight: float, eps: float, max_num_iter: int
) -> np.ndarray:
    """ROF smoothing of every channel of a float32 NHWC batch on the GPU."""
    n_img, height, width, n_ch = batch.shape
    n_planes = n_img * n_ch
    block = block_shape(height, width)
    grid = grid_shape(block, height, width, n_planes)
    image = cuda.to_device(batch)
    p = cuda.device_array((2, n_planes, 2, height, width), np.float32)
    _zero_dual[grid, block](p[0])  # iteration 0 reads p = 0; p[1] is written before read
    partial = cuda.device_array((n_planes, grid[0] * grid[1], 2), np.float32)
    active = cuda.to_device(np.ones(n_planes, np.int32))
    energy_init = cuda.device_array(n_planes, np.float64)
    energy_prev = cuda.device_array(n_planes, np.float64)
    stopped_at = cuda.to_device(np.full(n_planes, max_num_iter - 1, np.int64))
    tau = np.float32(TAU)
    tau_over_weight = np.float32(TAU / weight)
    for it in range(max_num_iter):
        _chambolle_step[grid, block](
            image, p[it % 2], p[(it + 1) % 2], tau, tau_over_weight, active, partial
        )
        _decide[n_planes, _DECIDE_THREADS](
            partial, it, weight, eps, height * width, active, energy_init, energy_prev,
            stopped_at,
        )
        if (it + 1) % _CHECK_EVERY == 0 and not active.copy_to_host().any():
            break
    out = cuda.device_array_like(image)
    _primal_out[grid, block](image, p, stopped_at, out)
    return out.copy_to_host()
