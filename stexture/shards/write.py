"""Writing a dataset of stexture shards, phase 2: one shard a job, and the output folder
that a killed or repeated run resumes (see :mod:`.plan` for the two phases)."""

from __future__ import annotations

import io
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..decompose import decompose
from ..imageio import ImageReadError, decode_rgb_bytes
from . import storage
from .format import (
    FORMAT_VERSION,
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
from .format.offsets import ShardEntries, offsets_names, scan_tar_bytes
from .interop import wids_index_names
from .plan import (
    SPLITS,
    Plan,
    ShardJob,
    ShardSettings,
    pixel_digest,
    resized_shape,
    source_byte_cap,
)
from .sources import read_items
from .storage import Location

__all__ = [
    "PROGRESS_NAME",
    "ShardResult",
    "check_output",
    "iter_pending",
    "open_output",
    "record_shard",
    "remove_partials",
    "resize_shorter_side",
    "write_shard",
]

PROGRESS_NAME = ".stexture-progress.json"
# the files of a shard folder besides its shards; its own record (progress file or manifest)
# names the shards
_FIXED_NAMES = (MANIFEST_NAME, INDEX_NAME, REJECTED_NAME, PROGRESS_NAME,
                *sorted(wids_index_names(SPLITS)), *sorted(offsets_names(SPLITS)))


@dataclass(frozen=True)
class ShardResult:
    """A written shard: name, sample count, SHA-256, what it cost, and where each sample's
    members lie in it (``entries``, for the offsets file; None for a shard a resumed run
    found complete, whose entries are read back from it at the end)."""

    name: str
    count: int
    sha256: str
    image_bytes: int = 0
    structure_bytes: int = 0
    decompose_seconds: float = 0.0
    seconds: float = 0.0
    entries: ShardEntries | None = None


def resize_shorter_side(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize so that the shorter side is ``size`` (area interpolation); 0 keeps the size."""
    height, width = resized_shape(*pixels.shape[:2], size)
    if (height, width) == pixels.shape[:2]:
        return pixels
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)


def _structures(images: list[np.ndarray], settings: ShardSettings,
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


def write_shard(job: ShardJob, settings: ShardSettings, out: str | Path,
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
        encode_sample(item.key, image, settings.image_format, structure, cls, record,
                      step=settings.structure_step)
        for (item, cls), image, structure, record in zip(
            job.entries, stored, structures, records, strict=True)
    ]
    buffer = io.BytesIO()
    write_tar(buffer, samples)
    storage.write_atomically(storage.join(out, job.name), buffer.getvalue())
    # the members' offsets from the bytes just written: the offsets file needs no re-read
    entries = scan_tar_bytes(job.name, buffer.getvalue())
    return ShardResult(
        name=job.name,
        count=len(samples),
        sha256=entries.sha256,
        image_bytes=sum(len(s[settings.image_format]) for s in samples),
        structure_bytes=sum(len(s[STRUCTURE_FIELD]) for s in samples),
        decompose_seconds=decompose_seconds,
        seconds=time.perf_counter() - start,
        entries=entries,
    )


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


def _check_resumable(out: Location, record: dict[str, Any], settings: ShardSettings,
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


def open_output(out: str | Path, settings: ShardSettings, plan: Plan, overwrite: bool = False,
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


def _write_progress(out: Location, settings: ShardSettings, plan: Plan,
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


def record_shard(out: str | Path, settings: ShardSettings, plan: Plan,
                 done: dict[str, ShardResult], result: ShardResult) -> None:
    """Add ``result`` to ``done`` and to the progress file that a resumed run reads."""
    done[result.name] = result
    _write_progress(storage.location(out), settings, plan, done)


def iter_pending(plan: Plan, done: dict[str, ShardResult]) -> Iterator[ShardJob]:
    """The jobs of ``plan`` not in ``done``, in plan order."""
    return (job for job in plan.jobs if job.name not in done)
