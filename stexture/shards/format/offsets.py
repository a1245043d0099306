"""The sample offsets file: where every field of every sample of a split lies in its shard.

``OUT/{split}.offsets.json`` is written by ``stexture decompose`` beside the manifest, which
names it and records its SHA-256 (``manifest.json`` -> ``sample_offsets`` -> split ->
``name``, ``sha256``). With it a loader builds its sample index without reading a single
shard (as mosaicml streaming's ``index.json`` and the wids index spare their readers);
without it (a folder written before the file existed) the loader reads every shard's tar
headers instead, about 15 ms a shard. The content, one JSON object::

    {"format": "stexture-sample-offsets", "version": 1, "split": "train",
     "fields": ["jpg", "structure.dzst", "cls", "json"],
     "shards": [{"name": "train-000000.tar", "bytes": 409600, "sha256": "...",
                 "keys": ["chair_0001", ...], "cls": [3, ...],
                 "members": [1536, 2210, 4608, 5127, ...]}, ...]}

``members`` holds, sample after sample and for each name of ``fields`` in turn, the offset
of the member's data in the shard and its size, both -1 where the sample lacks that field
(one flat list: a list a sample would cost the reader an object per sample). The
shards and their samples are in manifest order and tar order, so an index built from the
file equals one built from the headers (:func:`scan_tar_bytes` and :func:`entries_of` are
that header scan, shared by the writer and the loader's fallback).

The file is trusted no further than the manifest's SHA-256 of it, and then only as far as
the shards still are what it describes: :class:`ShardCheck` is what a reader verifies the
first time it opens a shard (the file's size, and the tar headers in front of the first and
the last sample's first member), raising :class:`SampleOffsetsError` naming the shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .manifest import check_member_file_name
from .tar import (
    _BLOCK,
    _FILE_TYPES,
    MAX_MEMBER_BYTES,
    _check_header_sum,
    _tar_entries,
    _tar_number,
    _tar_text,
    group_samples,
)

__all__ = [
    "OFFSETS_FORMAT",
    "OFFSETS_MANIFEST_KEY",
    "OFFSETS_VERSION",
    "SampleEntry",
    "SampleOffsetsError",
    "ShardCheck",
    "ShardColumns",
    "ShardEntries",
    "decode_offset_columns",
    "decode_offsets",
    "encode_offsets",
    "entries_of",
    "offsets_bound",
    "offsets_name",
    "offsets_names",
    "member_fields",
    "offsets_record",
    "parse_class",
    "scan_tar_bytes",
]

OFFSETS_FORMAT = "stexture-sample-offsets"
OFFSETS_VERSION = 1
#: The key of ``manifest.json`` under which each split's offsets file is named.
OFFSETS_MANIFEST_KEY = "sample_offsets"
_SUFFIX = ".offsets.json"
# the most bytes an offsets file may have per sample of its split (a key of a few hundred
# characters and four members take ~150): a bound on what a reader allocates
_BYTES_PER_SAMPLE = 4096


class SampleOffsetsError(RuntimeError):
    """A shard is not what its sample offsets describe (changed after they were written).

    Not a ``ValueError``: the loaders skip a sample whose fields cannot be decoded, but a
    shard that disagrees with its index must stop them (its bytes could be other pixels).
    """


def offsets_name(split: str) -> str:
    """File name of the offsets file of ``split``: ``train.offsets.json``."""
    return f"{split}{_SUFFIX}"


def offsets_names(splits: Iterable[str]) -> set[str]:
    """The offsets file names a folder with ``splits`` may hold (files the writer owns)."""
    return {offsets_name(split) for split in splits}


def offsets_bound(count: int) -> int:
    """The most bytes the offsets file of a split of ``count`` samples may have."""
    return (1 << 20) + _BYTES_PER_SAMPLE * count


class SampleEntry(NamedTuple):
    """One sample of a shard: key, class (-1: undecodable) and field -> (offset, size).

    A named tuple (one object, where a dataclass is two): an index holds one per sample.
    """

    key: str
    cls: int
    fields: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class ShardEntries:
    """A shard's samples in tar order, with the shard's size and SHA-256."""

    name: str
    size: int
    sha256: str
    samples: tuple[SampleEntry, ...]


def parse_class(data: bytes) -> int:
    """The class of a ``cls`` member (ASCII decimal); -1 when it is not a number (the sample
    is then skipped, with a warning, when it is read)."""
    try:
        return int(data[:32])
    except ValueError:
        return -1


def entries_of(members: Iterable[tuple[str, int, int]], read: Callable[[int, int], bytes],
               where: str) -> list[SampleEntry]:
    """The samples of a tar from its ``(member name, data offset, size)`` triples in file
    order, grouped as every reader groups (:func:`~.tar.group_samples`: ``ValueError``
    naming ``where`` for a key whose members are not contiguous or a field given twice);
    ``read(offset, size)`` gives a ``cls`` member's bytes."""
    grouped = group_samples(((name, (offset, size)) for name, offset, size in members), where)
    return [SampleEntry(key, parse_class(read(*fields["cls"])) if "cls" in fields else -1,
                        fields)
            for key, fields in grouped]


