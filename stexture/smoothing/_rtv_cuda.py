"""CUDA kernels of RTV (Numba CUDA): the whole ``(N, H, W, C)`` batch per launch sequence.

The formulation is the one of :mod:`._rtv_common`; this module only decides how
it runs on a GPU. The batch is copied to the device once, split into channel planes
``(N, C, H, W)`` (x fastest, so every warp reads 128 contiguous bytes), and stays there
through all outer iterations; the structure is copied back once.

Each outer iteration computes the edge weights on the device (separable zero-padded
Gaussian, forward differences, channel means) and then solves
``(1 + lam/2 L) S = I`` for every image and channel at once with a preconditioned
conjugate gradient (PCG) warm-started from the previous estimate. Every (image, channel)
pair is its own system with its own ``alpha``/``beta``, kept in device arrays; dot products
are block partial sums written to a ``partials`` array and summed (in float64, in a fixed
order, so results are deterministic) by one small block per system. A system stops when
its relative residual ``||r|| / ||b||`` falls to ``tol``; its blocks then return at once.
The host looks at the stop flags only every ``_CHECK_EVERY`` iterations, so the GPU is not
drained after every iteration.

Per CG iteration there are four launches: ``_direction_matvec`` (``p = z + beta p`` fused
with ``q = A p`` and the partials of ``p.q``), ``_alpha_step``, ``_update_precondition``
(``x += alpha p``, ``r -= alpha q``, ``z = M^-1 r`` and the partials of ``r.z`` and ``r.r``)
and ``_beta_step``.

Preconditioner: block Jacobi over the thread-block tiles (32 x 8 pixels on a GPU), each
tile's block of ``A`` solved approximately by three symmetric red-black Gauss-Seidel sweeps
from zero (half-steps red, black, red, ..., red: seven, a palindrome, so ``M^-1`` is
symmetric and positive definite) in shared memory. The sweeps cost no DRAM traffic;
compared with Jacobi they add one stored vector (``z``) per iteration. In a NumPy model of
this PCG, three sweeps took most of the gain in CG iterations over Jacobi, and thin 32 x 8
tiles lost little against square ones (figures in ``benchmarks/README.md``); the extra
half-steps are shared memory work hidden behind the kernel's DRAM traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import config, cuda, float32, float64

from ._cuda import grid_shape
from ._rtv_common import GRADIENT_EPS, gaussian_taps, sigma_schedule

__all__ = ["RtvCudaStats", "rtv_cuda", "rtv_cuda_device"]

_MAX_CHANNELS = 3
# Thread-block (= preconditioner tile) shape. The shared arrays are sized for the GPU
# shape; the simulator, which runs one OS thread per GPU thread, gets a smaller one so that
# tests stay quick (the tile shape changes the preconditioner, not the solution).
_GPU_BLOCK = (32, 8)
_SIM_BLOCK = (16, 4)
_TILE_X, _TILE_Y = _GPU_BLOCK
_TILE_THREADS = _TILE_X * _TILE_Y
_GPU_REDUCE_THREADS = 128
_SIM_REDUCE_THREADS = 1
_REDUCE_THREADS_MAX = _GPU_REDUCE_THREADS
# Half-steps of the red-black Gauss-Seidel preconditioner (colours 0, 1, 0, ..., 0).
_SGS_HALF_STEPS = 7
# CG iterations between two host checks of the stop flags (each check is a sync).
_CHECK_EVERY = 4
# Rows of the per-system scalar state.
_RZ, _BB, _ALPHA, _BETA = 0, 1, 2, 3
# Dot products per system in the partial sums (r.z, r.r, b.b at the start of a solve).
_N_DOTS = 3
# Rows of the shared block-sum arrays (dot k of channel c in row k * 3 + c); module-level
# ints, because shared array shapes must be compile-time constants.
_START_ROWS = _N_DOTS * _MAX_CHANNELS
_UPDATE_ROWS = 2 * _MAX_CHANNELS


@dataclass(frozen=True)
class RtvCudaStats:
    """What a CUDA RTV run did: ``cg_iterations[t, n, c]`` is the number of CG iterations
    the system of image ``n``, channel ``c`` ran in outer iteration ``t``."""

    cg_iterations: np.ndarray


def _launch_shapes() -> tuple[tuple[int, int], int]:
    if config.ENABLE_CUDASIM:
        return _SIM_BLOCK, _SIM_REDUCE_THREADS
    return _GPU_BLOCK, _GPU_REDUCE_THREADS


# --------------------------------------------------------------------------- layout


@cuda.jit(cache=True)
def _split_channels(batch, b, x):
    """``(N, H, W, C)`` input -> channel planes ``b`` (right-hand side) and ``x`` (estimate)."""
    j, i, n = cuda.grid(3)
    if i < batch.shape[1] and j < batch.shape[2]:
        for c in range(batch.shape[3]):
            v = batch[n, i, j, c]
            b[n, c, i, j] = v
            x[n, c, i, j] = v


@cuda.jit(cache=True)
def _merge_channels(x, out):
    """Channel planes ``(N, C, H, W)`` -> ``(N, H, W, C)``."""
    j, i, n = cuda.grid(3)
    if i < x.shape[2] and j < x.shape[3]:
        for c in range(x.shape[1]):
            out[n, i, j, c] = x[n, c, i, j]


# --------------------------------------------------------------------------- edge weights


@cuda.jit(cache=True)
def _blur_rows(src, taps, dst):
    """``dst = src`` correlated with ``taps`` along x, zero outside the image."""
    j, i, n = cuda.grid(3)
    h, w = src.shape[2], src.shape[3]
    if i >= h or j >= w:
        return
    radius = taps.shape[0] // 2
    lo = max(0, radius - j)
    hi = min(taps.shape[0], w + radius - j)
    for c in range(src.shape[1]):
        acc = float32(0.0)
        for t in range(lo, hi):
            acc += taps[t] * src[n, c, i, j + t - radius]
        dst[n, c, i, j] = acc


@cuda.jit(cache=True)
def _blur_cols(src, taps, dst):
    """``dst = src`` correlated with ``taps`` along y, zero outside the image."""
    j, i, n = cuda.grid(3)
    h, w = src.shape[2], src.shape[3]
    if i >= h or j >= w:
        return
    radius = taps.shape[0] // 2
    lo = max(0, radius - i)
    hi = min(taps.shape[0], h + radius - i)
    for c in range(src.shape[1]):
        acc = float32(0.0)
        for t in range(lo, hi):
            acc += taps[t] * src[n, c, i + t - radius, j]
        dst[n, c, i, j] = acc


@cuda.jit(cache=True)
def _edge_weights(x, blurred, sharpness, lam_half, ex, ey):
    """``ex[n, i, j]``: coupling of pixel (i, j) to (i, j+1), ``lam/2 * u_x * w``; ``ey``
    likewise to (i+1, j). Zero on the last column / row (no coupling across the border)."""
    j, i, n = cuda.grid(3)
    h, w = x.shape[2], x.shape[3]
    if i >= h or j >= w:
        return
    nc = x.shape[1]
    magnitude = float32(0.0)
    blur_dx = float32(0.0)
    blur_dy = float32(0.0)
    for c in range(nc):
        v = x[n, c, i, j]
        g = blurred[n, c, i, j]
        fx = float32(0.0)
        fy = float32(0.0)
        if j + 1 < w:
            fx = x[n, c, i, j + 1] - v
            blur_dx += abs(blurred[n, c, i, j + 1] - g)
        if i + 1 < h:
            fy = x[n, c, i + 1, j] - v
            blur_dy += abs(blurred[n, c, i + 1, j] - g)
        magnitude += math.sqrt(fx * fx + fy * fy)
    inv_nc = float32(1.0) / float32(nc)
    eps_u = float32(GRADIENT_EPS)
    weight = lam_half / max(magnitude * inv_nc, sharpness)
    ex[n, i, j] = weight / max(blur_dx * inv_nc, eps_u) if j + 1 < w else float32(0.0)
    ey[n, i, j] = weight / max(blur_dy * inv_nc, eps_u) if i + 1 < h else float32(0.0)


# --------------------------------------------------------------------------- device helpers


@cuda.jit(device=True, inline=True)
def _diagonal(ex, ey, n, i, j):
    """Diagonal of ``1 + lam/2 L`` at pixel (i, j)."""
    d = float32(1.0) + ex[n, i, j] + ey[n, i, j]
    if j > 0:
        d += ex[n, i, j - 1]
    if i > 0:
        d += ey[n, i - 1, j]
    return d


@cuda.jit(device=True, inline=True)
def _block_reduce(red, n_rows):
    """Sum ``red[row, :]`` over the block's threads into ``red[row, 0]``; needs a
    power-of-two thread count. Every thread of the block must call it."""
    tid = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    stride = (cuda.blockDim.x * cuda.blockDim.y) // 2
    cuda.syncthreads()
    while stride > 0:
        if tid < stride:
            for row in range(n_rows):
                red[row, tid] += red[row, tid + stride]
        cuda.syncthreads()
        stride //= 2


@cuda.jit(device=True, inline=True)
def _write_partials(red, partials, n, nc, active, n_dots):
    """Thread 0 stores the block sums of dot ``k``, channel ``c`` (row ``k * 3 + c``)."""
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        blk = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x
        for c in range(nc):
            if active[n * nc + c]:
                for k in range(n_dots):
                    partials[n * nc + c, k, blk] = red[k * _MAX_CHANNELS + c, 0]


@cuda.jit(device=True, inline=True)
def _any_active(active, n, nc):
    for c in range(nc):
        if active[n * nc + c]:
            return True
    return False


@cuda.jit(device=True, inline=True)
def _precondition_tile(ex, ey, n, i, j, valid, rloc, nc, zs):
    """``zs = M^-1 r`` on this block's tile: symmetric red-black Gauss-Seidel sweeps
    on the tile's diagonal block of ``A`` (couplings leaving the tile dropped), from zero.
    Every thread of the block must call it; ``rloc`` holds the thread's residuals."""
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    right = float32(0.0)
    left = float32(0.0)
    down = float32(0.0)
    up = float32(0.0)
    inv_diag = float32(0.0)
    if valid:
        inv_diag = float32(1.0) / _diagonal(ex, ey, n, i, j)
        if tx + 1 < cuda.blockDim.x:
            right = ex[n, i, j]
        if tx > 0:
            left = ex[n, i, j - 1]
        if ty + 1 < cuda.blockDim.y:
            down = ey[n, i, j]
        if ty > 0:
            up = ey[n, i - 1, j]
    for c in range(_MAX_CHANNELS):
        zs[c, ty, tx] = float32(0.0)
    cuda.syncthreads()
    colour = (i + j) & 1
    for step in range(_SGS_HALF_STEPS):
        if valid and colour == (step & 1):
            # a constant trip count lets rloc live in registers (unrolled, constant indices)
            for c in range(_MAX_CHANNELS):
                if c >= nc:
                    break
                s = rloc[c]
                if right != 0:
                    s += right * zs[c, ty, tx + 1]
                if left != 0:
                    s += left * zs[c, ty, tx - 1]
                if down != 0:
                    s += down * zs[c, ty + 1, tx]
                if up != 0:
                    s += up * zs[c, ty - 1, tx]
                zs[c, ty, tx] = s * inv_diag
        cuda.syncthreads()


