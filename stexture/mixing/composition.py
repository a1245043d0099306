"""The composition of cue-conflict samples: a batch's :class:`MixPlan`, its composites on
float tensors (:func:`compose`) or 8-bit layers (:func:`compose_normalized`), and the soft
targets (:func:`soft_targets`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

__all__ = ["MixPlan", "compose", "compose_normalized", "soft_targets"]


def soft_targets(
    structure_cls: torch.Tensor,
    texture_cls: torch.Tensor,
    k: float,
    num_classes: int,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Soft targets ``k * onehot(structure_cls) + (1 - k) * onehot(texture_cls)``, smoothed.

    Rows where the two classes coincide are one-hot. Returns float32 ``B x num_classes`` on the
    labels' device; every row sums to 1.
    """
    a = torch.nn.functional.one_hot(structure_cls, num_classes).float()
    b = torch.nn.functional.one_hot(texture_cls, num_classes).float()
    y = k * a + (1.0 - k) * b
    if label_smoothing > 0.0:
        y = y * (1.0 - label_smoothing) + label_smoothing / num_classes
    return y


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class MixPlan:
    """Which samples of a batch make each output row: the random part of mixing.

    Row ``r`` of the mixed batch takes its structure (and, as an original, its own texture)
    from sample ``structure_index[r]`` and, as a composite (``is_conflict[r]``), the texture
    of sample ``texture_index[r]``, laid out by ``tiles[r]``: tile ``j`` of the row's texture
    (row-major over a grid of ``tile_size`` squares) is tile ``tiles[r, j]`` of the donor's.
    ``tiles`` is ``None`` for the aligned layout; pixels past the last whole tile keep their
    place. Originals have ``texture_index[r] == structure_index[r]`` and identity tiles.
    """

    structure_index: torch.Tensor  # int64 (R,)
    texture_index: torch.Tensor  # int64 (R,)
    is_conflict: torch.Tensor  # bool (R,)
    tiles: torch.Tensor | None = None  # int64 (R, tiles per image)
    tile_size: int = 0

    def __len__(self) -> int:
        return int(self.structure_index.shape[0])

    def needs_structure(self) -> set[int]:
        """Samples whose structure layer the plan uses: those of every composite and its donor
        (an original needs only its image)."""
        rows = self.is_conflict
        return set(self.structure_index[rows].tolist()) | set(self.texture_index[rows].tolist())


