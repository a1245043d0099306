"""Rolling guidance filter: CPU kernels against the OpenCV composition, and properties."""

import cv2
import numpy as np
import pytest
from photos import astronaut_crop, camera_crop, gradient_energy
from skimage import data

from stexture import decompose
from stexture.smoothing._rgf_common import blur_radius, jbf_radius
from stexture.smoothing._rgf_reference import rgf_reference
from stexture.smoothing.rgf import rgf_smooth

# measured max |ours - OpenCV| is ~5e-6 on 512x512 photos: float32 rounding, OpenCV's
# interpolated exp table against our polynomial exp, and a different summation order
TOLERANCE = 2e-5


def test_smoke_decompose():
    structure, texture = decompose(astronaut_crop(), method="rgf")
    assert structure.shape == texture.shape == (48, 64, 3)
    assert structure.dtype == texture.dtype == np.float32
    assert np.isfinite(structure).all()


def test_opencv_radius_conventions():
    assert blur_radius(3.0) == 12  # GaussianBlur float32: ksize = round(8 sigma + 1) | 1 = 25
    assert jbf_radius(3.0) == 4  # cvRound(4.5) rounds half to even
    assert jbf_radius(0.3) == 1  # never below one pixel


@pytest.mark.parametrize(
    ("image", "params"),
    [
        (astronaut_crop(), {}),
        (camera_crop()[..., None], {}),
        (astronaut_crop(), {"sigma_s": 2.0, "sigma_r": 0.05, "n_iter": 3}),
        (camera_crop()[..., None], {"sigma_s": 5.0, "sigma_r": 0.2, "n_iter": 2}),
        (astronaut_crop(12, 16), {}),  # Gaussian radius 12 > image: borders fold more than once
        (astronaut_crop(), {"sigma_s": 0.05}),  # a 1-tap Gaussian, the bilateral disc wider
    ],
    ids=["rgb", "gray", "rgb-small-sigma", "gray-large-sigma", "tiny", "one-tap-gaussian"],
)
def test_matches_opencv_composition(image, params):
    batch = image[None]
    ours = rgf_smooth(batch, **params)
    ref = rgf_reference(batch, **{"sigma_s": 3.0, "sigma_r": 0.1, "n_iter": 4, **params})
    assert np.abs(ours - ref).max() <= TOLERANCE


def test_single_pass_is_opencv_gaussian_blur():
    image = astronaut_crop()
    ours = rgf_smooth(image[None], n_iter=1)[0]
    ref = cv2.GaussianBlur(image, (0, 0), 3.0)
    assert np.abs(ours - ref).max() <= 1e-6


@pytest.mark.parametrize("shape", [(20, 24), (20, 24, 1), (20, 24, 3)])
def test_shapes_and_dtypes_through_decompose(shape):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    structure, texture = decompose(image, method="rgf")
    assert structure.shape == shape and structure.dtype == np.float32
    np.testing.assert_allclose(structure + texture, image / np.float32(255), atol=2**-24)


def test_batch_equals_single_calls():
    images = np.stack([astronaut_crop(), astronaut_crop()[::-1], astronaut_crop()[:, ::-1]])
    batch = rgf_smooth(images)
    for image, smoothed in zip(images, batch, strict=True):
        np.testing.assert_allclose(rgf_smooth(image[None])[0], smoothed, rtol=0, atol=1e-6)


def test_constant_image_unchanged():
    image = np.full((1, 17, 23, 3), 0.37, np.float32)
    np.testing.assert_allclose(rgf_smooth(image), image, rtol=0, atol=1e-6)


def test_step_edge_stays_sharp():
    image = np.full((1, 24, 32, 3), 0.2, np.float32)
    image[:, :, 16:] = 0.8
    smoothed = rgf_smooth(image)
    # the Gaussian pass alone smears the step over ~8 pixels; the guided passes restore it
    np.testing.assert_allclose(smoothed[:, :, :16], 0.2, atol=0.01)
    np.testing.assert_allclose(smoothed[:, :, 16:], 0.8, atol=0.01)


def test_texture_energy_falls_as_sigma_s_rises():
    brick = (data.brick()[:64, :64] / 255).astype(np.float32)[None, :, :, None]
    energies = [gradient_energy(rgf_smooth(brick, sigma_s=s)) for s in (1.0, 2.0, 4.0)]
    assert gradient_energy(brick) > energies[0] > energies[1] > energies[2]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sigma_s", 0.0),
        ("sigma_s", -1.0),
        ("sigma_s", float("nan")),
        ("sigma_r", 0.0),
        ("sigma_r", float("inf")),
        ("sigma_r", "0.1"),
        ("n_iter", 0),
        ("n_iter", 2.5),
        ("n_iter", True),
    ],
)
def test_bad_parameters_are_named(name, value):
    batch = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match=name):
        rgf_smooth(batch, **{name: value})
    with pytest.raises(ValueError, match=name):
        decompose(batch[0], method="rgf", **{name: value})


def test_bad_batch_is_rejected():
    with pytest.raises(ValueError, match="float32"):
        rgf_smooth(np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        rgf_smooth(np.zeros((8, 8, 3), np.float32))
