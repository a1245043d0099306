"""CUDA kernels of rgf and tv against the CPU path (Numba CUDA; simulator without a GPU).

The simulator must be switched on before numba is first imported, and other test modules
import numba earlier in the same pytest process, so without a GPU the comparison runs this
file as a script in a child process with ``NUMBA_ENABLE_CUDASIM=1``. With a real GPU it
runs in-process. Images are tiny: the simulator runs one OS thread per GPU thread.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from stexture import CudaUnavailableError, decompose
from stexture._device import cuda_available
from stexture.smoothing.rgf import rgf_smooth
from stexture.smoothing.tv import tv_smooth

TOLERANCE = 1e-4  # max |cuda - cpu|, issue 3

# (method, shape, params): odd sizes that do not fill a block, batch of 2, gray and RGB;
# tv once stopped by eps (early, per plane) and once by max_num_iter
CASES = [
    ("rgf", (2, 12, 16, 3), {}),
    ("rgf", (2, 13, 17, 1), {"sigma_s": 2.0, "sigma_r": 0.2, "n_iter": 3}),
    ("tv", (2, 12, 16, 3), {"eps": 1e-2}),
    ("tv", (2, 13, 17, 1), {"max_num_iter": 9}),
]
SMOOTHERS = {"rgf": rgf_smooth, "tv": tv_smooth}


def _simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _real_gpu() -> bool:
    return cuda_available() and not _simulated()


def compare_cuda_with_cpu() -> list[float]:
    """Max |cuda - cpu| for each of CASES."""
    rng = np.random.default_rng(7)
    diffs = []
    for method, shape, params in CASES:
        batch = rng.random(shape, dtype=np.float32)
        smooth = SMOOTHERS[method]
        gpu = smooth(batch, device="cuda", **params)
        cpu = smooth(batch, device="cpu", **params)
        assert gpu.shape == cpu.shape and gpu.dtype == np.float32
        diffs.append(float(np.abs(gpu - cpu).max()))
    return diffs


def _diffs_from_simulator() -> list[float]:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    done = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.cuda
def test_cuda_matches_cpu():
    diffs = compare_cuda_with_cpu() if _real_gpu() else _diffs_from_simulator()
    for (method, shape, params), diff in zip(CASES, diffs, strict=True):
        assert diff <= TOLERANCE, f"{method} {shape} {params}: max |cuda - cpu| = {diff:.3g}"


@pytest.mark.skipif(_simulated(), reason="the CUDA simulator counts as a device")
@pytest.mark.parametrize("method", ["rgf", "tv"])
def test_cuda_without_gpu_is_a_clear_error(method):
    if cuda_available():
        pytest.skip("a CUDA GPU is present")
    image = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(CudaUnavailableError, match="no usable CUDA GPU.*device='cpu'"):
        decompose(image, method=method, device="cuda")
    with pytest.raises(CudaUnavailableError, match="no usable CUDA GPU"):
        SMOOTHERS[method](image[None], device="cuda")


def test_auto_device_falls_back_to_cpu():
    if cuda_available():
        pytest.skip("a CUDA device is present: auto picks it")
    image = np.random.default_rng(3).random((1, 10, 12, 3), dtype=np.float32)
    np.testing.assert_array_equal(rgf_smooth(image, device="auto"), rgf_smooth(image))


if __name__ == "__main__":
    print(json.dumps(compare_cuda_with_cpu()))
