"""GPU throughput of every method, next to the CPU path in the same run (issue 3).

Per method, size (square RGB photos from ``skimage.data``, cycled to fill the batch) and
batch size, with each method's default parameters:

- **GPU img/s**: the public call ``decompose(batch, method, device="cuda")`` (host batch in,
  host layers out, so both PCIe copies are included), timed with CUDA events, median of
  ``--repeats`` runs after ``--warmup`` runs;
- **kernels img/s** (rtv): ``rtv_cuda_device`` on a batch already on the device;
- **CPU img/s**: ``decompose(..., device="cpu")`` on the first ``--cpu-images`` images;
- **model MB/img**, **GB/s**, **% copy BW**: the DRAM traffic of the bytes model below, the
  achieved bandwidth (traffic / GPU time: the kernel time for rtv, the public-call time for
  rgf and tv, which expose no device entry point), and that bandwidth as a share of the
  device's measured copy bandwidth (a large device-to-device copy: bytes read + written /
  time). 33% means "within 3x of the bound set by the bytes the method must move";
- **max diff**: max absolute difference between the GPU and CPU structure layers.

Bytes model: float32 (4 B) per element, each array element counted once per kernel that
reads or writes it (stencil neighbours assumed cached), per pixel of a C-channel image.

- rtv: layout split (read C, write b and x: 3C) and merge (2C) once; per outer iteration
  the edge weights and CG start (blur rows 2C, blur cols 2C, weights 2C + 2, start 5C + 2:
  11C + 4); per CG iteration of one system 11 (``_direction_matvec`` reads z and p, writes
  p and q; ``_update_precondition`` reads x, r, p, q, writes x, r, z) plus 4 per image
  while any of its channels iterates (``ex``, ``ey`` read by both kernels). The iteration
  counts are the solver's own (``RtvCudaStats``).
- rgf: Gaussian pass 4C (rows and columns, read + write), each joint bilateral pass 3C
  (read input and guide, write output).
- tv: per iteration of one channel 5 (read f and the two dual components, write the two),
  and 4 for the final primal; iteration counts from the CPU kernel on the same photos
  (same stopping rule).

Run from the repository root (needs a CUDA GPU)::

    .venv/bin/python benchmarks/bench_gpu.py --sizes 256 512 --batches 1 16 64

Smoke run of the code path without a GPU (timings meaningless)::

    NUMBA_ENABLE_CUDASIM=1 .venv/bin/python benchmarks/bench_gpu.py --sizes 16 \\
        --batches 1 --methods rtv --repeats 1 --warmup 0 --cpu-images 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage import data, transform

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, median_seconds, print_table  # noqa: E402

from stexture import decompose  # noqa: E402
from stexture._device import CudaUnavailableError, resolve_device  # noqa: E402
from stexture.smoothing import METHODS  # noqa: E402

HEADERS = (
    "method",
    "size",
    "batch",
    "GPU img/s",
    "kernels img/s",
    "CPU img/s",
    "GPU / CPU",
    "model MB/img",
    "GB/s",
    "% copy BW",
    "max diff",
)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
FLOAT_BYTES = 4


def photos(size: int) -> np.ndarray:
    """The RGB photos of ``PHOTOS`` resized to ``size`` x ``size``, float32 (P, S, S, 3)."""
    return np.stack(
        [
            transform.resize(getattr(data, name)(), (size, size), anti_aliasing=True)
            for name in PHOTOS
        ]
    ).astype(np.float32)


def gpu_seconds(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median seconds of ``fn()`` between two CUDA events (wall time under the simulator,
    whose events carry no time)."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return median_seconds(fn, repeats=repeats, warmup=warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(times)


def copy_bandwidth(n_bytes: int, repeats: int) -> float:
    """Bytes per second of a device-to-device copy of ``n_bytes`` (read + write)."""
    from numba import cuda

    src = cuda.device_array(n_bytes // FLOAT_BYTES, np.float32)
    dst = cuda.device_array_like(src)
    seconds = gpu_seconds(lambda: dst.copy_to_device(src), repeats=repeats, warmup=1)
    return 2.0 * src.nbytes / seconds


def device_name() -> str:
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        # a smoke run: besides timing, the simulator's unlocked shared arrays can race and
        # spoil results (tests/test_rtv_cuda.py patches that for its own runs)
        return "Numba CUDA simulator (smoke run: timings and differences are not meaningful)"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def rtv_bytes_per_image(cg_iterations: np.ndarray, pixels: int) -> float:
    """Mean modeled traffic per image of an rtv run (``cg_iterations[t, n, c]``)."""
    n_outer, n_images, c = cg_iterations.shape
    per_pixel = (
        5 * c
        + n_outer * (11 * c + 4)
        + (11 * cg_iterations.sum() + 4 * cg_iterations.max(axis=2).sum()) / n_images
    )
    return float(per_pixel * pixels * FLOAT_BYTES)


def rgf_bytes_per_image(pixels: int, channels: int, n_iter: int) -> float:
    return float((4 * channels + 3 * channels * (n_iter - 1)) * pixels * FLOAT_BYTES)


def tv_bytes_per_image(photo_batch: np.ndarray, params: dict, batch: int) -> float:
    """Mean modeled traffic per image of a tv run over ``batch`` images cycled from
    ``photo_batch``, with each channel's iteration count from the CPU kernel."""
    from stexture.smoothing._tv_cpu import chambolle_planes

    p, h, w, c = photo_batch.shape
    planes = np.ascontiguousarray(photo_batch.transpose(0, 3, 1, 2)).reshape(p * c, h, w)
    _, last = chambolle_planes(planes, params["weight"], params["eps"], params["max_num_iter"])
    per_photo = (5 * (np.asarray(last).reshape(p, c) + 1) + 4).sum(axis=1)
    per_image = [per_photo[k % p] for k in range(batch)]
    return float(np.mean(per_image) * h * w * FLOAT_BYTES)


