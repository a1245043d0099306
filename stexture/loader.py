"""PyTorch loaders over stexture shards: cue-conflict training batches and evaluation sets.

:func:`make_loader` streams the shards of a split (sequential reads, the point of shards),
reshuffles the shard order every epoch, shuffles samples in a buffer, applies one
random-resized crop and flip to a sample's image *and* structure layer, and mixes each batch
with :class:`~stexture.mixing.CueConflictMix`. :func:`make_eval_loader` reads a split in a
fixed order (random access into the tar files) for clean accuracy and for a fixed cue-conflict
set (the shape-bias metric of Geirhos et al., ICLR 2019).

The mixing plan of a batch (which samples become cue-conflict, which donate their texture) is
drawn before the structure layers are decoded, and only the structures it needs are decoded:
those of the cue-conflict samples, which are also the donors (see ``pairing`` in
:class:`~stexture.mixing.CueConflictMix`), so a fraction ``p_conflict``; decoding the
structure layer is the loader's main cost beyond what a plain image pipeline does (the
``structure.dzst`` encoding of :mod:`stexture.shards.format` was chosen to keep it small). A
batch is composed from the cropped uint8 layers, exactly (:func:`~stexture.mixing.compose_uint8`:
``clip(s_a + i_b - s_b, 0, 255)``; an original sample is its cropped image), and normalised
in one multiply-add; in the workers, composing, normalising and the HWC -> CHW transpose are
one pass of a Numba kernel.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import tarfile
import warnings
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from numba import njit
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ._device import CudaUnavailableError
from .mixing import CueConflictMix, check_unit_interval, compose_uint8, soft_targets
from .shards.format import (
    IMAGE_FIELDS,
    INDEX_NAME,
    STRUCTURE_FIELD,
    Manifest,
    decode_structure,
    iter_tar_samples,
    read_manifest,
    structure_field,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CorruptSampleWarning",
    "CueConflictLoader",
    "make_eval_loader",
    "make_loader",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_KINDS = ("clean", "conflict")
_LOG_RATIOS = (math.log(3 / 4), math.log(4 / 3))


class CorruptSampleWarning(UserWarning):
    """A sample inside a shard could not be decoded and was skipped."""


# --------------------------------------------------------------------------- shards on disk


@dataclass(frozen=True)
class _Shard:
    path: str
    count: int  # samples the manifest says the shard holds
    kept: int  # samples of it the loader uses (all, or those in ``keys``)


def _manifest_of(source: str | Path | Manifest) -> Manifest:
    return source if isinstance(source, Manifest) else read_manifest(source)


def _kept_per_shard(manifest: Manifest, split: str, keys: Collection[str]) -> dict[str, int]:
    """Per shard name, how many of ``keys`` it holds (from ``index.csv``)."""
    index_path = manifest.root / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"keys= needs {index_path}, which does not exist")
    wanted = set(keys)
    kept: dict[str, int] = {}
    with open(index_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["split"] == split and row["key"] in wanted:
                kept[row["shard"]] = kept.get(row["shard"], 0) + 1
                wanted.discard(row["key"])
    if wanted:
        example = ", ".join(repr(k) for k in sorted(wanted)[:3])
        raise ValueError(
            f"{len(wanted)} of the requested keys are not in split {split!r} of {index_path} "
            f"(e.g. {example})"
        )
    return kept


def _split_shards(
    manifest: Manifest, split: str, keys: Collection[str] | None = None
) -> list[_Shard]:
    """The shards of ``split`` the loader reads; a clear error for missing files."""
    infos = manifest.shards(split)
    if not infos:
        raise ValueError(f"split {split!r} of {manifest.root} has no shards")
    missing = [s.name for s in infos if not (manifest.root / s.name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} shard(s) listed in the manifest of {manifest.root} are missing: "
            f"{', '.join(missing[:5])}"
        )
    kept = _kept_per_shard(manifest, split, keys) if keys is not None else None
    shards = [
        _Shard(str(manifest.root / s.name), s.count,
               s.count if kept is None else kept.get(s.name, 0))
        for s in infos
    ]
    shards = [s for s in shards if s.kept > 0]
    if not shards:
        raise ValueError(f"no samples of split {split!r} selected (keys is empty)")
    return shards


def _split_member_name(name: str) -> tuple[str, str]:
    """``dir/key.structure.png`` -> (``dir/key``, ``structure.png``), WebDataset's convention."""
    head, slash, base = name.rpartition("/")
    key, _, field = base.partition(".")
    return head + slash + key, field


