"""Checking a shard folder against its manifest, and a contact sheet of its samples.

:func:`validate_dataset` reads every shard and reports each inconsistency in a sentence:
missing or changed files (SHA-256), sample counts, samples that do not decode, class
indices out of range or disagreeing with the record and ``index.csv``, duplicate keys, and,
on a few samples, whether the stored structure is what the recorded method gives for the
stored image (within one 8-bit level, plus the quantisation's bound for a quantised layer).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._contact_sheet import SheetRow, paint_contact_sheet
from ..decompose import decompose
from ..imageio import texture_to_display
from . import storage
from .format import (
    DEFAULT_MAX_PIXELS,
    INDEX_NAME,
    DecodedSample,
    Manifest,
    decode_sample,
    iter_tar_samples,
    read_index,
    read_manifest,
)
from .format.manifest import folder_location
from .plan import ShardSettings, plan_dataset

__all__ = ["Validation", "contact_sheet", "stale_shards", "validate_dataset"]

# stored structure vs. a fresh decomposition: rounding may differ by one level (and a
# quantised layer, format version 3, by half its step more: _recompute_tolerance)
_RECOMPUTE_TOLERANCE = 1


def _recompute_tolerance(manifest: Manifest) -> int:
    """Levels a stored structure may differ from a fresh one: the rounding, plus the error
    bound ``structure_step // 2`` of the writer's quantisation (versions 1 and 2: lossless)."""
    step = (manifest.raw.get("settings") or {}).get("structure_step", 1)
    return _RECOMPUTE_TOLERANCE + int(step) // 2


