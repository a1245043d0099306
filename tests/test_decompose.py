"""The decompose() contract (DESIGN.md): shapes, dtypes, residual, registry and bad input."""

import numpy as np
import pytest

import stexture
from stexture import METHODS, decompose
from stexture.decompose import as_float_batch

# tv with few iterations: cheap, and any method obeys the same contract
FAST = {"method": "tv", "max_num_iter": 5}


@pytest.fixture(scope="module")
def rgb_u8() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)


def test_registry_lists_every_method_with_defaults_and_summary():
    assert set(METHODS) == {"rtv", "rgf", "tv"}
    for name, method in METHODS.items():
        assert method.name == name
        assert method.summary
        assert method.defaults, name
        assert "device" not in method.defaults and "batch" not in method.defaults
    assert METHODS["rtv"].defaults["lam"] == 0.01
    assert METHODS["rtv"].defaults["sigma"] == 3.0


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [(np.uint8, 255.0), (np.uint16, 65535.0), (np.float32, 1.0), (np.float64, 1.0)],
)
def test_dtypes_scale_to_unit_range(dtype, scale, rgb_u8):
    image = (rgb_u8.astype(np.float64) / 255.0 * scale).astype(dtype)
    structure, texture = decompose(image, **FAST)
    assert structure.dtype == texture.dtype == np.float32
    assert structure.shape == texture.shape == image.shape
    x = as_float_batch(image)[0]
    np.testing.assert_allclose(x, rgb_u8 / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    "shape", [(20, 24), (20, 24, 1), (20, 24, 3), (2, 20, 24, 3), (3, 20, 24, 1)]
)
def test_shapes_round_trip(shape):
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    structure, texture = decompose(image, **FAST)
    assert structure.shape == texture.shape == shape


def test_texture_is_the_float32_residual(rgb_u8):
    structure, texture = decompose(rgb_u8, **FAST)
    x = rgb_u8.astype(np.float32) / np.float32(255.0)
    np.testing.assert_array_equal(texture, x - structure)
    assert np.abs((structure + texture) - x).max() <= 2.0**-24


def test_batch_equals_single_calls(rgb_u8):
    other = rgb_u8[::-1].copy()
    structure, _ = decompose(np.stack([rgb_u8, other]), **FAST)
    np.testing.assert_allclose(structure[0], decompose(rgb_u8, **FAST)[0], atol=1e-6)
    np.testing.assert_allclose(structure[1], decompose(other, **FAST)[0], atol=1e-6)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((8, 8, 3), dtype=np.int32), "dtype int32"),
        (np.zeros((8, 8, 3), dtype=bool), "dtype bool"),
        (np.zeros(8, dtype=np.float32), "1 dimension"),
        (np.zeros((1, 2, 8, 8, 3), dtype=np.float32), "5 dimension"),
        (np.zeros((8, 8, 4), dtype=np.float32), "1 or 3 channels"),
        (np.zeros((8, 8, 2), dtype=np.uint8), "1 or 3 channels"),
        (np.zeros((1, 8, 3), dtype=np.float32), "too small"),
        (np.full((8, 8), np.nan, dtype=np.float32), "NaN"),
        (np.full((8, 8), np.inf, dtype=np.float64), "NaN or infinite"),
        (np.full((8, 8), 1.5, dtype=np.float32), r"\[0, 1\]"),
        (np.full((8, 8), -0.1, dtype=np.float64), r"\[0, 1\]"),
        ([[0.0, 1.0], [1.0, 0.0]], "numpy array"),
    ],
)
def test_bad_images_are_named(image, match):
    with pytest.raises(ValueError, match=match):
        decompose(image, method="tv")


def test_unknown_method_and_parameter_are_named(rgb_u8):
    with pytest.raises(ValueError, match="unknown method 'bilateral'.*rtv"):
        decompose(rgb_u8, method="bilateral")
    with pytest.raises(ValueError, match="unknown parameter.*'lambda'.*rtv.*lam"):
        decompose(rgb_u8, method="rtv", **{"lambda": 0.02})


def test_unknown_device_is_named(rgb_u8):
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        decompose(rgb_u8, device="gpu", **FAST)


@pytest.mark.skipif(stexture.cuda_available(), reason="a CUDA device is present")
def test_cuda_without_gpu_says_so_and_auto_falls_back(rgb_u8):
    with pytest.raises(stexture.CudaUnavailableError, match="no usable CUDA GPU.*device='cpu'"):
        decompose(rgb_u8, device="cuda", **FAST)
    structure, _ = decompose(rgb_u8, device="auto", **FAST)
    np.testing.assert_array_equal(structure, decompose(rgb_u8, **FAST)[0])
