"""RTV: the Numba CPU solver against the exact sparse direct solve, plus properties.
(The contract every method keeps is in ``test_smoothing_contract.py``.)
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from photos import gradient_energy, psnr
from skimage import data, transform

from stexture.smoothing._rtv_common import gaussian_taps, sigma_schedule
from stexture.smoothing._rtv_cpu import _rtv_image
from stexture.smoothing._rtv_reference import rtv_reference, rtv_system, texture_edge_weights
from stexture.smoothing.rtv import rtv_smooth


def _photo(name: str, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    image = transform.resize(getattr(data, name)(), shape, anti_aliasing=True)
    return np.ascontiguousarray(image, dtype=np.float32)


@pytest.fixture(scope="module")
def rgb_batch() -> np.ndarray:
    return np.stack([_photo("astronaut"), _photo("coffee")])


@pytest.fixture(scope="module")
def rgb_reference(rgb_batch: np.ndarray) -> np.ndarray:
    return rtv_reference(rgb_batch)


# --- formulation pieces ------------------------------------------------------------------


def test_sigma_schedule_halves_down_to_the_floor():
    assert sigma_schedule(3.0, 5) == [3.0, 1.5, 0.75, 0.5, 0.5]


@pytest.mark.parametrize(("sigma", "size"), [(3.0, 15), (1.5, 9), (0.75, 5), (0.5, 3)])
def test_gaussian_taps_are_odd_normalised_and_symmetric(sigma, size):
    taps = gaussian_taps(sigma)
    assert taps.size == size
    np.testing.assert_allclose(taps.sum(), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(taps, taps[::-1])


def test_reference_system_is_symmetric_with_unit_row_sums():
    image = _photo("chelsea", (12, 10)).astype(np.float64)
    wx, wy = texture_edge_weights(image, 3.0, 0.02)
    assert np.all(wx[:, -1] == 0) and np.all(wy[-1, :] == 0)
    system = rtv_system(wx, wy, 0.005)
    assert abs(system - system.T).max() == 0
    # (1 + lam L) 1 = 1 because the graph Laplacian annihilates constants
    np.testing.assert_allclose(system @ np.ones(system.shape[0]), 1.0, rtol=1e-12)


# --- against the direct solve -------------------------------------------------------------


def test_tight_tolerance_matches_the_direct_solve_closely(rgb_batch, rgb_reference):
    structure = rtv_smooth(rgb_batch[:1], tol=1e-6, max_cg_iter=2000)
    assert psnr(structure[0], rgb_reference[0]) >= 90.0


def test_gray_image_matches_the_direct_solve():
    gray = _photo("camera")[None, :, :, None]
    params = {"lam": 0.02, "sigma": 2.0, "sharpness": 0.03, "n_iter": 3}
    structure = rtv_smooth(gray, **params, tol=1e-6, max_cg_iter=2000)
    assert structure.shape == gray.shape
    assert psnr(structure, rtv_reference(gray, **params)) >= 90.0


def test_solver_warm_starts_and_stops_at_the_tolerance():
    flat = np.full((16, 16, 3), 0.5, np.float32)
    counts: list[int] = []
    _rtv_image(flat, 0.01, 3.0, 0.02, 4, 0.05, 500, counts)
    assert counts == [0, 0, 0, 0]  # the input already solves every system
    image = _photo("rocket")
    loose: list[int] = []
    tight: list[int] = []
    capped: list[int] = []
    _rtv_image(image, 0.01, 3.0, 0.02, 4, 0.05, 500, loose)
    _rtv_image(image, 0.01, 3.0, 0.02, 4, 1e-4, 500, tight)
    _rtv_image(image, 0.01, 3.0, 0.02, 4, 1e-4, 3, capped)
    assert all(t > lo > 0 for t, lo in zip(tight, loose, strict=True))
    assert capped == [3, 3, 3, 3]


# --- properties ---------------------------------------------------------------------------


def test_clean_step_edge_stays_sharp():
    step = np.full((1, 32, 32, 1), 0.2, np.float32)
    step[:, :, 16:] = 0.8
    structure = rtv_smooth(step)[0, :, :, 0]
    jump = structure[:, 16] - structure[:, 15]
    assert np.all(jump > 0.9 * 0.6)


def test_texture_is_removed_more_as_lam_rises():
    brick = np.ascontiguousarray(data.brick()[:48, :48, None], dtype=np.float32) / 255.0
    structures = [rtv_smooth(brick[None], lam=lam)[0] for lam in (0.003, 0.01, 0.03)]
    energies = [gradient_energy(s[None]) for s in structures]
    residuals = [float(np.mean((brick - s) ** 2)) for s in structures]
    assert energies[0] > energies[1] > energies[2]
    assert residuals[0] < residuals[1] < residuals[2]


def test_result_does_not_depend_on_the_number_of_threads(rgb_batch):
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = rtv_smooth(rgb_batch[:1])
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = rtv_smooth(rgb_batch[:1])
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(single, many)


# --- the reference's own checks -----------------------------------------------------------


def test_reference_rejects_bad_parameters_too():
    with pytest.raises(ValueError, match="sigma"):
        rtv_reference(np.zeros((1, 4, 4, 1)), sigma=-1.0)
