"""Total-variation smoothing: CPU kernels against scikit-image, and properties.
(The contract every method keeps is in ``test_smoothing_contract.py``.)
"""

import numpy as np
import pytest
from photos import astronaut_crop, camera_crop, gradient_energy
from skimage import data

from stexture.smoothing._tv_cpu import chambolle_planes
from stexture.smoothing._tv_reference import tv_reference
from stexture.smoothing.tv import tv_smooth

# measured max |ours - skimage| is ~3e-7 on 512x512 photos (float32 rounding of the same
# iteration, same stopping iteration); 1e-5 leaves room for summation-order differences
TOLERANCE = 1e-5


@pytest.mark.parametrize(
    ("image", "params"),
    [
        (astronaut_crop(), {"weight": 0.3, "eps": 1e-3}),
        (camera_crop()[..., None], {"weight": 0.05, "max_num_iter": 7}),
    ],
    ids=["rgb-strong", "gray-capped"],
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
