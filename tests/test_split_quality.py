"""split_quality against hand-made splits whose answers are known, and on a rendering."""

from __future__ import annotations

import numpy as np
import pytest

from stexture.datasets import (
    image_rng,
    render_furniture,
    rendering_truth,
    split_quality,
)


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 16x16 grey scene: an 8x8 object (shape 0.3 on 0.7), a +-0.1 checker material on
    the object's interior only (zero on its rim and the background), surfaces and mask."""
    shape = np.full((16, 16), 0.7)
    shape[4:12, 4:12] = 0.3
    y, x = np.mgrid[:16, :16]
    material = np.zeros((16, 16))
    material[6:10, 6:10] = 0.1 * np.where((x + y)[6:10, 6:10] % 2, 1.0, -1.0)
    surfaces = np.zeros((16, 16), dtype=np.int32)
    surfaces[4:12, 4:12] = 1
    surfaces[4:12, 8:12] = 2  # two faces: a seam down the middle of the object
    return shape, material, surfaces, surfaces > 0


def test_a_perfect_split_scores_zero_and_keeping_the_image_scores_one():
    shape, material, surfaces, mask = _scene()
    perfect = split_quality(shape, material, shape, material, surfaces, mask)
    assert perfect.material_in_structure == 0.0 and perfect.shape_in_texture == 0.0
    whole = split_quality(shape + material, np.zeros_like(shape), shape, material)
    assert whole.material_in_structure == pytest.approx(1.0)
    assert whole.material_energy_in_structure == pytest.approx(1.0)
    assert whole.error_material_correlation == pytest.approx(1.0)
    assert whole.shape_in_texture == 0.0  # no texture, so no shape in it


def test_a_share_of_the_material_in_the_structure_is_read_back():
    shape, material, _, _ = _scene()
    structure = shape + 0.3 * material
    q = split_quality(structure, shape + material - structure, shape, material)
    assert q.material_in_structure == pytest.approx(0.3)
    assert q.material_energy_in_structure == pytest.approx(0.09)
    assert q.shape_in_texture == pytest.approx(0.0, abs=1e-12)


def test_shape_in_the_texture_is_measured_and_located_at_the_silhouette():
    """The structure loses 0.05 on the object's outer ring of pixels (where the material
    is zero, so the loss is orthogonal to it): the texture holds that ring, all of it at
    the silhouette, and its share of the texture's energy is ||D||^2 / (||M||^2 + ||D||^2)."""
    shape, material, surfaces, mask = _scene()
    ring = np.zeros_like(shape)
    ring[4:12, 4:12] = 0.05
    ring[5:11, 5:11] = 0.0
    structure = shape - ring
    texture = shape + material - structure
    q = split_quality(structure, texture, shape, material, surfaces, mask)
    energy_ring, energy_material = 28 * 0.05**2, 16 * 0.1**2
    assert q.material_in_structure == pytest.approx(0.0, abs=1e-12)
    assert q.shape_in_texture == pytest.approx(energy_ring / (energy_material + energy_ring))
    assert q.shape_sources == pytest.approx({"silhouette": 1.0, "seams": 0.0, "interior": 0.0})
    # band 1: the 28 ring pixels and the 32 background pixels beside them (4-neighbours:
    # not the corners); the seam: two columns of 6 rows between the rings
    assert q.region_area == pytest.approx({"silhouette": 60 / 256, "seams": 12 / 256,
                                           "interior": 184 / 256})


def test_shape_sources_split_between_seams_and_interiors():
    shape, material, surfaces, mask = _scene()
    loss = np.zeros_like(shape)
    loss[6:10, 7:9] = 0.2  # the seam columns inside the object, where the material lives
    loss[0, 0] = 0.2  # one interior pixel of the background
    # make the loss orthogonal to the material: remove its projection by hand
    loss -= (loss * material).sum() / (material * material).sum() * material
    structure = shape + 0.5 * material - loss
    q = split_quality(structure, shape + material - structure, shape, material, surfaces, mask)
    assert q.material_in_structure == pytest.approx(0.5)
    per_pixel = loss**2
    seam = np.zeros_like(mask)
    seam[5:11, 7:9] = True
    assert q.shape_sources["seams"] == pytest.approx(per_pixel[seam].sum() / per_pixel.sum())
    assert q.shape_sources["silhouette"] == pytest.approx(0.0)
    assert sum(q.shape_sources.values()) == pytest.approx(1.0)
    texture_energy = ((shape + material - structure) ** 2).sum()
    assert q.shape_in_texture == pytest.approx(per_pixel.sum() / texture_energy)


def test_colour_images_sum_over_channels_and_bad_input_is_named():
    shape, material, surfaces, mask = _scene()
    rgb = [np.repeat(a[..., None], 3, axis=2) for a in (shape, material)]
    q = split_quality(rgb[0] + 0.25 * rgb[1], 0.75 * rgb[1], *rgb, surfaces, mask)
    assert q.material_in_structure == pytest.approx(0.25)
    with pytest.raises(ValueError, match="texture has shape"):
        split_quality(shape, material[:8], shape, material)
    with pytest.raises(ValueError, match="structure holds NaN"):
        split_quality(np.full_like(shape, np.nan), material, shape, material)
    with pytest.raises(ValueError, match="no energy"):
        split_quality(shape, material, shape, np.zeros_like(material))
    with pytest.raises(ValueError, match="surfaces has shape"):
        split_quality(shape, material, shape, material, surfaces[:4])
    with pytest.raises(ValueError, match="band"):
        split_quality(shape, material, shape, material, surfaces, band=-1)


def test_on_a_rendering_the_truth_itself_is_a_perfect_split():
    r = render_furniture("chair", image_rng(0, "train", "chair", 0), 64, layers=True)
    shape, material = rendering_truth(r)
    np.testing.assert_allclose(shape + material, r.image / 255.0, atol=1e-6)
    q = split_quality(shape, material, shape, material, r.surfaces, r.object_mask)
    assert q.material_in_structure == 0.0 and q.shape_in_texture == 0.0
    # a blur keeps some material in the structure and moves edges into the texture
    import cv2

    image = r.image.astype(np.float32) / 255.0
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
    q = split_quality(blurred, image - blurred, shape, material, r.surfaces, r.object_mask)
    assert 0.0 < q.material_in_structure < 1.0 and q.shape_in_texture > 0.05
    assert q.shape_sources["silhouette"] + q.shape_sources["seams"] > 0.5