# --------------------------------------------------------------------------- CG kernels


@cuda.jit(cache=True)
def _start_cg(b, x, ex, ey, r, z, p, active, partials):
    """``r = b - A x``, ``z = M^-1 r``, ``p = 0``; partials of ``r.z``, ``r.r``, ``b.b``.
    ``active`` must be all ones here (every system gets its partials)."""
    zs = cuda.shared.array((_MAX_CHANNELS, _TILE_Y, _TILE_X), float32)
    red = cuda.shared.array((_START_ROWS, _TILE_THREADS), float32)
    rloc = cuda.local.array(_MAX_CHANNELS, float32)
    j, i, n = cuda.grid(3)
    nc, h, w = x.shape[1], x.shape[2], x.shape[3]
    valid = i < h and j < w
    for c in range(_MAX_CHANNELS):
        rloc[c] = float32(0.0)
    if valid:
        d = _diagonal(ex, ey, n, i, j)
        for c in range(_MAX_CHANNELS):
            if c >= nc:
                break
            acc = d * x[n, c, i, j]
            if j + 1 < w:
                acc -= ex[n, i, j] * x[n, c, i, j + 1]
            if j > 0:
                acc -= ex[n, i, j - 1] * x[n, c, i, j - 1]
            if i + 1 < h:
                acc -= ey[n, i, j] * x[n, c, i + 1, j]
            if i > 0:
                acc -= ey[n, i - 1, j] * x[n, c, i - 1, j]
            rloc[c] = b[n, c, i, j] - acc
            r[n, c, i, j] = rloc[c]
            p[n, c, i, j] = float32(0.0)
    _precondition_tile(ex, ey, n, i, j, valid, rloc, nc, zs)
    tid = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    for c in range(_MAX_CHANNELS):
        zc = zs[c, cuda.threadIdx.y, cuda.threadIdx.x]
        bc = float32(0.0)
        if valid and c < nc:
            z[n, c, i, j] = zc
            bc = b[n, c, i, j]
        red[c, tid] = rloc[c] * zc
        red[_MAX_CHANNELS + c, tid] = rloc[c] * rloc[c]
        red[2 * _MAX_CHANNELS + c, tid] = bc * bc
    _block_reduce(red, _START_ROWS)
    _write_partials(red, partials, n, nc, active, _N_DOTS)


