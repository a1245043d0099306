"""RTV on the CPU: Numba kernels for the edge weights and a preconditioned conjugate gradient.

Images are held planar, ``(C, H + 2, W + 2)`` float32 with a zero halo, so the 5-point
stencil needs no border branches and vectorises; edge-weight arrays are ``(H + 2, W + 2)``
with a zero halo too (a zero weight is "no coupling", which is how the border is defined).
Reductions are summed per image row inside ``prange`` and the row sums added serially in
float64, so results do not depend on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._rtv_common import GRADIENT_EPS, gaussian_taps, sigma_schedule

__all__ = ["rtv_cpu"]

# Only reassociation (so float sums vectorise) and multiply-add contraction: both change
# roundings at the 1e-7 level, far inside the solver tolerance, and stay deterministic for a
# given build because each row is reduced by one thread in a fixed order.
_FAST = {"reassoc", "contract"}


@njit(parallel=True, cache=True, fastmath=_FAST)
def _blur_rows(x, taps, dst):
    """Zero-padded 'same' correlation of the rows of ``x``'s interior with symmetric ``taps``."""
    n_ch, h, w = dst.shape
    half = taps.size // 2
    for ci in prange(n_ch * h):
        c = ci // h
        i = ci % h
        out = dst[c, i]
        out[:] = 0.0
        for k in range(taps.size):
            t = taps[k]
            lo = max(0, half - k)
            hi = min(w, w + half - k)
            # slices with non-negative loop indices keep the inner loop free of
            # negative-index checks, so it vectorises
            src = x[c, i + 1, lo + k - half + 1:hi + k - half + 1]
            seg = out[lo:hi]
            for j in range(hi - lo):
                seg[j] += t * src[j]


@njit(parallel=True, cache=True, fastmath=_FAST)
def _blur_cols(src, taps, dst):
    """Zero-padded 'same' correlation of the columns of ``src`` with symmetric ``taps``."""
    n_ch, h, w = src.shape
    half = taps.size // 2
    for ci in prange(n_ch * h):
        c = ci // h
        i = ci % h
        for j in range(w):
            dst[c, i, j] = 0.0
        for k in range(max(0, half - i), min(taps.size, h - i + half)):
            t = taps[k]
            row = i + k - half
            for j in range(w):
                dst[c, i, j] += t * src[c, row, j]


@njit(parallel=True, cache=True)
def _edge_weights(x, blurred, sharpness, grad_eps, lam_half, ex, ey):
    """``lam_half * u * w`` of every right (``ex``) and down (``ey``) edge of the interior;
    zero on the last column of ``ex`` and the last row of ``ey``.

    The channel sums go through row buffers, channel by channel, with the last column (no
    right neighbour) and the last row (no lower one) outside the inner loops: branch-free
    inner loops vectorise, ten times faster than a per-pixel loop over the channels, and
    the sums run in the same order, so the weights are the same to the bit."""
    n_ch, h, w = blurred.shape
    inv_c = np.float32(1.0 / n_ch)
    zero = np.float32(0.0)
    for i in prange(h):
        mag = np.zeros(w, np.float32)
        bx = np.zeros(w, np.float32)
        by = np.zeros(w, np.float32)
        has_down = i + 1 < h
        for c in range(n_ch):
            row = x[c, i + 1]
            below = x[c, i + 2]
            brow = blurred[c, i]
            if has_down:
                bnext = blurred[c, i + 1]
                for j in range(w - 1):
                    fx = row[j + 2] - row[j + 1]
                    fy = below[j + 1] - row[j + 1]
                    mag[j] += np.sqrt(fx * fx + fy * fy)
                    bx[j] += abs(brow[j + 1] - brow[j])
                    by[j] += abs(bnext[j] - brow[j])
                fy = below[w] - row[w]
                mag[w - 1] += np.sqrt(zero * zero + fy * fy)
                by[w - 1] += abs(bnext[w - 1] - brow[w - 1])
            else:
                for j in range(w - 1):
                    fx = row[j + 2] - row[j + 1]
                    mag[j] += np.sqrt(fx * fx + zero * zero)
                    bx[j] += abs(brow[j + 1] - brow[j])
                mag[w - 1] += np.sqrt(zero * zero + zero * zero)
        exr = ex[i + 1]
        eyr = ey[i + 1]
        for j in range(w):
            wt = lam_half / max(mag[j] * inv_c, sharpness)
            exr[j + 1] = wt / max(bx[j] * inv_c, grad_eps)
            eyr[j + 1] = wt / max(by[j] * inv_c, grad_eps) if has_down else zero
        exr[w] = zero