def scan_tar_bytes(name: str, data: bytes, where: str | None = None) -> ShardEntries:
    """The entries of the uncompressed tar ``data`` (a whole shard, as the writer has it in
    memory or a resumed run reads it back), named ``name``, from its headers."""
    where = where or name
    try:
        members = [(member, offset, size) for member, offset, size, _ in
                   _tar_entries(io.BytesIO(data), with_payload=False)]
    except ValueError as exc:
        raise ValueError(f"{where}: unreadable tar file ({exc})") from exc
    samples = entries_of(members, lambda offset, size: data[offset:offset + min(size, 32)],
                         where)
    return ShardEntries(name, len(data), hashlib.sha256(data).hexdigest(), tuple(samples))


def encode_offsets(split: str, shards: list[ShardEntries]) -> bytes:
    """The offsets file of ``split`` for its ``shards`` (in manifest order): compact JSON,
    the same bytes for the same shards."""
    fields: list[str] = []
    for shard in shards:
        for sample in shard.samples:
            fields += [f for f in sample.fields if f not in fields]
    column = {field: i for i, field in enumerate(fields)}
    encoded = []
    for shard in shards:
        rows: list[int] = []
        for sample in shard.samples:
            row = [-1] * (2 * len(fields))
            for field, (offset, size) in sample.fields.items():
                row[2 * column[field]:2 * column[field] + 2] = [offset, size]
            rows += row
        encoded.append({"name": shard.name, "bytes": shard.size, "sha256": shard.sha256,
                        "keys": [s.key for s in shard.samples],
                        "cls": [s.cls for s in shard.samples], "members": rows})
    document = {"format": OFFSETS_FORMAT, "version": OFFSETS_VERSION, "split": split,
                "fields": fields, "shards": encoded}
    return (json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")


def offsets_record(manifest: dict[str, Any], split: str, where: str
                   ) -> tuple[str, str] | None:
    """``(file name, sha256)`` of the offsets file the manifest content ``manifest`` names
    for ``split``, or None when it names none (a folder written before the file existed);
    ``ValueError`` naming ``where`` for an entry that is not a plain file name in the folder
    with a SHA-256."""
    entries = manifest.get(OFFSETS_MANIFEST_KEY)
    if entries is None:
        return None
    if not isinstance(entries, dict):
        raise ValueError(f"{where}: {OFFSETS_MANIFEST_KEY} must be an object")
    entry = entries.get(split)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise ValueError(f"{where}: {OFFSETS_MANIFEST_KEY}.{split} needs a name and a sha256")
    return check_member_file_name(entry.get("name"), where), entry["sha256"]


def _fail(where: str, what: str) -> ValueError:
    return ValueError(f"{where} is not a valid sample offsets file: {what}")


def _member_table(rows: Any, count: int, columns: int, shard: str, where: str) -> np.ndarray:
    """The flat ``members`` list of a shard as an int64 array ``count x columns``."""
    try:
        table = np.array(rows)
    except (ValueError, OverflowError):
        table = None
    if (table is None or table.shape != (count * columns,)
            or (table.dtype != np.int64 and table.size)):
        raise _fail(where, f"shard {shard!r} needs {columns} integers a sample")
    return table.astype(np.int64).reshape(count, columns)


def _check_members(table: np.ndarray, fields: list[str], keys: list[str], size: int,
                   shard: str, where: str) -> None:
    """``ValueError`` for a member outside the shard (a member's data follows its 512-byte
    header) or a sample without members; checked a shard at a time, on the array (start-up
    reads thousands of samples and makes no object per sample)."""
    offsets, sizes = table[:, 0::2], table[:, 1::2]
    absent = (offsets == -1) & (sizes == -1)
    inside = ((offsets >= _BLOCK) & (sizes >= 0) & (sizes <= MAX_MEMBER_BYTES)
              & (offsets + sizes <= size))
    bad = ~(absent | inside)
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        raise _fail(where, f"sample {keys[row]!r} of shard {shard!r}: member "
                           f"{fields[column]!r} at {offsets[row, column]} ({sizes[row, column]} "
                           f"bytes) is outside the shard's {size} bytes")
    empty = absent.all(axis=1)
    if empty.any():
        raise _fail(where, f"sample {keys[int(np.argmax(empty))]!r} of shard {shard!r} has "
                           "no members")


def member_fields(fields: tuple[str, ...] | list[str], row: list[int]
                  ) -> dict[str, tuple[int, int]]:
    """A sample's field -> (offset, size) from its row of an offsets table (``fields[i]`` at
    ``row[2i]``, ``row[2i + 1]``; -1, -1 where it lacks the field), in tar order (by offset),
    as a header scan gives them."""
    present = [(row[2 * c], row[2 * c + 1], field) for c, field in enumerate(fields)
               if row[2 * c] != -1 or row[2 * c + 1] != -1]
    present.sort()
    return {field: (offset, size) for offset, size, field in present}


@dataclass(frozen=True)
class ShardColumns:
    """A shard of an offsets file as columns: its keys, classes (int64) and member table
    (int64, a row of ``2 x len(fields)`` per sample, as :func:`member_fields` reads it)."""

    name: str
    size: int
    sha256: str
    keys: list[str]
    classes: np.ndarray
    members: np.ndarray

    def check(self, fields: tuple[str, ...], source: str) -> ShardCheck:
        """The :class:`ShardCheck` of this shard (its first and last sample's first member)."""
        ends = [0, len(self.keys) - 1] if self.keys else []
        members = []
        for row in ends:
            field, (offset, size) = next(iter(
                member_fields(fields, self.members[row].tolist()).items()))
            members.append((f"{self.keys[row]}.{field}", offset, size))
        return ShardCheck(source, self.size, tuple(dict.fromkeys(members)))


def _decode_shard(entry: Any, fields: list[str], where: str) -> ShardColumns:
    if not isinstance(entry, dict):
        raise _fail(where, "a shard entry is not an object")
    name = check_member_file_name(entry.get("name"), where)
    size, sha256 = entry.get("bytes"), entry.get("sha256")
    keys, classes, rows = entry.get("keys"), entry.get("cls"), entry.get("members")
    if type(size) is not int or size < 0 or not isinstance(sha256, str):
        raise _fail(where, f"shard {name!r} needs its bytes and sha256")
    if not (isinstance(keys, list) and isinstance(classes, list) and isinstance(rows, list)
            and len(keys) == len(classes)):
        raise _fail(where, f"shard {name!r} needs lists of keys and cls of one length, and "
                           "of members")
    if not all(isinstance(key, str) and key for key in keys):
        raise _fail(where, f"shard {name!r} has a key that is not a non-empty string")
    if not all(type(cls) is int for cls in classes):
        raise _fail(where, f"shard {name!r} has a class that is not an integer")
    if len(set(keys)) != len(keys):
        raise _fail(where, f"shard {name!r} lists a key twice")
    try:
        codes = np.array(classes, dtype=np.int64)
    except OverflowError:
        raise _fail(where, f"shard {name!r} has a class out of range") from None
    table = _member_table(rows, len(keys), 2 * len(fields), name, where)
    _check_members(table, fields, keys, size, name, where)
    return ShardColumns(name, size, sha256, keys, codes, table)


def decode_offset_columns(data: bytes, split: str, where: str
                          ) -> tuple[tuple[str, ...], list[ShardColumns]]:
    """The field names and the shards (as columns, in file order) of an offsets file's
    bytes; ``ValueError`` naming ``where`` for anything but an offsets file of ``split`` of
    this version whose members all lie inside their shard. No object per sample: what a
    loader's start-up reads."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(where, f"{exc}") from None
    if not isinstance(document, dict) or document.get("format") != OFFSETS_FORMAT:
        raise _fail(where, f"its format is not {OFFSETS_FORMAT!r}")
    if document.get("version") != OFFSETS_VERSION:
        raise _fail(where, f"version {document.get('version')!r} is unknown to this stexture "
                           f"(it reads version {OFFSETS_VERSION})")
    if document.get("split") != split:
        raise _fail(where, f"it describes split {document.get('split')!r}, not {split!r}")
    fields, shards = document.get("fields"), document.get("shards")
    if (not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields)
            or len(set(fields)) != len(fields) or not isinstance(shards, list)):
        raise _fail(where, "it needs a list of distinct field names and a list of shards")
    return tuple(fields), [_decode_shard(entry, fields, where) for entry in shards]


def decode_offsets(data: bytes, split: str, where: str) -> list[ShardEntries]:
    """The shards of an offsets file's bytes, in file order, a :class:`SampleEntry` per
    sample (:func:`decode_offset_columns`, with its checks, made into entries)."""
    fields, shards = decode_offset_columns(data, split, where)
    return [ShardEntries(shard.name, shard.size, shard.sha256, tuple(
        SampleEntry(key, cls, member_fields(fields, row)) for key, cls, row in
        zip(shard.keys, shard.classes.tolist(), shard.members.tolist(), strict=True)))
        for shard in shards]


def _header_before(fd: int, offset: int) -> bytes:
    return os.pread(fd, _BLOCK, offset - _BLOCK)


def _ustar_name(member: str) -> bytes:
    """What the writer (tarfile, PAX format) puts in the 100-byte name field of a member's
    header: the name itself, or for a longer or non-ASCII one (then given in full by a PAX
    header before it) its ASCII rendering cut to 100 bytes."""
    return member.encode("ascii", "replace")[:100]


@dataclass(frozen=True)
class ShardCheck:
    """What a reader checks the first time it opens a shard located from an offsets file:
    its size, and that the tar header in front of the first member of its first and of its
    last sample is a regular file's with the name and size the offsets give."""

    source: str  # the offsets file, for messages
    size: int
    members: tuple[tuple[str, int, int], ...]  # (member name, data offset, size)

    @classmethod
    def of(cls, shard: ShardEntries, source: str) -> ShardCheck:
        ends = [shard.samples[0], shard.samples[-1]] if shard.samples else []
        members = []
        for sample in ends:
            field, (offset, size) = next(iter(sample.fields.items()))
            members.append((f"{sample.key}.{field}", offset, size))
        return cls(source, shard.size, tuple(dict.fromkeys(members)))

    def verify(self, fd: int, path: str) -> None:
        """Raise :class:`SampleOffsetsError` naming ``path`` (the open shard ``fd``) when it
        is not the shard the offsets describe."""
        size = os.fstat(fd).st_size
        if size != self.size:
            self._stale(path, f"it has {size} bytes, the offsets describe {self.size}")
        for member, offset, length in self.members:
            header = _header_before(fd, offset)
            try:
                if len(header) != _BLOCK:
                    raise ValueError("truncated header")
                _check_header_sum(header)
                name = _tar_text(header[:100])
                prefix = _tar_text(header[345:500])
                found = f"{prefix}/{name}" if prefix else name
                declared = _tar_number(header[124:136])
            except ValueError as exc:
                self._stale(path, f"no tar header in front of {member!r} at {offset} ({exc})")
            if (header[156:157] not in _FILE_TYPES or declared != length
                    or (found != member and header[:100].rstrip(b"\0") != _ustar_name(member))):
                self._stale(path, f"the header in front of offset {offset} is {found!r} of "
                                  f"{declared} bytes, the offsets say {member!r} of {length}")

    def _stale(self, path: str, what: str) -> None:
        raise SampleOffsetsError(
            f"shard {path} does not match its sample offsets in {self.source}: {what}. The "
            "shard changed after `stexture decompose` wrote it; write the folder again, or "
            "remove the offsets file and its manifest entry to index the shards by their "
            "headers")