@cuda.jit(cache=True)
def _direction_matvec(z, p_old, p_new, q, ex, ey, scalars, active, partials):
    """``p = z + beta p`` (into ``p_new``) and ``q = A p``; partials of ``p.q``.

    The new direction at the four neighbours is recomputed from ``z`` and ``p_old`` instead
    of being read back, so the update and the mat-vec need one pass (hence two ``p``
    buffers: a neighbour block may already have written its new ``p``)."""
    red = cuda.shared.array((_MAX_CHANNELS, _TILE_THREADS), float32)
    j, i, n = cuda.grid(3)
    nc, h, w = z.shape[1], z.shape[2], z.shape[3]
    if not _any_active(active, n, nc):
        return  # the whole block belongs to image n: a uniform exit, safe before syncs
    tid = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    valid = i < h and j < w
    d = float32(0.0)
    e_right = float32(0.0)
    e_left = float32(0.0)
    e_down = float32(0.0)
    e_up = float32(0.0)
    if valid:
        e_right = ex[n, i, j]
        e_down = ey[n, i, j]
        d = float32(1.0) + e_right + e_down
        if j > 0:
            e_left = ex[n, i, j - 1]
            d += e_left
        if i > 0:
            e_up = ey[n, i - 1, j]
            d += e_up
    for c in range(_MAX_CHANNELS):
        red[c, tid] = float32(0.0)
        s = n * nc + c
        if valid and c < nc and active[s]:
            beta = float32(scalars[_BETA, s])
            pc = z[n, c, i, j] + beta * p_old[n, c, i, j]
            acc = d * pc
            if e_right != 0:
                acc -= e_right * (z[n, c, i, j + 1] + beta * p_old[n, c, i, j + 1])
            if e_left != 0:
                acc -= e_left * (z[n, c, i, j - 1] + beta * p_old[n, c, i, j - 1])
            if e_down != 0:
                acc -= e_down * (z[n, c, i + 1, j] + beta * p_old[n, c, i + 1, j])
            if e_up != 0:
                acc -= e_up * (z[n, c, i - 1, j] + beta * p_old[n, c, i - 1, j])
            p_new[n, c, i, j] = pc
            q[n, c, i, j] = acc
            red[c, tid] = pc * acc
    _block_reduce(red, _MAX_CHANNELS)
    _write_partials(red, partials, n, nc, active, 1)


