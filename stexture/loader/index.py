"""The sample index behind both loaders: where every field of every sample of a split lies
in its shard (tar headers only), read back by offset, and decoded into layers.

Random access by (shard, offset) is what lets the training loader draw one global
permutation per epoch and split it exactly across ranks and workers, as wids and mosaicml
streaming do. The offsets come from the split's offsets file (written by ``stexture
decompose`` beside the manifest: no shard is read to build the index, and each is checked
when a process first opens it), or for a folder without one from every shard's tar headers,
read once when the loader is built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..shards import storage
from ..shards.folder import ShardFolder
from ..shards.format import (
    IMAGE_FIELDS,
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    decode_rgb,
    decode_structure,
    structure_field,
    tar_member_offsets,
)
from ..shards.format.offsets import (
    SampleEntry,
    ShardCheck,
    decode_offsets,
    entries_of,
    offsets_bound,
    offsets_record,
)

if TYPE_CHECKING:
    from .remote import RemoteShards

__all__ = ["CorruptSampleWarning", "Located", "SampleReader", "locate_split", "manifest_of"]


class CorruptSampleWarning(UserWarning):
    """A sample inside a shard could not be decoded and was skipped."""


@dataclass(frozen=True)
class Located:
    """One sample: its shard file, key, class (-1: undecodable) and field -> (offset, size);
    ``check``: what a reader verifies when it first opens the shard (located from an offsets
    file), or None (located from the shard's own headers)."""

    path: str
    key: str
    cls: int
    fields: dict[str, tuple[int, int]]
    check: ShardCheck | None = dataclasses.field(default=None, compare=False, repr=False)


def manifest_of(source: str | Path | Manifest | ShardFolder) -> Manifest:
    """The manifest of a loader's ``source``: read from a path, or the one a
    :class:`~stexture.shards.folder.ShardFolder` (or a :class:`Manifest`) already holds."""
    return ShardFolder.open(source).manifest


def _read_class(f: Any, offset: int, size: int) -> bytes:
    """The bytes of a ``cls`` member (its first 32: a class is a short number)."""
    return os.pread(f.fileno(), min(size, 32), offset)


def _located(path: str, entries: list[SampleEntry] | tuple[SampleEntry, ...],
             info: ShardInfo, num_classes: int, check: ShardCheck | None = None,
             source: str | None = None) -> list[Located]:
    """The shard's samples as :class:`Located`, after the checks both ways of indexing make:
    the count against the manifest and every class in range."""
    if len(entries) != info.count:
        raise ValueError(f"shard {path} holds {len(entries)} samples "
                         f"{f'according to {source} ' if source else ''}but the manifest "
                         f"says {info.count}")
    located = []
    for entry in entries:
        if entry.cls >= num_classes or entry.cls < -1:
            raise ValueError(f"sample {entry.key!r} in {path} has class {entry.cls}, outside "
                             f"the manifest's {num_classes} classes")
        located.append(Located(path, entry.key, entry.cls, entry.fields, check))
    return located


def _locate_shard(root: storage.Location, info: ShardInfo, num_classes: int) -> list[Located]:
    """The fallback for a folder without an offsets file: the shard's tar headers read."""
    path = str(storage.join(root, info.name))
    with open(path, "rb") as f:
        # grouped as every reader groups: a key's members contiguous, no field twice
        entries = entries_of(tar_member_offsets(path),
                             lambda offset, size: _read_class(f, offset, size), path)
    return _located(path, entries, info, num_classes)


def _read_offsets_file(manifest: Manifest, name: str, count: int) -> bytes | None:
    """The bytes of the offsets file ``name`` beside the manifest; None when it is absent."""
    root = manifest.root
    try:
        if isinstance(root, str):  # a URL: read as the manifest was, with its options
            from ..shards.format.manifest import read_beside

            return read_beside(root, name, manifest.storage_options, offsets_bound(count))
        return storage.read_bytes(storage.join(root, name), offsets_bound(count))
    except FileNotFoundError:
        return None


def _locate_by_offsets(manifest: Manifest, split: str, infos: list[ShardInfo]
                       ) -> list[Located] | None:
    """The samples of ``split`` from its offsets file (no shard read), or None when the
    manifest names none or it is absent (then the headers are read). ``ValueError`` naming
    the file when it is not the one the manifest records, or does not describe the
    manifest's shards; each sample carries the :class:`ShardCheck` a reader makes when it
    first opens the shard."""
    where = str(storage.join(manifest.root, MANIFEST_NAME))
    record = offsets_record(manifest.raw, split, where)
    if record is None:
        return None
    name, sha256 = record
    source = str(storage.join(manifest.root, name))
    data = _read_offsets_file(manifest, name, sum(info.count for info in infos))
    if data is None:
        warnings.warn(f"{source}, which the manifest names, is missing: reading the headers "
                      f"of every shard of split {split!r} instead (slower)", stacklevel=3)
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{source} is not the sample offsets file the manifest records (its "
                         "SHA-256 differs): it was changed or replaced after `stexture "
                         "decompose` wrote it; write the folder again, or remove the file "
                         "and its entry in manifest.json to read the shards' headers instead")
    shards = decode_offsets(data, split, source)
    if [(s.name, s.sha256) for s in shards] != [(i.name, i.sha256) for i in infos]:
        raise ValueError(f"{source} describes other shards than the manifest lists for split "
                         f"{split!r} (names or SHA-256 differ): it belongs to another "
                         "version of the folder")
    located = []
    for shard, info in zip(shards, infos, strict=True):
        path = str(storage.join(manifest.root, info.name))
        located += _located(path, shard.samples, info, manifest.num_classes,
                            ShardCheck.of(shard, source), source)
    return located


def _missing_shards(manifest: Manifest, infos: list[ShardInfo]) -> list[str]:
    """The shards of ``infos`` not in the folder: a local folder's checked one by one, a
    URL folder's against one listing (none listed, as over HTTP: each is reported when it
    is fetched)."""
    if not isinstance(manifest.root, str):
        return [s.name for s in infos if not (manifest.root / s.name).is_file()]
    from ..shards.cache import open_filesystem

    fs, path = open_filesystem(manifest.root, manifest.storage_options)
    try:
        fs.invalidate_cache(path)  # a listing cached before the shards were written
        present = {posixpath.basename(str(found).rstrip("/"))
                   for found in fs.ls(path, detail=False)}
    except Exception:  # noqa: BLE001 - no listing: the fetch of a missing shard names it
        return []
    return [s.name for s in infos if s.name not in present] if present else []


def _scan_shards(manifest: Manifest, infos: list[ShardInfo],
                 remote: RemoteShards | None) -> list[Located]:
    """The samples of ``infos`` from their tar headers: read in place, or for a folder at a
    URL from each shard's cached copy (fetched one by one into the cache; the samples keep
    the shard's URL as their path)."""
    if not isinstance(manifest.root, str):
        return [loc for info in infos
                for loc in _locate_shard(manifest.root, info, manifest.num_classes)]
    if remote is None:
        from .remote import RemoteShards

        remote = RemoteShards(manifest)
    located = []
    for info in infos:
        url = str(storage.join(manifest.root, info.name))
        ref = remote.ref(url)
        with remote.cache.pinned(ref.name, ref.sha256, ref.size) as path:
            located += [dataclasses.replace(loc, path=url) for loc in
                        _locate_shard(path.parent, info, manifest.num_classes)]
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
                 keys: Collection[str] | None = None, *,
                 remote: RemoteShards | None = None) -> list[Located]:
    """Every sample of ``split`` in manifest order (shard by shard, tar order within one), or
    only those in ``keys``; clear errors for a missing shard, a count that disagrees with the
    manifest, a class out of range, a key in two shards or whose members are not contiguous,
    or keys not in the split. For a folder at a URL, ``remote`` holds the shard cache that a
    folder without an offsets file fetches its shards into to read their headers (a
    default one when None)."""
    infos = manifest.shards(split)
    if not infos:
        raise ValueError(f"split {split!r} of {manifest.root} has no shards")
    missing = _missing_shards(manifest, infos)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} shard(s) listed in the manifest of {manifest.root} are missing: "
            f"{', '.join(missing[:5])}")
    samples = _locate_by_offsets(manifest, split, infos)
    if samples is None:  # a folder without an offsets file (written before they existed)
        samples = _scan_shards(manifest, infos, remote)
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


