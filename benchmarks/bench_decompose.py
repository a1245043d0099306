"""Decomposition speed and accuracy of each method next to its anchor, in one run.

Per method and size: our median time after warm-up, the anchor's median time in the same
run, the speed-up (anchor / ours), the PSNR of our structure layer against the method's
reference output, and our first-call time (Numba compile or cache load; run this script in
a fresh process for it to mean that).

- rtv: anchor and reference are the exact sparse direct solve
  (:func:`stexture.smoothing._rtv_reference.rtv_reference`).
- rgf: speed anchor ``cv2.ximgproc.rollingGuidanceFilter`` on the same uint8 image and
  parameters; reference output GaussianBlur + ``jointBilateralFilter`` passes
  (:func:`stexture.smoothing._rgf_reference.rgf_reference`), since OpenCV's filter starts
  from a different guide.
- tv: ``skimage.restoration.denoise_tv_chambolle`` on the float32 image, which is both the
  speed anchor and the reference.

Run from the repository root::

    .venv/bin/python benchmarks/bench_decompose.py --sizes 256 512 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import data, transform
from skimage.restoration import denoise_tv_chambolle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import first_call_seconds, machine_line, median_seconds, print_table  # noqa: E402

from stexture.smoothing import METHODS  # noqa: E402
from stexture.smoothing._rgf_reference import rgf_reference  # noqa: E402
from stexture.smoothing._rtv_reference import rtv_reference  # noqa: E402

HEADERS = ("method", "size", "ours (ms)", "anchor", "anchor (ms)", "speed-up",
           "PSNR vs reference (dB)", "first call (s)")


@dataclass(frozen=True)
class Anchor:
    """What our method is timed against and what its output is compared with."""

    name: str
    run: Callable[[np.ndarray, np.ndarray], object]  # (uint8 HxWx3, float32 batch) -> any
    reference: Callable[[np.ndarray], np.ndarray]  # float32 batch -> structure batch
    slow: bool = False  # seconds per call: time it with fewer repeats


def _rtv_anchor(params: dict) -> Anchor:
    exact = {k: params[k] for k in ("lam", "sigma", "sharpness", "n_iter")}

    def reference(batch: np.ndarray) -> np.ndarray:
        return rtv_reference(batch, **exact)

    return Anchor("scipy direct solve", lambda u8, batch: reference(batch), reference, slow=True)


def _rgf_anchor(params: dict) -> Anchor:
    def run(u8: np.ndarray, batch: np.ndarray) -> np.ndarray:
        return cv2.ximgproc.rollingGuidanceFilter(
            u8, d=-1, sigmaColor=params["sigma_r"] * 255.0, sigmaSpace=params["sigma_s"],
            numOfIter=params["n_iter"],
        )

    def reference(batch: np.ndarray) -> np.ndarray:
        return rgf_reference(batch, sigma_s=params["sigma_s"], sigma_r=params["sigma_r"],
                             n_iter=params["n_iter"])

    return Anchor("cv2 rollingGuidanceFilter", run, reference)


def _tv_anchor(params: dict) -> Anchor:
    def reference(batch: np.ndarray) -> np.ndarray:
        return denoise_tv_chambolle(
            batch[0], weight=params["weight"], eps=params["eps"],
            max_num_iter=params["max_num_iter"], channel_axis=-1,
        )[None]

    return Anchor("skimage denoise_tv_chambolle", lambda u8, batch: reference(batch), reference)


ANCHORS = {"rtv": _rtv_anchor, "rgf": _rgf_anchor, "tv": _tv_anchor}


def photo(size: int) -> np.ndarray:
    """``skimage.data.astronaut`` resized to ``size`` x ``size``, uint8 RGB."""
    image = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
    return np.round(image * 255.0).astype(np.uint8)


def psnr(ours: np.ndarray, reference: np.ndarray) -> float:
    mse = np.mean((np.asarray(ours, np.float64) - np.asarray(reference, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def bench_method(name: str, sizes: list[int], repeats: int) -> list[list[object]]:
    method = METHODS[name]
    params = method.defaults
    anchor = ANCHORS[name](params)
    rows = []
    first = None
    for size in sizes:
        u8 = photo(size)
        batch = np.ascontiguousarray(u8[None], dtype=np.float32) / np.float32(255.0)

        def ours(batch: np.ndarray = batch) -> np.ndarray:
            return method(batch)

        if first is None:
            first = first_call_seconds(ours)
        ours_s = median_seconds(ours, repeats=repeats)
        anchor_repeats, anchor_warmup = (max(1, repeats // 3), 0) if anchor.slow else (repeats, 1)
        anchor_s = median_seconds(lambda u8=u8, batch=batch: anchor.run(u8, batch),
                                  repeats=anchor_repeats, warmup=anchor_warmup)
        quality = psnr(ours(), anchor.reference(batch))
        rows.append([name, f"{size}x{size}", 1e3 * ours_s, anchor.name, 1e3 * anchor_s,
                     anchor_s / ours_s, quality, first if size == sizes[0] else "-"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                        help="square image sizes in pixels (default: 256 512)")
    parser.add_argument("--methods", nargs="+", default=list(ANCHORS), choices=list(ANCHORS),
                        help="methods to measure (default: all)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per measurement; the direct solve gets a third")
    args = parser.parse_args(argv)
    print(machine_line())
    rows = []
    for name in args.methods:
        try:
            rows += bench_method(name, args.sizes, args.repeats)
        except NotImplementedError:
            print(f"{name}: not implemented yet, skipped")
    print_table(HEADERS, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
