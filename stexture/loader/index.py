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
import operator
import os
import posixpath
import warnings
from collections.abc import Collection, Iterator, Sequence
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
from ..shards.format.manifest import read_beside
from ..shards.format.offsets import (
    SampleEntry,
    ShardCheck,
    ShardColumns,
    decode_offset_columns,
    entries_of,
    member_fields,
    offsets_bound,
    offsets_record,
)

if TYPE_CHECKING:
    from .remote import RemoteShards

__all__ = ["CorruptSampleWarning", "Located", "SampleIndex", "SampleReader", "locate_split",
           "manifest_of"]


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


class SampleIndex(Sequence[Located]):
    """The samples of a split as columns: item ``i`` is the :class:`Located` of sample ``i``,
    made when asked for.

    A split of a million samples is a few arrays here, not a million objects: building it
    makes no object per sample (so it brings no full garbage-collector pass over what the
    process already holds, which after torch's import costs more than the index itself),
    and a DataLoader worker receives the arrays.

    Parameters
    ----------
    paths, checks : tuple
        Per shard: its path (or URL) and the :class:`ShardCheck` a reader makes when it first
        opens it (None: located from the shard's own headers).
    shard : ndarray of int
        Per sample: its shard's position in ``paths``.
    keys : list of str
    classes : ndarray of int
        Per sample (-1: undecodable).
    fields : tuple of str
        The field names the member table's columns are of.
    members : ndarray of int
        Per sample a row of ``2 x len(fields)``: each field's offset and size (-1, -1 where
        the sample lacks it).
    """

    def __init__(self, paths: tuple[str, ...], checks: tuple[ShardCheck | None, ...],
                 shard: np.ndarray, keys: list[str], classes: np.ndarray,
                 fields: tuple[str, ...], members: np.ndarray) -> None:
        self.paths, self.checks, self.shard = paths, checks, shard
        self.keys, self.classes, self.fields, self.members = keys, classes, fields, members

    @classmethod
    def of_columns(cls, paths: Sequence[str], checks: Sequence[ShardCheck | None],
                   fields: tuple[str, ...], shards: Sequence[ShardColumns]) -> SampleIndex:
        """The index of ``shards`` (an offsets file's, their paths and checks beside them)."""
        counts = [len(shard.keys) for shard in shards]
        keys = [key for shard in shards for key in shard.keys]
        return cls(tuple(paths), tuple(checks),
                   np.repeat(np.arange(len(counts), dtype=np.int64), counts), keys,
                   _concatenate([s.classes for s in shards], (0,)), fields,
                   _concatenate([s.members for s in shards], (0, 2 * len(fields))))

    @classmethod
    def of_entries(cls, paths: Sequence[str],
                   entries: Sequence[Sequence[SampleEntry]]) -> SampleIndex:
        """The index of the shards at ``paths`` from their headers' entries (no checks)."""
        fields: dict[str, int] = {}
        for shard in entries:
            for sample in shard:
                for field in sample.fields:
                    fields.setdefault(field, len(fields))
        width, flat = 2 * len(fields), []
        for shard in entries:
            for sample in shard:
                row = [-1] * width
                for field, (offset, size) in sample.fields.items():
                    row[2 * fields[field]:2 * fields[field] + 2] = offset, size
                flat += row
        members = np.array(flat, dtype=np.int64).reshape(sum(map(len, entries)), width)
        return cls(tuple(paths), (None,) * len(paths),
                   np.repeat(np.arange(len(entries), dtype=np.int64), list(map(len, entries))),
                   [sample.key for shard in entries for sample in shard],
                   np.array([sample.cls for shard in entries for sample in shard],
                            dtype=np.int64).reshape(-1), tuple(fields), members)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        shard = int(self.shard[i])
        return Located(self.paths[shard], self.keys[i], int(self.classes[i]),
                       member_fields(self.fields, self.members[i].tolist()), self.checks[shard])

    def __iter__(self) -> Iterator[Located]:
        return (self[i] for i in range(len(self)))

    def take(self, indices: np.ndarray) -> SampleIndex:
        """The samples at ``indices`` (positions), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return SampleIndex(self.paths, self.checks, self.shard[indices],
                           [self.keys[i] for i in indices.tolist()], self.classes[indices],
                           self.fields, self.members[indices])

    def sample_paths(self) -> list[str]:
        """Each sample's shard path (one list; the strings are the shards')."""
        return np.asarray(self.paths, dtype=object)[self.shard].tolist()

    def with_paths(self, paths: Sequence[str]) -> SampleIndex:
        """The same samples with their shards' paths replaced (e.g. a cached copy's by the
        shard's URL)."""
        return SampleIndex(tuple(paths), self.checks, self.shard, self.keys, self.classes,
                           self.fields, self.members)


