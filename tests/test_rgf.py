"""Rolling guidance filter: CPU kernels against the OpenCV composition, and properties.
(The contract every method keeps is in ``test_smoothing_contract.py``.)
"""

import cv2
import numpy as np
import pytest
from photos import astronaut_crop, camera_crop, gradient_energy
from skimage import data

from stexture.smoothing._rgf_common import blur_radius, jbf_radius
from stexture.smoothing._rgf_reference import rgf_reference
from stexture.smoothing.rgf import rgf_smooth

# measured max |ours - OpenCV| is ~5e-6 on 512x512 photos: float32 rounding, OpenCV's
# interpolated exp table against our polynomial exp, and a different summation order
TOLERANCE = 2e-5


def test_opencv_radius_conventions():
    assert blur_radius(3.0) == 12  # GaussianBlur float32: ksize = round(8 sigma + 1) | 1 = 25
    assert jbf_radius(3.0) == 4  # cvRound(4.5) rounds half to even
    assert jbf_radius(0.3) == 1  # never below one pixel


@pytest.mark.parametrize(
    ("image", "params"),
    [
        (astronaut_crop(), {"sigma_s": 2.0, "sigma_r": 0.05, "n_iter": 3}),
        (camera_crop()[..., None], {"sigma_s": 5.0, "sigma_r": 0.2, "n_iter": 2}),
        (astronaut_crop(12, 16), {}),  # Gaussian radius 12 > image: borders fold more than once
        (astronaut_crop(), {"sigma_s": 0.05}),  # a 1-tap Gaussian, the bilateral disc wider
    ],
    ids=["rgb-small-sigma", "gray-large-sigma", "tiny", "one-tap-gaussian"],
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
