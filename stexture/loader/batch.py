"""What both loaders do to a batch once its layers are decoded: normalise, count, collate
uint8 layers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .index import warn_corrupt

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VIEWS", "Counters", "Normalize", "layer_view"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The largest magnitude a normalised value may reach: float16's largest finite value, as
#: mixed-precision training casts ``x`` to half precision (float32 alone would allow 3e38).
MAX_NORMALIZED = 65504.0

SKIPPED, CONFLICT_PAIRS, SAME_CLASS_PAIRS = range(3)
VIEWS = ("image", "structure", "texture")


def check_view(view: str, *, mixes: bool) -> None:
    """``ValueError`` for an unknown view, or a layer view asked to make composites."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    if view != "image" and mixes:
        raise ValueError(f"view={view!r} shows one layer of each image, so it makes no "
                         "cue-conflict samples: use p_conflict=0 (kind='clean' to evaluate)")


def layer_view(images: np.ndarray, structures: np.ndarray, view: str) -> np.ndarray:
    """The uint8 layer a loader shows for ``view``: the image, its structure, or its texture
    offset to mid-grey, ``clip(image - structure + 128, 0, 255)`` (the texture layer of a
    structure-only / texture-only model, as in the report the method comes from)."""
    if view == "image":
        return images
    if view == "structure":
        return structures
    texture = images.astype(np.int16) - structures.astype(np.int16) + 128
    return np.clip(texture, 0, 255).astype(np.uint8)


class Normalize:
    """``(x / 255 - mean) / std`` per channel, as one multiply-add ``scale * v + shift`` on
    8-bit values ``v``. Holds plain float arrays only (no views of torch tensors), so it
    survives being sent to workers whatever their start method.

    ``ValueError`` unless ``mean`` and ``std`` are 3 finite values each, ``std > 0``, and
    every value in [0, 1] stays within :data:`MAX_NORMALIZED` of 0 once normalised
    (``std=1e-40`` or ``mean=1e38`` would give inf): checked when a loader is built, before
    anything is read.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean = tuple(float(m) for m in mean)
        std = tuple(float(s) for s in std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {len(mean)} and {len(std)}")
        if not all(math.isfinite(v) for v in mean + std):
            raise ValueError(f"mean and std must be finite, got mean={mean}, std={std}")
        if min(std) <= 0:
            raise ValueError(f"std values must be > 0, got {std}")
        reach = max(max(abs(m), abs(1.0 - m)) / s for m, s in zip(mean, std, strict=True))
        if reach > MAX_NORMALIZED:
            raise ValueError(
                f"mean={mean}, std={std} take values in [0, 1] to {reach:.3g}, past "
                f"{MAX_NORMALIZED:g} (float16's largest value, which mixed precision needs): "
                "image statistics have mean in [0, 1] and std near 0.2 (ImageNet's)")
        self.mean, self.std = mean, std
        self.scale = np.array([1.0 / (255.0 * s) for s in std], np.float32)
        self.shift = np.array([-m / s for m, s in zip(mean, std, strict=True)], np.float32)

    def _like(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and std as ``1 x 3 x 1 x 1`` tensors of ``x``'s dtype and device."""
        return tuple(torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                     for v in (self.mean, self.std))

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``B x 3 x H x W`` values in [0, 1] (any device)."""
        mean, std = self._like(x)
        return ((x - mean) / std).contiguous()

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1]: the inverse of :meth:`unit`."""
        mean, std = self._like(x)
        return x * std + mean


class Counters:
    """Skipped samples, composites and same-class composites, counted across worker
    processes: one row of a shared tensor per process (the main one and each worker), so
    no two processes write the same memory and no lock is needed."""

    def __init__(self, num_workers: int) -> None:
        self.table = torch.zeros(num_workers + 1, 3, dtype=torch.int64).share_memory_()

    def _row(self) -> int:
        info, rows = get_worker_info(), self.table.shape[0]
        return 0 if info is None or rows == 1 else 1 + info.id % (rows - 1)

    def add(self, column: int, count: int) -> None:
        if count:
            self.table[self._row(), column] += count

    def skip(self, where: str, exc: Exception) -> None:
        self.add(SKIPPED, 1)
        warn_corrupt(where, exc, int(self.table[:, SKIPPED].sum()))

    def total(self, column: int) -> int:
        return int(self.table[:, column].sum())


def worker_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor of ``shape``: in a DataLoader worker in shared memory
    (as torch's ``default_collate`` allocates a worker's batch), so that handing it to the
    main process is no copy of it (a 64 x 3 x 96 x 96 batch: 7 MB, ~1.5 ms); elsewhere in
    ordinary memory."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    storage = torch.UntypedStorage._new_shared(4 * math.prod(shape))
    return torch.empty(0, dtype=torch.float32).set_(storage, 0, shape)


def channels_last(batch: np.ndarray) -> torch.Tensor:
    """uint8 ``B x H x W x C`` array -> ``B x C x H x W`` tensor in channels-last memory
    format, without a copy (of a contiguous array): the main process composes it on the CPU
    from the same bytes, and a device copy keeps the layout."""
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)


def to_chw(batch: np.ndarray) -> torch.Tensor:
    """uint8 ``B x H x W x C`` array -> ``B x C x H x W`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).contiguous()
