"""Would a coarse-grid correction make RTV's MIC(0)-preconditioned CG cheaper?

A model of the CPU solver in NumPy: the same edge weights, MIC(0) factor and triangular
solves (the shipped Numba kernels of :mod:`stexture.smoothing._rtv_cpu`), the same warm
starts and stopping rule, run as a float64 PCG in Python so that preconditioners can be
swapped. Compared per image: CG iterations summed over the four outer iterations with

- ``mic``: the shipped preconditioner (MIC(0) on 64-row stripes);
- ``mic+coarse<k>``: MIC(0), then a coarse-grid correction of its residual (two-level,
  multiplicative): piecewise-constant aggregation of ``k x k`` pixel blocks, Galerkin
  coarse operator ``P^T A P`` solved exactly (sparse LU).

Each correction costs at least one more matrix-vector product, a restriction, a coarse
solve and a prolongation per iteration, about half an iteration again; it pays only if it
removes more than a third of the iterations.

Run from the repository root::

    .venv/bin/python benchmarks/bench_rtv_preconditioner.py --sizes 256 512
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, print_table  # noqa: E402
from bench_rtv_tolerance import validation_set  # noqa: E402

from stexture.smoothing import METHODS  # noqa: E402
from stexture.smoothing import _rtv_cpu as kernels  # noqa: E402
from stexture.smoothing._rtv_common import GRADIENT_EPS, gaussian_taps, sigma_schedule  # noqa: E402

Preconditioner = Callable[[np.ndarray], np.ndarray]


def matvec(x: np.ndarray, ex: np.ndarray, ey: np.ndarray, diag: np.ndarray) -> np.ndarray:
    """``A x`` for planar ``x`` ``(C, H + 2, W + 2)`` with a zero halo (the kernels' layout)."""
    out = np.zeros_like(x)
    out[:, 1:-1, 1:-1] = (
        diag[1:-1, 1:-1] * x[:, 1:-1, 1:-1] - ex[1:-1, 1:-1] * x[:, 1:-1, 2:]
        - ex[1:-1, :-2] * x[:, 1:-1, :-2] - ey[1:-1, 1:-1] * x[:, 2:, 1:-1]
        - ey[:-2, 1:-1] * x[:, :-2, 1:-1]
    )
    return out


def coarse_solver(ex: np.ndarray, ey: np.ndarray, diag: np.ndarray, block: int):
    """Aggregation ``P`` of ``block x block`` pixels and the LU of ``P^T A P``."""
    h, w = ex.shape[0] - 2, ex.shape[1] - 2
    index = np.arange(h * w).reshape(h, w)
    coarse_w = -(-w // block)
    aggregate = ((np.arange(h) // block)[:, None] * coarse_w
                 + (np.arange(w) // block)[None, :]).ravel()
    n_coarse = int(aggregate.max()) + 1
    prolong = sp.csr_matrix((np.ones(h * w), (index.ravel(), aggregate)),
                            shape=(h * w, n_coarse))
    rows = np.concatenate([index.ravel(), index.ravel()])
    cols = np.concatenate([index.ravel() + 1, index.ravel() + w])
    vals = np.concatenate([ex[1:-1, 1:-1].ravel(), ey[1:-1, 1:-1].ravel()])
    keep = vals != 0
    off = sp.coo_matrix((-vals[keep], (rows[keep], cols[keep])), shape=(h * w, h * w))
    matrix = sp.diags(diag[1:-1, 1:-1].ravel()) + off + off.T
    return prolong, splu((prolong.T @ matrix @ prolong).tocsc())


def pcg(x, b, ex, ey, diag, precondition: Preconditioner, tol: float, max_iter: int) -> int:
    """Iterations of PCG from ``x`` until ``||b - A x|| <= tol ||b||``."""
    r = b - matvec(x, ex, ey, diag)
    bound = tol * np.sqrt((b * b).sum())
    if np.sqrt((r * r).sum()) <= bound:
        return 0
    z = precondition(r)
    p = z.copy()
    rz = (r * z).sum()
    for it in range(1, max_iter + 1):
        q = matvec(p, ex, ey, diag)
        alpha = rz / (p * q).sum()
        x += alpha * p
        r -= alpha * q
        if np.sqrt((r * r).sum()) <= bound:
            return it
        z = precondition(r)
        rz_new = (r * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return max_iter


def iteration_counts(image: np.ndarray, blocks: tuple[int, ...]) -> dict[str, int]:
    """CG iterations over the outer iterations of rtv (default parameters) per preconditioner;
    every preconditioner starts each outer iteration from the shipped one's estimate."""
    params = METHODS["rtv"].defaults
    h, w, n_ch = image.shape
    b = np.zeros((n_ch, h + 2, w + 2), np.float32)
    b[:, 1:-1, 1:-1] = image.transpose(2, 0, 1)
    x = b.copy()
    rows, blurred = (np.empty((n_ch, h, w), np.float32) for _ in range(2))
    ex, ey, diag, pinv, ly, fw, bw = (np.zeros((h + 2, w + 2), np.float32) for _ in range(7))
    n_stripes = max(1, h // kernels._STRIPE_ROWS)
    counts = {"mic": 0, **{f"mic+coarse{k}": 0 for k in blocks}}

    def mic(r: np.ndarray) -> np.ndarray:
        z = np.zeros(r.shape, np.float32)
        zero = np.zeros_like(z)
        kernels._step_and_precondition(zero.copy(), r.astype(np.float32), zero, zero, 0.0,
                                       pinv, ly, fw, bw, n_stripes, z, np.empty(2 * h))
        return z.astype(np.float64)

    for sigma in sigma_schedule(params["sigma"], params["n_iter"]):
        taps = gaussian_taps(sigma).astype(np.float32)
        kernels._blur_rows(x, taps, rows)
        kernels._blur_cols(rows, taps, blurred)
        kernels._edge_weights(x, blurred, np.float32(params["sharpness"]),
                              np.float32(GRADIENT_EPS), np.float32(params["lam"] / 2), ex, ey)
        kernels._mic_factor(ex, ey, n_stripes, np.float32(kernels._MIC_TAU), diag, pinv, ly,
                            fw, bw)
        ex64, ey64, diag64 = (a.astype(np.float64) for a in (ex, ey, diag))
        preconditioners: dict[str, Preconditioner] = {"mic": mic}
        for block in blocks:
            prolong, coarse = coarse_solver(ex64, ey64, diag64, block)

            def two_level(r, prolong=prolong, coarse=coarse, ex=ex64, ey=ey64, diag=diag64):
                z = mic(r)
                residual = r - matvec(z, ex, ey, diag)
                for c in range(n_ch):
                    flat = residual[c, 1:-1, 1:-1].ravel()
                    z[c, 1:-1, 1:-1] += (prolong @ coarse.solve(prolong.T @ flat)).reshape(h, w)
                return z

            preconditioners[f"mic+coarse{block}"] = two_level
        estimate = x
        for name, precondition in preconditioners.items():
            trial = x.astype(np.float64)
            counts[name] += pcg(trial, b.astype(np.float64), ex64, ey64, diag64, precondition,
                                params["tol"], params["max_cg_iter"])
            if name == "mic":
                estimate = trial.astype(np.float32)
        x = estimate
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--blocks", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--photos", nargs="+", default=["astronaut", "page", "camera", "gravel"])
    args = parser.parse_args(argv)
    print(machine_line())
    rows = []
    for name, image in validation_set(tuple(args.sizes), photos=tuple(args.photos),
                                      synthetic=(("chair", 0),)):
        counts = iteration_counts(image, tuple(args.blocks))
        rows.append([name, *counts.values(),
                     *(counts[f"mic+coarse{k}"] / counts["mic"] for k in args.blocks)])
    headers = ("image", "mic", *(f"mic+coarse{k}" for k in args.blocks),
               *(f"coarse{k} / mic" for k in args.blocks))
    print_table(headers, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
