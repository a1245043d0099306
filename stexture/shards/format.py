"""The on-disk format of stexture shards: sample fields, layer encoding, manifest.

This module is the contract between the writer (``stexture.shards.writer``), the reader and
``inspect`` (``stexture.shards``), and the loader (``stexture.loader``).

A shard is a WebDataset tar file ``{split}-{index:06d}.tar``. Each sample holds:

``__key__``
    stable, dot-free key derived from the source's relative path.
``jpg`` or ``png``
    the stored image, 8-bit RGB, exactly as written (its decoded pixels are the image).
``structure.dzst``
    the structure layer, 8-bit RGB: the method's float output rounded to 8 bits (so within
    0.5/255 of it), stored losslessly as a vertical delta compressed with Zstandard (see
    :func:`encode_structure` for the byte layout). Chosen by measurement for the loader,
    which decodes a structure layer for every cue-conflict sample: it decodes in about a
    quarter of the time of lossless WebP (faster than the JPEG image itself) and encodes
    faster, for about 15-20% more bytes than WebP method 0 (numbers in the README and
    ``benchmarks/bench_structure_codec.py``). Shards of format version 1 hold the structure
    as ``structure.webp`` (WebP lossless) instead; every reader accepts both, and a sample
    holds exactly one of them.
``cls``
    the integer class index (ASCII decimal); classes are sorted names, see the manifest.
``json``
    a record: ``source``, ``class_name``, ``size`` ([height, width]), ``method``, ``params``.

The texture is defined on the decoded layers: ``texture = image - structure`` (int16, in
[-255, 255], or divided by 255 as float32).

Beside the shards, ``manifest.json`` lists classes, splits, counts, every shard with its
sample count and SHA-256, the method and its parameters, and the versions that wrote them;
``index.csv`` has one row per sample (``key,split,shard,cls``); ``rejected.jsonl`` one line
per rejected input with its reason.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zstandard
from numba import njit, types
from PIL import Image

from ..imageio import ImageReadError, image_size
from ..smoothing import METHODS

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FIELDS",
    "INDEX_NAME",
    "LEGACY_STRUCTURE_FIELD",
    "MANIFEST_NAME",
    "MAX_MEMBER_BYTES",
    "REJECTED_NAME",
    "STRUCTURE_FIELD",
    "STRUCTURE_FIELDS",
    "DecodedSample",
    "Manifest",
    "ShardInfo",
    "check_layer_size",
    "check_member_file_name",
    "decode_sample",
    "decode_rgb",
    "decode_structure",
    "encode_image",
    "encode_legacy_structure",
    "encode_sample",
    "encode_structure",
    "group_samples",
    "iter_tar_samples",
    "read_index",
    "read_manifest",
    "read_tar_members",
    "shard_name",
    "split_member_name",
    "structure_field",
    "tar_member_offsets",
    "texture_of",
    "write_tar",
]

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.csv"
REJECTED_NAME = "rejected.jsonl"
IMAGE_FIELDS = ("jpg", "png")
STRUCTURE_FIELD = "structure.dzst"
# the structure field of format version 1 (lossless WebP), still read
LEGACY_STRUCTURE_FIELD = "structure.webp"
STRUCTURE_FIELDS = (STRUCTURE_FIELD, LEGACY_STRUCTURE_FIELD)
FORMAT_NAME = "stexture-shards"
FORMAT_VERSION = 2
#: The format versions this stexture reads: 1 (structure as WebP) and 2 (delta-zstd).
READABLE_VERSIONS = (1, FORMAT_VERSION)
#: The most pixels a layer read back from a shard may declare unless the reader is given
#: another limit (the writer's default ``--max-pixels``: no stored layer of a default run is
#: larger). A manifest cannot raise it: limits belong to the reader, not to the file it reads.
DEFAULT_MAX_PIXELS = 100_000_000
#: The largest tar member any reader accepts: a stored image or layer of 1 GiB is no photo,
#: and a compressed tar's members cannot be checked against the file's size.
MAX_MEMBER_BYTES = 1 << 30


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``: ``train-000000.tar``."""
    return f"{split}-{index:06d}.tar"