@njit(parallel=True, cache=True, fastmath=_FAST)
def _residual(x, b, ex, ey, diag, r, partial):
    """``r = b - A x``; ``partial[i]`` gets row ``i``'s share of ``||r||^2`` and
    ``partial[h + i]`` its share of ``||b||^2``."""
    n_ch = x.shape[0]
    h = x.shape[1] - 2
    w = x.shape[2] - 2
    for i in prange(1, h + 1):
        rr = 0.0
        bb = 0.0
        for c in range(n_ch):
            for j in range(1, w + 1):
                ax = (diag[i, j] * x[c, i, j] - ex[i, j] * x[c, i, j + 1]
                      - ex[i, j - 1] * x[c, i, j - 1] - ey[i, j] * x[c, i + 1, j]
                      - ey[i - 1, j] * x[c, i - 1, j])
                v = b[c, i, j] - ax
                r[c, i, j] = v
                rr += v * v
                bb += b[c, i, j] * b[c, i, j]
        partial[i - 1] = rr
        partial[h + i - 1] = bb


@njit(parallel=True, cache=True, fastmath=_FAST)
def _direction_matvec(z, p_old, beta, ex, ey, diag, p, q, partial):
    """``p = z + beta p_old`` and ``q = A p`` in one pass, with per-row shares of ``<p, q>``.

    Each row recomputes the new direction at its four neighbours from ``z`` and ``p_old``
    (read only here) rather than waiting for the threads that own them: one parallel region,
    hence one barrier, instead of two; barriers are what a busy machine makes expensive."""
    n_ch = p.shape[0]
    h = p.shape[1] - 2
    w = p.shape[2] - 2
    bt = np.float32(beta)
    for i in prange(1, h + 1):
        acc = 0.0
        for c in range(n_ch):
            for j in range(1, w + 1):
                centre = z[c, i, j] + bt * p_old[c, i, j]
                west = z[c, i, j - 1] + bt * p_old[c, i, j - 1]
                east = z[c, i, j + 1] + bt * p_old[c, i, j + 1]
                north = z[c, i - 1, j] + bt * p_old[c, i - 1, j]
                south = z[c, i + 1, j] + bt * p_old[c, i + 1, j]
                v = (diag[i, j] * centre - ex[i, j] * east - ex[i, j - 1] * west
                     - ey[i, j] * south - ey[i - 1, j] * north)
                p[c, i, j] = centre
                q[c, i, j] = v
                acc += v * centre
        partial[i - 1] = acc


# --- the preconditioner --------------------------------------------------------------------
#
# Modified incomplete Cholesky, chosen over Jacobi by measurement (figures and the run in
# benchmarks/README.md): MIC needs a few times fewer CG iterations for the same accuracy,
# a count that barely depends on the image. A MIC iteration costs more than a Jacobi one
# (the triangular solves are serial recurrences along rows), yet the whole smoothing was
# faster on one thread and on two: fewer iterations also mean fewer parallel regions,
# whose barriers a busy machine makes costly. Stripes of 64 rows (block Jacobi between
# stripes, so they run in parallel) cost no iterations. A coarse-grid correction inside
# every CG iteration saved too few iterations for its extra work
# (benchmarks/bench_rtv_preconditioner.py); one coarse-grid start before each re-weighted
# solve does pay (below). With that start taking the smooth part of the error, a weaker
# fill-in weight (0.85 rather than 0.97) needs fewer iterations at a better worst-case
# PSNR against the exact solve (benchmarks/README.md).

_STRIPE_ROWS = 64
_MIC_TAU = 0.85  # weight of the dropped fill-in moved onto the diagonal (0 = plain IC(0))


@njit(inline="always")
def _stripe(h, n_stripes, s):
    """Padded row range ``[r0, r1)`` of stripe ``s``."""
    return 1 + s * h // n_stripes, 1 + (s + 1) * h // n_stripes


