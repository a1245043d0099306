"""The sample index behind both loaders: where every field of every sample of a split lies
in its shard (tar headers only), read back by offset, and decoded into layers.

Random access by (shard, offset) is what lets the training loader draw one global
permutation per epoch and split it exactly across ranks and workers, as wids and mosaicml
streaming do; a shard's headers are read once, when the loader is built.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..shards.folder import ShardFolder
from ..shards.format import (
    IMAGE_FIELDS,
    Manifest,
    ShardInfo,
    decode_rgb,
    decode_structure,
    group_samples,
    structure_field,
    tar_member_offsets,
)

__all__ = ["CorruptSampleWarning", "Located", "SampleReader", "locate_split", "manifest_of"]


class CorruptSampleWarning(UserWarning):
    """A sample inside a shard could not be decoded and was skipped."""


@dataclass(frozen=True)
class Located:
    """One sample: its shard file, key, class (-1: undecodable) and field -> (offset, size)."""

    path: str
    key: str
    cls: int
    fields: dict[str, tuple[int, int]]


def manifest_of(source: str | Path | Manifest | ShardFolder) -> Manifest:
    """The manifest of a loader's ``source``: read from a path, or the one a
    :class:`~stexture.shards.folder.ShardFolder` (or a :class:`Manifest`) already holds."""
    return ShardFolder.open(source).manifest


def _read_class(f: Any, offset: int, size: int) -> int:
    try:
        return int(os.pread(f.fileno(), min(size, 32), offset))
    except ValueError:
        return -1  # undecodable: skipped with a warning when the sample is read


def _locate_shard(root: Path, info: ShardInfo, num_classes: int) -> list[Located]:
    path = str(root / info.name)
    # grouped as every reader groups: a key's members contiguous, no field twice
    grouped = dict(group_samples(
        ((name, (offset, size)) for name, offset, size in tar_member_offsets(path)), path))
    if len(grouped) != info.count:
        raise ValueError(
            f"shard {path} holds {len(grouped)} samples but the manifest says {info.count}")
    located = []
    with open(path, "rb") as f:
        for key, fields in grouped.items():
            cls = _read_class(f, *fields["cls"]) if "cls" in fields else -1
            if cls >= num_classes or cls < -1:
                raise ValueError(f"sample {key!r} in {path} has class {cls}, outside the "
                                 f"manifest's {num_classes} classes")
            located.append(Located(path, key, cls, fields))
    return located


def _check_unique_keys(samples: list[Located], split: str) -> None:
    """``ValueError`` naming both shards when a key is in two of them: one sample read twice
    (and possibly with two labels)."""
    where: dict[str, str] = {}
    for sample in samples:
        other = where.setdefault(sample.key, sample.path)
        if other != sample.path:
            raise ValueError(f"sample {sample.key!r} of split {split!r} is in two shards, "
                             f"{other} and {sample.path}; a key must be in one shard only")


def locate_split(manifest: Manifest, split: str,
                 keys: Collection[str] | None = None) -> list[Located]:
    """Every sample of ``split`` in manifest order (shard by shard, tar order within one), or
    only those in ``keys``; clear errors for a missing shard, a count that disagrees with the
    manifest, a class out of range, a key in two shards or whose members are not contiguous,
    or keys not in the split."""
    infos = manifest.shards(split)
    if not infos:
        raise ValueError(f"split {split!r} of {manifest.root} has no shards")
    missing = [s.name for s in infos if not (manifest.root / s.name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} shard(s) listed in the manifest of {manifest.root} are missing: "
            f"{', '.join(missing[:5])}")
    samples = [loc for info in infos
               for loc in _locate_shard(manifest.root, info, manifest.num_classes)]
    _check_unique_keys(samples, split)
    if keys is None:
        return samples
    wanted = set(keys)
    kept = [s for s in samples if s.key in wanted]
    if len(kept) != len(wanted):
        absent = sorted(wanted - {s.key for s in kept})
        example = ", ".join(repr(k) for k in absent[:3])
        raise ValueError(f"{len(absent)} of the requested keys are not in split {split!r} of "
                         f"{manifest.root} (e.g. {example})")
    if not kept:
        raise ValueError(f"no samples of split {split!r} selected (keys is empty)")
    return kept


class SampleReader:
    """Reads a located sample's fields by offset; each process opens its own files."""

    def __init__(self) -> None:
        self._files: dict[str, Any] = {}
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"_files": {}, "_pid": -1}  # open files stay in the process that opened them

    def raw(self, sample: Located) -> dict[str, Any]:
        if self._pid != os.getpid():  # a forked worker opens its own files
            self._files, self._pid = {}, os.getpid()
        file = self._files.get(sample.path)
        if file is None:
            file = self._files[sample.path] = open(sample.path, "rb")  # noqa: SIM115
        raw: dict[str, Any] = {"__key__": sample.key}
        for field, (offset, size) in sample.fields.items():
            raw[field] = os.pread(file.fileno(), size, offset)
        return raw


def decode_image(raw: dict[str, Any]) -> tuple[np.ndarray, str]:
    """(image, name of the structure field) of a raw sample; ``ValueError`` naming the sample
    when a field is missing or corrupt, or it has two structure fields."""
    key = raw.get("__key__", "<no key>")
    image_field = next((f for f in IMAGE_FIELDS if f in raw), None)
    if image_field is None or "cls" not in raw:
        raise ValueError(f"sample {key!r} lacks a field (has {sorted(raw)})")
    layer_field = structure_field(raw)
    try:
        return decode_rgb(raw[image_field]), layer_field
    except ValueError as exc:
        raise ValueError(f"sample {key!r} cannot be decoded: {exc}") from exc


def decode_structure_of(data: bytes, field: str, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """A sample's structure layer, checked against its image's shape."""
    try:
        structure = decode_structure(data, field)
    except ValueError as exc:
        raise ValueError(f"sample {key!r}: structure layer cannot be decoded: {exc}") from exc
    if structure.shape != shape:
        raise ValueError(f"sample {key!r}: image {shape} and structure {structure.shape} differ")
    return structure


def warn_corrupt(where: str, exc: Exception, skipped: int) -> None:
    warnings.warn(f"skipping a corrupt sample in {where}: {exc} ({skipped} skipped so far)",
                  CorruptSampleWarning, stacklevel=2)
