"""Writing a dataset of stexture shards, phase 1: the plan (and the settings it stands on).

The work is cut in two phases so that the content of every shard is fixed before any
decomposition runs:

1. :func:`plan_dataset` lists the sources, decodes every image once (rejecting bad ones
   with a reason and dropping exact duplicates), assigns the split, and cuts the accepted
   images into :class:`ShardJob` s. The plan depends only on the source and the
   :class:`ShardSettings`.
2. :func:`~stexture.shards.write.write_shard` turns one job into one tar file. It is a
   pure, independent unit (it reads its own inputs and writes only ``OUT/<its name>``), so
   any engine can map it: the local process pool of
   :func:`~stexture.shards.local.write_dataset`, or Ray tasks.

Between and after them, :func:`~stexture.shards.write.open_output` checks an existing
output folder (same settings, same plan) and returns the shards already complete and
verified, :func:`~stexture.shards.write.record_shard` notes each finished shard in a
progress file so a resumed run can skip it, and
:func:`~stexture.shards.output.finish_dataset` writes ``manifest.json``, ``index.csv`` and
``rejected.jsonl``.

Determinism: keys, splits, shard contents and tar bytes depend only on the source and the
settings (not on the engine, the number of workers or the order shards finish in), provided
the smoothing method gives the same output for the same image on every call.

The output folder may be a local path or an fsspec URL (see :mod:`.storage`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .._device import resolve_device
from ..imageio import ImageReadError, decode_rgb_bytes
from ..smoothing import get_method
from ..smoothing._checks import check_parameters
from .format import DEFAULT_MAX_PIXELS, IMAGE_FIELDS
from .sources import SourceItem, list_sources, read_items

__all__ = [
    "SPLITS",
    "Plan",
    "Rejection",
    "Scanned",
    "ShardSettings",
    "ShardJob",
    "pixel_digest",
    "plan_dataset",
    "resized_shape",
    "scan_items",
    "source_byte_cap",
]

SPLITS = ("train", "val")
_SCAN_CHUNK = 32


@dataclass(frozen=True)
class ShardSettings:
    """Everything that decides the content of the shards (compared on resume).

    ``params`` are completed with the method's defaults, ``device`` is resolved (``"auto"``
    becomes ``"cpu"`` or ``"cuda"``) and ``batch_size=0`` becomes 1 on the CPU (a batched
    solve runs until its slowest image converges, so one image at a time is faster there)
    and 16 on the GPU, when the settings are made. The batch size is part of the content:
    an iterative solver stopped by a tolerance over the whole batch may give an image a few
    more iterations in a batch than alone.
    """

    method: str = "rtv"
    params: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    size: int = 256
    image_format: str = "jpg"
    quality: int = 95
    val_fraction: float = 0.1
    shard_size: int = 1000
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 32
    batch_size: int = 0
    #: the structure layer's quantisation step (``encode_structure``): each stored level is
    #: within ``structure_step // 2`` of the 8-bit layer (1: lossless, as format version 2
    #: stored it). 4 brings a sample to about 1.9x the stored JPEG's bytes, against 2.6x
    #: lossless (``benchmarks/README.md``, *Quantised structure layers*).
    structure_step: int = 4

    def __post_init__(self) -> None:
        method = get_method(self.method)
        object.__setattr__(self, "params", method.resolve_params(self.params))
        # every parameter in its range now, before any image is read or any folder opened:
        # a bad value must not fail every shard, nor leave a progress file that refuses
        # the corrected command as "written with other settings"
        check_parameters(method.defaults, self.params)
        object.__setattr__(self, "device", resolve_device(self.device))
        if self.batch_size == 0:
            object.__setattr__(self, "batch_size", 16 if self.device == "cuda" else 1)
        checks = [
            (self.size >= 0, f"size must be >= 0 (0 keeps the size), got {self.size}"),
            (self.size == 0 or self.size >= 2, f"size must be at least 2 pixels, got {self.size}"),
            (self.image_format in IMAGE_FIELDS,
             f"image format must be one of {IMAGE_FIELDS}, got {self.image_format!r}"),
            (1 <= self.quality <= 100, f"quality must be in 1..100, got {self.quality}"),
            (0.0 <= self.val_fraction < 1.0,
             f"val fraction must be in [0, 1), got {self.val_fraction}"),
            (self.shard_size >= 1, f"shard size must be >= 1, got {self.shard_size}"),
            (self.max_pixels >= 1, f"max pixels must be >= 1, got {self.max_pixels}"),
            # the limit holds for what is written too: a shorter side of ``size`` is at
            # least size**2 pixels, refused here rather than after resizing every image
            (self.size ** 2 <= self.max_pixels,
             f"size {self.size} makes images of at least {self.size ** 2} pixels, over max "
             f"pixels {self.max_pixels}: size must lie in [2, {math.isqrt(self.max_pixels)}]"
             " or max pixels be raised"),
            (self.min_side >= 2, f"min side must be >= 2, got {self.min_side}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (isinstance(self.structure_step, int) and not isinstance(self.structure_step, bool)
             and 1 <= self.structure_step <= 255,
             f"structure step must be an integer in 1..255 (1: lossless), got "
             f"{self.structure_step!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def content(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (recorded in the manifest, compared on resume)."""
        return asdict(self)


