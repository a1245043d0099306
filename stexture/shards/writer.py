"""Writing a dataset of stexture shards: plan, write each shard, assemble the manifest.

The work is cut in two phases so that the content of every shard is fixed before any
decomposition runs:

1. :func:`plan_dataset` lists the sources, decodes every image once (rejecting bad ones
   with a reason and dropping exact duplicates), assigns the split, and cuts the accepted
   images into :class:`ShardJob` s. The plan depends only on the source and the
   :class:`Settings`.
2. :func:`write_shard` turns one job into one tar file. It is a pure, independent unit (it
   reads its own inputs and writes only ``OUT/<its name>``), so any engine can map it: the
   local process pool of :func:`write_dataset`, or Ray tasks.

Between and after them, :func:`open_output` checks an existing output folder (same settings,
same plan) and returns the shards already complete and verified, :func:`record_shard`
notes each finished shard in a progress file so a resumed run can skip it, and
:func:`finish_dataset` writes ``manifest.json``, ``index.csv`` and ``rejected.jsonl``.

Determinism: keys, splits, shard contents and tar bytes depend only on the source and the
settings (not on the engine, the number of workers or the order shards finish in), provided
the smoothing method gives the same output for the same image on every call.

The output folder may be a local path or an fsspec URL (see :mod:`.storage`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .._device import resolve_device
from ..decompose import decompose
from ..imageio import ImageReadError, decode_rgb_bytes
from ..smoothing import get_method
from ..smoothing._checks import check_parameters
from . import storage
from .format import (
    DEFAULT_MAX_PIXELS,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_FIELDS,
    INDEX_NAME,
    MANIFEST_NAME,
    REJECTED_NAME,
    STRUCTURE_FIELD,
    check_member_file_name,
    decode_rgb,
    encode_image,
    encode_sample,
    write_tar,
)
from .interop import wids_index_names, write_wids_indexes
from .sources import SourceItem, list_sources, read_items
from .storage import Location

__all__ = [
    "PROGRESS_NAME",
    "SPLITS",
    "Plan",
    "Rejection",
    "Settings",
    "ShardJob",
    "ShardResult",
    "Summary",
    "assemble_manifest",
    "check_output",
    "finish_dataset",
    "iter_pending",
    "open_output",
    "pixel_digest",
    "plan_dataset",
    "record_shard",
    "remove_partials",
    "resize_shorter_side",
    "resized_shape",
    "source_byte_cap",
    "scan_items",
    "shard_warnings",
    "write_shard",
]

SPLITS = ("train", "val")
PROGRESS_NAME = ".stexture-progress.json"
# the files of a shard folder besides its shards; its own record (progress file or manifest)
# names the shards
_FIXED_NAMES = (MANIFEST_NAME, INDEX_NAME, REJECTED_NAME, PROGRESS_NAME,
                *sorted(wids_index_names(SPLITS)))
# a split with fewer shards than this starves a DataLoader with several workers
MIN_SHARDS_HINT = 8
_SCAN_CHUNK = 32


@dataclass(frozen=True)
class Settings:
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
class ShardResult:
    """A written shard: name, sample count, SHA-256, and what it cost."""

    name: str
    count: int
    sha256: str
    image_bytes: int = 0
    structure_bytes: int = 0
    decompose_seconds: float = 0.0
    seconds: float = 0.0


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


@dataclass(frozen=True)
class Summary:
    """What a run produced; :meth:`text` is what the command prints."""

    out: str
    accepted: int
    rejected: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    shards: dict[str, int]
    written: int
    skipped: int
    warnings: list[str]
    decompose_seconds: float = 0.0
    ignored: int = 0

    def text(self) -> str:
        lines = [f"{self.out}: {self.accepted} samples in "
                 + ", ".join(f"{n} {split} shard(s)" for split, n in self.shards.items())
                 + f" ({self.written} written, {self.skipped} already complete)"]
        if self.rejected:
            lines.append("left out: " + ", ".join(
                f"{n} {reason}" for reason, n in sorted(self.rejected.items()))
                + f" (details in {REJECTED_NAME})")
        else:
            lines.append("left out: none")
        if self.ignored:
            lines.append(f"ignored: {self.ignored} file(s) without an image extension")
        classes = sorted({c for counts in self.class_counts.values() for c in counts})
        width = max([len(c) for c in classes] + [5])
        lines.append(f"{'class':<{width}} " + " ".join(f"{s:>7}" for s in self.class_counts))
        for name in classes:
            lines.append(f"{name:<{width}} " + " ".join(
                f"{counts.get(name, 0):>7}" for counts in self.class_counts.values()))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------- phase 1: plan


def pixel_digest(pixels: np.ndarray) -> str:
    """SHA-256 of an array's shape and pixels: equal digests mean duplicate images."""
    digest = hashlib.sha256(str(pixels.shape).encode("ascii"))
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def scan_items(items: list[SourceItem], settings: Settings) -> list[Scanned]:
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
    settings: Settings,
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


