"""One synthetic furniture photo: a drawing placed in a room, lit, shadowed and noised.

The scene is a wall and a floor (each with its own surface, the floor receding in
perspective, a skirting board between them), the object standing on the floor in front
of the wall with a soft contact shadow and a cast shadow on the wall, sometimes partly
hidden behind a box or a plant, then a lighting gradient with a colour cast and vignette,
a slight blur, sensor noise, and (when written) JPEG compression.

All randomness comes from the ``numpy.random.Generator`` passed in, so an image is a
function of that generator's state alone.
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
    TILE,
    WALLS,
    backdrop_tile,
    material_tile,
    paint,
    pick_colour,
    sample_pattern,
)

__all__ = ["MIN_SIZE", "Rendering", "choose_material", "encode_jpeg", "render_furniture"]

MIN_SIZE = 32
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly
_TRIM_PALETTE = ("black", "charcoal", "walnut", "grey", "ivory", "oak")
_SOFT_PALETTE = ("white", "ivory", "grey")
_BOOK_PALETTE = ("navy", "oxblood", "mustard", "teal", "ivory", "sage", "black", "rose",
                 "plum", "blue", "terracotta")
# Face kinds in the look-up tables of one rendering.
_PLAIN, _MAIN, _MAIN_VERTICAL = 1, 2, 3


@dataclass(frozen=True)
class Rendering:
    """A rendered image (``size x size x 3`` uint8) and how it was made."""

    image: np.ndarray
    class_name: str
    material: str
    typical: bool  # the material was drawn from the class's typical ones
    wall: str
    floor: str
    occluded: bool
    object_fraction: float  # share of the image the visible object covers
    jpeg_quality: int

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
                     texture_correlation: float = 0.8, material: str | None = None
                     ) -> Rendering:
    """Draw one ``class_name`` object in a room, as a ``size x size`` RGB image.

    The object's main surfaces get ``material`` when given (a key of :data:`MATERIALS`:
    a cue-conflict image rendered directly, e.g. a chair in a sofa's leather), else a
    material chosen by :func:`choose_material`; its shape, pose, the room, light and noise
    are all drawn from ``rng``.
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
    background, wall, floor = _room(rng, size, horizon)
    _shadow(background, rng, labels > 0, footprint, horizon)

    kinds, shades, plain = _face_tables(sketch, rng)
    image = _paint_object(background, labels, kinds, shades, plain, material, rng)
    occluded = rng.random() < 0.35
    if occluded:
        labels = _occlude(image, labels, rng, faces)
    object_fraction = float(np.count_nonzero(labels)) / labels.size
    image = _finish(image, rng)
    return Rendering(image, class_name, material, typical, wall, floor, occluded,
                     object_fraction, int(rng.integers(60, 96)))


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
    pattern = sample_pattern(backdrop_tile(name), rng, shape, spec.step, angle)
    return paint(pattern, pick_colour(rng, spec.palette), spec.contrast)


def _room(rng: np.random.Generator, size: int, horizon: int) -> tuple[np.ndarray, str, str]:
    """Wall above ``horizon``, floor below it (receding), a skirting board between."""
    wall = WALLS[rng.integers(len(WALLS))]
    floor = FLOORS[rng.integers(len(FLOORS))]
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:horizon] = _surface(wall, rng, (horizon, size), angle=90.0 * (wall == "painted_brick"))

    spec = BACKDROPS[floor]
    depth = size - horizon
    near = size * rng.uniform(*spec.step)
    far = near * rng.uniform(1.8, 2.6)
    offset = rng.uniform(0, TILE, size=2)
    tilt = rng.uniform(-0.15, 0.15) * near
    dst = np.float32([[0, 0], [size, 0], [size, depth], [0, depth]])
    src = np.float32([[-far / 2 + tilt, 0], [far / 2 + tilt, 0], [near / 2, depth * 1.6],
                      [-near / 2, depth * 1.6]]) + offset.astype(np.float32)
    to_floor = cv2.getPerspectiveTransform(dst, src)
    pattern = cv2.warpPerspective(backdrop_tile(floor), to_floor, (size, depth),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT_101)
    image[horizon:] = paint(pattern, pick_colour(rng, spec.palette), spec.contrast)

    board = max(1, round(size * rng.uniform(0.01, 0.03)))
    top = max(horizon - board, 0)
    image[top:horizon] = pick_colour(rng, ("white", "ivory", "walnut", "charcoal"))
    return image, wall, floor


def _shadow(background: np.ndarray, rng: np.random.Generator, silhouette: np.ndarray,
            footprint: np.ndarray, horizon: int) -> None:
    """Darken the floor under the object and the wall behind it, in place."""
    size = background.shape[0]
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
    background *= (1.0 - rng.uniform(0.3, 0.6) * mask)[:, :, None]


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


def _paint_object(background: np.ndarray, labels: np.ndarray, kinds: np.ndarray,
                  shades: np.ndarray, plain: np.ndarray, material: str,
                  rng: np.random.Generator) -> np.ndarray:
    """The object's faces over ``background``: material or plain colour, times shade."""
    # cv2.copyTo and np.take rather than boolean indexing: several times faster here.
    spec = MATERIALS[material]
    colour = pick_colour(rng, spec.palette)
    kind = np.take(kinds, labels)
    tile = material_tile(material)
    pattern = sample_pattern(tile, rng, labels.shape, spec.step)
    vertical = (kind == _MAIN_VERTICAL).view(np.uint8)
    if vertical.any():
        cv2.copyTo(sample_pattern(tile, rng, labels.shape, spec.step, 90.0), vertical, pattern)
    image = np.take(plain, labels, axis=0)
    cv2.copyTo(paint(pattern, colour, spec.contrast), (kind >= _MAIN).view(np.uint8), image)
    shade = np.take(shades, labels)
    # Dark seams where faces meet make parts readable at low resolution.
    seams = np.zeros(labels.shape, dtype=bool)
    seams[:, 1:] = labels[:, 1:] != labels[:, :-1]
    seams[1:] |= labels[1:] != labels[:-1]
    shade[seams] *= 0.8
    image = cv2.multiply(image, cv2.merge((shade, shade, shade)))
    cv2.copyTo(image, (labels > 0).view(np.uint8), background)
    return background


def _occlude(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
             faces: list[np.ndarray]) -> np.ndarray:
    """Put a box or a plant in front of the object's lower part; returns visible labels."""
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
    for points, colour in parts:
        fixed = _fixed(points)
        _fill(cover, fixed, 1)
        _fill(image, fixed, np.clip(colour, 0.0, 1.0).tolist())
    return np.where(cover > 0, 0, labels).astype(labels.dtype)


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting gradient, colour cast, vignette, slight blur, noise; to uint8."""
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
    image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 0.7))
    light = light.astype(np.float32)
    image = cv2.multiply(image, cv2.merge([light * c for c in cast.astype(np.float32)]))
    image += _noise(rng, size) * np.float32(255.0 * rng.uniform(0.004, 0.025))
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
