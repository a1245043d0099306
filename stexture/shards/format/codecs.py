"""Sample fields and their codecs: the stored image, the structure layer, a whole sample.

The byte layout of the ``structure.dzst`` field is in :func:`encode_structure`; why it was
chosen (decode and encode times, sizes against WebP) is measured in
``benchmarks/bench_structure_codec.py`` and tabled in ``benchmarks/README.md``.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zstandard
from numba import njit, types
from PIL import Image

from ...imageio import ImageReadError, decode_with_opencv, image_size

IMAGE_FIELDS = ("jpg", "png")
STRUCTURE_FIELD = "structure.dzst"
# the structure field of format version 1 (lossless WebP), still read
LEGACY_STRUCTURE_FIELD = "structure.webp"
STRUCTURE_FIELDS = (STRUCTURE_FIELD, LEGACY_STRUCTURE_FIELD)
#: The most pixels a layer read back from a shard may declare unless the reader is given
#: another limit (the writer's default ``--max-pixels``: no stored layer of a default run is
#: larger). A manifest cannot raise it: limits belong to the reader, not to the file it reads.
DEFAULT_MAX_PIXELS = 100_000_000

# Zstandard level 6: chosen by the measurements in benchmarks/README.md (*Structure codec*)
_ZSTD_LEVEL = 6
# "stexture delta-zstd, layout 1"; then height, width, channels (0: a 2-D array), little-endian
_DZST_HEADER = struct.Struct("<4sIIB")
_DZST_MAGIC = b"SXD1"
# layout 2: layout 1's header and then the quantisation step (uint8, >= 2)
_DZQ_HEADER = struct.Struct("<4sIIBB")
_DZQ_MAGIC = b"SXD2"


def _encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def encode_structure(structure: np.ndarray, level: int = _ZSTD_LEVEL, step: int = 1) -> bytes:
    """Encode a uint8 ``HxW`` or ``HxWxC`` layer as the ``structure.dzst`` field, losslessly
    (``step`` 1) or quantised to multiples of ``step``.

    The bytes are a 13-byte header (``b"SXD1"``, then height, width and channels as
    little-endian uint32, uint32, uint8; channels 0 for a 2-D array) and one Zstandard frame
    (with content size and checksum) of the rows ``d[0] = s[0]``, ``d[i] = s[i] - s[i-1]``
    mod 256, each row the ``W*C`` interleaved bytes of ``s[i]``. The vertical delta turns the
    smooth structure into small residuals that compress well, and it is undone by a running
    sum down each column that vectorises along the row, so decoding costs little more than
    Zstandard's own decompression. ``level`` is the Zstandard level (decoding does not
    depend on it).

    With ``step`` > 1 (layout 2, magic ``b"SXD2"``, one more header byte: ``step``) the rows
    hold ``q = floor((s + step // 2) / step)`` instead of ``s``; decoding gives
    ``min(q * step, 255)``, within ``step // 2`` of ``s`` (a stated error bound, for fewer
    bytes: figures in ``benchmarks/README.md``).
    """
    if structure.dtype != np.uint8 or structure.ndim not in (2, 3):
        raise ValueError(
            f"a structure layer must be uint8 HxW or HxWxC, got {structure.dtype} of shape "
            f"{structure.shape}"
        )
    if 0 in structure.shape:
        raise ValueError(f"a structure layer must not be empty, got shape {structure.shape}")
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or not 1 <= step <= 255:
        raise ValueError(f"the quantisation step must be an integer in 1..255, got {step!r}")
    height, width = structure.shape[:2]
    channels = structure.shape[2] if structure.ndim == 3 else 0
    rows = np.ascontiguousarray(structure).reshape(height, -1)
    if step > 1:
        rows = ((rows.astype(np.uint16) + step // 2) // step).astype(np.uint8)
    delta = rows.copy()
    np.subtract(rows[1:], rows[:-1], out=delta[1:])  # uint8 arithmetic wraps: mod 256
    # one compressor per call: zstandard's contexts must not be shared between threads
    frame = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(
        delta.tobytes())
    if step == 1:
        return _DZST_HEADER.pack(_DZST_MAGIC, height, width, channels) + frame
    return _DZQ_HEADER.pack(_DZQ_MAGIC, height, width, channels, step) + frame


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


@njit(types.uint8[:, ::1](types.Array(types.uint8, 2, "C", readonly=True), types.int64),
      cache=True)
def _undo_quantised_delta(delta: np.ndarray, step: int) -> np.ndarray:
    """Running sum mod 256 down each column, each sum times ``step`` (capped at 255)."""
    out = np.empty(delta.shape, np.uint8)
    acc = np.empty(delta.shape[1], np.uint8)
    for i in range(delta.shape[0]):
        for j in range(delta.shape[1]):
            acc[j] = delta[i, j] if i == 0 else acc[j] + delta[i, j]  # uint8: mod 256
            out[i, j] = min(np.int64(acc[j]) * step, 255)
    return out


def check_layer_size(height: int, width: int, max_pixels: int) -> None:
    """``ValueError`` when a layer declares more than ``max_pixels`` pixels (or none): checked
    before anything of its size is allocated."""
    if not 0 < height * width <= max_pixels:
        raise ValueError(f"the layer declares {height}x{width} = {height * width} pixels, "
                         f"outside 1..{max_pixels} (a decompression bomb?)")


def _decode_dzst(data: bytes, max_pixels: int) -> np.ndarray:
    step = 1
    if len(data) >= _DZQ_HEADER.size and data[:4] == _DZQ_MAGIC:
        _, height, width, channels, step = _DZQ_HEADER.unpack_from(data)
        if step < 2:
            raise ValueError(f"the layer declares a quantisation step of {step}; at least 2")
        header_size = _DZQ_HEADER.size
    elif len(data) >= _DZST_HEADER.size and data[:4] == _DZST_MAGIC:
        _, height, width, channels = _DZST_HEADER.unpack_from(data)
        header_size = _DZST_HEADER.size
    else:
        raise ValueError("not a delta-zstd structure layer (bad header)")
    check_layer_size(height, width, max_pixels)
    if channels > 4:
        raise ValueError(f"the layer declares {channels} channels; at most 4")
    row_bytes = width * max(channels, 1)
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            data[header_size:], max_output_size=height * row_bytes)
    except zstandard.ZstdError as exc:
        raise ValueError(f"corrupt Zstandard data ({exc})") from exc
    if len(raw) != height * row_bytes or height * row_bytes == 0:
        raise ValueError(f"{len(raw)} bytes of pixels for a {height}x{width}x{channels} layer")
    delta = np.frombuffer(raw, np.uint8).reshape(height, row_bytes)
    pixels = _undo_vertical_delta(delta) if step == 1 else _undo_quantised_delta(delta, step)
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
    declares is over ``max_pixels`` (read from the header, before a pixel is allocated).
    OpenCV's decoders give the pixels of Pillow's for these formats and are faster (this
    runs for every sample a loader reads; figures in ``benchmarks/README.md``)."""
    try:
        image_size(data, "the layer", max_pixels)
    except ImageReadError as exc:
        if exc.reason == "too_many_pixels":
            raise
        raise ValueError(f"not a decodable image ({exc})") from None
    return decode_with_opencv(data)


def encode_sample(
    key: str,
    image: bytes,
    image_format: str,
    structure: np.ndarray,
    cls: int,
    record: dict[str, Any],
    step: int = 1,
) -> dict[str, Any]:
    """A WebDataset sample dict from an already encoded stored image and a uint8 structure.

    ``step`` is the structure layer's quantisation step (:func:`encode_structure`: 1 stores
    it losslessly, ``k`` within ``k // 2`` levels); the writer passes its
    ``ShardSettings.structure_step``.
    """
    if "." in key:
        raise ValueError(f"sample key {key!r} contains a dot")
    if image_format not in IMAGE_FIELDS:
        raise ValueError(f"unknown image format {image_format!r}; expected one of {IMAGE_FIELDS}")
    if structure.dtype != np.uint8 or structure.ndim != 3 or structure.shape[2] != 3:
        raise ValueError("structure layer must be uint8 HxWx3")
    return {
        "__key__": key,
        image_format: image,
        STRUCTURE_FIELD: encode_structure(structure, step=step),
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
