"""CUDA kernels of the rolling guidance filter (Numba CUDA), twin of :mod:`._rgf_cpu`.

The whole ``(N, H, W, C)`` batch is filtered per launch: one thread per pixel, the image
index in the grid's z axis. The batch is copied to the device once, every pass reads and
writes device buffers, and only the result is copied back. Taps, kernel radii and spatial
weights come from :mod:`._rgf_common` (OpenCV's conventions); borders are reflect-101.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from ._cuda import block_shape, grid_shape
from ._rgf_common import gaussian_kernel, joint_bilateral_taps

__all__ = ["rolling_guidance_cuda"]


@cuda.jit(device=True, inline=True)
def _reflect101(p, n):
    if n == 1:
        return 0
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * n - 2 - p
    return p


@cuda.jit
def _blur_rows(image, kernel, out):
    x, y, n = cuda.grid(3)
    n_img, height, width, n_ch = image.shape
    if x >= width or y >= height or n >= n_img:
        return
    radius = kernel.size // 2
    for c in range(n_ch):
        acc = float32(0.0)
        for k in range(kernel.size):
            acc += kernel[k] * image[n, y, _reflect101(x + k - radius, width), c]
        out[n, y, x, c] = acc


@cuda.jit
def _blur_cols(image, kernel, out):
    x, y, n = cuda.grid(3)
    n_img, height, width, n_ch = image.shape
    if x >= width or y >= height or n >= n_img:
        return
    radius = kernel.size // 2
    for c in range(n_ch):
        acc = float32(0.0)
        for k in range(kernel.size):
            acc += kernel[k] * image[n, _reflect101(y + k - radius, height), x, c]
        out[n, y, x, c] = acc


@cuda.jit
def _joint_bilateral(src, guide, out, tap_dy, tap_dx, tap_w, range_coeff):
    """out(p) = sum_q w_s w_r S(q) / sum_q w_s w_r, w_r = exp(range_coeff |G(p) - G(q)|_1^2)."""
    x, y, n = cuda.grid(3)
    n_img, height, width, n_ch = src.shape
    if x >= width or y >= height or n >= n_img:
        return
    centre = cuda.local.array(3, float32)
    acc = cuda.local.array(3, float32)
    for c in range(n_ch):
        centre[c] = guide[n, y, x, c]
        acc[c] = float32(0.0)
    wsum = float32(0.0)
    for k in range(tap_w.size):
        yq = _reflect101(y + tap_dy[k], height)
        xq = _reflect101(x + tap_dx[k], width)
        dist = float32(0.0)
        for c in range(n_ch):
            dist += abs(centre[c] - guide[n, yq, xq, c])
        w = tap_w[k] * math.exp(dist * dist * range_coeff)
        for c in range(n_ch):
            acc[c] += w * src[n, yq, xq, c]
        wsum += w
    for c in range(n_ch):
        out[n, y, x, c] = acc[c] / wsum


def rolling_guidance_cuda(
    batch: np.ndarray, sigma_s: float, sigma_r: float, n_iter: int
) -> np.ndarray:
    """Rolling guidance filter of a float32 NHWC batch on the GPU."""
    n_img, height, width, _ = batch.shape
    block = block_shape(height, width)
    grid = grid_shape(block, height, width, n_img)
    tap_dy, tap_dx, tap_w = (cuda.to_device(a) for a in joint_bilateral_taps(sigma_s))
    src = cuda.to_device(batch)
    guide = cuda.device_array_like(src)
    spare = cuda.device_array_like(src)
    kernel = cuda.to_device(gaussian_kernel(sigma_s))
    _blur_rows[grid, block](src, kernel, spare)
    _blur_cols[grid, block](spare, kernel, guide)
    range_coeff = np.float32(-0.5 / (sigma_r * sigma_r))
    for _ in range(n_iter - 1):
        _joint_bilateral[grid, block](src, guide, spare, tap_dy, tap_dx, tap_w, range_coeff)
        guide, spare = spare, guide
    return guide.copy_to_host()
