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
    """A 96x96 grey scene: a box object (shape 0.3 on 0.7; rows 56-87, columns 8-87; two
    faces meeting at column 48), a +-0.1 checker material in an 8x8 patch of the wall
    (rows and columns 8-15), surfaces and the object's mask. The patch lies 40 px from the
    object: no blur of the material basis (:data:`MATERIAL_SCALES`, kernel radius 16 px)
    reaches the object's outline or seam, so errors there are orthogonal to the basis."""
    shape = np.full((96, 96), 0.7)
    shape[56:88, 8:88] = 0.3
    y, x = np.mgrid[:96, :96]
    material = np.zeros((96, 96))
    material[8:16, 8:16] = 0.1 * np.where((x + y)[8:16, 8:16] % 2, 1.0, -1.0)
    surfaces = np.zeros((96, 96), dtype=np.int32)
    surfaces[56:88, 8:48] = 1
    surfaces[56:88, 48:88] = 2
    return shape, material, surfaces, surfaces > 0


def _outer_ring() -> np.ndarray:
    ring = np.zeros((96, 96), dtype=bool)
    ring[56:88, 8:88] = True
    ring[57:87, 9:87] = False
    return ring


def test_a_perfect_split_scores_zero_and_keeping_the_image_scores_one():
    shape, material, surfaces, mask = _scene()
    perfect = split_quality(shape, material, shape, material, surfaces, mask)
    assert perfect.material_in_structure == 0.0 and perfect.shape_in_texture == 0.0
    assert perfect.material_energy_in_structure == 0.0
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


def test_a_blurred_material_in_the_structure_counts_as_material_not_shape():
    """A structure that keeps the material's coarse part (its blur at 2 px): a plain share
    misses it, the multi-scale fit takes it all, and the texture holds no shape."""
    import cv2

    shape, material, _, _ = _scene()
    coarse = cv2.GaussianBlur(material, (0, 0), 2.0)
    structure = shape + coarse
    q = split_quality(structure, shape + material - structure, shape, material)
    assert q.material_energy_in_structure == pytest.approx(
        (coarse**2).sum() / (material**2).sum())
    assert q.shape_in_texture == pytest.approx(0.0, abs=1e-12)


def test_shape_in_the_texture_is_measured_and_located_at_the_silhouette():
    """The structure loses 0.05 on the object's outer ring of pixels (orthogonal to the
    material basis): the texture holds that ring, all of it at the silhouette, and its
    share of the texture's energy is ||D||^2 / (||M||^2 + ||D||^2)."""
    shape, material, surfaces, mask = _scene()
    ring = 0.05 * _outer_ring()
    structure = shape - ring
    texture = shape + material - structure
    q = split_quality(structure, texture, shape, material, surfaces, mask)
    energy_ring, energy_material = 220 * 0.05**2, 64 * 0.1**2  # 2 * (80 + 32) - 4 pixels
    assert q.material_in_structure == pytest.approx(0.0, abs=1e-12)
    assert q.material_energy_in_structure == pytest.approx(0.0, abs=1e-12)
    assert q.shape_in_texture == pytest.approx(energy_ring / (energy_material + energy_ring))
    assert q.shape_sources == pytest.approx({"silhouette": 1.0, "seams": 0.0, "interior": 0.0})
    # band 1: the 220 ring pixels and the 2 * (80 + 32) = 224 pixels beside them outside
    # (4-neighbours: not the corners); the seam: two columns of 30 rows inside the ring
    assert q.region_area == pytest.approx({"silhouette": 444 / 9216, "seams": 60 / 9216,
                                           "interior": (9216 - 504) / 9216})


def test_shape_sources_split_between_seams_and_interiors():
    shape, material, surfaces, mask = _scene()
    loss = np.zeros_like(shape)
    loss[60:80, 47:49] = 0.2  # 40 pixels of the seam between the two faces
    loss[70, 20] = 0.2  # one interior pixel of the object
    loss[56, 30] = 0.1  # one pixel of its outline
    structure = shape + 0.5 * material - loss
    q = split_quality(structure, shape + material - structure, shape, material, surfaces, mask)
    assert q.material_in_structure == pytest.approx(0.5)
    assert q.material_energy_in_structure == pytest.approx(0.25)
    total = 41 * 0.2**2 + 0.1**2
    assert q.shape_sources["seams"] == pytest.approx(40 * 0.2**2 / total)
    assert q.shape_sources["interior"] == pytest.approx(0.2**2 / total)
    assert q.shape_sources["silhouette"] == pytest.approx(0.1**2 / total)
    texture_energy = 0.25 * 64 * 0.1**2 + total
    assert q.shape_in_texture == pytest.approx(total / texture_energy)


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
