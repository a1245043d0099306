"""CPU kernels of the rolling guidance filter (Numba ``njit(parallel=True)``).

Images are processed as planar, border-padded float32 planes ``(N, C, H + 2r, W + 2r)`` so
that every inner loop runs over contiguous memory along x without border tests and LLVM can
vectorise it. Borders are OpenCV's ``BORDER_REFLECT_101`` (``gfedcb|abcdefgh|gfedcba``),
folded repeatedly when the border is wider than the image, as ``cv::borderInterpolate``
does.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._rgf_common import gaussian_kernel, jbf_radius, joint_bilateral_taps

__all__ = ["rolling_guidance"]

_ROWS_PER_TASK = 8  # rows filtered per parallel task, so scratch rows are allocated rarely


@njit(cache=True, inline="always")
def _reflect101(p, n):
    if n == 1:
        return 0
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * n - 2 - p
    return p


@njit(cache=True, error_model="numpy")
def _fill_border(planes, pad):
    """Overwrite the ``pad``-wide frame of each plane by reflecting its interior.

    Serial: the frame is a few percent of the pixels, cheaper than a parallel region."""
    n_img, n_ch, hp, wp = planes.shape
    height, width = hp - 2 * pad, wp - 2 * pad
    for task in range(n_img * n_ch):
        n, c = task // n_ch, task % n_ch
        plane = planes[n, c]
        for yp in range(pad, pad + height):
            for xp in range(pad):
                plane[yp, xp] = plane[yp, pad + _reflect101(xp - pad, width)]
                xr = pad + width + xp
                plane[yp, xr] = plane[yp, pad + _reflect101(xr - pad, width)]
        for yp in range(pad):
            plane[yp, :] = plane[pad + _reflect101(yp - pad, height), :]
            yr = pad + height + yp
            plane[yr, :] = plane[pad + _reflect101(yr - pad, height), :]


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def _gaussian_blur(batch, kernel, pad):
    """Separable Gaussian of ``batch`` (NHWC); returns ``(blurred, source)``, both as padded
    planes (border ``pad``): ``source`` is ``batch`` itself, copied out of the reflected
    rows that the horizontal pass builds anyway.

    The kernel is symmetric, so mirrored taps share one multiply: k_c s(x) + sum_j k_j
    (s(x - r + j) + s(x + r - j)).
    """
    n_img, height, width, n_ch = batch.shape
    radius = kernel.size // 2
    centre = kernel[radius]
    blocks = (height + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    rows = np.empty((n_img, n_ch, height, width), np.float32)
    source = np.empty((n_img, n_ch, height + 2 * pad, width + 2 * pad), np.float32)
    margin = max(radius, pad)  # the row, reflected far enough for both uses
    for task in prange(n_img * blocks):
        n, block = task // blocks, task % blocks
        line = np.empty(width + 2 * margin, np.float32)
        for y in range(block * _ROWS_PER_TASK, min(height, (block + 1) * _ROWS_PER_TASK)):
            for c in range(n_ch):
                for x in range(width):
                    line[margin + x] = batch[n, y, x, c]
                for i in range(margin):
                    line[i] = line[margin + _reflect101(i - margin, width)]
                    line[margin + width + i] = line[margin + _reflect101(width + i, width)]
                source[n, c, pad + y, :] = line[margin - pad : margin + width + pad]
                acc = rows[n, c, y]
                for x in range(width):
                    acc[x] = centre * line[margin + x]
                for j in range(radius):
                    kj = kernel[j]
                    lo, hi = line[margin - radius + j :], line[margin + radius - j :]
                    for x in range(width):
                        acc[x] += kj * (lo[x] + hi[x])
    out = np.empty((n_img, n_ch, height + 2 * pad, width + 2 * pad), np.float32)
    for task in prange(n_img * blocks):
        n, block = task // blocks, task % blocks
        for y in range(block * _ROWS_PER_TASK, min(height, (block + 1) * _ROWS_PER_TASK)):
            for c in range(n_ch):
                acc = out[n, c, pad + y, pad : pad + width]
                mid = rows[n, c, y]
                for x in range(width):
                    acc[x] = centre * mid[x]
                for j in range(radius):
                    kj = kernel[j]
                    lo = rows[n, c, _reflect101(y - radius + j, height)]
                    hi = rows[n, c, _reflect101(y + radius - j, height)]
                    for x in range(width):
                        acc[x] += kj * (lo[x] + hi[x])
    _fill_border(out, pad)
    _fill_border(source, pad)
    return out, source


# 2**f on [0, 1): weighted least-squares fit on Chebyshev nodes, max relative error 1.6e-7
_EXP2_COEFFS = (
    np.float32(0.00187623), np.float32(0.00899258), np.float32(0.05582361),
    np.float32(0.24015453), np.float32(0.69315296), np.float32(0.99999994),
)
_LOG2E = np.float32(1.4426950408889634)
# below 2**-125 a range weight is negligible next to the centre weight 1; the clamp also keeps
# the exponent field of 2**n positive in the bit assembly below
_MIN_EXP2 = np.float32(-125.0)


@njit(cache=True, inline="always")
def _exp2_fraction(f):
    c0, c1, c2, c3, c4, c5 = _EXP2_COEFFS
    return ((((c0 * f + c1) * f + c2) * f + c3) * f + c4) * f + c5


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def _joint_bilateral(src, guide, out, pad, tap_dy, tap_dx, tap_w, sigma_r):
    """One joint bilateral pass: ``out`` interior <- filter of ``src`` guided by ``guide``.

    out(p) = sum_q w_s(p - q) w_r(p, q) S(q) / sum_q w_s(p - q) w_r(p, q) over the disc,
    w_r = exp(-|G(p) - G(q)|_1^2 / (2 sigma_r^2)). The range weight is evaluated as
    2**t = 2**floor(t) * 2**frac(t): a polynomial for the fraction, and the integer power
    added straight into the float's exponent bits through an int32 view of the weight row.
    That keeps the tap loop free of calls and gathers, so it vectorises.
    """
    n_img, n_ch, hp, wp = src.shape
    height, width = hp - 2 * pad, wp - 2 * pad
    blocks = (height + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    n_taps = tap_w.size
    log2_coeff = np.float32(-0.5 / (sigma_r * sigma_r)) * _LOG2E
    for task in prange(n_img * blocks):
        n, block = task // blocks, task % blocks
        # accumulators (S_0, S_1, S_2, weight sum) interleaved in one flat array: one store
        # stream per loop keeps LLVM's alias checks few enough to vectorise (a 2-D (W, 4)
        # array measured 4x slower here)
        acc = np.empty(4 * width, np.float32)
        weight = np.empty(width, np.float32)
        weight_bits = weight.view(np.int32)
        for y in range(block * _ROWS_PER_TASK, min(height, (block + 1) * _ROWS_PER_TASK)):
            yc = y + pad
            acc[:] = 0.0
            for k in range(n_taps):
                yq = yc + tap_dy[k]
                xq = pad + tap_dx[k]
                if n_ch == 3:
                    p0, p1, p2 = guide[n, 0, yc, pad:], guide[n, 1, yc, pad:], guide[n, 2, yc, pad:]
                    q0, q1, q2 = guide[n, 0, yq, xq:], guide[n, 1, yq, xq:], guide[n, 2, yq, xq:]
                    for x in range(width):
                        d = abs(p0[x] - q0[x]) + abs(p1[x] - q1[x]) + abs(p2[x] - q2[x])
                        t = max(d * d * log2_coeff, _MIN_EXP2)
                        whole = np.floor(t)
                        weight[x] = _exp2_fraction(t - whole)
                        weight_bits[x] += np.int32(whole) << 23
                else:
                    p0, q0 = guide[n, 0, yc, pad:], guide[n, 0, yq, xq:]
                    for x in range(width):
                        d = p0[x] - q0[x]
                        t = max(d * d * log2_coeff, _MIN_EXP2)
                        whole = np.floor(t)
                        weight[x] = _exp2_fraction(t - whole)
                        weight_bits[x] += np.int32(whole) << 23
                sw = tap_w[k]
                if n_ch == 3:
                    s0, s1, s2 = src[n, 0, yq, xq:], src[n, 1, yq, xq:], src[n, 2, yq, xq:]
                    for x in range(width):
                        w = sw * weight[x]
                        acc[4 * x] += w * s0[x]
                        acc[4 * x + 1] += w * s1[x]
                        acc[4 * x + 2] += w * s2[x]
                        acc[4 * x + 3] += w
                else:
                    s0 = src[n, 0, yq, xq:]
                    for x in range(width):
                        w = sw * weight[x]
                        acc[4 * x] += w * s0[x]
                        acc[4 * x + 3] += w
            for c in range(n_ch):
                dst = out[n, c, yc, pad:]
                for x in range(width):
                    dst[x] = acc[4 * x + c] / acc[4 * x + 3]
    _fill_border(out, pad)


@njit(cache=True, parallel=True, error_model="numpy")
def _to_nhwc(planes, pad):
    n_img, n_ch, hp, wp = planes.shape
    height, width = hp - 2 * pad, wp - 2 * pad
    out = np.empty((n_img, height, width, n_ch), np.float32)
    for task in prange(n_img * height):
        n, y = task // height, task % height
        for x in range(width):
            for c in range(n_ch):
                out[n, y, x, c] = planes[n, c, y + pad, x + pad]
    return out


def rolling_guidance(
    batch: np.ndarray, sigma_s: float, sigma_r: float, n_iter: int
) -> np.ndarray:
    """Rolling guidance filter of a float32 NHWC batch (see :mod:`stexture.smoothing.rgf`)."""
    tap_dy, tap_dx, tap_w = joint_bilateral_taps(sigma_s)
    pad = jbf_radius(sigma_s)
    guide, src = _gaussian_blur(batch, gaussian_kernel(sigma_s), pad)
    spare = np.empty_like(guide)
    for _ in range(n_iter - 1):
        _joint_bilateral(src, guide, spare, pad, tap_dy, tap_dx, tap_w, float(sigma_r))
        guide, spare = spare, guide
    return _to_nhwc(guide, pad)
