"""RTV's coarse-grid start of the re-weighted solves (CPU kernel).

The transfer operators against plain NumPy on odd and even sizes, and the smoothing with
the correction against the exact sparse solve (its fidelity is what the correction could
cost).
"""

from __future__ import annotations

import numpy as np
import pytest
from photos import psnr
from skimage import data, transform

from stexture.smoothing import _rtv_cpu
from stexture.smoothing._rtv_reference import rtv_reference

SIZES = [(8, 10), (7, 9), (7, 10), (8, 9)]


def _padded(values: np.ndarray) -> np.ndarray:
    out = np.zeros((*values.shape[:-2], values.shape[-2] + 2, values.shape[-1] + 2),
                   np.float32)
    out[..., 1:-1, 1:-1] = values
    return out


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_restriction_is_the_mean_of_each_aggregate(h, w):
    fine = np.random.default_rng(h * w).random((2, h, w), np.float32)
    coarse = np.zeros((2, (h + 1) // 2 + 2, (w + 1) // 2 + 2), np.float32)
    _rtv_cpu._restrict(_padded(fine), coarse)
    for i in range((h + 1) // 2):
        for j in range((w + 1) // 2):
            block = fine[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
            np.testing.assert_allclose(coarse[:, i + 1, j + 1], block.mean(axis=(1, 2)),
                                       rtol=1e-6)
    assert not coarse[:, 0].any() and not coarse[:, -1].any()  # the halo stays zero
    assert not coarse[:, :, 0].any() and not coarse[:, :, -1].any()


def _bilinear(values: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pixel-centre-aligned bilinear upsampling by 2, edge values held (NumPy model)."""
    def axis(n: int, nc: int):
        pos = np.arange(n) / 2.0 - 0.25
        low = np.floor(pos).astype(int)
        return np.clip(low, 0, nc - 1), np.clip(low + 1, 0, nc - 1), pos - low

    i0, i1, ti = axis(h, values.shape[1])
    j0, j1, tj = axis(w, values.shape[2])
    rows = values[:, i0] * (1 - ti)[:, None] + values[:, i1] * ti[:, None]
    return rows[:, :, j0] * (1 - tj) + rows[:, :, j1] * tj


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_prolongation_adds_the_bilinear_interpolation(h, w):
    rng = np.random.default_rng(h + w)
    coarse = rng.random((2, (h + 1) // 2, (w + 1) // 2), np.float32)
    start = rng.random((2, h, w), np.float32)
    fine = _padded(start)
    _rtv_cpu._prolong_add(_padded(coarse), fine)
    np.testing.assert_allclose(fine[:, 1:-1, 1:-1], start + _bilinear(coarse, h, w),
                               rtol=1e-6, atol=1e-6)
    assert not fine[:, 0].any() and not fine[:, :, -1].any()


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_coarse_edges_are_a_quarter_of_the_mean_crossing_fine_edge(h, w):
    rng = np.random.default_rng(7 * h + w)
    ex = rng.random((h, w), np.float32)
    ey = rng.random((h, w), np.float32)
    ex[:, -1] = 0.0  # no edge leaves the image
    ey[-1, :] = 0.0
    hc, wc = (h + 1) // 2, (w + 1) // 2
    exc, eyc = (np.zeros((hc + 2, wc + 2), np.float32) for _ in range(2))
    _rtv_cpu._coarse_weights(_padded(ex), _padded(ey), exc, eyc)
    for i in range(hc):
        for j in range(wc):
            # the fine edges between aggregate (i, j) and its right / lower neighbour
            right = ex[2 * i:2 * i + 2, 2 * j + 1] if j + 1 < wc else np.zeros(1)
            down = ey[2 * i + 1, 2 * j:2 * j + 2] if i + 1 < hc else np.zeros(1)
            np.testing.assert_allclose(exc[i + 1, j + 1], right.mean() / 4, rtol=1e-6)
            np.testing.assert_allclose(eyc[i + 1, j + 1], down.mean() / 4, rtol=1e-6)


def test_smoothing_with_the_coarse_start_stays_close_to_the_exact_solve():
    # 96 x 128 RGB, a looser tolerance than the default 0.03: the path the corrections take
    # at every size from the shorter side 32 up; 46 dB is the floor of test_rtv_tolerance.py
    image = transform.resize(data.astronaut(), (96, 128), anti_aliasing=True)
    image = np.ascontiguousarray(image, dtype=np.float32)
    counts: list[int] = []
    coarse: list[int] = []
    structure = _rtv_cpu.rtv_cpu(image[None], lam=0.01, sigma=3.0, sharpness=0.02, n_iter=4,
                                 tol=0.04, max_cg_iter=500)
    _rtv_cpu._rtv_image(image, 0.01, 3.0, 0.02, 4, 0.04, 500, counts, coarse)
    assert len(coarse) == 4 and all(n > 0 for n in coarse)  # one per outer iteration
    assert psnr(structure[0], rtv_reference(image[None])[0]) >= 46.0


def test_small_images_skip_the_coarse_start():
    image = np.random.default_rng(3).random((_rtv_cpu._COARSE_MIN_SIDE - 1, 40, 1),
                                            np.float32)
    coarse: list[int] = []
    _rtv_cpu._rtv_image(image, 0.01, 3.0, 0.02, 4, 0.04, 500, [], coarse)
    assert coarse == []


def test_the_coarse_start_saves_fine_iterations(monkeypatch):
    # what the correction is for: the re-weighted solves need fewer fine CG iterations
    image = transform.resize(data.camera(), (128, 128), anti_aliasing=True)
    image = np.ascontiguousarray(image[..., None], dtype=np.float32)
    with_coarse: list[int] = []
    _rtv_cpu._rtv_image(image, 0.01, 3.0, 0.02, 4, 0.04, 500, with_coarse)
    monkeypatch.setattr(_rtv_cpu, "_COARSE_FROM", 1 << 30)
    monkeypatch.setattr(_rtv_cpu, "_FIRST_COARSE_TOL", 0.0)
    without: list[int] = []
    _rtv_cpu._rtv_image(image, 0.01, 3.0, 0.02, 4, 0.04, 500, without)
    assert with_coarse[0] < without[0], (with_coarse, without)  # the nested first start
    assert sum(with_coarse[1:]) < 0.75 * sum(without[1:]), (with_coarse, without)
