"""Relative Total Variation (RTV) structure extraction: parameter checks and dispatch.

Xu, Yan, Xia and Jia, "Structure Extraction from Texture via Relative Total Variation",
ACM Transactions on Graphics 31(6), SIGGRAPH Asia 2012, following the authors' reference
code ``tsmooth``; the formulation is described in :mod:`._rtv_common`, the kernels are
:mod:`._rtv_cpu` and :mod:`._rtv_cuda`, the exact reference :mod:`._rtv_reference`.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_count, check_positive
from ._dispatch import run_kernel

__all__ = ["SUMMARY", "rtv_smooth", "validate_rtv_params"]

SUMMARY = "Relative Total Variation (Xu et al. 2012): removes texture, keeps structure edges"


def validate_rtv_params(
    *,
    lam: float,
    sigma: float,
    sharpness: float,
    n_iter: int,
    tol: float | None = None,
    max_cg_iter: int | None = None,
) -> None:
    """Raise ``ValueError`` naming the first bad RTV parameter.

    Parameters
    ----------
    lam, sigma, sharpness : float
        Must be finite and > 0 (and within the ranges of
        :data:`stexture.smoothing._checks.PARAMETER_RANGES`).
    n_iter : int
        An integer >= 1.
    tol : float or None
        A number strictly between 0 and 1; not checked when ``None`` (the direct-solve
        reference has no tolerance).
    max_cg_iter : int or None
        An integer >= 1; not checked when ``None``.

    Raises
    ------
    ValueError
        Naming the first parameter that is out of its range, and the range.
    """
    check_positive("lam", lam)
    check_positive("sigma", sigma)
    check_positive("sharpness", sharpness)
    check_count("n_iter", n_iter)
    if tol is not None:
        check_positive("tol", tol)
        if tol >= 1:
            raise ValueError(f"tol must lie strictly between 0 and 1, got {tol!r}")
    if max_cg_iter is not None:
        check_count("max_cg_iter", max_cg_iter)


def rtv_smooth(
    batch: np.ndarray,
    *,
    lam: float = 0.01,
    sigma: float = 3.0,
    sharpness: float = 0.02,
    n_iter: int = 4,
    tol: float = 0.03,
    max_cg_iter: int = 500,
    device: str = "cpu",
) -> np.ndarray:
    """Structure layer of a batch by Relative Total Variation.

    Parameters
    ----------
    batch : ndarray
        float32 ``(N, H, W, C)``, C in {1, 3}, values in [0, 1].
    lam : float
        Smoothing strength lambda of the paper (``tsmooth`` uses ``lam / 2`` in the system).
    sigma : float
        Texture scale: standard deviation of the Gaussian in the first outer iteration.
    sharpness : float
        ``eps_s``: floor of the gradient magnitude in ``w``; smaller keeps sharper edges.
    n_iter : int
        Number of outer (re-weighting) iterations.
    tol : float
        Relative residual ``||b - A x|| / ||b||`` at which each inner conjugate-gradient
        solve stops, in (0, 1). The default 0.03 is the loosest that kept the structure
        above 45 dB PSNR from the exact direct solve on every image of
        ``benchmarks/bench_rtv_tolerance.py`` (figures in ``benchmarks/README.md``).
    max_cg_iter : int
        Upper bound on conjugate-gradient iterations per outer iteration.
    device : {"cpu", "cuda", "auto"}
        Where to run; ``"cuda"`` processes the whole batch per launch sequence.

    Returns
    -------
    ndarray
        float32 structure layer, same shape as ``batch``.

    Notes
    -----
    Each outer iteration solves ``(1 + lam/2 L_w) S = I`` for the re-weighted Laplacian
    ``L_w`` by preconditioned conjugate gradients to ``tol``. On the CPU the preconditioner
    is MIC(0), and each solve (for images at least 32 px on a side) starts from the
    bilinearly interpolated solution of the same system on a grid of 2 x 2 aggregates, which
    removes the smooth part of the error MIC(0) reaches slowly; on CUDA the preconditioner
    is block-Jacobi with red-black Gauss-Seidel sweeps per tile. Both stop on the same
    relative residual, so they agree to the tolerance, not bit for bit.

    References
    ----------
    .. [1] L. Xu, Q. Yan, Y. Xia, J. Jia, "Structure Extraction from Texture via Relative
       Total Variation", ACM Trans. Graph. 31(6), 139, 2012.
    """
    validate_rtv_params(
        lam=lam, sigma=sigma, sharpness=sharpness, n_iter=n_iter, tol=tol,
        max_cg_iter=max_cg_iter,
    )
    return run_kernel(
        batch, device, "_rtv_cpu:rtv_cpu", "_rtv_cuda:rtv_cuda", lam=lam, sigma=sigma,
        sharpness=sharpness, n_iter=n_iter, tol=tol, max_cg_iter=max_cg_iter,
    )
