"""The contract every smoothing method keeps, one parametrized test per clause.

As kornia's ``BaseTester`` does for its operators: smoke, exceptions, shapes, dtypes and
numerics against the method's reference, run over every method of the registry. A method
added to ``METHODS`` fails here until it has a :class:`Spec`. What only one method does
(its own formulation, its own reference's conventions) stays in its own test file.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from photos import astronaut_crop, camera_crop, psnr

from stexture import decompose
from stexture.smoothing import METHODS
from stexture.smoothing._rgf_reference import rgf_reference
from stexture.smoothing._rtv_reference import rtv_reference
from stexture.smoothing._tv_reference import tv_reference


def _max_abs_within(tolerance: float) -> Callable[[np.ndarray, np.ndarray], None]:
    def check(ours: np.ndarray, reference: np.ndarray) -> None:
        assert np.abs(ours - reference).max() <= tolerance

    return check


def _psnr_at_least(db: float) -> Callable[[np.ndarray, np.ndarray], None]:
    def check(ours: np.ndarray, reference: np.ndarray) -> None:
        for one, exact in zip(ours, reference, strict=True):
            assert psnr(one, exact) >= db

    return check


@dataclass(frozen=True)
class Spec:
    """What the contract needs to know of one method."""

    #: the reference implementation, called with the batch alone (its defaults are ours)
    reference: Callable[..., np.ndarray]
    #: asserts that our default output agrees with the reference's
    agrees: Callable[[np.ndarray, np.ndarray], None]
    #: ``(parameter, value)`` pairs that must be a ``ValueError`` naming the parameter
    bad_parameters: tuple[tuple[str, object], ...]
    #: largest |difference| between a constant image and its structure (0: unchanged bits)
    constant_atol: float
    #: largest |difference| between a batch's results and single calls (0: the same bits)
    batch_atol: float


SPECS = {
    # rgf: measured max |ours - OpenCV| is ~5e-6 on 512x512 photos (float32 rounding,
    # OpenCV's interpolated exp table against our polynomial exp, summation order)
    "rgf": Spec(
        reference=rgf_reference,
        agrees=_max_abs_within(2e-5),
        bad_parameters=(
            ("sigma_s", 0.0), ("sigma_s", -1.0), ("sigma_s", float("nan")),
            ("sigma_r", 0.0), ("sigma_r", float("inf")), ("sigma_r", "0.1"),
            ("n_iter", 0), ("n_iter", 2.5), ("n_iter", True),
        ),
        constant_atol=1e-6,
        batch_atol=1e-6,
    ),
    # rtv: the default tolerance keeps the structure >= 45 dB from the exact direct solve
    "rtv": Spec(
        reference=rtv_reference,
        agrees=_psnr_at_least(45.0),
        bad_parameters=(
            ("lam", 0.0), ("lam", -1.0), ("lam", float("nan")),
            ("sigma", 0.0), ("sigma", float("inf")),
            ("sharpness", 0.0), ("sharpness", -0.02),
            ("n_iter", 0), ("n_iter", 2.5), ("n_iter", True),
            ("tol", 0.0), ("tol", 1.0), ("tol", "0.1"),
            ("max_cg_iter", 0),
        ),
        constant_atol=1e-6,
        batch_atol=0.0,
    ),
    # tv: measured max |ours - skimage| is ~3e-7 on 512x512 photos (float32 rounding of the
    # same iteration, same stopping iteration); 1e-5 leaves room for summation order
    "tv": Spec(
        reference=tv_reference,
        agrees=_max_abs_within(1e-5),
        bad_parameters=(
            ("weight", 0.0), ("weight", -0.1), ("weight", float("nan")),
            ("eps", 0.0), ("eps", -1e-4),
            ("max_num_iter", 0), ("max_num_iter", 10.0), ("max_num_iter", False),
        ),
        constant_atol=0.0,
        batch_atol=1e-6,
    ),
}
NAMES = sorted(METHODS)
BAD_PARAMETERS = [
    (name, parameter, value)
    for name in NAMES
    for parameter, value in SPECS[name].bad_parameters
]


def test_every_method_has_a_spec():
    assert set(SPECS) == set(METHODS)


# --- smoke --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_smoke_decompose(name):
    structure, texture = decompose(astronaut_crop(), method=name)
    assert structure.shape == texture.shape == (48, 64, 3)
    assert structure.dtype == texture.dtype == np.float32
    assert np.isfinite(structure).all()


# --- exceptions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "parameter", "value"), BAD_PARAMETERS)
def test_bad_parameters_are_named(name, parameter, value):
    batch = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match=parameter):
        METHODS[name].function(batch, **{parameter: value})
    with pytest.raises(ValueError, match=parameter):
        decompose(batch[0], method=name, **{parameter: value})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        (np.zeros((1, 8, 8, 3), np.float64), "float32"),
        (np.zeros((1, 8, 8, 3), np.uint8), "float32"),
        (np.zeros((8, 8, 3), np.float32), "(N, H, W, C)"),
        (np.zeros((1, 8, 8, 2), np.float32), "(N, H, W, C)"),
        ([[[[0.5]]]], "(N, H, W, C)"),
    ],
    ids=["float64", "uint8", "3-d", "two-channels", "list"],
)
def test_every_method_has_the_same_input_contract(name, batch, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        METHODS[name](batch)


def test_cpu_calls_never_import_numba_cuda():
    # the CUDA kernels are imported only when a GPU is asked for (slow, and absent from
    # CPU-only installs)
    code = ("import sys, numpy as np; from stexture.smoothing import METHODS; "
            "[METHODS[n](np.zeros((1, 8, 8, 3), np.float32)) for n in METHODS]; "
            "print(sorted(m for m in sys.modules if m.startswith('numba.cuda')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", NAMES)
def test_unknown_device_is_a_value_error(name):
    with pytest.raises(ValueError, match="device"):
        METHODS[name](np.zeros((1, 4, 4, 1), np.float32), device="tpu")


# --- shapes and dtypes --------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(20, 24), (20, 24, 1), (20, 24, 3)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_shapes_and_dtypes_through_decompose(name, shape, dtype):
    rng = np.random.default_rng(1)
    if dtype == np.uint8:
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        x = image / np.float32(255)
    else:
        image = rng.random(shape)  # float64 in [0, 1)
        x = image.astype(np.float32)
    structure, texture = decompose(image, method=name)
    assert structure.shape == texture.shape == shape
    assert structure.dtype == texture.dtype == np.float32
    # the texture is the residual, bit-exactly; the sum gives x back to one rounding
    np.testing.assert_array_equal(texture, x - structure)
    np.testing.assert_allclose(structure + texture, x, rtol=0, atol=2**-24)


@pytest.mark.parametrize("name", NAMES)
def test_every_method_takes_a_strided_float32_batch(name):
    # a non-contiguous view is accepted and gives what its contiguous copy gives
    rng = np.random.default_rng(0)
    wide = rng.random((1, 12, 32, 3), dtype=np.float32)
    view = wide[:, :, ::2]
    np.testing.assert_array_equal(METHODS[name](view), METHODS[name](view.copy()))


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_calls(name):
    images = np.stack(
        [astronaut_crop(), astronaut_crop()[::-1], np.full((48, 64, 3), 0.25, np.float32)]
    )
    batch = METHODS[name](images)
    for image, smoothed in zip(images, batch, strict=True):
        single = METHODS[name](image[None])[0]
        np.testing.assert_allclose(single, smoothed, rtol=0, atol=SPECS[name].batch_atol)


# --- numerics -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "image", [astronaut_crop(), camera_crop()[..., None]], ids=["rgb", "gray"]
)
def test_default_parameters_match_the_reference(name, image):
    batch = image[None]
    SPECS[name].agrees(METHODS[name](batch), SPECS[name].reference(batch))


@pytest.mark.parametrize("name", NAMES)
def test_constant_image_unchanged(name):
    image = np.full((1, 17, 23, 3), 0.37, np.float32)
    np.testing.assert_allclose(
        METHODS[name](image), image, rtol=0, atol=SPECS[name].constant_atol
    )