def rtv_kernel_run(batch: np.ndarray, params: dict, repeats: int, warmup: int):
    """Seconds of the rtv kernels alone on ``batch`` (already on the device), and the
    solver's statistics of the last run."""
    from numba import cuda

    from stexture.smoothing._rtv_cuda import rtv_cuda_device

    d_batch = cuda.to_device(batch)
    d_out = cuda.device_array_like(d_batch)
    stats = []
    seconds = gpu_seconds(
        lambda: stats.append(rtv_cuda_device(d_batch, d_out, **params)),
        repeats=repeats,
        warmup=warmup,
    )
    return seconds, stats[-1]


def cpu_run(batch: np.ndarray, method: str) -> tuple[float, np.ndarray]:
    """Seconds and structure of one CPU call, after an untimed one (Numba compile or
    cache load)."""
    out = []
    seconds = median_seconds(
        lambda: out.append(decompose(batch, method, device="cpu")[0]), repeats=1, warmup=1
    )
    return seconds, out[-1]


def public_gpu_run(
    batch: np.ndarray, method: str, repeats: int, warmup: int
) -> tuple[float, np.ndarray]:
    """Median seconds of ``decompose(batch, method, device="cuda")`` and its structure."""
    out = []
    seconds = gpu_seconds(
        lambda: out.append(decompose(batch, method, device="cuda")[0]),
        repeats=repeats,
        warmup=warmup,
    )
    return seconds, out[-1]


def bench_case(
    method: str,
    photo_batch: np.ndarray,
    n: int,
    cpu: tuple[float, np.ndarray],
    args: argparse.Namespace,
    copy_bw: float,
) -> list[object]:
    """One table row: ``method`` on ``n`` images cycled from ``photo_batch``."""
    params = METHODS[method].defaults
    size = photo_batch.shape[1]
    pixels = size * size
    batch = np.stack([photo_batch[k % len(photo_batch)] for k in range(n)])
    seconds, structure = public_gpu_run(batch, method, args.repeats, args.warmup)
    kernel_seconds = None
    if method == "rtv":
        kernel_seconds, stats = rtv_kernel_run(batch, params, args.repeats, args.warmup)
        traffic = rtv_bytes_per_image(stats.cg_iterations, pixels)
    elif method == "rgf":
        traffic = rgf_bytes_per_image(pixels, 3, params["n_iter"])
    else:
        traffic = tv_bytes_per_image(photo_batch, params, n)
    achieved = traffic * n / (kernel_seconds or seconds)
    cpu_seconds, cpu_structure = cpu
    n_cpu = len(cpu_structure)
    k = min(n, n_cpu)
    return [
        method,
        size,
        n,
        n / seconds,
        n / kernel_seconds if kernel_seconds else "-",
        n_cpu / cpu_seconds,
        (n / seconds) / (n_cpu / cpu_seconds),
        traffic / 1e6,
        achieved / 1e9,
        100.0 * achieved / copy_bw,
        float(np.abs(structure[:k] - cpu_structure[:k]).max()),
    ]


def bench(args: argparse.Namespace, copy_bw: float) -> list[list[object]]:
    rows = []
    for method in args.methods:
        for size in args.sizes:
            photo_batch = photos(size)
            cpu_batch = np.stack(
                [photo_batch[k % len(photo_batch)] for k in range(args.cpu_images)]
            )
            cpu = cpu_run(cpu_batch, method)
            rows += [bench_case(method, photo_batch, n, cpu, args, copy_bw) for n in args.batches]
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--methods", nargs="+", choices=sorted(METHODS), default=["rtv", "rgf", "tv"]
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed GPU runs (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed GPU runs first")
    parser.add_argument(
        "--cpu-images",
        type=int,
        default=2,
        help="images timed on the CPU (and compared with the GPU output)",
    )
    parser.add_argument(
        "--copy-mib",
        type=int,
        default=1024,
        help="size of the device-to-device copy that measures bandwidth",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        resolve_device("cuda")
    except CudaUnavailableError as exc:
        print(f"bench_gpu.py needs a CUDA GPU: {exc}", file=sys.stderr)
        return 2
    copy_bw = copy_bandwidth(args.copy_mib * 2**20, repeats=args.repeats)
    print(f"device: {device_name()}; measured copy bandwidth {copy_bw / 1e9:.1f} GB/s")
    print(f"host: {machine_line()}\n")
    print_table(HEADERS, bench(args, copy_bw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