@cuda.jit(cache=True)
def _update_precondition(x, r, p, q, z, ex, ey, scalars, active, partials):
    """``x += alpha p``, ``r -= alpha q``, ``z = M^-1 r``; partials of ``r.z`` and ``r.r``."""
    zs = cuda.shared.array((_MAX_CHANNELS, _TILE_Y, _TILE_X), float32)
    red = cuda.shared.array((_UPDATE_ROWS, _TILE_THREADS), float32)
    rloc = cuda.local.array(_MAX_CHANNELS, float32)
    j, i, n = cuda.grid(3)
    nc, h, w = x.shape[1], x.shape[2], x.shape[3]
    if not _any_active(active, n, nc):
        return
    valid = i < h and j < w
    for c in range(_MAX_CHANNELS):
        rloc[c] = float32(0.0)
        s = n * nc + c
        if valid and c < nc and active[s]:
            alpha = float32(scalars[_ALPHA, s])
            x[n, c, i, j] += alpha * p[n, c, i, j]
            rc = r[n, c, i, j] - alpha * q[n, c, i, j]
            r[n, c, i, j] = rc
            rloc[c] = rc
    _precondition_tile(ex, ey, n, i, j, valid, rloc, nc, zs)
    tid = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    for c in range(_MAX_CHANNELS):
        zc = zs[c, cuda.threadIdx.y, cuda.threadIdx.x]
        if valid and c < nc and active[n * nc + c]:
            z[n, c, i, j] = zc
        red[c, tid] = rloc[c] * zc
        red[_MAX_CHANNELS + c, tid] = rloc[c] * rloc[c]
    _block_reduce(red, _UPDATE_ROWS)
    _write_partials(red, partials, n, nc, active, 2)