# ---------------------------------------------------------------- phase 2: write


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """``(height, width)`` of an image once its shorter side is ``size`` (0 keeps it)."""
    if size == 0 or min(height, width) == size:
        return height, width
    scale = size / min(height, width)
    new_width = max(size, round(width * scale)) if width >= height else size
    new_height = max(size, round(height * scale)) if height > width else size
    return new_height, new_width


def resize_shorter_side(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize so that the shorter side is ``size`` (area interpolation); 0 keeps the size."""
    height, width = resized_shape(*pixels.shape[:2], size)
    if (height, width) == pixels.shape[:2]:
        return pixels
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)


def _structures(images: list[np.ndarray], settings: Settings,
                progress: Callable[[int], None] | None) -> list[np.ndarray]:
    """The uint8 structure of each image; same-shape images go through in batches."""
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for position, image in enumerate(images):
        by_shape[image.shape].append(position)
    out: list[np.ndarray | None] = [None] * len(images)
    for positions in by_shape.values():
        for start in range(0, len(positions), settings.batch_size):
            batch_positions = positions[start:start + settings.batch_size]
            batch = np.stack([images[p] for p in batch_positions])
            structure, _ = decompose(batch, method=settings.method, device=settings.device,
                                     **settings.params)
            quantized = np.clip(np.rint(structure * 255.0), 0, 255).astype(np.uint8)
            for p, layer in zip(batch_positions, quantized, strict=True):
                out[p] = layer
            if progress is not None:
                progress(len(batch_positions))
    return out


def write_shard(job: ShardJob, settings: Settings, out: str | Path,
                progress: Callable[[int], None] | None = None) -> ShardResult:
    """Write ``OUT/<job.name>``: read, resize, encode, re-decode, decompose, tar.

    The stored image is decoded again and *that* is decomposed, so that
    ``texture = decoded image - decoded structure`` describes exactly what is stored.
    ``progress(n)`` is called as images are decomposed. A ``ValueError`` names the input
    when one that was readable while planning no longer is.
    """
    start = time.perf_counter()
    out = storage.location(out)
    stored, decoded, records = [], [], []
    entries = read_items((item for item, _ in job.entries), source_byte_cap(settings.max_pixels))
    digests = job.digests or (None,) * len(job.entries)
    for (item, data), (_, cls), digest in zip(entries, job.entries, digests, strict=True):
        if isinstance(data, OSError):
            raise ValueError(f"{job.name}: {item.source} cannot be read any more ({data}); "
                             "did the source change while the command ran?")
        try:
            pixels = decode_rgb_bytes(data, item.source, settings.max_pixels, settings.min_side)
        except ImageReadError as exc:
            raise ValueError(f"{job.name}: {exc}; it was readable when the run was planned: "
                             "did the source change while the command ran?") from exc
        if digest is not None and pixel_digest(pixels) != digest:
            # what is written must be what the scan saw: its duplicate check and the
            # shard's recorded inputs both stand on those pixels
            raise ValueError(
                f"{job.name}: {item.source} changed after the scan (its pixels are not the "
                "ones planned), so the shard was not written; run the same command again "
                "once the source is stable (it scans again, and says if --overwrite is "
                "needed)")
        encoded = encode_image(resize_shorter_side(pixels, settings.size),
                               settings.image_format, settings.quality)
        stored.append(encoded)
        decoded.append(decode_rgb(encoded))
        records.append({
            "source": item.source, "class_name": item.label, "cls": cls,
            "size": list(decoded[-1].shape[:2]), "source_size": list(pixels.shape[:2]),
            "method": settings.method, "params": settings.params,
        })
    decompose_start = time.perf_counter()
    structures = _structures(decoded, settings, progress)
    decompose_seconds = time.perf_counter() - decompose_start
    samples = [
        encode_sample(item.key, image, settings.image_format, structure, cls, record)
        for (item, cls), image, structure, record in zip(
            job.entries, stored, structures, records, strict=True)
    ]
    buffer = io.BytesIO()
    write_tar(buffer, samples)
    storage.write_atomically(storage.join(out, job.name), buffer.getvalue())
    return ShardResult(
        name=job.name,
        count=len(samples),
        sha256=hashlib.sha256(buffer.getvalue()).hexdigest(),
        image_bytes=sum(len(s[settings.image_format]) for s in samples),
        structure_bytes=sum(len(s[STRUCTURE_FIELD]) for s in samples),
        decompose_seconds=decompose_seconds,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------- output folder, resume


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, "<unset>"), new.get(name, "<unset>")
        if isinstance(before, dict) and isinstance(after, dict):
            lines += _differences(before, after, f"{prefix}{name}.")
        elif before != after:
            lines.append(f"{prefix}{name}: {before!r} there, {after!r} now")
    return lines


def remove_partials(out: str | Path, names: Iterable[str]) -> None:
    """Delete the ``<name>.partial`` files a killed run left in ``out`` for our ``names``
    (what :func:`~stexture.shards.storage.write_atomically` writes first); other files
    ending in ``.partial`` are not ours and stay."""
    out = storage.location(out)
    for name in names:
        storage.remove_partial(storage.join(out, name))


def check_output(out: str | Path, src: str | Path) -> None:
    """Refuse an output folder that cannot work, before any image is read: one inside the
    source folder, a file, or a local folder this process cannot write to."""
    out, source = storage.location(out), storage.location(src)
    if (isinstance(out, Path) and isinstance(source, Path) and source.is_dir()
            and out.resolve().is_relative_to(source.resolve())):
        raise ValueError(f"the output folder {out} is inside the source folder {source}: "
                         "a later run would list it as a class; choose a folder outside")
    if storage.is_file(out):
        raise ValueError(f"the output folder {out} is a file; choose a folder")
    try:
        storage.make_dirs(out)
    except OSError as exc:
        raise ValueError(f"the output folder {out} cannot be made: {exc}") from None
    if isinstance(out, Path) and not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"the output folder {out} is not writable by this user")


def _read_record(out: Location) -> dict[str, Any] | None:
    """What the progress file (else the manifest) in ``out`` says: settings, plan digest,
    shards done, and every file name it claims; ``ValueError`` when it is not one stexture
    wrote, or names a file outside ``out``."""
    for name in (PROGRESS_NAME, MANIFEST_NAME):
        path = storage.join(out, name)
        if storage.is_file(path):
            try:
                record = json.loads(storage.read_bytes(path).decode("utf-8"))
                done = (record["done"] if name == PROGRESS_NAME
                        else _done_of_manifest(record))
                claimed = set(done) | set(record.get("planned", []))
                for shard in claimed:
                    check_member_file_name(shard, str(path))
                return {"settings": record["settings"], "plan_digest": record["plan_digest"],
                        "done": done, "claimed": claimed,
                        # version 1 wrote no version into its progress file
                        "format_version": record.get("format_version", 1)}
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError,
                    AttributeError) as exc:
                raise ValueError(f"{path} is not a stexture record or is damaged ({exc!r}): "
                                 "stexture cannot tell which files there it wrote; move it "
                                 "away or choose another output folder") from None
    return None


def _done_of_manifest(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: {"count": s["count"], "sha256": s["sha256"], "inputs": s.get("inputs")}
            for entry in manifest["splits"].values() for s in entry["shards"]}


def _write_json(path: Location, value: Any) -> None:
    storage.write_atomically(
        path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _check_resumable(out: Location, record: dict[str, Any], settings: Settings,
                     plan: Plan) -> None:
    if record["format_version"] != FORMAT_VERSION:
        # shards of two versions in one folder would load, but not be what a clean run
        # writes (the structure field differs)
        raise ValueError(f"{out} was written in shard format version "
                         f"{record['format_version']}; this stexture writes version "
                         f"{FORMAT_VERSION}: use --overwrite to start over, or another "
                         "output folder")
    differences = _differences(record["settings"], settings.content())
    if differences:
        raise ValueError(f"{out} was written with other settings:\n  "
                         + "\n  ".join(differences)
                         + "\nuse the same arguments to resume, --overwrite to start over, "
                         "or another output folder")
    if record["plan_digest"] != plan.digest:
        raise ValueError(f"the source {plan.source} lists other images, classes or splits "
                         f"than when {out} was written; use --overwrite to start over")


def open_output(out: str | Path, settings: Settings, plan: Plan, overwrite: bool = False,
                log: Callable[[str], None] = lambda line: None) -> dict[str, ShardResult]:
    """Prepare ``out`` for ``plan`` and return the shards already complete there.

    A folder written before with the same settings and the same plan is resumed: every shard
    whose file matches its recorded SHA-256, and whose sources still have the pixels it was
    made from, is returned (and skipped by the caller); others are written again (``log``
    names those whose sources changed). Different settings or a different plan is a
    ``ValueError`` that says what differs, unless ``overwrite``, which deletes what the
    earlier run's record names (and nothing else). A file in the way that no record names
    (a shard or manifest name stexture did not write) is refused by name.
    """
    out = storage.location(out)
    check_output(out, plan.source)
    record = _read_record(out)
    if overwrite and record is not None:
        claimed = sorted(record["claimed"] | set(_FIXED_NAMES))
        remove_partials(out, claimed)
        for name in claimed:
            storage.remove(storage.join(out, name))
        record = None
    # the progress file is the first thing a run writes: its partial is a killed first run's
    remove_partials(out, [PROGRESS_NAME])
    ours = [*_FIXED_NAMES, *(job.name for job in plan.jobs)]
    done: dict[str, ShardResult] = {}
    if record is None:
        present = set(storage.list_dir(out)[0])
        foreign = [name for name in ours + [f"{n}{storage.PARTIAL_SUFFIX}" for n in ours]
                   if name in present]
        if foreign:
            raise ValueError(
                f"{out} holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
                f"which no stexture manifest or progress file there names: stexture did not "
                "write it, or lost its record; move it away or choose another output folder")
    else:
        _check_resumable(out, record, settings, plan)
        remove_partials(out, ours)  # what a killed run of this plan left
        changed = []
        for job in plan.jobs:
            entry = record["done"].get(job.name)
            path = storage.join(out, job.name)
            if (entry is None or not storage.is_file(path)
                    or storage.sha256_of(path) != entry["sha256"]):
                continue
            if entry.get("inputs") != job.inputs:
                changed.append(job.name)
                continue
            done[job.name] = ShardResult(job.name, int(entry["count"]), entry["sha256"])
        if changed:
            log(f"rewriting {len(changed)} shard(s) whose source images changed since they "
                f"were written: {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}")
    if len(done) < len(plan.jobs):
        # a manifest only ever describes a complete folder
        storage.remove(storage.join(out, MANIFEST_NAME))
    _write_progress(out, settings, plan, done)
    return done


def _write_progress(out: Location, settings: Settings, plan: Plan,
                    done: dict[str, ShardResult]) -> None:
    inputs = {job.name: job.inputs for job in plan.jobs}
    _write_json(storage.join(out, PROGRESS_NAME), {
        "format_version": FORMAT_VERSION, "settings": settings.content(),
        "plan_digest": plan.digest,
        # every shard this run may write, named before it is written: an --overwrite or a
        # resume removes or replaces only files named here
        "planned": sorted(inputs),
        "done": {name: {"count": r.count, "sha256": r.sha256, "inputs": inputs[name]}
                 for name, r in sorted(done.items())},
    })


def record_shard(out: str | Path, settings: Settings, plan: Plan,
                 done: dict[str, ShardResult], result: ShardResult) -> None:
    """Add ``result`` to ``done`` and to the progress file that a resumed run reads."""
    done[result.name] = result
    _write_progress(storage.location(out), settings, plan, done)


# ---------------------------------------------------------------- assemble


def _versions() -> dict[str, str]:
    import numba
    import PIL

    from .. import __version__

    return {"stexture": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "opencv": cv2.__version__, "pillow": PIL.__version__,
            "python": ".".join(map(str, sys.version_info[:3]))}


def assemble_manifest(plan: Plan, settings: Settings,
                      results: dict[str, ShardResult]) -> dict[str, Any]:
    """The ``manifest.json`` content for a plan whose every shard is in ``results``."""
    missing = [job.name for job in plan.jobs if job.name not in results]
    if missing:
        raise ValueError(f"cannot assemble the manifest: {len(missing)} shard(s) not written, "
                         f"first {missing[0]}")
    splits = {}
    counts = plan.split_counts()
    for split in SPLITS:
        shards = [{"name": job.name, "count": results[job.name].count,
                   "sha256": results[job.name].sha256, "inputs": job.inputs}
                  for job in plan.jobs if job.split == split]
        splits[split] = {"count": sum(s["count"] for s in shards), "shards": shards,
                         "class_counts": dict(sorted(counts[split].items()))}
    reasons = Counter(r.reason for r in plan.rejected)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "classes": plan.classes,
        "splits": splits,
        "method": settings.method,
        "params": settings.params,
        "structure_encoding": "structure.dzst: vertical delta + zstd, 8-bit rounding of the "
                              "method's output",
        "settings": settings.content(),
        "plan_digest": plan.digest,
        "source": plan.source,
        "inputs": {"listed": plan.listed, "ignored_non_images": plan.ignored,
                   "accepted": sum(len(job.entries) for job in plan.jobs),
                   "rejected": dict(sorted(reasons.items()))},
        "versions": _versions(),
    }


def shard_warnings(plan: Plan) -> list[str]:
    """A warning per split with samples but fewer shards than a multi-worker loader needs."""
    warnings = []
    for split in SPLITS:
        n = sum(1 for job in plan.jobs if job.split == split)
        if 0 < n < MIN_SHARDS_HINT:
            warnings.append(
                f"{split} has {n} shard(s): a DataLoader with more than {n} worker(s) leaves "
                f"some idle (WebDataset splits by shard); a smaller --shard-size gives more")
    return warnings


def finish_dataset(out: str | Path, plan: Plan, settings: Settings,
                   results: dict[str, ShardResult], written: int = 0) -> Summary:
    """Write ``index.csv``, ``rejected.jsonl``, the wids indexes (``{split}.wids.json``) and
    ``manifest.json`` (last: its presence means the folder is complete), remove the progress
    file, and summarise."""
    out = storage.location(out)
    manifest = assemble_manifest(plan, settings, results)
    index = io.StringIO()
    rows = csv.writer(index, lineterminator="\n")
    rows.writerow(["key", "split", "shard", "cls"])
    for job in plan.jobs:
        rows.writerows((item.key, job.split, job.name, cls) for item, cls in job.entries)
    storage.write_atomically(storage.join(out, INDEX_NAME), index.getvalue().encode("utf-8"))
    rejected = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in plan.rejected)
    storage.write_atomically(storage.join(out, REJECTED_NAME), rejected.encode("utf-8"))
    write_wids_indexes(out, manifest)
    _write_json(storage.join(out, MANIFEST_NAME), manifest)
    storage.remove(storage.join(out, PROGRESS_NAME))
    counts = plan.split_counts()
    return Summary(
        out=str(out),
        accepted=manifest["inputs"]["accepted"],
        rejected=manifest["inputs"]["rejected"],
        class_counts={split: dict(sorted(counts[split].items())) for split in SPLITS},
        shards={split: len(manifest["splits"][split]["shards"]) for split in SPLITS},
        written=written,
        skipped=len(plan.jobs) - written,
        warnings=shard_warnings(plan),
        decompose_seconds=sum(r.decompose_seconds for r in results.values()),
        ignored=plan.ignored,
    )


def iter_pending(plan: Plan, done: dict[str, ShardResult]) -> Iterator[ShardJob]:
    """The jobs of ``plan`` not in ``done``, in plan order."""
    return (job for job in plan.jobs if job.name not in done)