def _shard_samples(shard: _Shard) -> Iterator[dict[str, Any]]:
    """Raw samples (``__key__`` and bytes per field) of one shard, in tar order; checks that
    the shard holds as many samples as the manifest says."""
    count = 0
    for raw in iter_tar_samples(shard.path):
        count += 1
        yield raw
    if count != shard.count:
        raise ValueError(
            f"shard {shard.path} holds {count} samples but the manifest says {shard.count}"
        )


def _decode_rgb(data: bytes) -> np.ndarray:
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if pixels is None:
        raise ValueError("not a decodable image")
    return pixels


def _decode_image(raw: dict[str, Any]) -> tuple[np.ndarray, int, str]:
    """(image, cls, name of the structure field) of a raw sample; ``ValueError`` naming the
    sample when a field is missing or corrupt, or it has two structure fields. OpenCV's
    decoders give the pixels of :func:`stexture.shards.format.decode_sample` and are faster
    here than Pillow's."""
    key = raw.get("__key__", "<no key>")
    image_field = next((f for f in IMAGE_FIELDS if f in raw), None)
    if image_field is None or "cls" not in raw:
        raise ValueError(f"sample {key!r} lacks a field (has {sorted(raw)})")
    layer_field = structure_field(raw)
    try:
        return _decode_rgb(raw[image_field]), int(raw["cls"]), layer_field
    except ValueError as exc:
        raise ValueError(f"sample {key!r} cannot be decoded: {exc}") from exc


