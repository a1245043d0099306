"""One synthetic furniture photo: a drawing placed in a room, lit, shadowed and noised.

The scene is a wall and a floor (each with its own surface, the floor receding in
perspective, a skirting board between them), the object standing on the floor in front
of the wall with a soft contact shadow and a cast shadow on the wall, sometimes partly
hidden behind a box or a plant, then a lighting gradient with a colour cast and vignette,
a slight blur, sensor noise, and (when written) JPEG compression.

All randomness comes from the ``numpy.random.Generator`` passed in, so an image is a
function of that generator's state alone.

The scene is built as an albedo (each surface's colour, patterned or plain), a map of
surfaces (which wall, floor, board, face of the object or part of an occluder each pixel
shows) and a shading (face shades, seams, shadows), then lit. With ``layers=True`` the
renderer also draws the ground truth of a shape/material split from the same draws: the
*shape image*, the same scene with every surface's albedo replaced by its mean colour
over that surface (geometry, shading, shadows and lighting kept, no sensor noise), and
the *material layer*, image minus shape image (the patterns, plus the sensor noise).
Seams are drawn at a physical width (``size / REFERENCE_SIZE`` pixels of ink), and
patterns at a physical scale (:mod:`.materials`), so an image at 64 px looks like the
128 px one downsampled.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from PIL import Image

from .furniture import CLASSES, DRAWINGS, TYPICAL_MATERIALS, Role, Sketch
from .materials import (
    BACKDROPS,
    FLOORS,
    MATERIALS,
    REFERENCE_SIZE,
    TILE,
    WALLS,
    mip_level,
    mip_tile,
    paint,
    pick_colour,
    sample_pattern,
)

__all__ = [
    "BOARD_SURFACE",
    "FLOOR_SURFACE",
    "MIN_SIZE",
    "OBJECT_SURFACE",
    "WALL_SURFACE",
    "Rendering",
    "choose_material",
    "encode_jpeg",
    "render_furniture",
]

MIN_SIZE = 32
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly
_TRIM_PALETTE = ("black", "charcoal", "walnut", "grey", "ivory", "oak")
_SOFT_PALETTE = ("white", "ivory", "grey")
_BOOK_PALETTE = ("navy", "oxblood", "mustard", "teal", "ivory", "sage", "black", "rose",
                 "plum", "blue", "terracotta")
# Face kinds in the look-up tables of one rendering.
_PLAIN, _MAIN, _MAIN_VERTICAL = 1, 2, 3
#: Surface ids of the room in :attr:`Rendering.surfaces`; face ``f`` of the object (1-based
#: in drawing order) is ``OBJECT_SURFACE + f - 1``; occluder parts follow the faces.
WALL_SURFACE, BOARD_SURFACE, FLOOR_SURFACE, OBJECT_SURFACE = 0, 1, 2, 3
#: How much a seam darkens at REFERENCE_SIZE, over one pixel.
_SEAM_DEPTH = 0.2


@dataclass(frozen=True)
class Rendering:
    """A rendered image (``size x size x 3`` uint8) and how it was made.

    With ``render_furniture(..., layers=True)``, ``shape`` is the shape image (uint8, the
    scene with every surface's pattern replaced by its mean colour) and ``surfaces`` the
    surface id of each pixel (int32 ``size x size``: :data:`WALL_SURFACE`,
    :data:`BOARD_SURFACE`, :data:`FLOOR_SURFACE`, then one id per face of the object and
    per occluder part, from :data:`OBJECT_SURFACE`); :attr:`material_layer` is
    ``image - shape``. Both are ``None`` otherwise. ``object_mask`` is True where the
    visible object is (also ``None`` without layers).
    """

    image: np.ndarray
    class_name: str
    material: str
    typical: bool  # the material was drawn from the class's typical ones
    wall: str
    floor: str
    occluded: bool
    object_fraction: float  # share of the image the visible object covers
    jpeg_quality: int
    shape: np.ndarray | None = None
    surfaces: np.ndarray | None = None
    object_mask: np.ndarray | None = None

    @property
    def material_layer(self) -> np.ndarray:
        """``image - shape`` in grey levels (int16 ``size x size x 3``), so that
        ``shape.astype(np.int16) + material_layer == image`` exactly.

        ``ValueError`` when the rendering was made without ``layers=True``.
        """
        if self.shape is None:
            raise ValueError("this rendering has no layers: render it with layers=True")
        return self.image.astype(np.int16) - self.shape.astype(np.int16)

    def record(self) -> dict[str, object]:
        """Everything but the pixels, for an index file."""
        return {
            "class_name": self.class_name, "material": self.material, "typical": self.typical,
            "wall": self.wall, "floor": self.floor, "occluded": self.occluded,
            "object_fraction": round(self.object_fraction, 4),
            "jpeg_quality": self.jpeg_quality,
        }


def check_options(size: int, texture_correlation: float) -> None:
    """``ValueError`` naming ``size`` or ``texture_correlation`` when out of range."""
    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    if not 0.0 <= texture_correlation <= 1.0:
        raise ValueError(f"texture_correlation must lie in [0, 1], got {texture_correlation!r}")


def check_class(class_name: str) -> None:
    if class_name not in DRAWINGS:
        raise ValueError(f"unknown class {class_name!r}; known: {', '.join(CLASSES)}")


def choose_material(class_name: str, rng: np.random.Generator,
                    texture_correlation: float) -> tuple[str, bool]:
    """A typical material of the class with probability ``texture_correlation``, else any.

    Returns the material and whether it came from the typical draw. The fallback is
    uniform over all materials, so at ``texture_correlation = 0`` the material is
    independent of the class.
    """
    typical = TYPICAL_MATERIALS[class_name]
    if rng.random() < texture_correlation:
        return typical[rng.integers(len(typical))], True
    names = tuple(MATERIALS)
    return names[rng.integers(len(names))], False


def render_furniture(class_name: str, rng: np.random.Generator, size: int = 128,
                     texture_correlation: float = 0.8, material: str | None = None,
                     layers: bool = False) -> Rendering:
    """Draw one ``class_name`` object in a room, as a ``size x size`` RGB image.

    Parameters
    ----------
    class_name : str
        A key of :data:`CLASSES`.
    rng : numpy.random.Generator
        Every random draw of the image comes from it.
    size : int
        Image side in pixels (>= :data:`MIN_SIZE`).
    texture_correlation : float
        Probability that the object gets a typical material of its class.
    material : str, optional
        The object's material (a key of :data:`MATERIALS`: a cue-conflict image rendered
        directly, e.g. a chair in a sofa's leather); default: :func:`choose_material`.
    layers : bool
        Also draw the ground truth of a shape/material split: ``shape`` (the scene with
        every surface's albedo replaced by its mean colour over that surface; geometry,
        shading, shadows and lighting kept, no sensor noise), ``surfaces`` and
        ``object_mask``; ``material_layer`` is then ``image - shape``. The image itself,
        and every draw from ``rng``, are the same either way, so the layers of an image
        of :func:`make_furniture_dataset` are those of ``render_furniture(class, image_rng(
        seed, split, class, index), size, correlation, layers=True)`` (the image before
        JPEG coding).

    Returns
    -------
    Rendering
    """
    check_class(class_name)
    check_options(size, texture_correlation)
    if material is not None and material not in MATERIALS:
        raise ValueError(f"unknown material {material!r}; known: {', '.join(MATERIALS)}")
    sketch = Sketch(kx=float(rng.choice((-1, 1)) * rng.uniform(0.15, 0.45)),
                    ky=float(rng.uniform(0.18, 0.4)))
    DRAWINGS[class_name](sketch, rng)
    if material is None:
        material, typical = choose_material(class_name, rng, texture_correlation)
    else:
        typical = material in TYPICAL_MATERIALS[class_name]

    faces, horizon, footprint = _place(sketch, rng, size)
    labels = _rasterise(faces, size)
    albedo, surfaces, wall, floor = _room(rng, size, horizon)
    shading = _shadow(rng, labels > 0, footprint, horizon)

    kinds, shades, plain = _face_tables(sketch, rng)
    _paint_object(albedo, surfaces, shading, labels, kinds, shades, plain, material, rng)
    occluded = rng.random() < 0.35
    if occluded:
        labels = _occlude(albedo, surfaces, shading, labels, rng, faces)
    object_fraction = float(np.count_nonzero(labels)) / labels.size
    lit = cv2.multiply(albedo, cv2.merge((shading, shading, shading)))
    flat = cv2.multiply(_surface_means(albedo, surfaces),
                        cv2.merge((shading, shading, shading))) if layers else None
    image, shape = _finish(lit, rng, flat)
    extra = {"shape": shape, "surfaces": surfaces, "object_mask": labels > 0} if layers else {}
    return Rendering(image, class_name, material, typical, wall, floor, occluded,
                     object_fraction, int(rng.integers(60, 96)), **extra)


def _surface_means(albedo: np.ndarray, surfaces: np.ndarray) -> np.ndarray:
    """Each pixel's albedo replaced by the mean albedo of its surface."""
    ids = surfaces.ravel()
    counts = np.maximum(np.bincount(ids), 1)
    means = np.stack([np.bincount(ids, weights=albedo[:, :, c].ravel()) / counts
                      for c in range(3)], axis=1).astype(np.float32)
    return np.take(means, surfaces, axis=0)


def encode_jpeg(rendering: Rendering) -> bytes:
    """The rendering as JPEG bytes at its drawn quality (deterministic for given pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(rendering.image).save(buffer, format="JPEG", quality=rendering.jpeg_quality)
    return buffer.getvalue()


def _place(sketch: Sketch, rng: np.random.Generator,
           size: int) -> tuple[list[np.ndarray], int, np.ndarray]:
    """Every face in fixed-point image coordinates, the wall/floor line, the floor footprint.

    The object is scaled to fill 60-92 % of the frame along its limiting side, placed with
    up to 8 % of it outside the frame, then rotated and keystoned by a random homography.
    """
    points = np.concatenate([f.points for f in sketch.faces])
    (x_min, y_min), (x_max, y_max) = points.min(axis=0), points.max(axis=0)
    width, height = x_max - x_min, y_max - y_min
    scale = size * min(rng.uniform(0.6, 0.92) / width, rng.uniform(0.6, 0.92) / height)
    w_img, h_img = scale * width, scale * height
    slack_x = (size - w_img) / 2 + 0.08 * w_img
    left = (size - w_img) / 2 + rng.uniform(-slack_x, slack_x)
    top = rng.uniform(-0.04 * h_img, max(size - h_img, 0.0) + 0.04 * h_img)

    def to_image(p: np.ndarray) -> np.ndarray:
        return np.stack([left + scale * (p[:, 0] - x_min), top + scale * (y_max - p[:, 1])], 1)

    corners = np.array([[left, top], [left + w_img, top], [left + w_img, top + h_img],
                        [left, top + h_img]], dtype=np.float32)
    angle = np.deg2rad(rng.uniform(-4.0, 4.0))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = corners.mean(axis=0)
    moved = (corners - centre) @ rotation.T + centre
    moved += rng.uniform(-0.04, 0.04, size=(4, 2)) * np.array([w_img, h_img])
    homography = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))

    warped = cv2.perspectiveTransform(to_image(points)[None], homography)[0]
    splits = np.cumsum([len(f.points) for f in sketch.faces])[:-1]
    faces = np.split(_fixed(warped), splits)

    # The floor under the object: its projected width, from the front to the deepest part.
    floor_back = sketch.ky * sketch.depth
    base = np.array([[x_min, 0.0], [x_max, 0.0], [x_max, floor_back], [x_min, floor_back]])
    footprint = cv2.perspectiveTransform(to_image(base)[None], homography)[0]
    back_line = top + scale * (y_max - floor_back)
    horizon = int(np.clip(back_line - rng.uniform(0.0, 0.12) * size, 0.15 * size, 0.92 * size))
    return faces, horizon, footprint


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates as the fixed-point integers cv2.fillPoly takes with ``_SHIFT``."""
    return np.rint(points * (1 << _SHIFT)).astype(np.int32)


def _fill(canvas: np.ndarray, points: np.ndarray, value: object) -> None:
    cv2.fillPoly(canvas, [points], value, lineType=cv2.LINE_8, shift=_SHIFT)


def _rasterise(faces: list[np.ndarray], size: int) -> np.ndarray:
    """Face index + 1 of the front-most face at each pixel (0: background)."""
    labels = np.zeros((size, size), dtype=np.uint16)
    for index, points in enumerate(faces, start=1):
        _fill(labels, points, index)
    return labels


def _surface(name: str, rng: np.random.Generator, shape: tuple[int, int],
             angle: float = 0.0) -> np.ndarray:
    spec = BACKDROPS[name]
    pattern = sample_pattern(name, rng, shape, spec.step, angle, REFERENCE_SIZE / shape[1])
    return paint(pattern, pick_colour(rng, spec.palette), spec.contrast)


def _room(rng: np.random.Generator, size: int,
          horizon: int) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Albedo and surface ids of the room: wall above ``horizon``, floor below it
    (receding), a skirting board between; the wall's and floor's names."""
    wall = WALLS[rng.integers(len(WALLS))]
    floor = FLOORS[rng.integers(len(FLOORS))]
    image = np.empty((size, size, 3), dtype=np.float32)
    surfaces = np.full((size, size), WALL_SURFACE, dtype=np.int32)
    image[:horizon] = _surface(wall, rng, (horizon, size), angle=90.0 * (wall == "painted_brick"))

    spec = BACKDROPS[floor]
    depth = size - horizon
    # Tile pixels across the image's width at the near edge: physical (REFERENCE_SIZE).
    near = REFERENCE_SIZE * rng.uniform(*spec.step)
    far = near * rng.uniform(1.8, 2.6)
    offset = rng.uniform(0, TILE, size=2)
    tilt = rng.uniform(-0.15, 0.15) * near
    dst = np.float32([[0, 0], [size, 0], [size, depth], [0, depth]])
    src = np.float32([[-far / 2 + tilt, 0], [far / 2 + tilt, 0], [near / 2, depth * 1.6],
                      [-near / 2, depth * 1.6]]) + offset.astype(np.float32)
    level = mip_level(np.sqrt(near * far) / size)
    to_floor = cv2.getPerspectiveTransform(dst, src / np.float32(2**level))
    pattern = cv2.warpPerspective(mip_tile(floor, level), to_floor, (size, depth),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT_101)
    image[horizon:] = paint(pattern, pick_colour(rng, spec.palette), spec.contrast)
    surfaces[horizon:] = FLOOR_SURFACE

    board = max(1, round(size * rng.uniform(0.01, 0.03)))
    top = max(horizon - board, 0)
    image[top:horizon] = pick_colour(rng, ("white", "ivory", "walnut", "charcoal"))
    surfaces[top:horizon] = BOARD_SURFACE
    return image, surfaces, wall, floor


def _shadow(rng: np.random.Generator, silhouette: np.ndarray, footprint: np.ndarray,
            horizon: int) -> np.ndarray:
    """The shading of the room: darker on the floor under the object and on the wall
    behind it (float32 ``size x size``, 1 where unshadowed)."""
    size = silhouette.shape[0]
    mask = np.zeros(silhouette.shape, dtype=np.float32)
    _fill(mask, _fixed(footprint), 1.0)
    dx, dy = (int(v) for v in rng.integers(-size // 12, size // 12 + 1, size=2))
    cast = np.zeros(silhouette.shape, dtype=np.float32)
    cast[max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)] = \
        silhouette[max(-dy, 0):size - max(dy, 0), max(-dx, 0):size - max(dx, 0)]
    cast[horizon:] = 0.0
    mask = np.maximum(mask, rng.uniform(0.3, 0.7) * cast)
    sigma = size * rng.uniform(0.015, 0.04)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return (1.0 - rng.uniform(0.3, 0.6) * mask).astype(np.float32)


def _face_tables(sketch: Sketch, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per label: kind (plain / material / material with vertical grain), shade, colour."""
    n = len(sketch.faces) + 1
    kinds = np.zeros(n, dtype=np.uint8)
    shades = np.ones(n, dtype=np.float32)
    plain = np.zeros((n, 3), dtype=np.float32)
    trim = pick_colour(rng, _TRIM_PALETTE)
    soft = pick_colour(rng, _SOFT_PALETTE)
    has_books = any(face.role == Role.BOOK for face in sketch.faces)
    books = [pick_colour(rng, _BOOK_PALETTE) for _ in range(8 if has_books else 0)]
    for label, face in enumerate(sketch.faces, start=1):
        shades[label] = face.shade
        if face.role in (Role.MAIN, Role.INNER):
            kinds[label] = _MAIN_VERTICAL if face.grain else _MAIN
        else:
            kinds[label] = _PLAIN
            if face.role == Role.BOOK:
                plain[label] = books[(face.part * 5) % len(books)]
            else:
                plain[label] = trim if face.role == Role.TRIM else soft
    return kinds, shades, plain


def _paint_object(albedo: np.ndarray, surfaces: np.ndarray, shading: np.ndarray,
                  labels: np.ndarray, kinds: np.ndarray, shades: np.ndarray,
                  plain: np.ndarray, material: str, rng: np.random.Generator) -> None:
    """The object's faces over the room, in place: albedo (material or plain colour),
    surface ids and shading (face shade, darker along seams)."""
    # cv2.copyTo and np.take rather than boolean indexing: several times faster here.
    spec = MATERIALS[material]
    colour = pick_colour(rng, spec.palette)
    kind = np.take(kinds, labels)
    zoom = REFERENCE_SIZE / labels.shape[1]
    pattern = sample_pattern(material, rng, labels.shape, spec.step, zoom=zoom)
    vertical = (kind == _MAIN_VERTICAL).view(np.uint8)
    if vertical.any():
        cv2.copyTo(sample_pattern(material, rng, labels.shape, spec.step, 90.0, zoom),
                   vertical, pattern)
    image = np.take(plain, labels, axis=0)
    cv2.copyTo(paint(pattern, colour, spec.contrast), (kind >= _MAIN).view(np.uint8), image)
    shade = np.take(shades, labels)
    _darken_seams(shade, labels)
    inside = (labels > 0).view(np.uint8)
    cv2.copyTo(image, inside, albedo)
    cv2.copyTo(shade, inside, shading)
    cv2.copyTo((labels.astype(np.int32) + (OBJECT_SURFACE - 1)), inside, surfaces)


def _darken_seams(shade: np.ndarray, labels: np.ndarray) -> None:
    """Dark seams where faces meet make parts readable at low resolution.

    A seam is ink of a physical width: ``_SEAM_DEPTH`` over one pixel at REFERENCE_SIZE,
    over ``round(size / REFERENCE_SIZE)`` pixels above it, and proportionally fainter
    below it (what downsampling the REFERENCE_SIZE image gives)."""
    size = labels.shape[1]
    width = max(1, round(size / REFERENCE_SIZE))
    depth = _SEAM_DEPTH * size / (REFERENCE_SIZE * width)
    seams = np.zeros(labels.shape, dtype=np.uint8)
    seams[:, 1:] = labels[:, 1:] != labels[:, :-1]
    seams[1:] |= labels[1:] != labels[:-1]
    if width > 1:
        seams = cv2.dilate(seams, np.ones((width, width), np.uint8))
    shade[seams.view(bool)] *= np.float32(1.0 - depth)


def _occlude(image: np.ndarray, surfaces: np.ndarray, shading: np.ndarray,
             labels: np.ndarray, rng: np.random.Generator,
             faces: list[np.ndarray]) -> np.ndarray:
    """Put a box or a plant in front of the object's lower part (albedo, surface ids and
    shading, in place; each part its own surface, unshaded); returns visible labels."""
    size = image.shape[0]
    points = np.concatenate(faces) / (1 << _SHIFT)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    w = min(rng.uniform(0.2, 0.4) * (x1 - x0), 0.35 * size)
    h = min(rng.uniform(0.2, 0.4) * (y1 - y0), 0.35 * size)
    cx = rng.uniform(x0, x1)
    bottom = min(y1 + rng.uniform(0.0, 0.08) * size, size + 0.1 * h)
    cover = np.zeros(labels.shape, dtype=np.uint8)
    if rng.random() < 0.5:  # a cardboard box: front and top
        colour = pick_colour(rng, ("tan", "oak", "ivory", "grey"))
        front = np.array([[cx - w / 2, bottom - h], [cx + w / 2, bottom - h],
                          [cx + w / 2, bottom], [cx - w / 2, bottom]])
        lid = np.concatenate([front[:2], front[1::-1] + [0.2 * w, -0.2 * h]])
        parts = [(front, colour), (lid, colour * 1.15)]
    else:  # a potted plant: pot and a few leaves
        pot = pick_colour(rng, ("terracotta", "white", "charcoal"))
        rim = bottom - 0.45 * h
        parts = [(np.array([[cx - 0.3 * w, rim], [cx + 0.3 * w, rim],
                            [cx + 0.22 * w, bottom], [cx - 0.22 * w, bottom]]), pot)]
        green = pick_colour(rng, ("sage", "olive", "teal"))
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        for _ in range(int(rng.integers(4, 8))):
            lx, ly = cx + rng.uniform(-0.35, 0.35) * w, rim - rng.uniform(0.1, 0.55) * h
            leaf = np.stack([lx + 0.18 * w * np.cos(t), ly + 0.25 * h * np.sin(t)], 1)
            parts.append((leaf, green * rng.uniform(0.7, 1.2)))
    for index, (points, colour) in enumerate(parts):
        fixed = _fixed(points)
        _fill(cover, fixed, 1)
        _fill(image, fixed, np.clip(colour, 0.0, 1.0).tolist())
        _fill(surfaces, fixed, OBJECT_SURFACE + len(faces) + index)
    shading[cover > 0] = 1.0
    return np.where(cover > 0, 0, labels).astype(labels.dtype)


def _finish(image: np.ndarray, rng: np.random.Generator,
            flat: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Lighting gradient, colour cast, vignette, slight blur, noise; to uint8.

    ``flat`` (the shape image's albedo times shading) goes through the same light and
    blur, without the noise; returns both (``None`` for a missing ``flat``)."""
    size = image.shape[0]
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.15, 0.5)
    vignette = rng.uniform(0.0, 0.6)
    ramp_y = strength * np.sin(theta) * coords - vignette * coords**2
    ramp_x = strength * np.cos(theta) * coords - vignette * coords**2
    light = (1.0 + ramp_y[:, None] + ramp_x[None, :]) * rng.uniform(0.85, 1.1)
    cast = 1.0 + rng.uniform(-0.06, 0.06) * np.array([1.0, 0.0, -1.0], dtype=np.float32)
    light *= 255.0
    blur = rng.uniform(0.3, 0.7)
    light = cv2.merge([light.astype(np.float32) * c for c in cast.astype(np.float32)])
    image = cv2.multiply(cv2.GaussianBlur(image, (3, 3), blur), light)
    image += _noise(rng, size) * np.float32(255.0 * rng.uniform(0.004, 0.025))
    if flat is not None:
        flat = _to_uint8(cv2.multiply(cv2.GaussianBlur(flat, (3, 3), blur), light))
    return _to_uint8(image), flat


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


@cache
def _noise_bank(size: int) -> np.ndarray:
    bank = np.random.default_rng(size).standard_normal((2 * size, 2 * size, 3), np.float32)
    bank.setflags(write=False)
    return bank


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Unit Gaussian noise: a random crop of a per-process bank (drawing it fresh is slow)."""
    y, x = rng.integers(0, size + 1, size=2)
    return _noise_bank(size)[y:y + size, x:x + size]
