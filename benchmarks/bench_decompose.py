"""Decomposition speed and accuracy of each method next to its anchor, in one run.

Per method and size: our median time after warm-up, the anchor's median time in the same
run, the speed-up (anchor / ours), the PSNR of our structure layer against the method's
reference output, and our first-call time (Numba compile or cache load; run this script in
a fresh process for it to mean that).

The "busy" columns time our method beside one other process that keeps a core busy (a
Python loop), as when data-loader workers or a training job share the machine. The busy
process is started once and paused (``SIGSTOP``) or resumed (``SIGCONT``) so that the
alone and busy calls alternate and any drift of the machine's load hits both alike; busy
/ alone is the slow-down. Nothing is set in the environment: the numbers are what
``import stexture`` gives (POSIX only, for the signals).

- rtv: anchor and reference are the exact sparse direct solve
  (:func:`stexture.smoothing._rtv_reference.rtv_reference`).
- rgf: speed anchor ``cv2.ximgproc.rollingGuidanceFilter`` on the same uint8 image and
  parameters; reference output GaussianBlur + ``jointBilateralFilter`` passes
  (:func:`stexture.smoothing._rgf_reference.rgf_reference`), since OpenCV's filter starts
  from a different guide.
- tv: ``skimage.restoration.denoise_tv_chambolle`` on the float32 image
  (:func:`stexture.smoothing._tv_reference.tv_reference`), both the speed anchor and the
  reference.

Run from the repository root::

    .venv/bin/python benchmarks/bench_decompose.py --sizes 256 512 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numba
import numpy as np
from skimage import data, transform

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import first_call_seconds, machine_line, median_seconds, print_table  # noqa: E402

from stexture.smoothing import METHODS  # noqa: E402
from stexture.smoothing._rgf_reference import rgf_reference  # noqa: E402
from stexture.smoothing._rtv_reference import rtv_reference  # noqa: E402
from stexture.smoothing._tv_reference import tv_reference  # noqa: E402

HEADERS = ("method", "size", "ours (ms)", "anchor", "anchor (ms)", "speed-up",
           "PSNR vs reference (dB)", "first call (s)", "busy (ms)", "busy / alone")


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
        return tv_reference(batch, weight=params["weight"], eps=params["eps"],
                            max_num_iter=params["max_num_iter"])

    return Anchor("skimage denoise_tv_chambolle", lambda u8, batch: reference(batch), reference)


ANCHORS = {"rtv": _rtv_anchor, "rgf": _rgf_anchor, "tv": _tv_anchor}


def photo(size: int) -> np.ndarray:
    """``skimage.data.astronaut`` resized to ``size`` x ``size``, uint8 RGB."""
    image = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
    return np.round(image * 255.0).astype(np.uint8)


class BusyNeighbour:
    """A process spinning on one core, paused except inside :meth:`running`."""

    def __init__(self) -> None:
        self._process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.kill(self._process.pid, signal.SIGSTOP)

    @contextmanager
    def running(self) -> Iterator[None]:
        os.kill(self._process.pid, signal.SIGCONT)
        time.sleep(0.05)  # let the scheduler see it runnable before we start timing
        try:
            yield
        finally:
            os.kill(self._process.pid, signal.SIGSTOP)

    def close(self) -> None:
        self._process.kill()
        self._process.wait()


def alone_and_busy_seconds(fn: Callable[[], object], neighbour: BusyNeighbour,
                           repeats: int) -> tuple[float, float]:
    """Median wall time of ``fn()`` alone and beside ``neighbour``, calls alternating."""
    fn()
    alone, busy = [], []
    for _ in range(repeats):
        alone.append(median_seconds(fn, repeats=1, warmup=0))
        with neighbour.running():
            busy.append(median_seconds(fn, repeats=1, warmup=0))
    return statistics.median(alone), statistics.median(busy)


def psnr(ours: np.ndarray, reference: np.ndarray) -> float:
    mse = np.mean((np.asarray(ours, np.float64) - np.asarray(reference, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def bench_method(name: str, sizes: list[int], repeats: int,
                 neighbour: BusyNeighbour) -> list[list[object]]:
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
        ours_s, busy_s = alone_and_busy_seconds(ours, neighbour, repeats)
        anchor_repeats, anchor_warmup = (max(1, repeats // 3), 0) if anchor.slow else (repeats, 1)
        anchor_s = median_seconds(lambda u8=u8, batch=batch: anchor.run(u8, batch),
                                  repeats=anchor_repeats, warmup=anchor_warmup)
        quality = psnr(ours(), anchor.reference(batch))
        rows.append([name, f"{size}x{size}", 1e3 * ours_s, anchor.name, 1e3 * anchor_s,
                     anchor_s / ours_s, quality, first if size == sizes[0] else "-",
                     1e3 * busy_s, busy_s / ours_s])
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
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    neighbour = BusyNeighbour()
    rows = []
    try:
        for name in args.methods:
            rows += bench_method(name, args.sizes, args.repeats, neighbour)
    finally:
        neighbour.close()
    print_table(HEADERS, rows)
    print(f"load average after: {os.getloadavg()[0]:.2f}; "
          f"Numba threading layer: {numba.threading_layer()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