# Zstandard level 6: the first level past the fast strategies (2-4 ms for a 256 px RGB
# structure, under WebP method 0's encoding time); level 9 saves 2% more bytes for twice the
# time, the optimal-parsing levels (15+) match WebP's size at 40-100 ms, more than an RTV
# decomposition. Decoding speed does not depend on the level.
_ZSTD_LEVEL = 6
# "stexture delta-zstd, layout 1"; then height, width, channels (0: a 2-D array), little-endian
_DZST_HEADER = struct.Struct("<4sIIB")
_DZST_MAGIC = b"SXD1"
# fixed metadata of every tar member, so that the same samples give the same bytes
_TAR_MTIME = 0
_TAR_MODE = 0o444
# the order of a sample's fields in the tar (WebDataset groups consecutive members by key)
_FIELD_ORDER = ("jpg", "png", *STRUCTURE_FIELDS, "cls", "json")


def _encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def encode_structure(structure: np.ndarray, level: int = _ZSTD_LEVEL) -> bytes:
    """Encode a uint8 ``HxW`` or ``HxWxC`` layer losslessly, as the ``structure.dzst`` field.

    The bytes are a 13-byte header (``b"SXD1"``, then height, width and channels as
    little-endian uint32, uint32, uint8; channels 0 for a 2-D array) and one Zstandard frame
    (with content size and checksum) of the rows ``d[0] = s[0]``, ``d[i] = s[i] - s[i-1]``
    mod 256, each row the ``W*C`` interleaved bytes of ``s[i]``. The vertical delta turns the
    smooth structure into small residuals that compress well, and it is undone by a running
    sum down each column that vectorises along the row, so decoding costs little more than
    Zstandard's own decompression. ``level`` is the Zstandard level (decoding does not
    depend on it).
    """
    if structure.dtype != np.uint8 or structure.ndim not in (2, 3):
        raise ValueError(
            f"a structure layer must be uint8 HxW or HxWxC, got {structure.dtype} of shape "
            f"{structure.shape}"
        )
    if 0 in structure.shape:
        raise ValueError(f"a structure layer must not be empty, got shape {structure.shape}")
    height, width = structure.shape[:2]
    channels = structure.shape[2] if structure.ndim == 3 else 0
    rows = np.ascontiguousarray(structure).reshape(height, -1)
    delta = rows.copy()
    np.subtract(rows[1:], rows[:-1], out=delta[1:])  # uint8 arithmetic wraps: mod 256
    # one compressor per call: zstandard's contexts must not be shared between threads
    frame = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(
        delta.tobytes())
    return _DZST_HEADER.pack(_DZST_MAGIC, height, width, channels) + frame


# compiled at import (see _compose_normalized in stexture.loader), for the read-only rows of
# np.frombuffer
@njit(types.uint8[:, ::1](types.Array(types.uint8, 2, "C", readonly=True)), cache=True)
def _undo_vertical_delta(delta: np.ndarray) -> np.ndarray:
    """Running sum mod 256 down each column of a uint8 ``rows x bytes`` array."""
    out = np.empty(delta.shape, np.uint8)
    out[0] = delta[0]
    for i in range(1, delta.shape[0]):
        for j in range(delta.shape[1]):
            out[i, j] = out[i - 1, j] + delta[i, j]  # stored as uint8: mod 256
    return out


def check_layer_size(height: int, width: int, max_pixels: int) -> None:
    """``ValueError`` when a layer declares more than ``max_pixels`` pixels (or none): checked
    before anything of its size is allocated."""
    if not 0 < height * width <= max_pixels:
        raise ValueError(f"the layer declares {height}x{width} = {height * width} pixels, "
                         f"outside 1..{max_pixels} (a decompression bomb?)")


def _decode_dzst(data: bytes, max_pixels: int) -> np.ndarray:
    if len(data) < _DZST_HEADER.size or data[:4] != _DZST_MAGIC:
        raise ValueError("not a delta-zstd structure layer (bad header)")
    _, height, width, channels = _DZST_HEADER.unpack_from(data)
    check_layer_size(height, width, max_pixels)
    if channels > 4:
        raise ValueError(f"the layer declares {channels} channels; at most 4")
    row_bytes = width * max(channels, 1)
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            data[_DZST_HEADER.size:], max_output_size=height * row_bytes)
    except zstandard.ZstdError as exc:
        raise ValueError(f"corrupt Zstandard data ({exc})") from exc
    if len(raw) != height * row_bytes or height * row_bytes == 0:
        raise ValueError(f"{len(raw)} bytes of pixels for a {height}x{width}x{channels} layer")
    pixels = _undo_vertical_delta(np.frombuffer(raw, np.uint8).reshape(height, row_bytes))
    return pixels.reshape((height, width, channels) if channels else (height, width))