@njit(parallel=True, cache=True, fastmath={"contract"})
def _mic_factor(ex, ey, n_stripes, tau, diag, pinv, ly, fw, bw):
    """The diagonal ``diag`` of ``A = 1 + L`` (``L`` weighted by ``ex``, ``ey``) and the
    modified incomplete Cholesky MIC(0) (fill-in weight ``tau``) of ``A`` restricted to
    each horizontal stripe: block Jacobi over stripes, so stripes factor and solve in
    parallel. ``A ~ L L^T`` with ``L``'s diagonal ``1/pinv``; ``ly = ey * pinv`` (zero on a
    stripe's last row), ``fw``/``bw`` the west/east recurrence coefficients of the
    forward/backward substitutions.

    Each row takes three passes: a vectorisable one for what the row above contributes to
    each pivot, the serial west-to-east recurrence of the pivots, kept to one multiply-add
    and one division per pixel by carrying ``1/pivot`` rather than its square root (which a
    vectorisable pass takes after), and a vectorisable one for the coefficients. Twice as
    fast as one serial pass with a square root and a division on its critical path."""
    h = ex.shape[0] - 2
    w = ex.shape[1] - 2
    one = np.float32(1.0)
    zero = np.float32(0.0)
    quarter = np.float32(0.25)
    for s in prange(n_stripes):
        r0, r1 = _stripe(h, n_stripes, s)
        base = np.empty(w + 2, np.float32)
        west = np.empty(w + 2, np.float32)
        for i in range(r0, r1):
            last_row = i + 1 == r1
            first_row = i == r0
            for j in range(1, w + 1):
                d = one + ex[i, j] + ex[i, j - 1] + ey[i, j] + ey[i - 1, j]
                diag[i, j] = d
                e = d
                if not first_row:
                    g = pinv[i - 1, j] * pinv[i - 1, j]
                    e = d - g * (ey[i - 1, j] * ey[i - 1, j] + tau * ey[i - 1, j] * ex[i - 1, j])
                base[j] = e
                # the west neighbour's fill-in towards the row below stays in the stripe
                down = zero if last_row else ey[i, j - 1]
                west[j] = ex[i, j - 1] * ex[i, j - 1] + tau * ex[i, j - 1] * down
            g = zero  # 1/pivot of the western neighbour (none west of column 1)
            for j in range(1, w + 1):
                e = base[j] - west[j] * g
                d = diag[i, j]
                if e < quarter * d:  # guard against a tiny pivot (Bridson's safety)
                    e = d
                g = one / e
                pinv[i, j] = g
            for j in range(1, w + 1):
                pinv[i, j] = np.sqrt(pinv[i, j])
            for j in range(1, w + 1):
                pv = pinv[i, j]
                ly[i, j] = zero if last_row else ey[i, j] * pv
                fw[i, j] = pv * ex[i, j - 1] * pinv[i, j - 1]
                bw[i, j] = pv * pv * ex[i, j]


@njit(inline="always")
def _forward_vertical(r, pinv, ly, z, i, first):
    """Row ``i`` of the forward substitution without its west recurrence; a stripe's
    ``first`` row has no northern term."""
    n_ch = r.shape[0]
    w = r.shape[2] - 2
    for c in range(n_ch):
        if first:
            for j in range(1, w + 1):
                z[c, i, j] = pinv[i, j] * r[c, i, j]
        else:
            for j in range(1, w + 1):
                z[c, i, j] = pinv[i, j] * (r[c, i, j] + ly[i - 1, j] * z[c, i - 1, j])


@njit(inline="always")
def _backward_vertical(pinv, ly, z, i, last):
    """Row ``i`` of the backward substitution without its east recurrence; a stripe's
    ``last`` row has no southern term (nor reads the next stripe, which another thread owns)."""
    n_ch = z.shape[0]
    w = z.shape[2] - 2
    for c in range(n_ch):
        if last:
            for j in range(1, w + 1):
                z[c, i, j] = pinv[i, j] * z[c, i, j]
        else:
            for j in range(1, w + 1):
                z[c, i, j] = pinv[i, j] * (z[c, i, j] + ly[i, j] * z[c, i + 1, j])


@njit(inline="always")
def _west_recurrence(z, fw, i):
    """``z[c, i, j] += fw[i, j] z[c, i, j - 1]`` from west to east, the forward substitution's
    serial part. The running value stays in a register instead of being stored and
    reloaded: that store-to-load round trip on the critical path made it twice as slow."""
    for c in range(z.shape[0]):
        carry = z[c, i, 1]
        for j in range(2, z.shape[2] - 1):
            carry = z[c, i, j] + fw[i, j] * carry
            z[c, i, j] = carry


