"""How well a structure/texture split separates shape from material, against ground truth.

The synthetic renderer knows, for each image ``x``, its shape image ``H`` (every surface's
pattern replaced by its mean colour) and its material layer ``M = x - H``
(:func:`render_furniture` with ``layers=True``). A split gives ``x = S + T``. Both add up
to the same image, so the split's error is one field seen from two sides::

    E = S - H = M - T

:func:`split_quality` writes ``E`` as a part made of material and a remainder,
``E = P + R``: ``P`` is the least-squares fit of ``E`` by the material seen at a few
scales (``M`` and its Gaussian blurs, :data:`MATERIAL_SCALES`: a smoothing keeps a
pattern's coarse part and removes its fine part, and both are material) and ``R`` is
orthogonal to all of them. Then ``S = H + P + R`` and ``T = (M - P) - R``: ``P`` is the
material the structure keeps, and ``-R`` what the texture holds that is no material, i.e.
shape (edges, seams, shading the smoothing took out of the structure).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .scene import Rendering

__all__ = ["SplitQuality", "rendering_truth", "split_quality"]

#: Regions :attr:`SplitQuality.shape_sources` reports.
REGIONS = ("silhouette", "seams", "interior")
#: Gaussian sigmas (pixels) of the material basis; 0 is the material itself.
MATERIAL_SCALES = (0.0, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class SplitQuality:
    """The measures of :func:`split_quality` (see there for the equations).

    Attributes
    ----------
    material_in_structure : float
        ``a = <E, M> / <M, M>``: the share of the material's amplitude the structure
        keeps, pixel for pixel (0 ideal, 1 all).
    material_energy_in_structure : float
        ``||P||^2 / ||M||^2``: the material's energy the structure keeps, at any of
        :data:`MATERIAL_SCALES` (``a**2`` when the structure keeps a plain share of it).
    shape_in_texture : float
        ``||R||^2 / ||T||^2``: the share of the texture's energy that is not material
        (0 ideal).
    error_material_correlation : float
        Cosine of ``S - H`` and ``M`` (1: the structure's whole error is material).
    shape_sources : dict
        Region name -> share of ``||R||^2`` there (``silhouette``: within ``band``
        pixels of the object's outline; ``seams``: of any other boundary between
        surfaces; ``interior``: the rest). Empty without a surface map.
    region_area : dict
        Region name -> share of the pixels (so a source share above its area share says
        the shape in the texture concentrates there).
    """

    material_in_structure: float
    material_energy_in_structure: float
    shape_in_texture: float
    error_material_correlation: float
    shape_sources: dict[str, float]
    region_area: dict[str, float]


def rendering_truth(rendering: Rendering) -> tuple[np.ndarray, np.ndarray]:
    """The shape image and material layer of ``rendering`` as float32 in image units
    (``image / 255`` is their sum to within one float32 rounding), ready to compare with
    :func:`stexture.decompose` output. ``ValueError`` without ``layers=True``."""
    material = rendering.material_layer.astype(np.float32) / np.float32(255.0)
    return rendering.shape.astype(np.float32) / np.float32(255.0), material


def split_quality(structure: np.ndarray, texture: np.ndarray, shape: np.ndarray,
                  material: np.ndarray, surfaces: np.ndarray | None = None,
                  object_mask: np.ndarray | None = None, band: int = 1) -> SplitQuality:
    """How much material a split leaves in the structure and how much shape in the texture.

    With the error ``E = S - H`` (which equals ``M - T`` when ``S + T = H + M``) and the
    material basis ``B_j = G_{s_j} * M`` (``s_j`` in :data:`MATERIAL_SCALES`, ``G_0 * M =
    M``)::

        a = <E, M> / <M, M>                          material_in_structure
        P = sum_j c_j B_j,  c = argmin ||E - sum_j c_j B_j||
        R = E - P                                    (orthogonal to every B_j)
        material_energy_in_structure = ||P||^2 / ||M||^2
        shape_in_texture             = ||R||^2 / ||T||^2
        error_material_correlation   = <E, M> / (||E|| ||M||)

    so ``S = H + P + R``, ``T = (M - P) - R`` and ``||T||^2 = ||M - P||^2 + ||R||^2``.
    A perfect split gives zeros; keeping the image whole in the structure gives
    ``a = 1``. Sums run over all pixels and channels.

    Parameters
    ----------
    structure, texture : numpy.ndarray
        The split (``HxW`` or ``HxWxC``), e.g. :func:`stexture.decompose` output.
    shape, material : numpy.ndarray
        The ground truth in the same units and shape (:func:`rendering_truth`).
    surfaces : numpy.ndarray, optional
        ``HxW`` surface ids (:attr:`Rendering.surfaces`): splits ``||E_perp||^2`` into
        regions (:attr:`SplitQuality.shape_sources`).
    object_mask : numpy.ndarray, optional
        ``HxW`` bool, the visible object: tells the silhouette from other seams.
    band : int
        Pixels each side of a boundary that count as that boundary.

    Returns
    -------
    SplitQuality

    Raises
    ------
    ValueError
        Arrays of different shapes, non-finite values, a material with no energy, or a
        bad ``band``.
    """
    arrays = {"structure": structure, "texture": texture, "shape": shape,
              "material": material}
    values = {name: np.asarray(a, dtype=np.float64) for name, a in arrays.items()}
    for name, a in values.items():
        if a.shape != values["structure"].shape:
            raise ValueError(f"{name} has shape {a.shape}, structure {values['structure'].shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or inf")
    if int(band) != band or band < 0:
        raise ValueError(f"band must be an integer >= 0, got {band!r}")
    s, t, h, m = (values[k] for k in ("structure", "texture", "shape", "material"))
    energy_m = float(np.sum(m * m))
    if energy_m == 0.0:
        raise ValueError("material has no energy: nothing to measure the split against")
    error = s - h
    a = float(np.sum(error * m)) / energy_m
    kept = _material_fit(error, m)
    perp = error - kept
    energy_perp = float(np.sum(perp * perp))
    energy_t = float(np.sum(t * t))
    energy_e = float(np.sum(error * error))
    correlation = a * np.sqrt(energy_m / energy_e) if energy_e > 0 else 0.0
    sources, area = {}, {}
    if surfaces is not None:
        regions = _regions(np.asarray(surfaces), object_mask, int(band), s.shape[:2])
        per_pixel = perp * perp if perp.ndim == 2 else (perp * perp).sum(axis=2)
        for name, mask in regions.items():
            sources[name] = float(per_pixel[mask].sum()) / energy_perp if energy_perp else 0.0
            area[name] = float(mask.mean())
    return SplitQuality(a, float(np.sum(kept * kept)) / energy_m,
                        energy_perp / energy_t if energy_t else 0.0,
                        float(correlation), sources, area)


def _material_fit(error: np.ndarray, material: np.ndarray) -> np.ndarray:
    """The least-squares fit of ``error`` by the material at :data:`MATERIAL_SCALES`."""
    basis = [material if sigma == 0 else cv2.GaussianBlur(material, (0, 0), sigma)
             for sigma in MATERIAL_SCALES]
    flat = np.stack([b.ravel() for b in basis], axis=1)
    coefficients, *_ = np.linalg.lstsq(flat, error.ravel(), rcond=None)
    return (flat @ coefficients).reshape(error.shape)


def _regions(surfaces: np.ndarray, object_mask: np.ndarray | None, band: int,
             shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Silhouette, seam and interior masks (disjoint, covering the image)."""
    if surfaces.shape != shape:
        raise ValueError(f"surfaces has shape {surfaces.shape}, the image {shape}")
    seams = _boundary(surfaces, band)
    if object_mask is None:
        silhouette = np.zeros(shape, dtype=bool)
    else:
        object_mask = np.asarray(object_mask, dtype=bool)
        if object_mask.shape != shape:
            raise ValueError(f"object_mask has shape {object_mask.shape}, the image {shape}")
        silhouette = _boundary(object_mask.astype(np.int32), band)
    seams &= ~silhouette
    return {"silhouette": silhouette, "seams": seams, "interior": ~(silhouette | seams)}


def _boundary(ids: np.ndarray, band: int) -> np.ndarray:
    """Pixels within ``band`` pixels of a boundary on either side: ``band = 1`` marks the
    pixels whose 4-neighbour differs, each further unit grows that by one pixel."""
    edge = np.zeros(ids.shape, dtype=np.uint8)
    horizontal = ids[:, 1:] != ids[:, :-1]
    vertical = ids[1:] != ids[:-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:] |= vertical
    edge[:-1] |= vertical
    if band > 1:
        edge = cv2.dilate(edge, np.ones((2 * band - 1, 2 * band - 1), np.uint8))
    if band == 0:
        edge[:] = 0
    return edge.view(bool)
