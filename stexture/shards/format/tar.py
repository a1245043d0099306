"""Tar files: writing a shard, reading its members (bounded), grouping them into samples.

One tar reader for the whole package: the loaders, ``inspect``, the sources and the
interoperability tools read members through :func:`read_tar_members` or
:func:`tar_member_offsets` and group them through :func:`group_samples`.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .codecs import STRUCTURE_FIELDS

#: The largest tar member any reader accepts: a stored image or layer of 1 GiB is no photo,
#: and a compressed tar's members cannot be checked against the file's size.
MAX_MEMBER_BYTES = 1 << 30
# fixed metadata of every tar member, so that the same samples give the same bytes
_TAR_MTIME = 0
_TAR_MODE = 0o444
# the order of a sample's fields in the tar (WebDataset groups consecutive members by key)
_FIELD_ORDER = ("jpg", "png", *STRUCTURE_FIELDS, "cls", "json")
# gzip, bzip2, xz, zstd: read through tarfile's decompressors
_COMPRESSED_MAGICS = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")
_BLOCK = 512
# member types (POSIX.1-2001 / GNU): regular files, and the headers that describe the next one
_FILE_TYPES = (b"0", b"\0", b"7")
_PAX_HEADER, _GNU_LONGNAME = b"x", b"L"
_DESCRIBING_TYPES = (b"g", b"K")  # a global PAX header, a GNU long link name: not needed here
_GNU_TYPES = (b"L", b"K", b"S")
_COMPRESSED_REFUSAL = ("compressed; random access needs an uncompressed tar (what `stexture "
                       "decompose` writes)")


def write_tar(fileobj: Any, samples: list[dict[str, Any]]) -> None:
    """Write ``samples`` (dicts of bytes, as from :func:`encode_sample`) as a tar to ``fileobj``.

    Member metadata is fixed (mtime 0, mode 0444, uid/gid 0, no user or group names) and the
    fields of a sample follow a fixed order, so equal samples give byte-identical tars.
    """
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            fields = [f for f in _FIELD_ORDER if f in sample]
            fields += sorted(f for f in sample if f not in _FIELD_ORDER and f != "__key__")
            for name in fields:
                payload = sample[name]
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(payload)
                info.mtime = _TAR_MTIME
                info.mode = _TAR_MODE
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(payload))


def group_samples(members: Iterable[tuple[str, Any]], where: str
                  ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, {field: value})`` of consecutive ``(member name, value)`` pairs with one key,
    as WebDataset groups a tar's members (members without a field are left out).

    Refuses, with a ``ValueError`` naming ``where`` and the key, what WebDataset would read
    without a word and wrongly: a key whose members are not contiguous (a member of an earlier
    sample after another sample's: a trailing ``KEY.cls`` would relabel that sample, or start
    a second sample of the same key) and a field given twice in one sample. Every reader of
    shards (both loaders, ``inspect``, the tools of :mod:`.interop`) groups through this.
    """
    done: set[str] = set()
    key_now: str | None = None
    fields: dict[str, Any] = {}
    for name, value in members:
        key, field_name = split_member_name(name)
        if not field_name:
            continue
        if key != key_now:
            if key_now is not None:
                yield key_now, fields
                done.add(key_now)
            if key in done:
                raise ValueError(
                    f"{where}: sample {key!r} has member {name!r} after another sample's "
                    "members; a sample's members must be contiguous (a trailing member would "
                    "change or repeat an earlier sample)")
            key_now, fields = key, {}
        if field_name in fields:
            raise ValueError(f"{where}: sample {key!r} holds the member {name!r} twice")
        fields[field_name] = value
    if key_now is not None:
        yield key_now, fields


def _is_compressed(f: Any) -> bool:
    compressed = f.read(6).startswith(_COMPRESSED_MAGICS)
    f.seek(0)
    return compressed


def _tar_members_of(path: str | Path, compressed: bool) -> Iterator[tuple[str, bytes]]:
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below, also when the reader stops early)
    except OSError as exc:
        raise ValueError(f"{path}: damaged tar file ({exc})") from exc
    with f:
        if not compressed and _is_compressed(f):
            raise ValueError(f"{path}: {_COMPRESSED_REFUSAL}")
        try:
            yield from read_tar_members(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: damaged tar file ({exc})") from exc


def iter_tar_samples(path: str | Path, *, compressed: bool = True) -> Iterator[dict[str, Any]]:
    """The raw samples of a WebDataset tar in file order: dicts ``{"__key__", field: bytes}``.

    The key is the member name up to the first dot of its last path component, as in
    WebDataset. ``ValueError`` names the file when the tar itself is damaged, including a
    member size out of bounds (see :func:`read_tar_members`), and the file and the key for a
    sample whose members are not contiguous or repeat a field (:func:`group_samples`).
    ``compressed=False`` refuses a compressed tar as the loaders do (they need random access),
    so a reader that checks a shard folder (``inspect``) accepts exactly what they read.
    """
    for key, fields in group_samples(_tar_members_of(path, compressed), str(path)):
        yield {"__key__": key, **fields}


def read_tar_members(f: Any) -> Iterator[tuple[str, bytes]]:
    """``(name, payload)`` of each regular file of a tar read from the seekable binary file
    ``f``, in order; compressed tars (gzip, bzip2, xz, zstd) too.

    Every read is bounded: a member that declares a negative size, more than
    :data:`MAX_MEMBER_BYTES`, or (uncompressed) more bytes than the file holds after it is a
    ``ValueError``, as are bad header checksums and truncated members. An uncompressed tar
    (what the writer makes) is read by :func:`_tar_entries`, several times faster than
    through :mod:`tarfile` (figures in ``benchmarks/README.md``).
    """
    if _is_compressed(f):
        yield from _tarfile_files(f)
        return
    for name, _, _, payload in _tar_entries(f, with_payload=True):
        yield name, payload


def _check_member_size(name: str, size: int, room: int | None = None) -> None:
    """A declared member size must be >= 0, at most :data:`MAX_MEMBER_BYTES` and, where the
    bytes left in the file are known (``room``), fit in them: a negative size would send a
    reader back to an earlier header, forever."""
    if size < 0:
        raise ValueError(f"member {name!r} declares a negative size ({size})")
    if size > MAX_MEMBER_BYTES:
        raise ValueError(f"member {name!r} declares {size} bytes, over the limit of "
                         f"{MAX_MEMBER_BYTES}")
    if room is not None and size > room:
        raise ValueError(f"member {name!r} declares {size} bytes, past the end of the file "
                         f"({room} bytes after its header)")


def _tarfile_files(f: Any) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(fileobj=f, mode="r:*") as tar:
            last_offset = -1
            for member in tar:
                _check_member_size(member.name, member.size)
                if member.offset <= last_offset:  # a header read twice: a loop
                    raise ValueError(f"member {member.name!r} goes back to offset "
                                     f"{member.offset}")
                last_offset = member.offset
                if member.isfile():
                    handle = tar.extractfile(member)
                    yield member.name, handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError) as exc:
        raise ValueError(str(exc)) from exc


