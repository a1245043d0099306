"""CUDA RTV (``stexture.smoothing._rtv_cuda``) against the CPU path and the exact direct solve.

On a machine with a GPU the kernels run in this process. Without one they run under Numba's
CUDA simulator in a subprocess (this file run as a script): ``NUMBA_ENABLE_CUDASIM`` must be
set before numba is first imported, and other tests of the same session import it earlier.
All CUDA cases run in one subprocess, whose results the tests below check one by one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stexture import decompose
from stexture._device import cuda_available
from stexture.smoothing._rtv_reference import rtv_reference
from stexture.smoothing.rtv import rtv_smooth

# A tight relative residual, so that both iterative paths sit near the exact solution.
TOL = 1e-4
MAX_CG_ITER = 200
MAX_ABS_DIFF = 1e-3
SIMULATOR_TIMEOUT_S = 600


def _noisy_step(n: int, h: int, w: int, c: int, seed: int) -> np.ndarray:
    """A vertical step edge (structure) plus Gaussian noise (texture), float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    step = np.where(np.arange(w) < w // 2, 0.25, 0.75).astype(np.float32)
    image = step[None, None, :, None] + 0.1 * rng.standard_normal((n, h, w, c))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _rgb_batch() -> np.ndarray:
    """Two 12 x 16 RGB images."""
    return _noisy_step(2, 12, 16, 3, seed=1)


def _odd_gray_batch() -> np.ndarray:
    """13 x 17 gray (fills no thread block): a noisy step and a constant image."""
    batch = _noisy_step(2, 13, 17, 1, seed=2)
    batch[1] = 0.5
    return batch


def run_cuda_cases(out: Path) -> None:
    """Run every CUDA case and save the results to ``out`` (an ``.npz``)."""
    from numba import cuda

    from stexture.smoothing._rtv_cuda import rtv_cuda_device

    rgb = cuda.to_device(_rgb_batch())
    rgb_structure = cuda.device_array_like(rgb)
    stats = rtv_cuda_device(
        rgb,
        rgb_structure,
        lam=0.01,
        sigma=3.0,
        sharpness=0.02,
        n_iter=2,
        tol=TOL,
        max_cg_iter=MAX_CG_ITER,
    )
    gray = _odd_gray_batch()
    gray_structure, gray_texture = decompose(
        gray, "rtv", device="cuda", n_iter=1, tol=TOL, max_cg_iter=MAX_CG_ITER
    )
    np.savez(
        out,
        rgb=rgb_structure.copy_to_host(),
        rgb_iterations=stats.cg_iterations,
        gray=gray_structure,
        gray_texture=gray_texture,
    )


def _real_gpu() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and cuda_available()


@pytest.fixture(scope="module")
def cuda_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("rtv_cuda") / "results.npz"
    if _real_gpu():
        run_cuda_cases(out)
    else:
        subprocess.run(
            [sys.executable, __file__, str(out)],
            check=True,
            timeout=SIMULATOR_TIMEOUT_S,
            env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"},
        )
    with np.load(out) as results:
        return dict(results)


def test_rgb_batch_matches_cpu_path(cuda_results: dict[str, np.ndarray]) -> None:
    cpu = rtv_smooth(_rgb_batch(), n_iter=2, tol=TOL, max_cg_iter=MAX_CG_ITER)
    assert cuda_results["rgb"].dtype == np.float32
    assert cuda_results["rgb"].shape == cpu.shape
    assert np.abs(cuda_results["rgb"] - cpu).max() <= MAX_ABS_DIFF


def test_rgb_batch_matches_direct_solve(cuda_results: dict[str, np.ndarray]) -> None:
    batch = _rgb_batch()
    exact = rtv_reference(batch, n_iter=2)
    assert np.abs(cuda_results["rgb"] - exact).max() <= MAX_ABS_DIFF
    # the comparison means something only if smoothing moved the image well beyond it
    assert np.abs(batch - exact).max() > 100 * MAX_ABS_DIFF


def test_every_system_runs_its_own_iterations(cuda_results: dict[str, np.ndarray]) -> None:
    iterations = cuda_results["rgb_iterations"]
    assert iterations.shape == (2, 2, 3)  # (outer iteration, image, channel)
    assert (iterations > 0).all()
    assert (iterations < MAX_CG_ITER).all()  # every system met the tolerance


def test_odd_gray_batch_through_decompose_matches_cpu(
    cuda_results: dict[str, np.ndarray],
) -> None:
    batch = _odd_gray_batch()
    cpu_structure, _ = decompose(
        batch, "rtv", device="cpu", n_iter=1, tol=TOL, max_cg_iter=MAX_CG_ITER
    )
    assert cuda_results["gray"].shape == batch.shape
    assert np.abs(cuda_results["gray"] - cpu_structure).max() <= MAX_ABS_DIFF
    np.testing.assert_array_equal(cuda_results["gray_texture"], batch - cuda_results["gray"])


def test_constant_image_beside_a_textured_one_is_unchanged(
    cuda_results: dict[str, np.ndarray],
) -> None:
    # its system is solved at the start (zero residual) while its neighbour in the batch
    # still iterates: the per-system stop must leave it alone
    np.testing.assert_allclose(cuda_results["gray"][1], 0.5, atol=1e-6)


def _speed_up_simulator() -> None:
    """Make the simulator's thread barriers cheap and its shared arrays safe.

    The simulator polls its threads at each ``syncthreads``; with the default 5 ms GIL
    switch interval every barrier costs milliseconds. A short interval makes it several
    times faster but exposes a race in the simulator's ``cuda.shared.array``, which looks up
    and creates a block's array without a lock (two threads may get different arrays):
    replace it with the same lookup under a lock.
    """
    import threading
    import traceback

    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    lock = threading.Lock()

    def shared_array(self, shape, dtype, alignment=None):
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]
        with lock:
            array = self._allocations.get(caller)
            if array is None:
                array = self._allocations[caller] = np.empty(shape, dtype)
        return array

    kernelapi.FakeCUDAShared.array = shared_array
    sys.setswitchinterval(1e-5)


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        _speed_up_simulator()
    run_cuda_cases(Path(sys.argv[1]))