#: Shards a reader of a folder at a URL keeps open (and pinned) when the cache has no
#: ``cache_limit``, so that a shuffled epoch does not pin and open a shard per sample; with
#: a limit it keeps one (a process never waits for room while it holds a shard, so two
#: workers cannot wait for each other).
OPEN_REMOTE_SHARDS = 64


class SampleReader:
    """Reads a located sample's fields by offset; each process opens its own files.

    Parameters
    ----------
    remote : RemoteShards, optional
        For a folder at a URL (the samples' ``path`` a shard's URL): the shard cache the
        local copies come from, each pinned in the cache while it is open: up to
        :data:`OPEN_REMOTE_SHARDS` at once without a ``cache_limit`` (least recently used
        closed first), one with a limit.
    plan : sequence of str, optional
        With ``remote``: the shard URLs in the order this reader will need them, prefetched
        from its first read in each process (the training set sets its order per epoch
        instead).
    """

    def __init__(self, remote: RemoteShards | None = None,
                 plan: Sequence[str] | None = None) -> None:
        self._files: dict[str, Any] = {}
        self._pid = -1
        self.remote = remote
        self.plan = plan

    def __getstate__(self) -> dict[str, Any]:
        # open files stay in the process that opened them
        return {"_files": {}, "_pid": -1, "remote": self.remote, "plan": self.plan}

    def _open(self, sample: Located) -> Any:
        if self.remote is None:
            file = open(sample.path, "rb")  # noqa: SIM115
            if sample.check is not None:  # once per shard and process: offsets still true?
                try:
                    sample.check.verify(file.fileno(), sample.path)
                except BaseException:
                    file.close()
                    raise
            return file
        # a cached copy matched the manifest's SHA-256, which the offsets file's record of
        # the shard matches too (locate_split): no header check needed
        if self.plan is not None and not self.remote.planned("split"):
            self.remote.plan(self.plan, "split")
        room = 1 if self.remote.cache.cache_limit is not None else OPEN_REMOTE_SHARDS
        while len(self._files) >= room:  # the least recently used first
            url = next(iter(self._files))
            self._files.pop(url).close()
            self.remote.unpin(url)
        path = self.remote.pin(sample.path)
        try:
            return open(path, "rb")  # noqa: SIM115
        except BaseException:
            self.remote.unpin(sample.path)
            raise

    def raw(self, sample: Located) -> dict[str, Any]:
        if self._pid != os.getpid():  # a forked worker opens its own files
            self._files, self._pid = {}, os.getpid()
        file = self._files.get(sample.path)
        if file is None:
            file = self._files[sample.path] = self._open(sample)
        elif self.remote is not None:  # most recently used last
            self._files[sample.path] = self._files.pop(sample.path)
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