@dataclass
class Validation:
    """The outcome of :func:`validate_dataset`: ``problems`` is empty when all is well."""

    root: storage.Location
    classes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: dict[str, Counter] = field(default_factory=dict)
    recomputed: int = 0
    examples: dict[str, list[DecodedSample]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        """Samples per class (rows) and split (columns)."""
        splits = list(self.counts)
        width = max([len(c) for c in self.classes] + [5])
        lines = [f"{'class':<{width}} " + " ".join(f"{s:>7}" for s in splits)]
        for name in self.classes:
            lines.append(f"{name:<{width}} "
                         + " ".join(f"{self.counts[s].get(name, 0):>7}" for s in splits))
        lines.append(f"{'total':<{width}} "
                     + " ".join(f"{sum(self.counts[s].values()):>7}" for s in splits))
        return "\n".join(lines)


def _read_index(root: storage.Location, problems: list[str]) -> dict[str, tuple[str, str, int]]:
    try:
        rows = read_index(root)
    except FileNotFoundError:
        problems.append(f"{INDEX_NAME} is missing")
        return {}
    except ValueError as exc:
        problems.append(str(exc))
        return {}
    index = {}
    for row in rows:
        try:
            index[row["key"]] = (row["split"], row["shard"], int(row["cls"]))
        except ValueError:
            problems.append(f"{INDEX_NAME} has a malformed row: {row}")
    return index


def _check_sample(sample: DecodedSample, where: str, classes: list[str], split: str,
                  shard: str, index: dict[str, tuple[str, str, int]], problems: list[str]) -> None:
    if not 0 <= sample.cls < len(classes):
        problems.append(f"{where}: class index {sample.cls} is outside 0..{len(classes) - 1}")
        return
    name = sample.record.get("class_name")
    if name is not None and name != classes[sample.cls]:
        problems.append(f"{where}: cls {sample.cls} is {classes[sample.cls]!r} in the manifest "
                        f"but the record says {name!r}")
    size = sample.record.get("size")
    if size is not None and list(size) != list(sample.image.shape[:2]):
        problems.append(f"{where}: the record says size {size}, the image is "
                        f"{list(sample.image.shape[:2])}")
    if index and index.get(sample.key) != (split, shard, sample.cls):
        problems.append(f"{where}: {INDEX_NAME} says {index.get(sample.key)}, the shard says "
                        f"{(split, shard, sample.cls)}")


def _recompute_matches(sample: DecodedSample, method: str, params: dict) -> int:
    """Largest difference in 8-bit levels between the stored and a fresh structure."""
    structure, _ = decompose(sample.image, method=method, device="cpu", **params)
    fresh = np.clip(np.rint(structure * 255.0), 0, 255).astype(np.int16)
    return int(np.abs(fresh - sample.structure.astype(np.int16)).max())


def stale_shards(manifest: Manifest) -> list[str]:
    """A sentence per shard whose sources changed since it was written, found by planning the
    recorded source again with the recorded settings (a full scan: every source is read and
    decoded) and comparing each shard's digest of its sources' pixels with the manifest's.
    A source that now lists other images, classes or splits is one sentence."""
    try:
        settings = ShardSettings(**{**manifest.raw["settings"], "device": "cpu"})
        plan = plan_dataset(manifest.raw["source"], settings)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        return [f"the sources cannot be checked: {exc}"]
    if plan.digest != manifest.raw.get("plan_digest"):
        return [f"the source {plan.source} now lists other images, classes or splits than "
                "when the shards were written; run `stexture decompose` again with the same "
                "arguments and --overwrite to rewrite the folder"]
    recorded = {s["name"]: s.get("inputs") for entry in manifest.raw["splits"].values()
                for s in entry["shards"]}
    return [f"{job.name}: its sources changed since it was written; run `stexture decompose` "
            "with the same arguments to rewrite it"
            for job in plan.jobs if recorded.get(job.name) != job.inputs]


def validate_dataset(root: str | Path, recompute: int = 2, examples_per_class: int = 0,
                     sources: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
                     ) -> Validation:
    """Check every shard under ``root`` against ``manifest.json`` (see the module docstring).

    The shards are read as the loaders read them: a manifest of a format version or method
    this stexture does not know, a compressed shard, or a sample whose members are not
    contiguous is a problem here too (:func:`~.format.read_manifest`,
    :func:`~.format.iter_tar_samples`). ``recompute`` samples per split are decomposed again
    (0 skips this). ``examples_per_class`` decoded samples per class are kept for
    :func:`contact_sheet`. ``sources`` also checks that no source changed since its shard
    was written (:func:`stale_shards`, a full scan of the source). ``max_pixels`` is the most
    pixels a stored layer may declare (checked before decoding it); the manifest cannot
    raise it.

    ``root`` may be an fsspec URL (``s3://bucket/shards``, opened with the default storage
    options, :func:`~stexture.shards.storage.storage_options_for`): each shard is then
    downloaded once, into a temporary folder that is removed at the end, and checked there.
    """
    root = folder_location(root)
    if isinstance(root, Path):
        return _validate(root, recompute, examples_per_class, sources, max_pixels, _in_place)
    with tempfile.TemporaryDirectory(prefix="stexture-inspect-") as scratch:
        return _validate(root, recompute, examples_per_class, sources, max_pixels,
                         lambda url: _download(url, Path(scratch) / "shard.tar"))


def _in_place(path: storage.Location) -> tuple[Path, str]:
    """A local shard: itself and its SHA-256."""
    return Path(path), storage.sha256_of(path)


def _download(url: storage.Location, local: Path) -> tuple[Path, str]:
    """The shard at ``url`` copied to ``local`` (replacing the previous shard's copy), and
    the SHA-256 of the bytes read: one read of the object."""
    digest = hashlib.sha256()
    with storage.open_read(url) as source, open(local, "wb") as copy:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
            copy.write(block)
    return local, digest.hexdigest()


def _validate(root: storage.Location, recompute: int, examples_per_class: int,
              sources: bool, max_pixels: int,
              fetch: Callable[[storage.Location], tuple[Path, str]]) -> Validation:
    """:func:`validate_dataset` of the folder ``root``, each shard read through ``fetch``
    (a local file and its SHA-256)."""
    result = Validation(root)
    try:
        manifest = read_manifest(root, max_pixels)
    except (FileNotFoundError, ValueError) as exc:
        result.problems.append(str(exc))
        return result
    except OSError as exc:  # a path over the system's name limit, a folder it may not read
        result.problems.append(f"cannot read {root}: {exc.strerror or exc}")
        return result
    result.classes = manifest.classes
    index = _read_index(root, result.problems)
    seen: dict[str, str] = {}
    for split, shards in manifest.splits.items():
        counts: Counter = Counter()
        result.counts[split] = counts
        recompute_left = recompute
        for info in shards:
            path = storage.join(root, info.name)
            if not storage.is_file(path):
                result.problems.append(f"{info.name}: listed in the manifest but missing")
                continue
            local, digest = fetch(path)
            if digest != info.sha256:
                result.problems.append(f"{info.name}: SHA-256 differs from the manifest "
                                       "(the file changed or is damaged)")
            count = 0
            try:
                for raw in iter_tar_samples(local, compressed=False):
                    count += 1
                    where = f"{info.name}: sample {raw.get('__key__')!r}"
                    try:
                        sample = decode_sample(raw, manifest.max_pixels)
                    except ValueError as exc:
                        result.problems.append(f"{info.name}: {exc}")
                        continue
                    if sample.key in seen:
                        result.problems.append(f"{where} is also in {seen[sample.key]}")
                    seen[sample.key] = info.name
                    _check_sample(sample, where, manifest.classes, split, info.name, index,
                                  result.problems)
                    if not 0 <= sample.cls < len(manifest.classes):
                        continue
                    counts[manifest.classes[sample.cls]] += 1
                    if recompute_left > 0:
                        recompute_left -= 1
                        result.recomputed += 1
                        levels = _recompute_matches(sample, manifest.method, manifest.params)
                        if levels > _recompute_tolerance(manifest):
                            result.problems.append(
                                f"{where}: the stored structure differs by {levels} levels "
                                f"from {manifest.method} on the stored image")
                    kept = result.examples.setdefault(manifest.classes[sample.cls], [])
                    if len(kept) < examples_per_class:
                        kept.append(sample)
            except ValueError as exc:  # naming the shard as given, not a downloaded copy
                result.problems.append(str(exc).replace(str(local), str(path)))
            if count != info.count:
                result.problems.append(f"{info.name}: {count} samples, the manifest says "
                                       f"{info.count}")
        expected = manifest.raw["splits"][split].get("class_counts")
        if expected is not None and dict(expected) != {k: v for k, v in counts.items() if v}:
            result.problems.append(f"{split}: class counts {dict(sorted(counts.items()))} differ "
                                   f"from the manifest's {expected}")
    if index and len(index) != len(seen):
        result.problems.append(f"{INDEX_NAME} lists {len(index)} samples, the shards hold "
                               f"{len(seen)}")
    if sources:
        result.problems += stale_shards(manifest)
    return result


def contact_sheet(examples: dict[str, list[DecodedSample]], path: str | Path,
                  height: int = 96) -> Path:
    """Write a PNG with one row per sample: class name | image | structure | texture (offset
    to mid-grey, so zero texture is grey), under a header naming the columns.

    The file is written whole or not at all, and never through a link: a symbolic link at
    ``path`` is refused with a ``ValueError`` (it would point the sheet at a file outside the
    folder)."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link: stexture does not write through links; "
                         "remove it or name another --sheet")
    rows = [SheetRow(name, (sample.image, sample.structure,
                            texture_to_display(sample.texture.astype(np.float32) / 255.0)))
            for name in sorted(examples) for sample in examples[name]]
    sheet = paint_contact_sheet(rows, ("image", "structure", "texture (0 = grey)"),
                                height=height, label_width=140)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    storage.write_atomically(path, buffer.getvalue())
    return path