# --------------------------------------------------------------------------- per-system scalars


@cuda.jit(device=True, inline=True)
def _system_sum(partials, s, k, n_blocks, red):
    """Sum of ``partials[s, k, :n_blocks]`` in float64, in a fixed order, seen by every
    thread of the (one-dimensional) block."""
    tid = cuda.threadIdx.x
    acc = float64(0.0)
    for blk in range(tid, n_blocks, cuda.blockDim.x):
        acc += float64(partials[s, k, blk])
    red[tid] = acc
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if tid < stride:
            red[tid] += red[tid + stride]
        cuda.syncthreads()
        stride //= 2
    total = red[0]
    cuda.syncthreads()
    return total


@cuda.jit(cache=True)
def _start_step(partials, n_blocks, tol2, scalars, active):
    """One block per system: ``rz``, ``b.b``, ``beta = 0`` and whether it must iterate."""
    red = cuda.shared.array(_REDUCE_THREADS_MAX, float64)
    s = cuda.blockIdx.x
    rz = _system_sum(partials, s, 0, n_blocks, red)
    rr = _system_sum(partials, s, 1, n_blocks, red)
    bb = _system_sum(partials, s, 2, n_blocks, red)
    if cuda.threadIdx.x == 0:
        scalars[_RZ, s] = rz
        scalars[_BB, s] = bb
        scalars[_BETA, s] = 0.0
        active[s] = 1 if rr > tol2 * bb else 0


@cuda.jit(cache=True)
def _alpha_step(partials, n_blocks, scalars, active):
    """``alpha = r.z / p.q``; a system with ``p.q <= 0`` (exactly solved) stops."""
    red = cuda.shared.array(_REDUCE_THREADS_MAX, float64)
    s = cuda.blockIdx.x
    if not active[s]:
        return
    pq = _system_sum(partials, s, 0, n_blocks, red)
    if cuda.threadIdx.x == 0:
        if pq > 0.0:
            scalars[_ALPHA, s] = scalars[_RZ, s] / pq
        else:
            scalars[_ALPHA, s] = 0.0
            active[s] = 0


@cuda.jit(cache=True)
def _beta_step(partials, n_blocks, tol2, scalars, active, iterations):
    """Count the iteration; stop at ``r.r <= tol^2 b.b``, else ``beta = r.z / r.z_old``."""
    red = cuda.shared.array(_REDUCE_THREADS_MAX, float64)
    s = cuda.blockIdx.x
    if not active[s]:
        return
    rz = _system_sum(partials, s, 0, n_blocks, red)
    rr = _system_sum(partials, s, 1, n_blocks, red)
    if cuda.threadIdx.x == 0:
        iterations[s] += 1
        if rr <= tol2 * scalars[_BB, s]:
            active[s] = 0
        else:
            scalars[_BETA, s] = rz / scalars[_RZ, s]
            scalars[_RZ, s] = rz


# --------------------------------------------------------------------------- host driver


class _Workspace:
    """Device buffers of one batch shape: channel planes, weights, CG vectors, state."""

    def __init__(self, n: int, h: int, w: int, c: int) -> None:
        (bx, by), self.reduce_threads = _launch_shapes()
        self.block = (bx, by, 1)
        self.grid = grid_shape(self.block, h, w, n)
        planes = (n, c, h, w)
        self.b = cuda.device_array(planes, np.float32)
        self.x = cuda.device_array(planes, np.float32)
        self.r = cuda.device_array(planes, np.float32)
        self.z = cuda.device_array(planes, np.float32)
        self.q = cuda.device_array(planes, np.float32)
        self.p = [cuda.device_array(planes, np.float32) for _ in range(2)]
        self.ex = cuda.device_array((n, h, w), np.float32)
        self.ey = cuda.device_array((n, h, w), np.float32)
        self.n_blocks = self.grid[0] * self.grid[1]
        self.n_systems = n * c
        self.partials = cuda.device_array((n * c, _N_DOTS, self.n_blocks), np.float32)
        self.scalars = cuda.device_array((4, n * c), np.float64)
        self.active = cuda.device_array(n * c, np.int32)
        self.iterations = cuda.device_array(n * c, np.int32)