@njit(inline="always")
def _east_recurrence(z, bw, i):
    """``z[c, i, j] += bw[i, j] z[c, i, j + 1]`` from east to west (the backward
    substitution's serial part), carried in a register like :func:`_west_recurrence`."""
    w = z.shape[2] - 2
    for c in range(z.shape[0]):
        carry = z[c, i, w]
        for j in range(w - 1, 0, -1):
            carry = z[c, i, j] + bw[i, j] * carry
            z[c, i, j] = carry


@njit(inline="always")
def _forward_rgb(r, pinv, ly, fw, z, i, first):
    """Row ``i`` of the forward substitution for three channels in one pass: the vertical
    term and the west recurrence, the three recurrences interleaved and carried in
    registers so that their latencies overlap. The same operations in the same order as
    :func:`_forward_vertical` then :func:`_west_recurrence` (bitwise the same results)."""
    c0 = c1 = c2 = np.float32(0.0)
    for j in range(1, z.shape[2] - 1):
        pv = pinv[i, j]
        if first:
            v0 = pv * r[0, i, j]
            v1 = pv * r[1, i, j]
            v2 = pv * r[2, i, j]
        else:
            lv = ly[i - 1, j]
            v0 = pv * (r[0, i, j] + lv * z[0, i - 1, j])
            v1 = pv * (r[1, i, j] + lv * z[1, i - 1, j])
            v2 = pv * (r[2, i, j] + lv * z[2, i - 1, j])
        if j > 1:
            f = fw[i, j]
            v0 = v0 + f * c0
            v1 = v1 + f * c1
            v2 = v2 + f * c2
        c0, c1, c2 = v0, v1, v2
        z[0, i, j] = c0
        z[1, i, j] = c1
        z[2, i, j] = c2


@njit(inline="always")
def _backward_rgb(pinv, ly, bw, z, i, last):
    """Row ``i`` of the backward substitution for three channels in one pass, like
    :func:`_forward_rgb` (the same results as :func:`_backward_vertical` then
    :func:`_east_recurrence`)."""
    w = z.shape[2] - 2
    c0 = c1 = c2 = np.float32(0.0)
    for j in range(w, 0, -1):
        pv = pinv[i, j]
        if last:
            v0 = pv * z[0, i, j]
            v1 = pv * z[1, i, j]
            v2 = pv * z[2, i, j]
        else:
            lv = ly[i, j]
            v0 = pv * (z[0, i, j] + lv * z[0, i + 1, j])
            v1 = pv * (z[1, i, j] + lv * z[1, i + 1, j])
            v2 = pv * (z[2, i, j] + lv * z[2, i + 1, j])
        if j < w:
            f = bw[i, j]
            v0 = v0 + f * c0
            v1 = v1 + f * c1
            v2 = v2 + f * c2
        c0, c1, c2 = v0, v1, v2
        z[0, i, j] = c0
        z[1, i, j] = c1
        z[2, i, j] = c2


@njit(inline="always")
def _row_dot(z, r, i):
    acc = 0.0
    for c in range(z.shape[0]):
        for j in range(1, z.shape[2] - 1):
            acc += z[c, i, j] * r[c, i, j]
    return acc


@njit(parallel=True, cache=True, fastmath=_FAST)
def _step_and_precondition(x, r, p, q, alpha, pinv, ly, fw, bw, n_stripes, z, partial):
    """``x += alpha p``, ``r -= alpha q``, then ``z = (L L^T)^{-1} r`` stripe by stripe.

    Per-row shares of ``||r||^2`` go to ``partial[:h]`` and of ``<r, z>`` to ``partial[h:]``.
    The stripes of the preconditioner only read their own rows of ``r``, so the update and
    the triangular solves share one parallel region."""
    n_ch = r.shape[0]
    h = r.shape[1] - 2
    w = r.shape[2] - 2
    a = np.float32(alpha)
    for s in prange(n_stripes):
        r0, r1 = _stripe(h, n_stripes, s)
        for i in range(r0, r1):
            acc = 0.0
            for c in range(n_ch):
                for j in range(1, w + 1):
                    x[c, i, j] += a * p[c, i, j]
                    v = r[c, i, j] - a * q[c, i, j]
                    r[c, i, j] = v
                    acc += v * v
            partial[i - 1] = acc
            if n_ch == 3:
                _forward_rgb(r, pinv, ly, fw, z, i, i == r0)
            else:
                _forward_vertical(r, pinv, ly, z, i, i == r0)
                _west_recurrence(z, fw, i)
        for i in range(r1 - 1, r0 - 1, -1):
            if n_ch == 3:
                _backward_rgb(pinv, ly, bw, z, i, i == r1 - 1)
            else:
                _backward_vertical(pinv, ly, z, i, i == r1 - 1)
                _east_recurrence(z, bw, i)
            partial[h + i - 1] = _row_dot(z, r, i)