def source_byte_cap(max_pixels: int) -> int:
    """The most bytes a source file may have, checked before it is read: 16 bytes per pixel
    (RGBA at 32 bits a channel, the widest layout Pillow reads) of ``max_pixels``, plus
    64 MiB of metadata. No image within the pixel limit is larger; a bigger file is refused
    without being read."""
    return 16 * max_pixels + (64 << 20)


@dataclass(frozen=True)
class Rejection:
    """An input left out, with a reason code (see ``stexture.imageio.REJECT_REASONS``)."""

    path: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Scanned:
    """The outcome of reading one input while planning."""

    key: str
    digest: str
    rejection: Rejection | None = None


@dataclass(frozen=True)
class ShardJob:
    """One shard to write: its split, index and the ``(item, class index)`` pairs in order;
    ``inputs`` is the SHA-256 of its sources' pixel digests, so that a resumed run notices a
    source whose pixels changed since the shard was written; ``digests`` are those pixel
    digests, one per entry, which :func:`write_shard` checks against what it decodes (a
    source changed between the scan and the write is never written unchecked)."""

    split: str
    index: int
    entries: tuple[tuple[SourceItem, int], ...]
    inputs: str = ""
    digests: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}.tar"



@dataclass(frozen=True)
class Plan:
    """What will be written: classes (sorted), shard jobs, and the inputs left out."""

    source: str
    classes: list[str]
    jobs: list[ShardJob]
    rejected: list[Rejection]
    listed: int
    ignored: int

    @property
    def digest(self) -> str:
        """SHA-256 of the classes and of every job's name, keys, sources and classes."""
        content = [self.classes] + [
            [job.name, [[item.key, item.source, cls] for item, cls in job.entries]]
            for job in self.jobs
        ]
        return hashlib.sha256(json.dumps(content).encode("utf-8")).hexdigest()

    def split_counts(self) -> dict[str, Counter]:
        """Per split, the number of samples of each class name."""
        counts: dict[str, Counter] = {split: Counter() for split in SPLITS}
        for job in self.jobs:
            counts[job.split].update(self.classes[cls] for _, cls in job.entries)
        return counts



def pixel_digest(pixels: np.ndarray) -> str:
    """SHA-256 of an array's shape and pixels: equal digests mean duplicate images."""
    digest = hashlib.sha256(str(pixels.shape).encode("ascii"))
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def scan_items(items: list[SourceItem], settings: ShardSettings) -> list[Scanned]:
    """Read and decode ``items``: a pixel digest for each good one, a rejection otherwise.

    Never raises for a bad input: every failure becomes a :class:`Rejection`.
    """
    scanned = []
    for item, data in read_items(items, source_byte_cap(settings.max_pixels)):
        if isinstance(data, OSError):
            scanned.append(Scanned(item.key, "", Rejection(item.source, "unreadable", str(data))))
            continue
        try:
            pixels = decode_rgb_bytes(data, item.source, settings.max_pixels, settings.min_side)
        except ImageReadError as exc:
            scanned.append(Scanned(item.key, "", Rejection(item.source, exc.reason, str(exc))))
            continue
        except Exception as exc:  # a decoder bug on a hostile file must not end the run
            scanned.append(Scanned(item.key, "", Rejection(
                item.source, "corrupt", f"{item.source}: {type(exc).__name__}: {exc}")))
            continue
        height, width = resized_shape(*pixels.shape[:2], settings.size)
        if height * width > settings.max_pixels:
            # the pixel limit holds for what is written, too (a long panorama at --size)
            scanned.append(Scanned(item.key, "", Rejection(
                item.source, "too_many_pixels",
                f"{item.source}: {width}x{height} once resized to a shorter side of "
                f"{settings.size}, over --max-pixels {settings.max_pixels}")))
            continue
        scanned.append(Scanned(item.key, pixel_digest(pixels)))
    return scanned


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()