def structure_field(sample: dict[str, Any]) -> str:
    """The name of the one structure field of a raw sample (``structure.dzst``, or
    ``structure.webp`` in format version 1); ``ValueError`` when it has none or both."""
    present = [name for name in STRUCTURE_FIELDS if name in sample]
    if len(present) != 1:
        key = sample.get("__key__", "<no key>")
        has = f"has {' and '.join(present)}" if present else "has none"
        raise ValueError(
            f"sample {key!r} must hold exactly one structure field of {STRUCTURE_FIELDS}; it "
            f"{has}"
        )
    return present[0]


def encode_legacy_structure(structure: np.ndarray) -> bytes:
    """Encode a uint8 ``HxWx3`` layer as format version 1's ``structure.webp`` field did:
    WebP lossless, method 0. Nothing writes version 1 any more; this makes such samples for
    checking that the readers still take them."""
    buffer = io.BytesIO()
    Image.fromarray(structure).save(buffer, format="WEBP", lossless=True, method=0, quality=0)
    return buffer.getvalue()


def decode_structure(data: bytes, field_name: str = STRUCTURE_FIELD,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a structure field's bytes to its uint8 pixels; ``field_name`` says which
    encoding (``structure.dzst`` gives the array as encoded, ``structure.webp`` 8-bit RGB).

    ``ValueError`` when the bytes are corrupt, the field is not a structure field, or the
    layer declares more than ``max_pixels`` pixels (checked before allocating).
    """
    if field_name == STRUCTURE_FIELD:
        return _decode_dzst(data, max_pixels)
    if field_name == LEGACY_STRUCTURE_FIELD:
        return decode_rgb(data, max_pixels)
    raise ValueError(f"unknown structure field {field_name!r}; expected one of {STRUCTURE_FIELDS}")


def encode_image(pixels: np.ndarray, image_format: str = "jpg", quality: int = 95) -> bytes:
    """Encode an 8-bit RGB image as the stored image (``"jpg"`` or lossless ``"png"``)."""
    if image_format == "jpg":
        return _encode_jpeg(pixels, quality)
    if image_format == "png":
        return _encode_png(pixels)
    raise ValueError(f"unknown image format {image_format!r}; expected one of {IMAGE_FIELDS}")


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode stored image bytes (JPEG, PNG, WebP) to an 8-bit RGB ``HxWx3`` array;
    ``ValueError`` when they are not a decodable image, or when the size their header
    declares is over ``max_pixels`` (read without decoding, 0.02 ms, before a pixel is
    allocated). OpenCV's decoders give the pixels of Pillow's for these formats and are
    faster (this runs for every sample a loader reads)."""
    try:
        image_size(data, "the layer", max_pixels)
    except ImageReadError as exc:
        if exc.reason == "too_many_pixels":
            raise
        raise ValueError(f"not a decodable image ({exc})") from None
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    except cv2.error as exc:  # OpenCV's own limits: a ValueError like any corrupt layer
        raise ValueError(f"not a decodable image ({exc})") from None
    if pixels is None:
        raise ValueError("not a decodable image")
    return pixels


def encode_sample(
    key: str,
    image: bytes,
    image_format: str,
    structure: np.ndarray,
    cls: int,
    record: dict[str, Any],
) -> dict[str, Any]:
    """A WebDataset sample dict from an already encoded stored image and a uint8 structure."""
    if "." in key:
        raise ValueError(f"sample key {key!r} contains a dot")
    if image_format not in IMAGE_FIELDS:
        raise ValueError(f"unknown image format {image_format!r}; expected one of {IMAGE_FIELDS}")
    if structure.dtype != np.uint8 or structure.ndim != 3 or structure.shape[2] != 3:
        raise ValueError("structure layer must be uint8 HxWx3")
    return {
        "__key__": key,
        image_format: image,
        STRUCTURE_FIELD: encode_structure(structure),
        "cls": str(int(cls)).encode("ascii"),
        "json": json.dumps(record, sort_keys=True).encode("utf-8"),
    }


@dataclass(frozen=True)
class DecodedSample:
    """One decoded sample: uint8 ``HxWx3`` image and structure, class index, record."""

    key: str
    image: np.ndarray
    structure: np.ndarray
    cls: int
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def texture(self) -> np.ndarray:
        return texture_of(self.image, self.structure)


def texture_of(image: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """The texture layer ``image - structure`` of decoded uint8 layers, as int16."""
    return image.astype(np.int16) - structure.astype(np.int16)


def decode_sample(sample: dict[str, Any], max_pixels: int = DEFAULT_MAX_PIXELS
                  ) -> DecodedSample:
    """Decode a raw WebDataset sample (bytes per field) written by :func:`encode_sample`.

    The structure layer is read from whichever structure field the sample has
    (:func:`structure_field`). Raises ``ValueError`` naming the key and the field when a
    field is missing or corrupt, when the sample holds two structure fields, or when a layer
    declares more than ``max_pixels`` pixels.
    """
    key = sample.get("__key__", "<no key>")
    image_field = next((f for f in IMAGE_FIELDS if f in sample), None)
    missing = [
        name
        for name, present in (
            ("jpg/png", image_field is not None),
            ("/".join(STRUCTURE_FIELDS), any(f in sample for f in STRUCTURE_FIELDS)),
            ("cls", "cls" in sample),
        )
        if not present
    ]
    if missing:
        raise ValueError(f"sample {key!r} lacks field(s) {', '.join(missing)}")
    layer_field = structure_field(sample)
    try:
        image = decode_rgb(sample[image_field], max_pixels)
        structure = decode_structure(sample[layer_field], layer_field, max_pixels)
        cls = int(sample["cls"])
        record = json.loads(sample["json"]) if "json" in sample else {}
    except Exception as exc:
        raise ValueError(f"sample {key!r} cannot be decoded: {exc}") from exc
    if image.shape != structure.shape:
        raise ValueError(
            f"sample {key!r}: image {image.shape} and structure {structure.shape} differ in shape"
        )
    return DecodedSample(key, image, structure, cls, record)


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


_COMPRESSED_REFUSAL = ("compressed; random access needs an uncompressed tar (what `stexture "
                       "decompose` writes)")


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
    (what the writer makes) is read by :func:`_tar_entries`, 0.03 ms per sample against
    0.1-0.25 ms through :mod:`tarfile` (a tenth of a loader worker's time per sample).
    """
    if _is_compressed(f):
        yield from _tarfile_files(f)
        return
    for name, _, _, payload in _tar_entries(f, with_payload=True):
        yield name, payload


# gzip, bzip2, xz, zstd: read through tarfile's decompressors
_COMPRESSED_MAGICS = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")
_BLOCK = 512
# member types (POSIX.1-2001 / GNU): regular files, and the headers that describe the next one
_FILE_TYPES = (b"0", b"\0", b"7")
_PAX_HEADER, _GNU_LONGNAME = b"x", b"L"
_DESCRIBING_TYPES = (b"g", b"K")  # a global PAX header, a GNU long link name: not needed here
_GNU_TYPES = (b"L", b"K", b"S")
_INDEX_COLUMNS = ("key", "split", "shard", "cls")


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


def read_index(root: str | Path) -> list[dict[str, str]]:
    """The rows of ``root/index.csv`` (``key``, ``split``, ``shard``, ``cls``);
    ``FileNotFoundError`` when it is missing, ``ValueError`` for a row lacking a column."""
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {INDEX_NAME} in {root}: is it a directory written by "
                                "`stexture decompose`?")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for number, row in enumerate(rows, start=2):
        if any(row.get(column) is None for column in _INDEX_COLUMNS):
            raise ValueError(f"{path}, line {number}: a row needs {', '.join(_INDEX_COLUMNS)}")
    return rows


@dataclass(frozen=True)
class ShardInfo:
    name: str
    count: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about a shard directory."""

    root: Path
    classes: list[str]
    splits: dict[str, list[ShardInfo]]
    method: str
    params: dict[str, Any]
    raw: dict[str, Any]
    #: The most pixels a layer of these shards may declare: the reader's limit (what
    #: :func:`read_manifest` was given), never a number the manifest itself records.
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def shards(self, split: str) -> list[ShardInfo]:
        if split not in self.splits:
            raise ValueError(
                f"split {split!r} is not in {self.root / MANIFEST_NAME}; "
                f"it has {', '.join(self.splits) or 'no splits'}"
            )
        return self.splits[split]

    def shard_paths(self, split: str) -> list[str]:
        return [str(self.root / s.name) for s in self.shards(split)]

    def count(self, split: str) -> int:
        return sum(s.count for s in self.shards(split))


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_member_file_name(name: object, where: str) -> str:
    """``name`` if it is a plain file name inside its folder (what the writer records);
    ``ValueError`` naming ``where`` for anything else: an absolute path, a ``..``, a folder
    separator, an empty name. Confines every path a manifest or progress file names."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.path.isabs(name)):
        raise ValueError(f"{where} names {name!r}: a shard must be a plain file name in its "
                         "folder (no absolute path, no '..', no folder)")
    return name


def _shard_infos(entry: Any, where: str, seen: set[str]) -> list[ShardInfo]:
    infos = []
    for shard in entry["shards"]:
        name = check_member_file_name(shard["name"], where)
        if name in seen:
            raise ValueError(f"{where} lists shard {name!r} twice")
        seen.add(name)
        count = shard["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{where}: shard {name!r} has count {count!r}, not an integer >= 0")
        if not isinstance(shard["sha256"], str) or not _SHA256.match(shard["sha256"]):
            raise ValueError(f"{where}: shard {name!r} has no SHA-256 of 64 hex digits")
        infos.append(ShardInfo(name, count, shard["sha256"]))
    return infos


def _readable_formats() -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """format name -> (the versions, the methods) this stexture reads: shard folders, and the
    soft-label sidecars of :mod:`.labels`, whose manifest is read as a shard manifest."""
    from . import labels  # imported here: labels builds on this module

    return {FORMAT_NAME: (READABLE_VERSIONS, tuple(METHODS)),
            labels.LABELS_FORMAT: ((labels.LABELS_VERSION,), (labels.METHOD,))}


def _check_format(raw: Any, path: Path) -> None:
    """``ValueError`` naming what a reader of this version cannot read: another format, a
    format version it does not know (a newer stexture's, say), or a method it does not know
    (its layers could not be checked, nor its recorded settings reproduced)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a valid stexture manifest: not a JSON object")
    formats = _readable_formats()
    name = raw.get("format")
    if name not in formats:
        raise ValueError(f"{path}: format {name!r} is not one this stexture reads "
                         f"({', '.join(formats)})")
    versions, methods = formats[name]
    version = raw.get("format_version")
    if isinstance(version, bool) or version not in versions:
        raise ValueError(
            f"{path}: format_version {version!r} is unknown to this stexture, which reads "
            f"versions {', '.join(map(str, versions))} of {name} (written by a newer "
            "stexture? upgrade it)")
    method = raw.get("method")
    if not isinstance(method, str) or method not in methods:
        raise ValueError(f"{path}: method {method!r} is unknown to this stexture (it knows "
                         f"{', '.join(methods)})")
    if not isinstance(raw.get("params"), dict):
        raise ValueError(f"{path}: params must be an object, got {raw.get('params')!r}")


def read_manifest(root: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Manifest:
    """Read ``root/manifest.json``; ``FileNotFoundError``/``ValueError`` that say what is wrong.

    The format must be ``stexture-shards`` of a version in :data:`READABLE_VERSIONS`, made by
    a method this stexture knows (:func:`_check_format`). Every shard it names must be a plain
    file name in ``root``, listed once (across all splits), with a count and a SHA-256
    (:func:`check_member_file_name`): a manifest cannot send a reader to another folder or
    make it read a shard twice. ``max_pixels`` is the most pixels a layer may declare when the
    shards are read (:attr:`Manifest.max_pixels`); nothing in the file changes it.
    """
    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {root}: is it a directory written by `stexture decompose`?"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        _check_format(raw, path)
        seen: set[str] = set()
        splits = {split: _shard_infos(entry, str(path), seen)
                  for split, entry in raw["splits"].items()}
        classes = raw["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{path}: classes must be a list of names")
        return Manifest(root, list(classes), splits, raw["method"], raw["params"], raw,
                        max_pixels)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError
            ) as exc:
        raise ValueError(f"{path} is not a valid stexture manifest: {exc!r}") from exc