def _decode_structure(data: bytes, field: str, key: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        # format version 1's WebP goes through OpenCV, faster than the Pillow decode of format.py
        structure = decode_structure(data) if field == STRUCTURE_FIELD else _decode_rgb(data)
    except ValueError as exc:
        raise ValueError(f"sample {key!r}: structure layer cannot be decoded: {exc}") from exc
    if structure.shape != shape:
        raise ValueError(f"sample {key!r}: image {shape} and structure {structure.shape} differ")
    return structure


def _decode_layers(raw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """(image, structure, cls) of a raw sample; ``ValueError`` naming what is corrupt."""
    image, cls, field = _decode_image(raw)
    return image, _decode_structure(raw[field], field, raw["__key__"], image.shape), cls


def _check_class(cls: int, num_classes: int, key: str, where: str) -> None:
    if not 0 <= cls < num_classes:
        raise ValueError(
            f"sample {key!r} in {where} has class {cls}, outside the manifest's "
            f"{num_classes} classes"
        )


# --------------------------------------------------------------------------- crops


def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator, min_scale: float
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``U(min_scale, 1)`` of the area with an
    aspect ratio log-uniform in [3/4, 4/3] (the Inception crop, Szegedy et al. 2015); after
    10 failed draws, the largest centred crop with an aspect ratio in that range."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(*_LOG_RATIOS))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    h, w = height, width
    if width / height < 3 / 4:
        h = round(width * 4 / 3)
    elif width / height > 4 / 3:
        w = round(height * 4 / 3)
    return (height - h) // 2, (width - w) // 2, h, w


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    # pixel-area averaging when shrinking keeps fine texture from aliasing; bilinear otherwise
    shrinking = crop.shape[0] >= size and crop.shape[1] >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def crop_layers(
    layers: Sequence[np.ndarray], box: tuple[int, int, int, int], size: int, flip: bool
) -> list[np.ndarray]:
    """The same crop ``box`` (top, left, h, w), resize to ``size`` and optional horizontal
    flip applied to every layer."""
    top, left, h, w = box
    out = [_resize(layer[top:top + h, left:left + w], size) for layer in layers]
    return [cv2.flip(o, 1) for o in out] if flip else out


def center_crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The central square: resizing it to S is the resize-shorter-side-to-S + centre crop."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


# --------------------------------------------------------------------------- batches


def _to_chw(batch: np.ndarray) -> torch.Tensor:
    """uint8 ``B x H x W x C`` array -> ``B x C x H x W`` tensor."""
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


# compiled (or loaded from the cache) at import, so that the forkserver that preloads this
# module hands it ready to every DataLoader worker: a first call in a fresh worker would cost
# ~0.3 s of Numba start-up per worker and epoch
@njit("float32[:, :, :, ::1](uint8[:, :, :, ::1], uint8[:, :, :, ::1], int64[::1], "
      "boolean[::1], float32[::1], float32[::1])", cache=True)
def _compose_normalized(images: np.ndarray, structures: np.ndarray, texture_index: np.ndarray,
                        is_conflict: np.ndarray, scale: np.ndarray, shift: np.ndarray
                        ) -> np.ndarray:
    """``x[i, c] = scale[c] * v + shift[c]`` as float32 ``B x C x H x W`` from uint8
    ``B x H x W x C`` layers, with ``v = clip(s_i + image_d - s_d, 0, 255)``, ``d =
    texture_index[i]``, for a cue-conflict sample and ``v = image_i`` for an original.

    :func:`~stexture.mixing.compose_uint8`, ``_Normalize.from_uint8`` and the HWC -> CHW
    transpose in one pass over the batch: several times cheaper than the three tensor ops.
    """
    batch, height, width, channels = images.shape
    out = np.empty((batch, channels, height, width), np.float32)
    for i in range(batch):
        d = texture_index[i]
        for c in range(channels):
            for y in range(height):
                for x in range(width):
                    if is_conflict[i]:
                        v = (np.int32(structures[i, y, x, c]) + np.int32(images[d, y, x, c])
                             - np.int32(structures[d, y, x, c]))
                        v = min(max(v, 0), 255)
                    else:
                        v = np.int32(images[i, y, x, c])
                    out[i, c, y, x] = np.float32(v) * scale[c] + shift[c]
    return out


def _layers_as_float(image: torch.Tensor, structure: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 layers -> (structure in [0, 1], texture in [-1, 1]) float32."""
    s = structure.float()
    return s / 255.0, (image.float() - s) / 255.0


class _Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std values must be > 0, got {tuple(std)}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add on uint8 input
        self.scale = 1.0 / (255.0 * self.std)
        self.shift = -self.mean / self.std
        # the same per channel, for _compose_normalized
        self.channel_scale = self.scale.flatten().numpy()
        self.channel_shift = self.shift.flatten().numpy()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return ((x - mean) / std).contiguous()

    def from_uint8(self, x: torch.Tensor) -> torch.Tensor:
        shift, scale = self.shift.to(x.device), self.scale.to(x.device)
        return torch.addcmul(shift, x.float(), scale)


def worker_context() -> multiprocessing.context.BaseContext:
    """Where DataLoader workers (and the counters shared with them) come from: a clean
    forkserver process where the platform has one.

    Forking the training process itself deadlocks a worker once OpenCV's or OpenMP's thread
    pools have run in it (a lock held by a pool thread that the child does not have); the
    sweep evaluates with OpenCV in the main process between epochs, so that is the normal
    case. The server preloads this module, so a worker starts in milliseconds, not seconds.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context()  # spawn, the default there (macOS, Windows)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _shared_counters() -> Any:
    # [skipped samples, cue-conflict pairs, same-class pairs], shared with DataLoader workers
    return worker_context().Array("q", 3)


def _warn_corrupt(counters: Any, where: str, exc: Exception) -> None:
    with counters.get_lock():
        counters[0] += 1
        total = counters[0]
    warnings.warn(f"skipping a corrupt sample in {where}: {exc} ({total} skipped so far)",
                  CorruptSampleWarning, stacklevel=2)


# --------------------------------------------------------------------------- training stream


def _resolve_ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class _Item:
    """A sample of a training batch: the image already cropped, the structure decoded (with
    the same crop) only when the batch's mixing plan needs it."""

    key: str
    cls: int
    image: np.ndarray
    shape: tuple[int, ...]  # of the stored image
    box: tuple[int, int, int, int]
    flip: bool
    structure_field: str
    structure_data: bytes
    structure: np.ndarray | None = None


class _TrainStream(IterableDataset):
    """One reader per (rank, worker): its share of the epoch's shard order, as batches."""

    def __init__(self, shards: list[_Shard], *, num_classes: int, batch_size: int,
                 image_size: int, seed: int, min_scale: float, shuffle_buffer: int,
                 rank: int, world_size: int, num_workers: int, batches_per_rank: int | None,
                 keys: frozenset[str] | None, mix: CueConflictMix, mix_in_worker: bool,
                 normalize: _Normalize, counters: Any) -> None:
        self.shards = shards
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.image_size = image_size
        self.seed = seed
        self.min_scale = min_scale
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size
        self.num_workers = max(num_workers, 1)
        self.batches_per_rank = batches_per_rank
        self.keys = keys
        self.mix = mix
        self.mix_in_worker = mix_in_worker
        self.normalize = normalize
        self.counters = counters
        self.epoch = 0

    @property
    def readers(self) -> int:
        return self.num_workers * self.world_size

    def reader_shards(self, epoch: int, reader: int) -> list[_Shard]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order[reader::self.readers]]

    def reader_quota(self, worker: int) -> int | None:
        """Batches this worker yields in a fixed-length epoch (None: one pass)."""
        if self.batches_per_rank is None:
            return None
        share, extra = divmod(self.batches_per_rank, self.num_workers)
        return share + (worker < extra)

    def batches_in_epoch(self, epoch: int) -> int:
        if self.batches_per_rank is not None:
            return self.batches_per_rank
        return sum(
            math.ceil(sum(s.kept for s in self.reader_shards(epoch, reader)) / self.batch_size)
            for reader in range(self.rank * self.num_workers, (self.rank + 1) * self.num_workers)
        )

    def _raw_samples(self, shards: list[_Shard], passes_rng: np.random.Generator | None
                     ) -> Iterator[dict[str, Any]]:
        """The reader's samples: one pass, or (fixed-length epochs) pass after pass with the
        shard order reshuffled each time."""
        while True:
            produced = 0
            for shard in shards:
                for raw in _shard_samples(shard):
                    if self.keys is None or raw["__key__"] in self.keys:
                        produced += 1
                        yield raw
            if passes_rng is None:
                return
            if produced == 0:
                raise ValueError("a reader's shards yielded no samples in a whole pass")
            shards = [shards[i] for i in passes_rng.permutation(len(shards))]

    def _shuffled(self, samples: Iterator[dict[str, Any]], rng: np.random.Generator
                  ) -> Iterator[dict[str, Any]]:
        """Buffer shuffle: each arriving sample swaps out a uniformly drawn buffered one."""
        buffer: list[dict[str, Any]] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = int(rng.integers(len(buffer)))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def _items(self, samples: Iterator[dict[str, Any]], rng: np.random.Generator
               ) -> Iterator[_Item]:
        """Decode and crop each image; draw the crop box and flip its structure will share."""
        for raw in samples:
            key = raw["__key__"]
            try:
                image, cls, field = _decode_image(raw)
            except ValueError as exc:
                _warn_corrupt(self.counters, "a training shard", exc)
                continue
            _check_class(cls, self.num_classes, key, "a training shard")
            box = random_resized_crop_box(*image.shape[:2], rng, self.min_scale)
            flip = bool(rng.integers(2))
            cropped = crop_layers((image,), box, self.image_size, flip)[0]
            yield _Item(key, cls, cropped, image.shape, box, flip, field, raw[field])

    def _add_structure(self, item: _Item) -> bool:
        """Decode and crop the item's structure; False (with a warning) if it is corrupt."""
        if item.structure is None:
            try:
                structure = _decode_structure(item.structure_data, item.structure_field,
                                              item.key, item.shape)
            except ValueError as exc:
                _warn_corrupt(self.counters, "a training shard", exc)
                return False
            item.structure = crop_layers((structure,), item.box, self.image_size, item.flip)[0]
        return True

    def _planned(self, items: list[_Item]) -> tuple[list[_Item], torch.Tensor, torch.Tensor]:
        """Draw the mixing plan and decode the structures it needs (cue-conflict samples and
        their donors; an original that is no donor needs none). A corrupt structure drops its
        sample and the plan is drawn again for the rest."""
        while items:
            labels = torch.tensor([it.cls for it in items], dtype=torch.int64)
            texture_index, is_conflict = self.mix.draw(labels)
            needed = set(torch.nonzero(is_conflict).flatten().tolist())
            needed |= set(texture_index[is_conflict].tolist())
            failed = {i for i in sorted(needed) if not self._add_structure(items[i])}
            if not failed:
                return items, texture_index, is_conflict
            items = [it for i, it in enumerate(items) if i not in failed]
        return items, torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.bool)

    def _batch(self, items: list[_Item]) -> tuple | None:
        items, texture_index, is_conflict = self._planned(items)
        if not items:
            return None
        labels = torch.tensor([it.cls for it in items], dtype=torch.int64)
        keys = [it.key for it in items]
        images = np.stack([it.image for it in items])
        # a sample whose structure is not needed stands in its image: texture 0, never used
        structures = np.stack([it.image if it.structure is None else it.structure
                               for it in items])
        if self.mix_in_worker and self.mix.texture_scale == 1.0:
            x = torch.from_numpy(_compose_normalized(
                images, structures, texture_index.numpy(), is_conflict.numpy(),
                self.normalize.channel_scale, self.normalize.channel_shift))
            return _finish_batch(self.mix, x, labels, texture_index, is_conflict, keys,
                                 self.counters)
        plan = (_to_chw(images), _to_chw(structures), labels, texture_index, is_conflict, keys)
        if not self.mix_in_worker:
            return plan
        return _mix_batch(self.mix, *plan, self.normalize, self.counters)

    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        if info is not None:
            cv2.setNumThreads(1)  # the workers are the parallelism
        reader = self.rank * self.num_workers + worker
        seed = _seed_for(self.seed, self.epoch, reader)
        rng = np.random.default_rng(seed)
        self.mix.generator = torch.Generator().manual_seed(seed)
        quota = self.reader_quota(worker)
        if quota == 0:
            return
        passes_rng = None if quota is None else np.random.default_rng([seed, 1])
        raw = self._raw_samples(self.reader_shards(self.epoch, reader), passes_rng)
        items: list[_Item] = []
        produced = 0
        for item in self._items(self._shuffled(raw, rng), rng):
            items.append(item)
            if len(items) == self.batch_size:
                batch, items = self._batch(items), []
                if batch is not None:
                    yield batch
                    produced += 1
                    if produced == quota:
                        return
        if items and (batch := self._batch(items)) is not None:
            yield batch


def _mix_batch(mix: CueConflictMix, image: torch.Tensor, structure: torch.Tensor,
               labels: torch.Tensor, texture_index: torch.Tensor, is_conflict: torch.Tensor,
               keys: list[str], normalize: _Normalize, counters: Any
               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Compose, normalise and label a planned batch of ``B x 3 x H x W`` uint8 tensors."""
    labels = labels.to(image.device)
    if mix.texture_scale == 1.0:  # exact in uint8, and several times cheaper than float
        donors = texture_index.to(image.device)
        x = normalize.from_uint8(compose_uint8(structure, image[donors], structure[donors]))
        return _finish_batch(mix, x, labels, texture_index, is_conflict, keys, counters)
    before = (mix.conflict_pairs, mix.same_class_pairs)
    s, t = _layers_as_float(image, structure)
    x, y, info = mix.apply(s, t, labels, texture_index, is_conflict, return_info=True)
    return _with_keys(normalize(x), y, info, texture_index, keys, mix, before, counters)


def _finish_batch(mix: CueConflictMix, x: torch.Tensor, labels: torch.Tensor,
                  texture_index: torch.Tensor, is_conflict: torch.Tensor, keys: list[str],
                  counters: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(x, y, info)`` of a batch already composed and normalised into ``x``."""
    before = (mix.conflict_pairs, mix.same_class_pairs)
    y, info = mix.targets(labels, texture_index, is_conflict)
    return _with_keys(x, y, info, texture_index, keys, mix, before, counters)


def _with_keys(x: torch.Tensor, y: torch.Tensor, info: dict[str, Any],
               texture_index: torch.Tensor, keys: list[str], mix: CueConflictMix,
               before: tuple[int, int], counters: Any
               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Add the pairs ``mix`` counted since ``before`` to the shared counters, and the keys
    of each sample and its texture donor to ``info``."""
    with counters.get_lock():
        counters[1] += mix.conflict_pairs - before[0]
        counters[2] += mix.same_class_pairs - before[1]
    info["key"] = keys
    info["texture_key"] = [keys[j] for j in texture_index.tolist()]
    return x, y, info


class CueConflictLoader:
    """The loader :func:`make_loader` returns: iterate it for one epoch of batches.

    ``len(loader)`` is the number of batches of the coming epoch on this rank. Each ``iter()``
    runs the epoch set by :meth:`set_epoch` (or, without it, the one after the last), so the
    shard order and every random draw differ between epochs and repeat for the same seed and
    epoch. ``skipped_samples``, ``conflict_pairs`` and ``same_class_pairs`` count over the
    loader's life, across its workers.
    """

    def __init__(self, stream: _TrainStream, *, num_workers: int, with_info: bool,
                 mix_device: torch.device | None) -> None:
        self._stream = stream
        self.num_workers = num_workers
        self.with_info = with_info
        self.mix_device = mix_device
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run epoch ``epoch`` (as ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._stream.batches_in_epoch(self.epoch)

    @property
    def skipped_samples(self) -> int:
        return int(self._stream.counters[0])

    @property
    def conflict_pairs(self) -> int:
        return int(self._stream.counters[1])

    @property
    def same_class_pairs(self) -> int:
        return int(self._stream.counters[2])

    def _mix_on_device(self, plan: tuple) -> tuple:
        image, structure, labels, texture_index, is_conflict, keys = plan
        device = self.mix_device
        return _mix_batch(self._stream.mix, image.to(device, non_blocking=True),
                          structure.to(device, non_blocking=True), labels.to(device),
                          texture_index, is_conflict, keys, self._stream.normalize,
                          self._stream.counters)

    def __iter__(self) -> Iterator[tuple]:
        epoch = self.epoch
        self.epoch += 1
        self._stream.epoch = epoch
        loader = DataLoader(
            self._stream, batch_size=None, num_workers=self.num_workers,
            pin_memory=self.mix_device is not None and self.mix_device.type == "cuda",
            multiprocessing_context=worker_context() if self.num_workers else None,
        )
        for batch in loader:
            x, y, info = batch if self.mix_device is None else self._mix_on_device(batch)
            yield (x, y, info) if self.with_info else (x, y)


def make_loader(
    source: str | Path | Manifest,
    *,
    k: float,
    split: str = "train",
    batch_size: int = 64,
    image_size: int = 96,
    num_workers: int = 0,
    seed: int = 0,
    p_conflict: float = 0.5,
    pairing: str = "different-class",
    texture_scale: float = 1.0,
    label_smoothing: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    keys: Collection[str] | None = None,
    with_info: bool = False,
    shuffle_buffer: int = 1000,
    mix_device: str | torch.device | None = None,
    samples_per_epoch: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    min_scale: float = 0.35,
) -> CueConflictLoader:
    """A training loader of cue-conflict batches over the shards in ``source``.

    Parameters
    ----------
    source : path or Manifest
        A shard directory with ``manifest.json`` (or its :class:`Manifest`).
    k, p_conflict, pairing, texture_scale, label_smoothing
        As in :class:`~stexture.mixing.CueConflictMix`; the batch is the mixing unit.
    split : str
        The split to read.
    batch_size, image_size : int
        Samples per batch; side of the square crops.
    num_workers : int
        DataLoader worker processes; the shards are split across them (and across ranks).
    seed : int
        Seeds the shard order, the shuffle, the crops and the mixing, per epoch and reader.
    mean, std : 3 floats
        ``x`` is normalised as ``(x - mean) / std``.
    keys : collection of str, optional
        Only these sample keys of the split (e.g. a stratified subset computed from
        ``index.csv``); shards holding none of them are not read.
    with_info : bool
        Yield ``(x, y, info)``: ``structure_cls``, ``texture_cls``, ``is_conflict``,
        ``texture_index`` (tensors), ``key`` and ``texture_key`` (lists of sample keys).
    shuffle_buffer : int
        Samples (still encoded) held by each reader's shuffle buffer; 0 turns it off.
    mix_device : str or torch.device, optional
        Compose and normalise on this device in the main process: workers decode, crop and
        draw the mixing plan, and send uint8 layers (4x fewer bytes than float).
        ``None``: all in the workers.
    samples_per_epoch : int, optional
        Fixed epoch length in samples, for the whole loader (all workers and ranks together):
        each rank yields ``samples_per_epoch // (batch_size * world_size)`` full batches,
        reading its shards again (reshuffled) if they run out. ``None``: one pass over the
        data, each sample exactly once, the last batch of each worker possibly smaller; under
        several ranks ``None`` means the split's size in fixed-length mode, so that every rank
        yields the same number of batches.
    rank, world_size : int, optional
        This process's place among data-parallel processes; by default taken from
        ``torch.distributed`` when it is initialised, else 0 of 1.
    min_scale : float in (0, 1]
        Smallest crop area of the random-resized crop, as a fraction of the image.

    Returns
    -------
    CueConflictLoader
        Iterable (one epoch per ``iter``), with ``len`` and ``set_epoch``; yields ``(x, y)``
        with ``x`` float32 ``B x 3 x S x S`` (normalised) and ``y`` float32 ``B x C`` (rows
        sum to 1), or ``(x, y, info)``.

    Raises
    ------
    ValueError
        Out-of-range arguments; fewer shards than readers (``num_workers x world_size``);
        keys not in the split. While reading: a shard whose sample count or class indices
        disagree with the manifest. (A sample that cannot be decoded is skipped with a
        :class:`CorruptSampleWarning`; a structure layer is decoded, and so checked, only when
        its batch needs it.)
    FileNotFoundError
        No manifest, or a shard it lists is missing.
    CudaUnavailableError
        ``mix_device`` is a CUDA device and torch sees no GPU.
    """
    # the mixing arguments are checked before anything is read from disk
    CueConflictMix(2, k, p_conflict, pairing, texture_scale, label_smoothing)
    _check_loader_sizes(batch_size, image_size, num_workers, shuffle_buffer)
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
    normalize = _Normalize(mean, std)
    manifest = _manifest_of(source)
    mix = CueConflictMix(manifest.num_classes, k, p_conflict, pairing, texture_scale,
                         label_smoothing)
    rank, world_size = _resolve_ranks(rank, world_size)
    shards = _split_shards(manifest, split, keys)
    readers = max(num_workers, 1) * world_size
    if len(shards) < readers:
        raise ValueError(
            f"split {split!r} has {len(shards)} shard(s) to read but the loader has {readers} "
            f"readers ({max(num_workers, 1)} worker(s) x {world_size} rank(s)); every reader "
            "needs at least one shard: use fewer workers or write smaller shards"
        )
    batches_per_rank = _batches_per_rank(samples_per_epoch, shards, batch_size, world_size)
    device = None if mix_device is None else _mix_device(mix_device)
    stream = _TrainStream(
        shards, num_classes=manifest.num_classes, batch_size=batch_size, image_size=image_size,
        seed=seed, min_scale=min_scale, shuffle_buffer=shuffle_buffer, rank=rank,
        world_size=world_size, num_workers=num_workers, batches_per_rank=batches_per_rank,
        keys=None if keys is None else frozenset(keys), mix=mix, mix_in_worker=device is None,
        normalize=normalize, counters=_shared_counters(),
    )
    return CueConflictLoader(stream, num_workers=num_workers, with_info=with_info,
                             mix_device=device)


def _mix_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CudaUnavailableError(
            f"mix_device={str(device)!r} but torch sees no CUDA GPU; use mix_device=None to "
            "mix in the workers"
        )
    return device


def _check_loader_sizes(batch_size: int, image_size: int, num_workers: int,
                        shuffle_buffer: int) -> None:
    for name, value, least in (("batch_size", batch_size, 1), ("image_size", image_size, 1),
                               ("num_workers", num_workers, 0),
                               ("shuffle_buffer", shuffle_buffer, 0)):
        if int(value) != value or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value}")


def _batches_per_rank(samples_per_epoch: int | None, shards: list[_Shard], batch_size: int,
                      world_size: int) -> int | None:
    if samples_per_epoch is None:
        if world_size == 1:
            return None
        samples_per_epoch = sum(s.kept for s in shards)
    batches = int(samples_per_epoch) // (batch_size * world_size)
    if batches < 1:
        raise ValueError(
            f"samples_per_epoch={samples_per_epoch} is less than one batch of {batch_size} "
            f"per rank ({world_size} rank(s))"
        )
    return batches


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Located:
    path: str
    key: str
    cls: int
    fields: dict[str, tuple[int, int]]  # field -> (offset, size) in the tar file


def _locate_samples(shard: _Shard, num_classes: int) -> list[_Located]:
    """Where each sample's fields lie in a tar file (headers only; the class is read)."""
    grouped: dict[str, dict[str, tuple[int, int]]] = {}
    classes: dict[str, int] = {}
    try:
        with tarfile.open(shard.path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, field = _split_member_name(member.name)
                grouped.setdefault(key, {})[field] = (member.offset_data, member.size)
                if field == "cls":
                    try:
                        classes[key] = int(tar.extractfile(member).read())
                    except ValueError:
                        classes[key] = -1  # undecodable: skipped with a warning when read
    except tarfile.TarError as exc:
        raise ValueError(f"shard {shard.path} is not a readable tar file: {exc}") from exc
    if len(grouped) != shard.count:
        raise ValueError(
            f"shard {shard.path} holds {len(grouped)} samples but the manifest says {shard.count}"
        )
    located = []
    for key, fields in grouped.items():
        cls = classes.get(key, -1)
        if cls != -1:
            _check_class(cls, num_classes, key, shard.path)
        located.append(_Located(shard.path, key, cls, fields))
    return located


def _conflict_donors(classes: np.ndarray, seed: int) -> np.ndarray:
    """For every sample, a uniformly drawn sample of another class (fixed by ``seed``)."""
    order = np.argsort(classes, kind="stable")
    sorted_cls = classes[order]
    start = np.searchsorted(sorted_cls, classes, side="left")
    own = np.searchsorted(sorted_cls, classes, side="right") - start
    others = len(classes) - own
    if (others == 0).any():
        raise ValueError("a cue-conflict set needs samples of at least two classes")
    draw = (np.random.default_rng(seed).random(len(classes)) * others).astype(np.int64)
    # draws past the start of the sample's own class block skip over that block
    return order[np.where(draw < start, draw, draw + own)]


class _EvalSet(Dataset):
    """Random access to samples by location; item ``i`` pairs sample ``i``'s structure with the
    texture of ``donors[i]``."""

    def __init__(self, samples: list[_Located], donors: np.ndarray, image_size: int,
                 counters: Any, with_structure: bool) -> None:
        self.samples = samples
        self.donors = donors
        self.image_size = image_size
        self.counters = counters
        self.with_structure = with_structure  # clean images need no structure layer
        self._files: dict[str, Any] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}, "_pid": -1}  # open files stay in this process

    def _read(self, sample: _Located) -> dict[str, Any]:
        if self._pid != os.getpid():  # forked workers open their own files
            self._files, self._pid = {}, os.getpid()
        file = self._files.get(sample.path)
        if file is None:
            file = self._files[sample.path] = open(sample.path, "rb")
        raw: dict[str, Any] = {"__key__": sample.key}
        for field, (offset, size) in sample.fields.items():
            raw[field] = os.pread(file.fileno(), size, offset)
        return raw

    def _layers(self, sample: _Located) -> tuple[np.ndarray, np.ndarray]:
        raw = self._read(sample)
        if self.with_structure:
            image, structure, _ = _decode_layers(raw)
        else:
            image = structure = _decode_image(raw)[0]  # texture 0: x is the image
        box = center_crop_box(*image.shape[:2])
        image, structure = crop_layers((image, structure), box, self.image_size, flip=False)
        return image, structure

    def __getitem__(self, i: int) -> tuple | None:
        a, b = self.samples[i], self.samples[int(self.donors[i])]
        try:
            if a.cls < 0 or b.cls < 0:
                raise ValueError("the class field cannot be decoded")
            image_a, structure_a = self._layers(a)
            image_b, structure_b = (image_a, structure_a) if b is a else self._layers(b)
        except ValueError as exc:
            _warn_corrupt(self.counters, f"{a.path} (sample {a.key!r} or its donor)", exc)
            return None
        return image_a, structure_a, image_b, structure_b, a.cls, b.cls, a.key, b.key


class _EvalCollate:
    def __init__(self, num_classes: int, k: float, normalize: _Normalize,
                 is_conflict: bool, image_size: int) -> None:
        self.num_classes = num_classes
        self.image_size = image_size
        self.k = k
        self.normalize = normalize
        self.is_conflict = is_conflict

    def __call__(self, items: list[tuple | None]) -> tuple:
        items = [it for it in items if it is not None]
        if not items:  # every sample of the batch was corrupt
            empty = torch.empty(0, 3, self.image_size, self.image_size)
            return empty, torch.empty(0, self.num_classes), {
                "structure_cls": torch.empty(0, dtype=torch.int64),
                "texture_cls": torch.empty(0, dtype=torch.int64),
                "is_conflict": torch.empty(0, dtype=torch.bool), "key": [], "texture_key": []}
        structure_a, image_b, structure_b = (_to_chw(np.stack([it[j] for it in items]))
                                             for j in (1, 2, 3))
        structure_cls = torch.tensor([it[4] for it in items], dtype=torch.int64)
        texture_cls = torch.tensor([it[5] for it in items], dtype=torch.int64)
        x = compose_uint8(structure_a, image_b, structure_b)
        y = soft_targets(structure_cls, texture_cls, self.k, self.num_classes)
        info = {
            "structure_cls": structure_cls,
            "texture_cls": texture_cls,
            "is_conflict": torch.full((len(items),), self.is_conflict),
            "key": [it[6] for it in items],
            "texture_key": [it[7] for it in items],
        }
        return self.normalize.from_uint8(x), y, info


def make_eval_loader(
    source: str | Path | Manifest,
    *,
    kind: str = "clean",
    split: str = "val",
    batch_size: int = 64,
    image_size: int = 96,
    num_workers: int = 0,
    seed: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    k: float = 1.0,
) -> DataLoader:
    """A deterministic evaluation loader over ``split``; yields ``(x, y, info)``.

    Every image is resized so its shorter side is ``image_size`` and centre-cropped (no flip).
    Samples come in manifest order (shard by shard, tar order within a shard).

    ``kind="clean"``: the original images, one-hot ``y``; ``info`` has ``structure_cls`` =
    ``texture_cls`` = the label and ``is_conflict`` False. ``kind="conflict"``: every sample's
    structure with the texture of a sample of another class drawn once from ``seed`` (the same
    set on every call), ``y = k * onehot(structure) + (1 - k) * onehot(texture)``,
    ``is_conflict`` True; this is the set for the shape-bias metric. ``info`` also holds
    ``key`` and ``texture_key``. Undecodable samples are dropped with a
    :class:`CorruptSampleWarning`, so a batch may be smaller.
    """
    if kind not in EVAL_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(EVAL_KINDS)}")
    k = check_unit_interval("k", k)
    _check_loader_sizes(batch_size, image_size, num_workers, 0)
    normalize = _Normalize(mean, std)
    manifest = _manifest_of(source)
    samples = [loc for shard in _split_shards(manifest, split)
               for loc in _locate_samples(shard, manifest.num_classes)]
    if kind == "clean":
        donors = np.arange(len(samples))
    else:
        donors = _conflict_donors(np.array([s.cls for s in samples]), seed)
    dataset = _EvalSet(samples, donors, image_size, _shared_counters(),
                       with_structure=kind == "conflict")
    collate = _EvalCollate(manifest.num_classes, k if kind == "conflict" else 1.0, normalize,
                           kind == "conflict", image_size)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate,
                      multiprocessing_context=worker_context() if num_workers else None)