def _tar_number(field: bytes) -> int:
    """A numeric header field: NUL/space-terminated octal, or GNU base-256 (high bit set)."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0o377 else value
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _tar_text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _check_header_sum(header: bytes) -> None:
    """The header checksum: the byte sum with the checksum field as spaces, as unsigned or
    (old tars) signed bytes."""
    stored = _tar_number(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if stored != unsigned:
        high = sum(1 for b in header[:148] + header[156:] if b > 127)
        if stored != unsigned - 256 * high:
            raise ValueError("bad header checksum")


def _pax_records(payload: bytes) -> dict[str, str]:
    """``"length key=value\\n"`` records of a PAX extended header; ``ValueError`` for a
    record whose length does not move past its own length field or runs past the header
    (a length of 0 would read the same record forever)."""
    records, pos = {}, 0
    while pos < len(payload) and payload[pos:pos + 1] != b"\0":
        space = payload.index(b" ", pos)
        length = int(payload[pos:space])
        if length <= space - pos or pos + length > len(payload):
            raise ValueError(f"a PAX record declares length {length}")
        key, _, value = payload[space + 1:pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode(
            "utf-8", "surrogateescape")
        pos += length
    return records


def tar_member_offsets(path: str | Path) -> Iterator[tuple[str, int, int]]:
    """(name, offset of the data, size) of each regular file of an uncompressed tar, reading
    headers only: the index behind random access into a shard. ``ValueError`` naming the
    file for a compressed or damaged tar."""
    try:
        with open(path, "rb") as f:
            if _is_compressed(f):
                raise ValueError(_COMPRESSED_REFUSAL)
            for name, offset, size, _ in _tar_entries(f, with_payload=False):
                yield name, offset, size
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable tar file ({exc})") from exc


def _tar_entries(f: Any, *, with_payload: bool) -> Iterator[tuple[str, int, int, bytes]]:
    """(name, data offset, size, payload or b"") of each regular file of an uncompressed tar
    read from ``f``, in order; ``ValueError`` for a bad header checksum or a member size out
    of bounds (:func:`_check_member_size`). Handles ustar name prefixes, PAX extended headers
    (``path``, ``size``) and GNU long names, as tarfile does. Without ``with_payload`` the
    data of regular files is skipped."""
    overrides: dict[str, str] = {}
    end = f.seek(0, 2)
    f.seek(0)
    while True:
        header = f.read(_BLOCK)
        if 0 < len(header) < _BLOCK:
            raise ValueError("truncated header")
        if not header or header.count(0) == _BLOCK:  # the end, with or without its marker
            return
        _check_header_sum(header)
        kind = header[156:157]
        name, prefix = _tar_text(header[:100]), _tar_text(header[345:500])
        if prefix and kind not in _GNU_TYPES:
            name = f"{prefix}/{name}"
        name = overrides.get("path", name)
        size = int(overrides.get("size", _tar_number(header[124:136])))
        offset = f.tell()
        _check_member_size(name, size, end - offset)
        describing = kind in (_PAX_HEADER, _GNU_LONGNAME, *_DESCRIBING_TYPES)
        payload = f.read(size) if with_payload or describing else b""
        f.seek(offset + size + (-size % _BLOCK))
        if kind == _PAX_HEADER:
            overrides.update(_pax_records(payload))
            continue
        if kind == _GNU_LONGNAME:
            overrides["path"] = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        if kind in _DESCRIBING_TYPES:
            continue
        overrides = {}
        if kind in _FILE_TYPES and not name.endswith("/"):
            yield name, offset, size, payload


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/key.structure.dzst`` -> (``dir/key``, ``structure.dzst``): WebDataset's
    convention, the key ending at the first dot of the last path component (no dot: the
    field is empty)."""
    folder, slash, base = name.rpartition("/")
    stem, _, field_name = base.partition(".")
    return folder + slash + stem, field_name
