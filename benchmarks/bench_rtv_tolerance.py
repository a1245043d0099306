"""How close RTV's CG solution comes to the exact sparse direct solve, per tolerance.

The validation set (:func:`validation_set`) is every photo and texture that scikit-image
ships offline (grey and RGB, as they come) plus synthetic cartoon + texture images (the
furniture scenes of :mod:`stexture.datasets`), each resized so that its longer side is 128,
256 or 512 px. For every image the exact RTV structure (sparse LU of every outer
iteration's system, :func:`stexture.smoothing._rtv_reference.rtv_reference`) is computed
once, optionally cached in ``--cache``; then the CPU solver runs at each ``--tols`` value
and its PSNR against the exact structure is recorded. The table gives, per tolerance, the
worst and the median PSNR and the image that was worst; ``--detail`` lists every image.

Run from the repository root::

    .venv/bin/python benchmarks/bench_rtv_tolerance.py --sizes 128 256 512 \\
        --tols 0.05 0.04 0.03 0.02 --cache /tmp/rtv-exact
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from skimage import data, transform

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, print_table  # noqa: E402

from stexture.datasets import render_furniture  # noqa: E402
from stexture.smoothing import METHODS  # noqa: E402
from stexture.smoothing._rtv_reference import rtv_reference  # noqa: E402

__all__ = ["PHOTOS", "SYNTHETIC", "exact_structure", "psnr", "validation_set"]

#: Every natural image (photo or texture) in ``skimage.data`` that needs no download;
#: ``cat`` is ``chelsea`` under another name, and binary / drawn images are left out.
PHOTOS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page",
    "retina", "rocket", "text",
)
#: Synthetic cartoon + texture scenes: (class, seed) of :func:`stexture.render_furniture`.
SYNTHETIC = (("chair", 0), ("table", 1), ("sofa", 2), ("bed", 3))

HEADERS = ("tol", "images", "worst PSNR (dB)", "worst image", "median PSNR (dB)",
           "best PSNR (dB)", "median CG iterations (+ coarse / 4)", "total time (s)")


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` as float32 in [0, 1], ``(H, W, C)``, its longer side ``size`` px."""
    image = np.asarray(image)
    scale = size / max(image.shape[:2])
    shape = tuple(max(2, round(n * scale)) for n in image.shape[:2])
    resized = transform.resize(image, shape, anti_aliasing=scale < 1, preserve_range=True)
    if image.dtype == np.uint8:
        resized = resized / 255.0
    resized = np.clip(resized, 0.0, 1.0).astype(np.float32)
    return resized if resized.ndim == 3 else resized[..., None]


def validation_set(sizes: tuple[int, ...] = (128, 256, 512),
                   photos: tuple[str, ...] = PHOTOS,
                   synthetic: tuple[tuple[str, int], ...] = SYNTHETIC,
                   ) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, image)`` pairs: each photo and synthetic scene at each size."""
    for size in sizes:
        for name in photos:
            yield f"{name}@{size}", _resized(getattr(data, name)(), size)
        for class_name, seed in synthetic:
            rendering = render_furniture(class_name, np.random.default_rng(seed), size=size)
            yield f"{class_name}-{seed}@{size}", _resized(rendering.image, size)


def psnr(ours: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of ``ours`` against ``reference`` (peak 1)."""
    mse = np.mean((np.asarray(ours, np.float64) - np.asarray(reference, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def exact_structure(name: str, image: np.ndarray, cache: Path | None) -> np.ndarray:
    """The exact RTV structure of ``image`` at the default parameters (cached by name)."""
    path = None if cache is None else cache / f"{name}.npy"
    if path is not None and path.exists():
        return np.load(path)
    exact = rtv_reference(image[None])[0].astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, exact)
    return exact


def _cpu_solve(image: np.ndarray, tol: float | tuple[float, ...]) -> tuple[np.ndarray, int]:
    """The CPU solver's structure at the defaults and ``tol`` (one per outer iteration when a
    tuple), and its CG iterations summed over the outer iterations, the coarse-grid
    corrections' counted at a quarter."""
    from stexture.smoothing._rtv_cpu import _rtv_image

    defaults = dict(METHODS["rtv"].defaults)
    counts: list[int] = []
    coarse: list[int] = []
    structure = _rtv_image(image, defaults["lam"], defaults["sigma"], defaults["sharpness"],
                           defaults["n_iter"], tol, defaults["max_cg_iter"], counts, coarse)
    # a coarse-grid iteration works on a quarter of the unknowns
    return structure, sum(counts) + sum(coarse) / 4


def _tolerance(text: str) -> float | tuple[float, ...]:
    """``0.03`` (every outer iteration) or ``0.1,0.06,0.03,0.03`` (one per outer iteration)."""
    values = tuple(float(value) for value in text.split(","))
    return values[0] if len(values) == 1 else values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--tols", type=_tolerance, nargs="+", default=[0.05, 0.04, 0.03, 0.02],
                        help="tolerances; a comma list gives one per outer iteration "
                             "(looser early solves), solved by the CPU kernel directly")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS),
                        help="the photos of skimage.data to use (default: all)")
    parser.add_argument("--mic-tau", type=float, default=None,
                        help="the CPU preconditioner's fill-in weight for this run (a "
                             "candidate; default: the shipped one)")
    parser.add_argument("--no-coarse", action="store_true",
                        help="solve without the coarse-grid starts of the outer "
                             "iterations' solves (the kernel before them)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the exact structures (reused across runs)")
    parser.add_argument("--detail", action="store_true", help="print every image's PSNR")
    args = parser.parse_args(argv)
    print(machine_line())
    if args.mic_tau is not None:
        from stexture.smoothing import _rtv_cpu

        _rtv_cpu._MIC_TAU = args.mic_tau  # read by every call, so the run measures it
    if args.no_coarse:
        from stexture.smoothing import _rtv_cpu

        _rtv_cpu._COARSE_FROM = 1 << 30  # no outer iteration reaches it
        _rtv_cpu._FIRST_COARSE_TOL = 0.0
    rtv = METHODS["rtv"]
    scores: dict[object, list[tuple[float, str, int]]] = {tol: [] for tol in args.tols}
    seconds = dict.fromkeys(args.tols, 0.0)
    for name, image in validation_set(tuple(args.sizes), tuple(args.photos)):
        exact = exact_structure(name, image, args.cache)
        for tol in args.tols:
            start = time.perf_counter()
            if isinstance(tol, tuple):
                ours, count = _cpu_solve(image, tol)
            else:
                ours = rtv(image[None], tol=tol)[0]
            seconds[tol] += time.perf_counter() - start
            if not isinstance(tol, tuple):
                count = _cpu_solve(image, tol)[1]
            scores[tol].append((psnr(ours, exact), name, count))
        if args.detail:
            print(name, image.shape, " ".join(f"{tol}: {scores[tol][-1][0]:.1f}"
                                              for tol in args.tols), flush=True)
    rows = []
    for tol in args.tols:
        values = sorted(scores[tol])
        rows.append([tol, len(values), values[0][0], values[0][1],
                     statistics.median(v for v, _, _ in values), values[-1][0],
                     statistics.median(n for _, _, n in values), seconds[tol]])
    print_table(HEADERS, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