@njit(cache=True)
def _pcg(x, b, ex, ey, diag, n_stripes, pinv, ly, fw, bw, tol, max_iter, r, z, p, p_old, q,
         partial):
    """MIC-preconditioned CG on ``A x = b`` from the given ``x``, until
    ``||b - A x|| <= tol ||b||`` or ``max_iter`` iterations; returns the iteration count.
    ``p``, ``p_old`` and ``q`` must hold zeros on entry (the first step is ``alpha = 0``)."""
    h = x.shape[1] - 2
    _residual(x, b, ex, ey, diag, r, partial)
    bound = tol * tol * partial[h:].sum()
    if partial[:h].sum() <= bound:
        return 0
    _step_and_precondition(x, r, p_old, q, 0.0, pinv, ly, fw, bw, n_stripes, z, partial)
    rz = partial[h:].sum()
    beta = 0.0
    for it in range(1, max_iter + 1):
        _direction_matvec(z, p_old, beta, ex, ey, diag, p, q, partial)
        alpha = rz / partial[:h].sum()
        _step_and_precondition(x, r, p, q, alpha, pinv, ly, fw, bw, n_stripes, z, partial)
        if partial[:h].sum() <= bound:
            return it
        rz_new = partial[h:].sum()
        beta = rz_new / rz
        rz = rz_new
        p, p_old = p_old, p
    return max_iter


# --- the coarse-grid correction before each re-weighted solve --------------------------------
#
# From the second outer iteration on, each solve starts from the previous one's S (warm
# start); what CG then removes slowly is the smooth part of the change, which MIC(0)
# barely reaches. One correction on a grid of 2 x 2 aggregates before the CG removes most
# of it: solve the restricted residual equation on the coarse grid (loosely: it is only a
# start) and add its bilinear interpolation to S. The coarse system keeps the fine one's
# form, 1 + L_c, an edge weight of L_c being the mean of the two fine edges that cross its
# aggregate boundary divided by 4 (so that both discretise the same continuous operator:
# a coarse difference spans twice the distance). The first outer iteration has no
# previous S: its error from the input is texture plus a smooth part, so it starts from
# the interpolated coarse solution alone (nested iteration; the fine CG then restores the
# edges), solved tighter since it is the whole start. Figures in benchmarks/README.md
# ("A coarse-grid start for the re-weighted solves").

_COARSE_TOL = 0.1  # relative residual of the coarse solve
_COARSE_MIN_SIDE = 32  # images with a shorter side skip the correction
_COARSE_FROM = 1  # first outer iteration (0-based) that gets the correction
_FIRST_COARSE_TOL = 0.03  # the first outer iteration's coarse solve (0: start from the input)


@njit(parallel=True, cache=True)
def _coarse_weights(ex, ey, exc, eyc):
    """Edge weights of the 2 x 2-aggregate grid (padded like the fine ones): the mean of
    the fine edges crossing each aggregate boundary, over 4; zero past the last column/row."""
    h = ex.shape[0] - 2
    w = ex.shape[1] - 2
    hc = exc.shape[0] - 2
    wc = exc.shape[1] - 2
    quarter = np.float32(0.25)
    half = np.float32(0.5)
    for ic in prange(hc):
        i0 = 2 * ic + 1  # first fine padded row of the aggregate row
        two_rows = 2 * ic + 1 < h
        for jc in range(wc):
            j0 = 2 * jc + 1
            two_cols = 2 * jc + 1 < w
            if jc + 1 < wc:
                s = ex[i0, j0 + 1] + ex[i0 + 1, j0 + 1] if two_rows else 2 * ex[i0, j0 + 1]
                exc[ic + 1, jc + 1] = half * s * quarter
            else:
                exc[ic + 1, jc + 1] = np.float32(0.0)
            if ic + 1 < hc:
                s = ey[i0 + 1, j0] + ey[i0 + 1, j0 + 1] if two_cols else 2 * ey[i0 + 1, j0]
                eyc[ic + 1, jc + 1] = half * s * quarter
            else:
                eyc[ic + 1, jc + 1] = np.float32(0.0)