def _compute_edge_weights(ws: _Workspace, taps, sharpness: float, lam_half: float) -> None:
    # q and z are free until the CG starts: they hold the blur passes.
    launch = (ws.grid, ws.block)
    _blur_rows[launch](ws.x, taps, ws.q)
    _blur_cols[launch](ws.q, taps, ws.z)
    _edge_weights[launch](ws.x, ws.z, np.float32(sharpness), np.float32(lam_half), ws.ex, ws.ey)


def _solve(ws: _Workspace, tol: float, max_cg_iter: int) -> None:
    """PCG on all systems at once, warm-started from ``ws.x``."""
    launch = (ws.grid, ws.block)
    reduce_launch = (ws.n_systems, ws.reduce_threads)
    tol2 = np.float64(tol) ** 2
    n_blocks = np.int32(ws.n_blocks)
    ws.active.copy_to_device(np.ones(ws.n_systems, np.int32))
    ws.iterations.copy_to_device(np.zeros(ws.n_systems, np.int32))
    _start_cg[launch](ws.b, ws.x, ws.ex, ws.ey, ws.r, ws.z, ws.p[0], ws.active, ws.partials)
    _start_step[reduce_launch](ws.partials, n_blocks, tol2, ws.scalars, ws.active)
    for it in range(max_cg_iter):
        if it % _CHECK_EVERY == 0 and not ws.active.copy_to_host().any():
            return
        p_old, p_new = ws.p[it % 2], ws.p[(it + 1) % 2]
        _direction_matvec[launch](
            ws.z, p_old, p_new, ws.q, ws.ex, ws.ey, ws.scalars, ws.active, ws.partials
        )
        _alpha_step[reduce_launch](ws.partials, n_blocks, ws.scalars, ws.active)
        _update_precondition[launch](
            ws.x, ws.r, p_new, ws.q, ws.z, ws.ex, ws.ey, ws.scalars, ws.active, ws.partials
        )
        _beta_step[reduce_launch](ws.partials, n_blocks, tol2, ws.scalars, ws.active, ws.iterations)


def rtv_cuda_device(
    batch,
    out,
    *,
    lam: float,
    sigma: float,
    sharpness: float,
    n_iter: int,
    tol: float,
    max_cg_iter: int,
) -> RtvCudaStats:
    """RTV of a float32 ``(N, H, W, C)`` device array ``batch`` into the device array
    ``out`` of the same shape, without host transfers of the images (the kernel-only entry
    point; parameters as in :func:`stexture.smoothing.rtv.rtv_smooth`, already validated).
    """
    n, h, w, c = batch.shape
    if c > _MAX_CHANNELS:
        raise ValueError(f"at most {_MAX_CHANNELS} channels are supported, got {c}")
    ws = _Workspace(n, h, w, c)
    launch = (ws.grid, ws.block)
    _split_channels[launch](batch, ws.b, ws.x)
    iterations = []
    for sigma_t in sigma_schedule(sigma, n_iter):
        taps = cuda.to_device(gaussian_taps(sigma_t).astype(np.float32))
        _compute_edge_weights(ws, taps, sharpness, lam / 2.0)
        _solve(ws, tol, max_cg_iter)
        iterations.append(ws.iterations.copy_to_host().reshape(n, c))
    _merge_channels[launch](ws.x, out)
    return RtvCudaStats(cg_iterations=np.stack(iterations))


def rtv_cuda(
    batch: np.ndarray,
    *,
    lam: float,
    sigma: float,
    sharpness: float,
    n_iter: int,
    tol: float,
    max_cg_iter: int,
) -> np.ndarray:
    """RTV structure of a float32 C-contiguous ``(N, H, W, C)`` batch on the GPU.

    The batch is copied to the device once and the structure back once; see the module
    docstring for the kernels. Parameters are those of
    :func:`stexture.smoothing.rtv.rtv_smooth` (validated there).
    """
    d_batch = cuda.to_device(np.ascontiguousarray(batch, dtype=np.float32))
    d_out = cuda.device_array_like(d_batch)
    rtv_cuda_device(
        d_batch,
        d_out,
        lam=lam,
        sigma=sigma,
        sharpness=sharpness,
        n_iter=n_iter,
        tol=tol,
        max_cg_iter=max_cg_iter,
    )
    return d_out.copy_to_host()
