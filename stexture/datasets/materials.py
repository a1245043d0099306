"""Surface materials of the synthetic furniture: grey pattern tiles plus colour palettes.

A material is a grey-level pattern tile (float32 in [0, 1], made once per process with a
fixed seed) and a set of base colours. Painting a material onto an image samples the tile
through a random similarity transform (offset, rotation, scale) with reflected borders and
maps grey level ``t`` to colour ``dark + t * (light - dark)``, the two colours spread around
a base colour drawn from the material's palette. Palettes overlap on purpose: a material is
told apart by its pattern (the texture layer), hardly by its mean colour (which smoothing
keeps in the structure layer).

Patterns have a physical scale: a material's ``step`` (tile pixels per image pixel) holds
at :data:`REFERENCE_SIZE` and grows as the image shrinks (``zoom = REFERENCE_SIZE /
size``), so wood rings, weave and plaid keep their size relative to the object and a 64 px
image looks like the 128 px one downsampled. A pattern drawn smaller than its tile is
read from a low-passed, halved copy of the tile (a mip level), so it blurs as a
downsampled photo would instead of aliasing.

Procedural patterns follow the usual recipes of procedural texturing (Perlin, "An image
synthesizer", SIGGRAPH 1985: rings distorted by smooth noise for wood, a sine of a
turbulent phase for marble); the natural ones are the ``brick``, ``grass`` and ``gravel``
photographs of :mod:`skimage.data`, flattened by a local mean/contrast normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from scipy import ndimage

__all__ = [
    "BACKDROPS",
    "MATERIALS",
    "REFERENCE_SIZE",
    "Material",
    "backdrop_tile",
    "material_tile",
    "mip_level",
    "mip_tile",
    "paint",
    "pick_colour",
    "prepare_tiles",
    "sample_pattern",
]

TILE = 256
#: The image side at which patterns are drawn at their tile's scale (``step`` as given).
REFERENCE_SIZE = 128
#: Mip levels kept per tile: level ``k`` is the tile low-passed and halved ``k`` times.
_LEVELS = 5
_TILE_SEED = 20240611

# Base colours (RGB in [0, 1]) that palettes draw from; shared names make palettes overlap.
_COLOURS = {
    "ivory": (0.92, 0.89, 0.80),
    "white": (0.90, 0.90, 0.90),
    "grey": (0.55, 0.56, 0.57),
    "charcoal": (0.22, 0.22, 0.24),
    "black": (0.12, 0.11, 0.10),
    "tan": (0.78, 0.62, 0.42),
    "oak": (0.66, 0.47, 0.27),
    "walnut": (0.40, 0.25, 0.14),
    "cognac": (0.62, 0.32, 0.15),
    "oxblood": (0.45, 0.12, 0.12),
    "terracotta": (0.72, 0.36, 0.26),
    "mustard": (0.80, 0.62, 0.20),
    "olive": (0.45, 0.46, 0.22),
    "sage": (0.55, 0.64, 0.52),
    "teal": (0.16, 0.45, 0.47),
    "navy": (0.16, 0.20, 0.38),
    "blue": (0.30, 0.42, 0.68),
    "rose": (0.78, 0.52, 0.55),
    "plum": (0.42, 0.24, 0.38),
}

_RGB = {name: np.array(rgb, dtype=np.float32) for name, rgb in _COLOURS.items()}


@dataclass(frozen=True)
class Material:
    """A surface: its pattern tile's name, palette (names in ``_COLOURS``) and contrast.

    ``contrast`` sets how far the dark and light ends of the colour ramp lie from the base
    colour; ``step`` the range of tile pixels per image pixel (the pattern's scale).
    """

    name: str
    palette: tuple[str, ...]
    contrast: float
    step: tuple[float, float] = (0.8, 1.25)


MATERIALS: dict[str, Material] = {m.name: m for m in (
    Material("wood", ("oak", "walnut", "tan", "cognac", "black", "ivory", "grey"), 0.45),
    Material("fabric", ("grey", "navy", "mustard", "sage", "teal", "rose", "ivory", "oak"), 0.55),
    Material("leather", ("cognac", "walnut", "black", "oxblood", "tan", "olive", "navy"), 0.5),
    Material("marble", ("white", "ivory", "grey", "black", "sage", "rose"), 0.5),
    Material("metal", ("grey", "white", "charcoal", "mustard", "cognac", "tan"), 0.45),
    Material("wicker", ("tan", "oak", "walnut", "ivory", "black", "mustard"), 0.65),
    Material("plaid", ("navy", "oxblood", "sage", "mustard", "teal", "grey", "plum"), 0.6),
    Material("brick", ("terracotta", "white", "grey", "oxblood", "oak", "charcoal"), 0.5),
    Material("grass", ("sage", "olive", "mustard", "teal", "ivory", "plum"), 0.55),
    Material("gravel", ("grey", "ivory", "tan", "charcoal", "rose", "blue"), 0.55),
)}

# Room surfaces, drawn independently of the furniture class.
BACKDROPS: dict[str, Material] = {m.name: m for m in (
    Material("plaster", ("white", "ivory", "sage", "rose", "blue", "grey", "tan"), 0.12),
    Material("stripes", ("ivory", "sage", "rose", "blue", "mustard", "grey"), 0.18),
    Material("painted_brick", ("white", "ivory", "grey", "terracotta"), 0.25),
    Material("panels", ("white", "ivory", "sage", "navy", "grey"), 0.2),
    Material("planks", ("oak", "walnut", "tan", "grey"), 0.35, (1.0, 1.6)),
    Material("tiles", ("white", "grey", "charcoal", "terracotta", "ivory"), 0.3, (1.0, 1.6)),
    Material("carpet", ("grey", "tan", "sage", "navy", "oxblood", "ivory"), 0.25, (1.0, 1.6)),
)}
WALLS = ("plaster", "stripes", "painted_brick", "panels")
FLOORS = ("planks", "tiles", "carpet")


def _smooth_noise(rng: np.random.Generator, sigma: float | tuple[float, float]) -> np.ndarray:
    """Periodic Gaussian-filtered white noise on the tile, rescaled to [0, 1]."""
    noise = ndimage.gaussian_filter(rng.standard_normal((TILE, TILE)), sigma, mode="wrap")
    return _normalise(noise)


def _normalise(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values, (1, 99))
    return np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:TILE, 0:TILE].astype(np.float64)


def _wood(rng: np.random.Generator) -> np.ndarray:
    y, x = _grid()
    warp = 14.0 * _smooth_noise(rng, (24, 48)) + 3.0 * _smooth_noise(rng, (3, 12))
    # Growth rings seen along the board: stripes along x, bent by low-frequency noise.
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (y + warp + 0.02 * x) / 9.0)
    rings = rings ** 2.5
    streaks = _smooth_noise(rng, (0.6, 14))
    return _normalise(0.7 * rings + 0.3 * streaks)


def _weave(period: int, gap: float, rng: np.random.Generator, run: int = 1) -> np.ndarray:
    """A basket weave: threads ``period`` px wide crossing over/under in runs of ``run``."""
    y, x = _grid()
    across = np.cos(np.pi * ((y % period) + 0.5 - period / 2) / period)
    along = np.cos(np.pi * ((x % period) + 0.5 - period / 2) / period)
    on_top = ((y // (period * run) + x // (period * run)) % 2) == 0
    thread = np.where(on_top, across, along) ** gap
    fibres = np.where(on_top, _smooth_noise(rng, (0.5, 3)), _smooth_noise(rng, (3, 0.5)))
    return _normalise(0.8 * thread + 0.2 * fibres)


def _fabric(rng: np.random.Generator) -> np.ndarray:
    return _weave(4, 0.7, rng)


def _wicker(rng: np.random.Generator) -> np.ndarray:
    return _weave(6, 1.5, rng, run=2)


def _leather(rng: np.random.Generator) -> np.ndarray:
    # Pebble grain: several level lines of fine smooth noise, under a broad sheen.
    cells = _smooth_noise(rng, 1.6)
    grain = np.abs(np.sin(4 * np.pi * cells)) ** 0.5
    sheen = _smooth_noise(rng, 30)
    return _normalise(0.55 * grain + 0.35 * sheen + 0.1 * _smooth_noise(rng, 0.7))


def _marble(rng: np.random.Generator) -> np.ndarray:
    y, x = _grid()
    turbulence = sum(_smooth_noise(rng, s) / (i + 1) for i, s in enumerate((32, 12, 4)))
    veins = np.abs(np.sin(np.pi * ((x + 0.6 * y) / 70.0 + 3.0 * turbulence))) ** 0.3
    clouds = _smooth_noise(rng, 16)
    return _normalise(0.8 * veins + 0.2 * clouds)


def _metal(rng: np.random.Generator) -> np.ndarray:
    brushed = _smooth_noise(rng, (0.4, 40))
    fine = _smooth_noise(rng, (0.3, 4))
    glare = _smooth_noise(rng, (40, 120))
    return _normalise(0.5 * brushed + 0.2 * fine + 0.3 * glare)


def _plaid(rng: np.random.Generator) -> np.ndarray:
    y, x = _grid()
    bands = np.zeros((TILE, TILE))
    for period, width, weight in ((32, 8, 1.0), (32, 3, 0.6), (64, 5, 0.8)):
        offset = rng.integers(period)
        bands += weight * (((x + offset) % period) < width)
        bands += weight * (((y + offset) % period) < width)
    twill = ((x + y) % 4 < 2).astype(np.float64)
    return _normalise(bands + 0.35 * twill)


def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)().astype(np.float64)
    image = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    # Flatten the photo's illumination so only its texture remains.
    mean = ndimage.gaussian_filter(image, 12, mode="wrap")
    spread = np.sqrt(ndimage.gaussian_filter((image - mean) ** 2, 12, mode="wrap")) + 1e-3
    return _normalise((image - mean) / spread)


def _plaster(rng: np.random.Generator) -> np.ndarray:
    return _normalise(_smooth_noise(rng, 6) + 0.5 * _smooth_noise(rng, 1))


def _stripes(rng: np.random.Generator) -> np.ndarray:
    _, x = _grid()
    return _normalise((x % 16 < 8) + 0.3 * (x % 16 == 12) + 0.2 * _smooth_noise(rng, 1))


def _panels(rng: np.random.Generator) -> np.ndarray:
    _, x = _grid()
    return _normalise(1.0 - 0.8 * (x % 32 < 2) + 0.2 * _smooth_noise(rng, (20, 0.6)))


def _planks(rng: np.random.Generator) -> np.ndarray:
    y, x = _grid()
    row = y // 16
    joint_x = (x + 97 * row) % 128 < 2
    seams = (y % 16 < 1) | joint_x
    return _normalise(np.where(seams, 0.0, 0.3 + 0.7 * _wood(rng)))


def _tiles(rng: np.random.Generator) -> np.ndarray:
    y, x = _grid()
    grout = (y % 32 < 2) | (x % 32 < 2)
    return _normalise(np.where(grout, 0.0, 0.75 + 0.25 * _smooth_noise(rng, 10)))


def _carpet(rng: np.random.Generator) -> np.ndarray:
    return _normalise(_smooth_noise(rng, 0.6) + 0.4 * _smooth_noise(rng, 8))


_PATTERNS = {
    "wood": _wood, "fabric": _fabric, "leather": _leather, "marble": _marble,
    "metal": _metal, "wicker": _wicker, "plaid": _plaid,
    "plaster": _plaster, "stripes": _stripes, "panels": _panels, "planks": _planks,
    "tiles": _tiles, "carpet": _carpet,
}
_PHOTOS = {"brick": "brick", "grass": "grass", "gravel": "gravel", "painted_brick": "brick"}


@cache
def _tile(name: str) -> np.ndarray:
    if name in _PHOTOS:
        tile = _photo(_PHOTOS[name])
    else:
        # One fixed stream per pattern: tiles do not depend on which others were made first.
        tile = _PATTERNS[name](np.random.default_rng([_TILE_SEED, sum(map(ord, name))]))
    tile.setflags(write=False)
    return tile


def prepare_tiles() -> None:
    """Make every tile now (about a second), so later timings measure drawing alone."""
    for name in (*MATERIALS, *BACKDROPS):
        _tile(name)


def material_tile(name: str) -> np.ndarray:
    """The grey pattern tile (``TILE x TILE`` float32 in [0, 1]) of material ``name``."""
    if name not in MATERIALS:
        raise ValueError(f"unknown material {name!r}; known: {', '.join(MATERIALS)}")
    return _tile(name)


def backdrop_tile(name: str) -> np.ndarray:
    """The grey pattern tile of wall or floor surface ``name``."""
    if name not in BACKDROPS:
        raise ValueError(f"unknown backdrop {name!r}; known: {', '.join(BACKDROPS)}")
    return _tile(name)


@cache
def _mip(name: str, level: int) -> np.ndarray:
    """The tile of ``name`` low-passed and halved ``level`` times (Gaussian pyramid)."""
    if level == 0:
        return _tile(name)
    smaller = cv2.pyrDown(_mip(name, level - 1), borderType=cv2.BORDER_REFLECT_101)
    smaller.setflags(write=False)
    return smaller


def mip_level(scale: float) -> int:
    """The mip level to read a pattern drawn at ``scale`` tile pixels per image pixel from:
    the largest ``k`` with ``2**k <= scale`` (0 when magnified), at most ``_LEVELS - 1``."""
    if scale <= 1.0:
        return 0
    return min(int(np.floor(np.log2(scale))), _LEVELS - 1)


def mip_tile(name: str, level: int) -> np.ndarray:
    """Level ``level`` of the pattern tile ``name`` (material or backdrop)."""
    if name not in MATERIALS and name not in BACKDROPS:
        raise ValueError(f"unknown pattern {name!r}")
    return _mip(name, level)


def sample_pattern(name: str, rng: np.random.Generator, shape: tuple[int, int],
                   step: tuple[float, float], angle: float = 0.0,
                   zoom: float = 1.0) -> np.ndarray:
    """The tile of pattern ``name`` seen through a random offset and scale, rotated by
    ``angle`` degrees.

    Each output pixel looks up the tile at ``offset + s * R(angle) @ (x, y)``, with
    ``s = zoom * u``, ``u`` drawn from ``step`` (``zoom = REFERENCE_SIZE / size`` gives the
    pattern a physical scale); a minified pattern reads the mip level of :func:`mip_level`.
    Borders reflect, so any output size works. The draws from ``rng`` do not depend on
    ``zoom``.
    """
    scale = rng.uniform(*step) * zoom
    theta = np.deg2rad(angle + rng.uniform(-4.0, 4.0))
    offset = rng.uniform(0, TILE, size=2)
    level = mip_level(scale)
    scale, offset = scale / 2**level, offset / 2**level
    cos, sin = scale * np.cos(theta), scale * np.sin(theta)
    to_tile = np.array([[cos, -sin, offset[0]], [sin, cos, offset[1]]], dtype=np.float64)
    return cv2.warpAffine(mip_tile(name, level), to_tile, (shape[1], shape[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def pick_colour(rng: np.random.Generator, palette: tuple[str, ...]) -> np.ndarray:
    """A base colour from ``palette``, jittered in brightness and per channel."""
    jitter = rng.random(4, dtype=np.float32)
    base = _RGB[palette[int(jitter[0] * len(palette))]]
    colour = base * (0.85 + 0.3 * jitter[1]) + 0.08 * (jitter[1:] - 0.5)
    return np.clip(colour, 0.03, 0.97)


def paint(pattern: np.ndarray, colour: np.ndarray, contrast: float) -> np.ndarray:
    """Map a grey ``pattern`` to RGB along a ramp through ``colour``, ``HxW -> HxWx3``."""
    dark = colour * (1.0 - contrast)
    light = colour + (1.0 - colour) * (0.6 * contrast)
    # cv2.transform maps each grey value t to (light - dark) * t + dark in one pass.
    ramp = np.stack([light - dark, dark], axis=1).astype(np.float32)
    return cv2.transform(pattern[:, :, None], ramp)