def _donor_pixel_map(plan: MixPlan, height: int, width: int) -> torch.Tensor | None:
    """Per row, the flat donor pixel index of each output pixel (``None``: aligned)."""
    if plan.tiles is None:
        return None
    t = plan.tile_size
    ny, nx = height // t, width // t
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    inside = (ys < ny * t) & (xs < nx * t)
    tile_of = torch.where(inside, (ys // t) * nx + xs // t, 0)
    source_tile = plan.tiles[:, tile_of]  # R x H x W
    sy = torch.where(inside, (source_tile // nx) * t + ys % t, ys)
    sx = torch.where(inside, (source_tile % nx) * t + xs % t, xs)
    return (sy * width + sx).reshape(len(plan), -1)


def _laid_out(texture: torch.Tensor, pixel_map: torch.Tensor | None) -> torch.Tensor:
    if pixel_map is None:
        return texture
    rows, channels = texture.shape[:2]
    flat = texture.reshape(rows, channels, -1)
    index = pixel_map.to(texture.device)[:, None, :].expand(rows, channels, -1)
    return torch.gather(flat, 2, index).reshape(texture.shape)


# --------------------------------------------------------------------------- composition


def compose(structure: torch.Tensor, texture: torch.Tensor, plan: MixPlan, *,
            alpha: float = 1.0, texture_scale: float = 1.0) -> torch.Tensor:
    """The mixed batch ``x`` in [0, 1] for ``plan`` (float path, any device).

    ``x[r] = clip(s_a + (1 - alpha) t_a + alpha * texture_scale * P(t_b), 0, 1)`` for a
    composite (``a = structure_index[r]``, ``b = texture_index[r]``, ``P`` the tile layout)
    and ``clip(s_a + t_a, 0, 1)`` for an original; ``structure`` and ``texture`` are float
    ``B x C x H x W`` (texture in [-1, 1]).
    """
    device = structure.device
    a = plan.structure_index.to(device)
    s_a, t_a = structure[a], texture[a]
    t_b = _laid_out(texture[plan.texture_index.to(device)],
                    _donor_pixel_map(plan, *structure.shape[2:]))
    mixed = s_a + (1.0 - alpha) * t_a + (alpha * texture_scale) * t_b
    conflict = plan.is_conflict.to(device)[:, None, None, None]
    return torch.where(conflict, mixed, s_a + t_a).clamp_(0.0, 1.0)


@njit(cache=True)
def _normalized_row(out, image, scale, shift):
    """``out[c, y, x] = image[y, x, c] * scale[c] + shift[c]``: an original, channel by
    channel so that each output plane is written in order."""
    height, width, channels = image.shape
    for c in range(channels):
        k, m = scale[c], shift[c]
        for y in range(height):
            for x in range(width):
                out[c, y, x] = np.float32(image[y, x, c]) * k + m


@njit(cache=True)
def _composite_value(s_a, i_a, s_b, i_b, own_weight, donor_weight):
    """One composite value on the 0-255 scale, clipped (the same float32 steps everywhere)."""
    s = np.float32(s_a)
    t_a = np.float32(i_a) - s
    t_b = np.float32(i_b) - np.float32(s_b)
    v = s + own_weight * t_a + donor_weight * t_b
    return min(max(v, np.float32(0.0)), np.float32(255.0))


@njit(cache=True)
def _aligned_row(out, image_a, structure_a, image_b, structure_b, own_weight, donor_weight,
                 scale, shift):
    """A composite with the donor's texture in place, channel by channel."""
    height, width, channels = image_a.shape
    for c in range(channels):
        k, m = scale[c], shift[c]
        for y in range(height):
            for x in range(width):
                v = _composite_value(structure_a[y, x, c], image_a[y, x, c],
                                     structure_b[y, x, c], image_b[y, x, c],
                                     own_weight, donor_weight)
                out[c, y, x] = v * k + m


@njit(cache=True)
def _tiled_row(out, image_a, structure_a, image_b, structure_b, tiles, tile_size,
               own_weight, donor_weight, scale, shift):
    """A composite with the donor's texture rearranged by ``tiles``; pixels past the last
    whole tile keep their place."""
    height, width, channels = image_a.shape
    nx, ny = width // tile_size, height // tile_size
    for y in range(height):
        for x in range(width):
            sy, sx = y, x
            if y < ny * tile_size and x < nx * tile_size:
                src = tiles[(y // tile_size) * nx + x // tile_size]
                sy = (src // nx) * tile_size + y % tile_size
                sx = (src % nx) * tile_size + x % tile_size
            for c in range(channels):
                v = _composite_value(structure_a[y, x, c], image_a[y, x, c],
                                     structure_b[sy, sx, c], image_b[sy, sx, c],
                                     own_weight, donor_weight)
                out[c, y, x] = v * scale[c] + shift[c]


@njit(cache=True)
def _compose_normalized_kernel(images, structures, structure_index, texture_index, is_conflict,
                               tiles, tile_size, own_weight, donor_weight, scale, shift, out):
    # a row of one kind at a time, so that the common rows (originals, aligned composites)
    # run branch-free loops over whole output planes (~1.6x faster than one loop with the
    # branches inside; the same float32 operations, so the same values)
    rows = structure_index.shape[0]
    for r in range(rows):
        a, b = structure_index[r], texture_index[r]
        if not is_conflict[r]:
            _normalized_row(out[r], images[a], scale, shift)
        elif tile_size == 0:
            _aligned_row(out[r], images[a], structures[a], images[b], structures[b],
                         own_weight, donor_weight, scale, shift)
        else:
            _tiled_row(out[r], images[a], structures[a], images[b], structures[b], tiles[r],
                       tile_size, own_weight, donor_weight, scale, shift)
    return out


def compose_normalized(images: np.ndarray, structures: np.ndarray, plan: MixPlan, *,
                       alpha: float = 1.0, texture_scale: float = 1.0,
                       scale: np.ndarray, shift: np.ndarray,
                       out: np.ndarray | None = None) -> np.ndarray:
    """:func:`compose` on uint8 ``B x H x W x C`` layers, normalised: float32 ``R x C x H x W``
    with ``x[r, c] = scale[c] * (255 * compose(...)[r, c]) + shift[c]``.

    The CPU fast path of the loader: composing, normalising and the HWC -> CHW transpose in
    one pass, several times cheaper than the tensor ops. With ``alpha = texture_scale = 1`` a
    composite is the exact integer ``clip(s_a + i_b - s_b, 0, 255)`` before scaling.
    ``structures`` rows that no composite uses may hold anything. ``out``: a C-contiguous
    float32 ``R x C x H x W`` array to write into (e.g. a worker's shared memory), returned.
    """
    rows, (_, height, width, channels) = len(plan), images.shape
    if out is None:
        out = np.empty((rows, channels, height, width), np.float32)
    elif (out.shape != (rows, channels, height, width) or out.dtype != np.float32
          or not out.flags.c_contiguous):
        raise ValueError(f"out must be C-contiguous float32 of shape "
                         f"{(rows, channels, height, width)}, got {out.dtype} {out.shape}")
    tiles = np.zeros((rows, 1), np.int64) if plan.tiles is None else plan.tiles.numpy()
    _compose_normalized_kernel(
        np.ascontiguousarray(images), np.ascontiguousarray(structures),
        plan.structure_index.numpy(), plan.texture_index.numpy(), plan.is_conflict.numpy(),
        np.ascontiguousarray(tiles), plan.tile_size if plan.tiles is not None else 0,
        np.float32(1.0 - alpha), np.float32(alpha * texture_scale),
        np.ascontiguousarray(scale, np.float32), np.ascontiguousarray(shift, np.float32), out)
    return out