def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """``(height, width)`` of an image once its shorter side is ``size`` (0 keeps it)."""
    if size == 0 or min(height, width) == size:
        return height, width
    scale = size / min(height, width)
    new_width = max(size, round(width * scale)) if width >= height else size
    new_height = max(size, round(height * scale)) if height > width else size
    return new_height, new_width


def _val_count(n: int, fraction: float) -> int:
    return math.floor(n * fraction + 0.5)


def _assign_splits(kept: list[SourceItem], val_fraction: float) -> dict[str, list[SourceItem]]:
    """Within each class, the items whose key hash sorts first go to val."""
    by_class: dict[str, list[SourceItem]] = defaultdict(list)
    for item in kept:
        by_class[item.label].append(item)
    splits: dict[str, list[SourceItem]] = {split: [] for split in SPLITS}
    for items in by_class.values():
        ordered = sorted(items, key=lambda item: _key_hash(item.key))
        n_val = _val_count(len(ordered), val_fraction)
        splits["val"] += ordered[:n_val]
        splits["train"] += ordered[n_val:]
    # shard order by key hash mixes the classes within every shard
    return {split: sorted(items, key=lambda item: _key_hash(item.key))
            for split, items in splits.items()}


def plan_dataset(
    src: str | Path,
    settings: ShardSettings,
    map_fn: Callable[[Callable, Iterable], Iterable] = map,
) -> Plan:
    """Decide every shard's content: list, scan (via ``map_fn``), drop duplicates, split, cut.

    ``map_fn(fn, chunks)`` must return the results in order (``map``, an executor's
    ``map``, or a distributed equivalent); it receives lists of items.
    """
    listing = list_sources(src)
    items = listing.items
    chunks = [items[i:i + _SCAN_CHUNK] for i in range(0, len(items), _SCAN_CHUNK)]
    scanned = [s for part in map_fn(partial(scan_items, settings=settings), chunks) for s in part]
    rejected = [Rejection(*problem) for problem in listing.problems]
    kept: list[SourceItem] = []
    first_with: dict[str, SourceItem] = {}
    digest_of: dict[str, str] = {}
    for item, result in zip(items, scanned, strict=True):
        if result.rejection is not None:
            rejected.append(result.rejection)
        elif result.digest in first_with:
            original = first_with[result.digest]
            labels = "" if original.label == item.label else (
                f" (labelled {item.label!r} here, {original.label!r} there)")
            rejected.append(Rejection(item.source, "duplicate",
                                      f"same pixels as {original.source}{labels}"))
        else:
            first_with[result.digest] = item
            digest_of[item.key] = result.digest
            kept.append(item)
    classes = sorted({item.label for item in kept})
    class_index = {name: i for i, name in enumerate(classes)}
    jobs = []
    for split, split_items in _assign_splits(kept, settings.val_fraction).items():
        for start in range(0, len(split_items), settings.shard_size):
            chunk = split_items[start:start + settings.shard_size]
            entries = tuple((item, class_index[item.label]) for item in chunk)
            digests = tuple(digest_of[item.key] for item in chunk)
            inputs = hashlib.sha256(" ".join(digests).encode("ascii")).hexdigest()
            jobs.append(ShardJob(split, start // settings.shard_size, entries, inputs, digests))
    for name in {item.label for item in items} - set(classes):
        rejected.append(Rejection(name, "empty_class", "no image of this class was accepted"))
    rejected.sort(key=lambda r: (r.path, r.reason))
    return Plan(str(src), classes, jobs, rejected, len(items), listing.ignored)