@njit(parallel=True, cache=True, fastmath=_FAST)
def _restrict(r, rc):
    """``rc`` = the mean of ``r`` over each 2 x 2 aggregate (fewer pixels at an odd edge)."""
    n_ch = r.shape[0]
    h = r.shape[1] - 2
    w = r.shape[2] - 2
    hc = rc.shape[1] - 2
    wc = rc.shape[2] - 2
    full = w // 2  # aggregates with two columns
    for ic in prange(hc):
        i0 = 2 * ic + 1
        two_rows = 2 * ic + 1 < h
        for c in range(n_ch):
            top = r[c, i0]
            bottom = r[c, i0 + 1] if two_rows else r[c, i0]  # a lone row counts twice
            out = rc[c, ic + 1]
            for jc in range(full):
                out[jc + 1] = np.float32(0.25) * (top[2 * jc + 1] + top[2 * jc + 2]
                                       + bottom[2 * jc + 1] + bottom[2 * jc + 2])
            if wc > full:  # an odd width: the last aggregate has one column
                out[wc] = np.float32(0.5) * (top[w] + bottom[w])


@njit(parallel=True, cache=True, fastmath=_FAST)
def _prolong_add(xc, x):
    """``x += `` the bilinear interpolation of ``xc`` (pixel centres aligned, the coarse
    border value held beyond the border): weights 3/4 and 1/4 along each axis, first down
    the columns into a row buffer, then along it."""
    n_ch = x.shape[0]
    h = x.shape[1] - 2
    w = x.shape[2] - 2
    hc = xc.shape[1] - 2
    wc = xc.shape[2] - 2
    near = np.float32(0.75)
    far = np.float32(0.25)
    for i in prange(h):
        ic = i // 2
        # the other coarse row: above for an even fine row, below for an odd one
        io = min(max(ic - 1 if i % 2 == 0 else ic + 1, 0), hc - 1)
        # the blended coarse row, its border values repeated once on each side
        row = np.empty(wc + 2, np.float32)
        for c in range(n_ch):
            for jc in range(wc):
                row[jc + 1] = near * xc[c, ic + 1, jc + 1] + far * xc[c, io + 1, jc + 1]
            row[0] = row[1]
            row[wc + 1] = row[wc]
            out = x[c, i + 1]
            # fine column 2 jc leans west, 2 jc + 1 east
            for jc in range(w // 2):
                centre = near * row[jc + 1]
                out[2 * jc + 1] += centre + far * row[jc]
                out[2 * jc + 2] += centre + far * row[jc + 2]
            if w % 2:
                out[w] += near * row[wc] + far * row[wc - 1]


class _CoarseGrid:
    """The coarse grid's arrays for one image size, allocated once per image."""

    def __init__(self, n_ch: int, h: int, w: int):
        hc, wc = (h + 1) // 2, (w + 1) // 2
        self.x, self.b, self.r, self.z, self.p, self.p_old, self.q = (
            np.zeros((n_ch, hc + 2, wc + 2), np.float32) for _ in range(7))
        self.ex, self.ey, self.diag, self.pinv, self.ly, self.fw, self.bw = (
            np.zeros((hc + 2, wc + 2), np.float32) for _ in range(7))
        self.partial = np.empty(2 * hc, np.float64)
        self.n_stripes = max(1, hc // _STRIPE_ROWS)

    def correct(self, x, b, ex, ey, diag, r, partial, tol, max_iter):
        """Add to ``x`` the interpolated coarse solution of ``A e = b - A x``; returns the
        coarse CG iteration count."""
        _residual(x, b, ex, ey, diag, r, partial)
        _restrict(r, self.b)
        _coarse_weights(ex, ey, self.ex, self.ey)
        _mic_factor(self.ex, self.ey, self.n_stripes, np.float32(_MIC_TAU), self.diag,
                    self.pinv, self.ly, self.fw, self.bw)
        for array in (self.x, self.p, self.p_old, self.q):
            array.fill(0.0)
        count = _pcg(self.x, self.b, self.ex, self.ey, self.diag, self.n_stripes, self.pinv,
                     self.ly, self.fw, self.bw, tol, max_iter, self.r, self.z, self.p,
                     self.p_old, self.q, self.partial)
        _prolong_add(self.x, x)
        return count


def _coarse_start(t: int) -> tuple[float, bool] | None:
    """The coarse solve before outer iteration ``t`` (0-based): its tolerance and whether S
    starts from zero (the nested start of the first iteration); None for no coarse-grid
    start. The constants are read at each call: ``benchmarks/bench_rtv_tolerance.py``
    switches the start off through them."""
    if t == 0 and _FIRST_COARSE_TOL:
        return _FIRST_COARSE_TOL, True
    if t >= _COARSE_FROM:
        return _COARSE_TOL, False
    return None


def _rtv_image(image, lam, sigma, sharpness, n_iter, tol, max_cg_iter, iterations=None,
               coarse_iterations=None):
    """RTV of one ``(H, W, C)`` float32 image; appends CG iteration counts to ``iterations``
    (and the coarse-grid corrections' to ``coarse_iterations``).

    ``tol`` may also be a sequence of ``n_iter`` tolerances, one per outer iteration: how
    ``benchmarks/bench_rtv_tolerance.py`` measures looser solves in early outer iterations
    (not adopted: figures in ``benchmarks/README.md``)."""
    tols = [tol] * n_iter if np.isscalar(tol) else [float(t) for t in tol]
    if len(tols) != n_iter:
        raise ValueError(f"{len(tols)} tolerances for {n_iter} outer iterations")
    h, w, n_ch = image.shape
    b = np.zeros((n_ch, h + 2, w + 2), np.float32)
    b[:, 1:-1, 1:-1] = image.transpose(2, 0, 1)
    x = b.copy()  # the first edge weights' S; the first start where no coarse grid is used
    r, z, p, p_old, q = (np.zeros_like(b) for _ in range(5))
    rows, blurred = (np.empty((n_ch, h, w), np.float32) for _ in range(2))
    ex, ey, diag, pinv, ly, fw, bw = (np.zeros((h + 2, w + 2), np.float32) for _ in range(7))
    partial = np.empty(2 * h, np.float64)
    n_stripes = max(1, h // _STRIPE_ROWS)
    coarse = _CoarseGrid(n_ch, h, w) if min(h, w) >= _COARSE_MIN_SIDE else None
    for t, (sigma_t, tol_t) in enumerate(zip(sigma_schedule(sigma, n_iter), tols, strict=True)):
        taps = gaussian_taps(sigma_t).astype(np.float32)
        _blur_rows(x, taps, rows)
        _blur_cols(rows, taps, blurred)
        _edge_weights(x, blurred, np.float32(sharpness), np.float32(GRADIENT_EPS),
                      np.float32(lam / 2.0), ex, ey)
        _mic_factor(ex, ey, n_stripes, np.float32(_MIC_TAU), diag, pinv, ly, fw, bw)
        start = _coarse_start(t) if coarse is not None else None
        if start is not None:
            coarse_tol, from_zero = start
            if from_zero:
                x.fill(0.0)  # the first solve starts from the coarse solution alone
            count = coarse.correct(x, b, ex, ey, diag, r, partial, coarse_tol, max_cg_iter)
            if coarse_iterations is not None:
                coarse_iterations.append(count)
        for array in (p, p_old, q):
            array.fill(0.0)
        count = _pcg(x, b, ex, ey, diag, n_stripes, pinv, ly, fw, bw, tol_t, max_cg_iter,
                     r, z, p, p_old, q, partial)
        if iterations is not None:
            iterations.append(count)
    return x[:, 1:-1, 1:-1].transpose(1, 2, 0)


def rtv_cpu(
    batch: np.ndarray,
    *,
    lam: float,
    sigma: float,
    sharpness: float,
    n_iter: int,
    tol: float,
    max_cg_iter: int,
) -> np.ndarray:
    """RTV structure of a float32 ``(N, H, W, C)`` batch, image by image (so a batch gives
    exactly the results of single calls). Parameters as in :func:`.rtv.rtv_smooth`, which
    validates them."""
    out = np.empty(batch.shape, np.float32)
    for k, image in enumerate(batch):
        out[k] = _rtv_image(image, lam, sigma, sharpness, n_iter, tol, max_cg_iter)
    return out