def _concatenate(parts: list[np.ndarray], empty: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(empty, dtype=np.int64)


def manifest_of(source: str | Path | Manifest | ShardFolder) -> Manifest:
    """The manifest of a loader's ``source``: read from a path, or the one a
    :class:`~stexture.shards.folder.ShardFolder` (or a :class:`Manifest`) already holds."""
    return ShardFolder.open(source).manifest


def _read_class(f: Any, offset: int, size: int) -> bytes:
    """The bytes of a ``cls`` member (its first 32: a class is a short number)."""
    return os.pread(f.fileno(), min(size, 32), offset)


def _check_shard(path: str, keys: list[str], classes: np.ndarray, info: ShardInfo,
                 num_classes: int, source: str | None = None) -> None:
    """The checks both ways of indexing make of a shard's samples: the count against the
    manifest and every class in range."""
    if len(keys) != info.count:
        raise ValueError(f"shard {path} holds {len(keys)} samples "
                         f"{f'according to {source} ' if source else ''}but the manifest "
                         f"says {info.count}")
    outside = (classes >= num_classes) | (classes < -1)
    if outside.any():
        row = int(np.argmax(outside))
        raise ValueError(f"sample {keys[row]!r} in {path} has class {int(classes[row])}, "
                         f"outside the manifest's {num_classes} classes")


def _locate_shard(root: storage.Location, info: ShardInfo, num_classes: int
                  ) -> list[SampleEntry]:
    """The fallback for a folder without an offsets file: the shard's tar headers read."""
    path = str(storage.join(root, info.name))
    with open(path, "rb") as f:
        # grouped as every reader groups: a key's members contiguous, no field twice
        entries = entries_of(tar_member_offsets(path),
                             lambda offset, size: _read_class(f, offset, size), path)
    _check_shard(path, [e.key for e in entries],
                 np.array([e.cls for e in entries], dtype=np.int64), info, num_classes)
    return entries


def _read_offsets_file(manifest: Manifest, name: str, count: int) -> bytes | None:
    """The bytes of the offsets file ``name`` beside the manifest, read as the manifest was
    (:func:`~stexture.shards.format.manifest.read_beside`); None when it is absent. One that
    is there but not a regular file (a FIFO, a device) is an ``OSError`` naming it, not a
    missing file: the headers are read only when it is truly gone."""
    try:
        return read_beside(manifest.root, name, manifest.storage_options, offsets_bound(count))
    except FileNotFoundError:
        return None


def _locate_by_offsets(manifest: Manifest, split: str, infos: list[ShardInfo]
                       ) -> SampleIndex | None:
    """The samples of ``split`` from its offsets file (no shard read), or None when the
    manifest names none or it is absent (then the headers are read). ``ValueError`` naming
    the file when it is not the one the manifest records, or does not describe the
    manifest's shards; each shard carries the :class:`ShardCheck` a reader makes when it
    first opens it."""
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
    fields, shards = decode_offset_columns(data, split, source)
    if [(s.name, s.sha256) for s in shards] != [(i.name, i.sha256) for i in infos]:
        raise ValueError(f"{source} describes other shards than the manifest lists for split "
                         f"{split!r} (names or SHA-256 differ): it belongs to another "
                         "version of the folder")
    paths = [str(storage.join(manifest.root, info.name)) for info in infos]
    for path, shard, info in zip(paths, shards, infos, strict=True):
        _check_shard(path, shard.keys, shard.classes, info, manifest.num_classes, source)
    return SampleIndex.of_columns(paths, [shard.check(fields, source) for shard in shards],
                                  fields, shards)


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
                 remote: RemoteShards | None) -> SampleIndex:
    """The samples of ``infos`` from their tar headers: read in place, or for a folder at a
    URL from each shard's cached copy (fetched one by one into the cache; the samples keep
    the shard's URL as their path)."""
    paths = [str(storage.join(manifest.root, info.name)) for info in infos]
    if not isinstance(manifest.root, str):
        return SampleIndex.of_entries(paths, [
            _locate_shard(manifest.root, info, manifest.num_classes) for info in infos])
    if remote is None:
        from .remote import RemoteShards

        remote = RemoteShards(manifest)
    entries = []
    for url, info in zip(paths, infos, strict=True):
        ref = remote.ref(url)
        with remote.cache.pinned(ref.name, ref.sha256, ref.size) as path:
            entries.append(_locate_shard(path.parent, info, manifest.num_classes))
    return SampleIndex.of_entries(paths, entries)


def _check_unique_keys(samples: SampleIndex, split: str) -> None:
    """``ValueError`` naming both shards when a key is in two of them: one sample read twice
    (and possibly with two labels)."""
    first = dict(zip(samples.keys, samples.shard.tolist(), strict=True))
    if len(first) == len(samples):
        return
    seen: dict[str, int] = {}
    for key, shard in zip(samples.keys, samples.shard.tolist(), strict=True):
        other = seen.setdefault(key, shard)
        if other != shard:
            raise ValueError(f"sample {key!r} of split {split!r} is in two shards, "
                             f"{samples.paths[other]} and {samples.paths[shard]}; a key must "
                             "be in one shard only")


def locate_split(manifest: Manifest, split: str,
                 keys: Collection[str] | None = None, *,
                 remote: RemoteShards | None = None) -> SampleIndex:
    """Every sample of ``split`` in manifest order (shard by shard, tar order within one), or
    only those in ``keys``, as a :class:`SampleIndex` (a sequence of :class:`Located`);
    clear errors for a missing shard, a count that disagrees with the manifest, a class out
    of range, a key in two shards or whose members are not contiguous, or keys not in the
    split. For a folder at a URL, ``remote`` holds the shard cache that a folder without an
    offsets file fetches its shards into to read their headers (a default one when None)."""
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
    kept = samples.take(np.flatnonzero(np.fromiter(
        (key in wanted for key in samples.keys), dtype=bool, count=len(samples))))
    if len(kept) != len(wanted):
        absent = sorted(wanted - set(kept.keys))
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
