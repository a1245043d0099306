"""Total-variation smoothing: CPU kernels against scikit-image, and properties."""

import numpy as np
import pytest
from photos import astronaut_crop, camera_crop, gradient_energy
from skimage import data

from stexture import decompose
from stexture.smoothing._tv_cpu import chambolle_planes
from stexture.smoothing._tv_reference import tv_reference
from stexture.smoothing.tv import tv_smooth

# measured max |ours - skimage| is ~3e-7 on 512x512 photos (float32 rounding of the same
# iteration, same stopping iteration); 1e-5 leaves room for summation-order differences
TOLERANCE = 1e-5


def test_smoke_decompose():
    structure, texture = decompose(astronaut_crop(), method="tv")
    assert structure.shape == texture.shape == (48, 64, 3)
    assert structure.dtype == texture.dtype == np.float32


@pytest.mark.parametrize(
    ("image", "params"),
    [
        (astronaut_crop(), {}),
        (camera_crop()[..., None], {}),
        (astronaut_crop(), {"weight": 0.3, "eps": 1e-3}),
        (camera_crop()[..., None], {"weight": 0.05, "max_num_iter": 7}),
    ],
    ids=["rgb", "gray", "rgb-strong", "gray-capped"],
)
def test_matches_skimage(image, params):
    ours = tv_smooth(image[None], **params)[0]
    ref = tv_reference(image[None], **params)[0]
    assert np.abs(ours - ref).max() <= TOLERANCE


def test_stopping_rule_is_per_channel():
    # a flat channel stops at once, a textured one iterates: as skimage, channel by channel
    image = np.stack([camera_crop(), np.full((40, 56), 0.5, np.float32)])
    _, iterations = chambolle_planes(image, 0.1, 2e-4, 200)
    assert iterations[1] == 0
    assert 5 < iterations[0] < 199


def test_one_iteration_returns_input():
    image = astronaut_crop()[None]
    np.testing.assert_array_equal(tv_smooth(image, max_num_iter=1), image)


@pytest.mark.parametrize("shape", [(20, 24), (20, 24, 1), (20, 24, 3)])
def test_shapes_and_dtypes_through_decompose(shape):
    rng = np.random.default_rng(2)
    image = rng.random(shape)  # float64 in [0, 1)
    structure, texture = decompose(image, method="tv")
    assert structure.shape == shape and structure.dtype == np.float32
    np.testing.assert_allclose(structure + texture, image.astype(np.float32), atol=2**-24)


def test_batch_equals_single_calls():
    images = np.stack(
        [astronaut_crop(), astronaut_crop()[::-1], np.full((48, 64, 3), 0.25, np.float32)]
    )
    batch = tv_smooth(images)
    for image, smoothed in zip(images, batch, strict=True):
        np.testing.assert_allclose(tv_smooth(image[None])[0], smoothed, rtol=0, atol=1e-6)


def test_constant_image_unchanged():
    image = np.full((1, 17, 23, 3), 0.37, np.float32)
    np.testing.assert_array_equal(tv_smooth(image), image)


def test_step_edge_stays_sharp():
    image = np.full((1, 24, 32, 1), 0.2, np.float32)
    image[:, :, 16:] = 0.8
    smoothed = tv_smooth(image)
    # TV lowers the contrast a little but keeps the jump between two neighbouring columns
    assert (smoothed[0, :, 16, 0] - smoothed[0, :, 15, 0]).min() > 0.5
    assert np.abs(np.diff(smoothed[0, :, :16, 0], axis=1)).max() < 0.01


def test_texture_energy_falls_as_weight_rises():
    brick = (data.brick()[:64, :64] / 255).astype(np.float32)[None, :, :, None]
    energies = [gradient_energy(tv_smooth(brick, weight=w)) for w in (0.05, 0.1, 0.3)]
    assert gradient_energy(brick) > energies[0] > energies[1] > energies[2]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("weight", 0.0),
        ("weight", -0.1),
        ("weight", float("nan")),
        ("eps", 0.0),
        ("eps", -1e-4),
        ("max_num_iter", 0),
        ("max_num_iter", 10.0),
        ("max_num_iter", False),
    ],
)
def test_bad_parameters_are_named(name, value):
    batch = np.zeros((1, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=name):
        tv_smooth(batch, **{name: value})
    with pytest.raises(ValueError, match=name):
        decompose(batch[0], method="tv", **{name: value})
